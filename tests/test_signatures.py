"""Every signature of the pushed SavedModel, called with real inputs, and the
pushed model's warmup file replayed by the local server.

All but the schema test need the session's real pipeline run (slow)."""

import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest
import requests
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from models import features
from models import signatures
from pipeline import configs, project
from pipeline.components import infra_validator
from tests.conftest import REPO, required_features, sample_rows

DTYPES = {'float': tf.float32, 'int': tf.int64, 'string': tf.string}
CONFIG = configs.load(environ={})
SCHEMA = tfdv.load_schema_text(CONFIG.path(CONFIG.schema_file))
# The features every request must carry (models/features.py), in the
# schema's order: the order the model's errors name them in.
REQUIRED = [f.name for f in SCHEMA.feature if f.name in required_features()]
PREDICTION = features.PREDICTION_KEY  # What the Evaluator reads of serving_default.
MODEL = project.MODEL_NAME


@pytest.fixture(scope='module')
def loaded(pushed_version_dir):
  return tf.saved_model.load(pushed_version_dir)


@pytest.fixture(scope='module')
def rows():
  """Ten raw rows of the sample, as {feature: typed value or None}."""
  header, body = sample_rows()
  parsed = []
  for cells in body[:10]:
    # The raw features only: a serving request has no label columns.
    parsed.append({name: features.parse_value(name, cell) for name, cell in zip(header, cells)
                   if name in features.RAW_FEATURES})
  return parsed


def to_example(row) -> bytes:
  return features.to_example(row).SerializeToString()


def to_raw_tensors(rows):
  """Columns for predict_raw; a missing cell takes the feature's default,
  which is what preprocessing fills in for a missing value."""
  columns = {}
  for name, spec in features.RAW_FEATURES.items():
    values = [spec.default if r[name] is None else r[name] for r in rows]
    columns[name] = tf.constant(values, DTYPES[spec.dtype])
  return columns


def _check_outputs(out, n):
  """serving_default's outputs for n examples, as the task defines them."""
  if features.TASK == features.REGRESSION:
    assert set(out) == {features.OUTPUT_PREDICTION}
    prediction = out[features.OUTPUT_PREDICTION].numpy()
    assert prediction.shape == (n,) and np.all(np.isfinite(prediction))
    return
  assert set(out) == {PREDICTION, features.OUTPUT_CLASS}
  scores = out[PREDICTION].numpy()
  assert np.all((scores >= 0) & (scores <= 1))
  if features.TASK == features.BINARY:
    assert scores.shape == (n,)
    assert list(out[features.OUTPUT_CLASS].numpy()) == [int(p > 0.5) for p in scores]
  else:
    assert scores.shape == (n, features.NUM_CLASSES)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert [c.decode() for c in out[features.OUTPUT_CLASS].numpy()] == [
        features.CLASS_NAMES[i] for i in scores.argmax(axis=1)]


@pytest.mark.slow
def test_serving_default_scores_examples(loaded, rows):
  out = loaded.signatures['serving_default'](
      examples=tf.constant([to_example(r) for r in rows]))
  _check_outputs(out, len(rows))


@pytest.mark.slow
def test_raw_feature_signature_agrees_with_examples(loaded, rows):
  from_examples = loaded.signatures['serving_default'](
      examples=tf.constant([to_example(r) for r in rows]))[PREDICTION]
  from_raw = loaded.signatures['predict_raw'](**to_raw_tensors(rows))[PREDICTION]
  np.testing.assert_allclose(from_raw.numpy(), from_examples.numpy(), rtol=1e-5)


@pytest.mark.slow
def test_raw_signature_allows_leaving_optional_features_out(loaded, rows):
  # TF Serving feeds an omitted input its SignatureDef default, an empty
  # tensor; called in-process, the default has to be passed explicitly.
  required = set(REQUIRED)
  full = to_raw_tensors(rows)
  partial = {n: (t if n in required else t[:0]) for n, t in full.items()}
  out = loaded.signatures['predict_raw'](**partial)
  without = [{n: (v if n in required else None) for n, v in r.items()} for r in rows]
  expected = loaded.signatures['serving_default'](
      examples=tf.constant([to_example(r) for r in without]))
  np.testing.assert_allclose(out[PREDICTION].numpy(),
                             expected[PREDICTION].numpy(), rtol=1e-5)


