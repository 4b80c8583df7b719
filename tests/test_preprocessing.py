"""preprocessing_fn run through tf.Transform on Beam, on a handful of rows."""

import math
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from models import features
from models import preprocessing

XF = features.transformed_name


def _raw_feature_spec():
  dtypes = {'float': tf.float32, 'int': tf.int64, 'string': tf.string}
  spec = {name: tf.io.VarLenFeature(dtypes[f.dtype])
          for name, f in features.RAW_FEATURES.items()}
  for column in features.label_columns():  # The taxi example's: tips, a float.
    spec[column] = tf.io.VarLenFeature(tf.float32)
  return spec


def _row(**values):
  """A raw instance as TFT's instance dicts hold it: a list per feature,
  empty where the CSV cell was empty."""
  row = {name: [] for name in features.csv_columns()}
  row.update({k: [v] for k, v in values.items()})
  return row


ROWS = [
    _row(fare=10.0, tips=3.0, payment_type='Credit Card', trip_start_hour=8,
         trip_start_day=2, trip_start_month=5, trip_miles=1.0, trip_seconds=300,
         company='A', pickup_latitude=41.9),
    _row(fare=20.0, tips=0.0, payment_type='Cash', trip_start_hour=23,
         trip_start_day=7, trip_start_month=12, trip_miles=3.0, trip_seconds=900,
         pickup_latitude=41.8),
    _row(fare=0.0, tips=1.0, payment_type='Cash', trip_start_hour=30,  # bad hour
         trip_start_day=1, trip_start_month=1, trip_miles=0.0, company='A'),
]


@pytest.fixture(scope='module')
def transformed():
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(_raw_feature_spec()))
  with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
    (data, _), _ = (ROWS, metadata) | tft_beam.AnalyzeAndTransformDataset(
        preprocessing.preprocessing_fn)
  return data


def test_label_is_tip_over_twenty_percent_of_fare(transformed):
  # 3/10 > 0.2; 0/20 is not; any tip on a zero fare is.
  assert [r[features.LABEL_KEY] for r in transformed] == [1, 0, 1]


def test_hour_ids_pass_through_and_out_of_range_maps_to_zero(transformed):
  assert [r[XF('trip_start_hour')] for r in transformed] == [8, 23, 0]


def test_missing_values_take_the_feature_default(transformed):
  # Row 3 has no pickup area: default 0. Row 3 has no trip_seconds: log1p(0).
  assert transformed[2][XF('pickup_community_area')] == 0
  seconds = np.log1p([300.0, 900.0, 0.0])
  expected = (seconds[2] - seconds.mean()) / seconds.std()
  assert transformed[2][XF('trip_seconds')] == pytest.approx(expected, rel=1e-4)


def test_fares_are_log_scaled_then_standardised(transformed):
  logs = np.log1p([10.0, 20.0, 0.0])
  expected = (logs - logs.mean()) / logs.std()
  got = [r[XF('fare')] for r in transformed]
  assert got == pytest.approx(list(expected), rel=1e-4)


def test_vocabulary_ranks_values_by_frequency(transformed):
  # 'Cash' appears twice: id 0; 'Credit Card' once: id 1.
  assert [r[XF('payment_type')] for r in transformed] == [1, 0, 0]
  # company: 'A' -> 0. A missing company ('' after filling) is never in a
  # vocabulary, so it shares the out-of-vocabulary ids [1, 1 + OOV_BUCKETS).
  companies = [r[XF('company')] for r in transformed]
  assert companies[0] == companies[2] == 0
  assert 1 <= companies[1] < 1 + features.OOV_BUCKETS


def test_every_model_feature_is_produced(transformed):
  expected = {XF(n) for n in features.model_features()} | {features.LABEL_KEY}
  assert set(transformed[0]) == expected
  assert not any(math.isnan(v) for r in transformed for v in r.values()
                 if isinstance(v, float))
