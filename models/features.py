"""The data and the task of the selected example, as the models read them.

The example (examples/taxi.py by default, examples/iris.py with
<ENV_PREFIX>_EXAMPLE=iris) states its columns, label, task and class names
once; preprocessing, the model, the schema checks, the serving signatures,
the Evaluator's metrics and the clients all read them here, and nothing
else names a raw column.
"""

from typing import Dict, List, Optional

import examples
# The task names and Feature, re-exported: the models read them from here.
from examples.description import (BINARY, MULTICLASS, REGRESSION, SUPPORTED_TASKS,  # noqa: F401
                                  TASKS, Feature, Value)

def transformed_name(name: str) -> str:
  """Name of a feature after Transform."""
  return name + '_xf'


try:
  EXAMPLE_NAME = examples.selected_name()
except examples.UnknownExampleError as e:
  # Every command imports this module: one line, not a traceback.
  raise SystemExit(str(e)) from None
EXAMPLE = examples.EXAMPLES[EXAMPLE_NAME]

TASK: str = EXAMPLE.TASK
if TASK not in SUPPORTED_TASKS:
  raise SystemExit(f'examples/{EXAMPLE_NAME}.py: TASK {TASK!r} is not a task: set it to one of '
                   f'{", ".join(SUPPORTED_TASKS)} (examples/description.py)')

# Order is the CSV header order of the example's data.
RAW_FEATURES: Dict[str, Feature] = EXAMPLE.RAW_FEATURES
# Columns of training data that are not features and are absent when serving.
TRAINING_ONLY: List[str] = list(EXAMPLE.TRAINING_ONLY)
# The label: a CSV column as it is (a str), or a function of dense columns.
LABEL = EXAMPLE.LABEL
LABEL_COLUMN: Optional[str] = LABEL if isinstance(LABEL, str) else None
# The label's name after Transform: what the Trainer and the Evaluator read.
# A derived label names itself; a plain column's is its transformed name.
LABEL_KEY: str = getattr(EXAMPLE, 'LABEL_KEY', None) or transformed_name(LABEL_COLUMN)
CLASS_NAMES: List[str] = list(getattr(EXAMPLE, 'CLASS_NAMES', []))
NUM_CLASSES = len(CLASS_NAMES)

# The model's outputs (serving_default, predict_raw): binary, P(class 1) as
# 'probability' and 0/1 as 'class'; multi-class, one probability per class
# as 'probabilities' and the most probable class name as 'class';
# regression, the predicted number as 'prediction'.
OUTPUT_PROBABILITY = 'probability'
OUTPUT_PROBABILITIES = 'probabilities'
OUTPUT_CLASS = 'class'
OUTPUT_PREDICTION = 'prediction'
# The output the Evaluator and monitoring judge.
PREDICTION_KEY = {BINARY: OUTPUT_PROBABILITY, MULTICLASS: OUTPUT_PROBABILITIES,
                  REGRESSION: OUTPUT_PREDICTION}[TASK]

def label_columns() -> List[str]:
  """Columns only training data has: the training-only ones and the label."""
  return examples.label_columns(EXAMPLE)


# Model inputs of the 'vocab' kind keep this many most frequent values; the
# rest share out-of-vocabulary buckets.
VOCAB_SIZE = 64
OOV_BUCKETS = 2


def model_features() -> Dict[str, Feature]:
  """The raw features the model reads (everything not ignored)."""
  return {n: f for n, f in RAW_FEATURES.items() if f.kind != 'ignored'}


def categorical_ints() -> list:
  """Integer features that are ids, not quantities: statistics, skew and
  drift treat them as categories (L-infinity distance, value histograms)."""
  return [n for n, f in RAW_FEATURES.items() if f.kind == 'categorical']


def csv_columns() -> list:
  """Columns of a training CSV: the raw features, then the training-only
  columns and the label column."""
  return list(RAW_FEATURES) + label_columns()


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
