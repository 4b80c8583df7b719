"""Every signature of the pushed SavedModel, called with real inputs."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from models import features
from models import signatures
from tests.conftest import sample_rows

DTYPES = {'float': tf.float32, 'int': tf.int64, 'string': tf.string}


@pytest.fixture(scope='module')
def loaded(pushed_version_dir):
  return tf.saved_model.load(pushed_version_dir)


@pytest.fixture(scope='module')
def rows():
  """Ten raw rows of the sample, as {feature: typed value or None}."""
  header, body = sample_rows()
  parsed = []
  for cells in body[:10]:
    row = {name: features.parse_value(name, cell) for name, cell in zip(header, cells)}
    row.pop(features.TIPS_KEY)
    parsed.append(row)
  return parsed


def to_example(row) -> bytes:
  feature = {}
  for name, value in row.items():
    if value is None:
      continue
    kind = features.RAW_FEATURES[name].dtype
    if kind == 'string':
      feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
    elif kind == 'int':
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    else:
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def to_raw_tensors(rows):
  """Columns for predict_raw; a missing cell takes the feature's default,
  which is what preprocessing fills in for a missing value."""
  columns = {}
  for name, spec in features.RAW_FEATURES.items():
    values = [spec.default if r[name] is None else r[name] for r in rows]
    columns[name] = tf.constant(values, DTYPES[spec.dtype])
  return columns


def test_serving_default_scores_examples(loaded, rows):
  out = loaded.signatures['serving_default'](
      examples=tf.constant([to_example(r) for r in rows]))
  probability = out['probability'].numpy()
  assert probability.shape == (10,)
  assert np.all((probability >= 0) & (probability <= 1))
  assert list(out['class'].numpy()) == [int(p > 0.5) for p in probability]


def test_raw_feature_signature_agrees_with_examples(loaded, rows):
  from_examples = loaded.signatures['serving_default'](
      examples=tf.constant([to_example(r) for r in rows]))['probability']
  from_raw = loaded.signatures['predict_raw'](**to_raw_tensors(rows))['probability']
  np.testing.assert_allclose(from_raw.numpy(), from_examples.numpy(), rtol=1e-5)


def test_raw_signature_allows_leaving_optional_features_out(loaded, rows):
  # TF Serving feeds an omitted input its SignatureDef default, an empty
  # tensor; called in-process, the default has to be passed explicitly.
  required = {n for n, s in features.RAW_FEATURES.items() if s.required}
  full = to_raw_tensors(rows)
  partial = {n: (t if n in required else t[:0]) for n, t in full.items()}
  out = loaded.signatures['predict_raw'](**partial)
  without = [{n: (v if n in required else None) for n, v in r.items()} for r in rows]
  expected = loaded.signatures['serving_default'](
      examples=tf.constant([to_example(r) for r in without]))
  np.testing.assert_allclose(out['probability'].numpy(),
                             expected['probability'].numpy(), rtol=1e-5)


def test_raw_signature_rejects_ragged_columns(loaded, rows):
  columns = to_raw_tensors(rows)
  columns['fare'] = columns['fare'][:3]
  with pytest.raises(tf.errors.InvalidArgumentError, match='one value per example'):
    loaded.signatures['predict_raw'](**columns)


def test_classification_and_regression_follow_tf_serving_conventions(loaded, rows):
  examples = tf.constant([to_example(r) for r in rows])
  probability = loaded.signatures['serving_default'](examples=examples)['probability']
  classified = loaded.signatures['classification'](inputs=examples)
  assert classified['classes'].numpy().tolist()[0] == [b'0', b'1']
  np.testing.assert_allclose(classified['scores'].numpy()[:, 1], probability, rtol=1e-6)
  np.testing.assert_allclose(classified['scores'].numpy().sum(axis=1), 1.0, rtol=1e-6)
  regressed = loaded.signatures['regression'](inputs=examples)['outputs']
  np.testing.assert_allclose(regressed, probability, rtol=1e-6)


def test_method_names_let_tf_serving_classify_and_regress(pushed_version_dir):
  saved_model = saved_model_pb2.SavedModel()
  with open(f'{pushed_version_dir}/saved_model.pb', 'rb') as f:
    saved_model.ParseFromString(f.read())
  defs = saved_model.meta_graphs[0].signature_def
  assert defs['classification'].method_name == signatures.CLASSIFY_METHOD
  assert defs['regression'].method_name == signatures.REGRESS_METHOD
  assert defs['serving_default'].method_name == 'tensorflow/serving/predict'
  # Every raw input may be omitted: TF Serving fills it from `defaults`.
  assert set(defs['predict_raw'].defaults) == set(features.RAW_FEATURES)