@pytest.mark.slow
def test_raw_signature_rejects_ragged_columns(loaded, rows):
  columns = to_raw_tensors(rows)
  columns[REQUIRED[0]] = columns[REQUIRED[0]][:3]
  with pytest.raises(tf.errors.InvalidArgumentError, match='one value per example'):
    loaded.signatures['predict_raw'](**columns)


@pytest.mark.slow
def test_classification_and_regression_follow_tf_serving_conventions(loaded, rows):
  examples = tf.constant([to_example(r) for r in rows])
  predicted = loaded.signatures['serving_default'](examples=examples)[PREDICTION].numpy()
  regressed = loaded.signatures['regression'](inputs=examples)['outputs'].numpy()
  assert regressed.shape == (len(rows),)
  if features.TASK == features.REGRESSION:
    assert 'classification' not in loaded.signatures  # No classes to score.
    np.testing.assert_allclose(regressed, predicted, rtol=1e-6)
    return
  classified = loaded.signatures['classification'](inputs=examples)
  assert classified['classes'].numpy().tolist()[0] == [c.encode() for c in features.CLASS_NAMES]
  scores = classified['scores'].numpy()
  np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
  if features.TASK == features.BINARY:
    np.testing.assert_allclose(scores[:, 1], predicted, rtol=1e-6)  # P(class 1).
    np.testing.assert_allclose(regressed, predicted, rtol=1e-6)
  else:
    np.testing.assert_allclose(scores, predicted, rtol=1e-6)
    np.testing.assert_allclose(regressed, predicted.max(axis=1), rtol=1e-6)


@pytest.mark.slow
def test_method_names_let_tf_serving_classify_and_regress(pushed_version_dir):
  saved_model = saved_model_pb2.SavedModel()
  with open(f'{pushed_version_dir}/saved_model.pb', 'rb') as f:
    saved_model.ParseFromString(f.read())
  defs = saved_model.meta_graphs[0].signature_def
  if features.TASK != features.REGRESSION:
    assert defs['classification'].method_name == signatures.CLASSIFY_METHOD
  assert defs['regression'].method_name == signatures.REGRESS_METHOD
  assert defs['serving_default'].method_name == 'tensorflow/serving/predict'
  # Every raw input may be omitted: TF Serving fills it from `defaults`.
  assert set(defs['predict_raw'].defaults) == set(features.RAW_FEATURES)


def test_required_features_are_the_schemas_serving_requirements():
  assert signatures.required_features(SCHEMA) == REQUIRED
  assert set(REQUIRED) == set(required_features())
  # The label columns have presence 1.0 too, but not in the SERVING environment.
  assert not set(features.label_columns()) & set(REQUIRED)


@pytest.mark.slow
def test_raw_signature_refuses_a_request_without_required_features(loaded, rows):
  """Answering from defaults gave a confident 1.5e-27 for a 3-feature row."""
  columns = to_raw_tensors(rows)
  left_out = [REQUIRED[0], REQUIRED[-1]]
  for name in left_out:
    columns[name] = columns[name][:0]  # What TF Serving feeds for an omitted input.
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf'Missing required features .*: {", ".join(left_out)}\.'):
    loaded.signatures['predict_raw'](**columns)


@pytest.mark.slow
@pytest.mark.parametrize('signature,key', [
    ('serving_default', 'examples'),
    pytest.param('classification', 'inputs', marks=pytest.mark.skipif(
        features.TASK == features.REGRESSION, reason='a regression has no classes')),
    ('regression', 'inputs')])
def test_example_signatures_refuse_examples_without_required_features(loaded, rows,
                                                                       signature, key):
  left_out = REQUIRED[-2]
  examples = tf.constant([to_example(rows[0]), to_example(dict(rows[1], **{left_out: None}))])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf'Missing required features .*: {left_out}\.'):
    loaded.signatures[signature](**{key: examples})


# ---- The pushed model's warmup -------------------------------------------------------

def warmup_records(version_dir):
  path = os.path.join(version_dir, 'assets.extra', 'tf_serving_warmup_requests')
  return [prediction_log_pb2.PredictionLog.FromString(r)
          for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]


def signature_of(record) -> str:
  kind = record.WhichOneof('log_type')
  return getattr(record, kind).request.model_spec.signature_name


