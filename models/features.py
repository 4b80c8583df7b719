"""The taxi features, defined once.

Preprocessing, the model, the schema checks, the serving signatures and the
clients all read this module; nothing else names a raw column.
"""

from typing import Dict, NamedTuple, Optional, Union

Value = Union[float, int, str]


class Feature(NamedTuple):
  """A raw CSV column and how the model uses it."""
  dtype: str  # 'float', 'int' or 'string': the tf.Example kind in the CSV.
  kind: str  # 'numeric', 'log_numeric', 'categorical', 'vocab', 'bucket', 'ignored'
  default: Value  # Fills a missing value, in training and in serving alike.
  num_buckets: Optional[int] = None  # Identity/bucketized categories.
  required: bool = False  # Present in every row (schema presence 1.0).


# Order is the CSV header order of the shipped data.
RAW_FEATURES: Dict[str, Feature] = {
    'pickup_community_area': Feature('int', 'categorical', 0, num_buckets=78),
    'fare': Feature('float', 'log_numeric', 0.0, required=True),
    'trip_start_month': Feature('int', 'categorical', 1, num_buckets=13, required=True),
    'trip_start_hour': Feature('int', 'categorical', 0, num_buckets=24, required=True),
    'trip_start_day': Feature('int', 'categorical', 1, num_buckets=8, required=True),
    'trip_start_timestamp': Feature('int', 'numeric', 0, required=True),
    'pickup_latitude': Feature('float', 'bucket', 0.0, num_buckets=10),
    'pickup_longitude': Feature('float', 'bucket', 0.0, num_buckets=10),
    'dropoff_latitude': Feature('float', 'bucket', 0.0, num_buckets=10),
    'dropoff_longitude': Feature('float', 'bucket', 0.0, num_buckets=10),
    'trip_miles': Feature('float', 'log_numeric', 0.0, required=True),
    'pickup_census_tract': Feature('int', 'ignored', 0),
    'dropoff_census_tract': Feature('int', 'ignored', 0),
    'payment_type': Feature('string', 'vocab', '', required=True),
    'company': Feature('string', 'vocab', ''),
    'trip_seconds': Feature('int', 'log_numeric', 0),
    'dropoff_community_area': Feature('int', 'categorical', 0, num_buckets=78),
}

# The label is derived from two raw columns: a 'big tipper' tips more than
# BIG_TIP_FRACTION of the fare. `tips` exists only in training data.
TIPS_KEY = 'tips'
FARE_KEY = 'fare'
BIG_TIP_FRACTION = 0.2
LABEL_KEY = 'big_tipper'

# Model inputs of the 'vocab' kind keep this many most frequent values; the
# rest share out-of-vocabulary buckets.
VOCAB_SIZE = 64
OOV_BUCKETS = 2


def transformed_name(name: str) -> str:
  """Name of a feature after Transform."""
  return name + '_xf'


def model_features() -> Dict[str, Feature]:
  """The raw features the model reads (everything not ignored)."""
  return {n: f for n, f in RAW_FEATURES.items() if f.kind != 'ignored'}


def categorical_ints() -> list:
  """Integer features that are ids, not quantities: statistics, skew and
  drift treat them as categories (L-infinity distance, value histograms)."""
  return [n for n, f in RAW_FEATURES.items() if f.kind == 'categorical']


def csv_columns() -> list:
  """Columns of a training CSV: the raw features then the tips."""
  return list(RAW_FEATURES) + [TIPS_KEY]


def to_example(row: Dict[str, Value]):
  """A tf.train.Example of one row of raw feature values (None: no value)."""
  # Imported here: importing TensorFlow's protos loads TensorFlow (seconds),
  # which modules that only read this table do not need.
  from tensorflow.core.example import example_pb2
  example = example_pb2.Example()
  for name, value in row.items():
    if value is None:
      continue
    feature = example.features.feature[name]
    dtype = RAW_FEATURES[name].dtype
    if dtype == 'float':
      feature.float_list.value.append(float(value))
    elif dtype == 'int':
      feature.int64_list.value.append(int(value))
    else:
      feature.bytes_list.value.append(str(value).encode('utf-8'))
  return example


def from_example(example) -> Dict[str, Optional[Value]]:
  """The raw feature values of a tf.train.Example (None where it has none)."""
  row = {}
  for name in RAW_FEATURES:
    feature = example.features.feature.get(name)
    kind = feature.WhichOneof('kind') if feature is not None else None
    values = list(getattr(feature, kind).value) if kind else []
    value = values[0] if values else None
    row[name] = value.decode('utf-8', 'replace') if isinstance(value, bytes) else value
  return row


def parse_value(name: str, text: str) -> Optional[Value]:
  """Parses one CSV cell of feature `name`; None when the cell is empty."""
  if text is None or text == '':
    return None
  dtype = RAW_FEATURES[name].dtype if name in RAW_FEATURES else 'float'
  if dtype == 'string':
    return text
  if dtype == 'int':
    return int(float(text))
  return float(text)