@pytest.mark.slow
def test_warmup_file_has_records_for_every_client_signature(pushed_version_dir):
  records = warmup_records(pushed_version_dir)
  kinds = {signature_of(r): r.WhichOneof('log_type') for r in records}
  expected = {'serving_default': 'predict_log', 'classification': 'classify_log',
              'regression': 'regress_log', 'predict_raw': 'predict_log'}
  if features.TASK == features.REGRESSION:
    del expected['classification']  # The model has none.
  assert kinds == expected
  assert set(kinds) == set(infra_validator.CLIENT_SIGNATURES)
  raw = [r.predict_log.request for r in records if signature_of(r) == 'predict_raw']
  assert all(set(REQUIRED) <= set(request.inputs) for request in raw)


@pytest.fixture(scope='module')
def served_copy(pushed_version_dir, tmp_path_factory):
  """The local model server, in a subprocess as users run it, on a copy of
  the pushed version; yields (REST url, path of its log)."""
  base = tmp_path_factory.mktemp('served') / MODEL
  shutil.copytree(pushed_version_dir, base / os.path.basename(pushed_version_dir))
  log_path = base.parent / 'server.log'
  grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', PYTHONPATH=str(REPO))
  with open(log_path, 'wb') as log:
    server = subprocess.Popen(
        [sys.executable, '-m', 'serving.server', f'--port={grpc_port}',
         f'--rest_api_port={rest_port}', f'--model_name={MODEL}',
         f'--model_base_path={base}'],
        cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT)
  url = f'http://127.0.0.1:{rest_port}/v1/models/{MODEL}'
  try:
    wait_until_available(server, url, log_path)
    yield url, log_path
  finally:
    server.kill()
    server.wait()


def wait_until_available(server, url, log_path, attempts=1200):
  for _ in range(attempts):
    assert server.poll() is None, log_path.read_text()[-3000:]
    try:
      states = [v['state'] for v in requests.get(url, timeout=2).json()['model_version_status']]
      if 'AVAILABLE' in states:
        return
    except (requests.ConnectionError, requests.Timeout, ValueError, KeyError):
      pass  # Still starting.
    time.sleep(0.1)
  raise AssertionError(f'model not AVAILABLE: {log_path.read_text()[-3000:]}')


@pytest.mark.slow
def test_local_server_replays_every_warmup_record(served_copy, pushed_version_dir):
  _, log_path = served_copy
  counts = re.findall(r'Number of warmup records read: (\d+)', log_path.read_text())
  assert counts == [str(len(warmup_records(pushed_version_dir)))]


@pytest.mark.slow
def test_rest_predict_raw_without_a_required_feature_is_a_400_naming_it(served_copy, rows):
  url, _ = served_copy
  left_out = REQUIRED[0]
  instances = [{n: r[n] for n in REQUIRED if n != left_out} for r in rows[:3]]
  response = requests.post(url + ':predict', timeout=30,
                           json={'signature_name': 'predict_raw', 'instances': instances})
  assert response.status_code == 400, response.text
  assert f'Missing required features (left out of the request): {left_out}.' \
      in response.json()['error']


def test_predict_raw_warmup_request_sends_what_the_example_has():
  from tensorflow.core.protobuf import meta_graph_pb2
  signature_def = meta_graph_pb2.SignatureDef()
  *sent, left_out = list(features.RAW_FEATURES)[:3]
  for name in sent + [left_out]:
    signature_def.inputs[name].dtype = DTYPES[features.RAW_FEATURES[name].dtype].as_datatype_enum
  values = {'float': 7.5, 'int': 9, 'string': 'x'}
  row = {name: values[features.RAW_FEATURES[name].dtype] for name in sent}
  request = infra_validator.raw_request(to_example(dict(row, **{left_out: None})), signature_def)
  assert request.model_spec.signature_name == 'predict_raw'
  assert set(request.inputs) == set(sent)  # The one without a value is left out.
  for name in sent:
    dtype = DTYPES[features.RAW_FEATURES[name].dtype]
    assert request.inputs[name].dtype == dtype.as_datatype_enum, name
    expected = row[name].encode() if isinstance(row[name], str) else row[name]
    assert tf.make_ndarray(request.inputs[name]).tolist() == [expected], name
