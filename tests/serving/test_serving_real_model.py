"""The real model (one pipeline run on the selected example, tests/conftest.py)
served by the local server over REST and gRPC: every signature, the clients
and the infra check, all checked against the model called in-process.

The tests marked example('taxi') check a binary classifier's outputs
(`probability`, `class` 0/1, the labels '0' and '1'): the taxi model's."""

import base64
import concurrent.futures
import itertools
import os
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

import examples
from conftest import REAL_MODEL_NAME, push, start_server
from models import features
from pipeline import configs
from client import predict as serving_client
from pipeline.components.infra_check import check_model

MODEL = REAL_MODEL_NAME
# The selected example's shipped data, as tests/conftest.py's SHIPPED_CSV.
CSV_PATH = os.path.join(configs.REPO_ROOT, examples.selected().CONFIG_DEFAULTS.get(
    'data_root', configs.PipelineConfig.data_root), 'span-1', 'data.csv')
SIGNATURES = {'serving_default': 'tensorflow/serving/predict',
              'classification': 'tensorflow/serving/classify',
              'regression': 'tensorflow/serving/regress',
              'predict_raw': 'tensorflow/serving/predict',
              'transform_features': 'tensorflow/serving/predict'}
REQUIRED = [n for n, f in features.RAW_FEATURES.items() if f.required]
TOLERANCE = 1e-5


def csv_rows(count=40):
  with open(CSV_PATH) as f:
    return list(itertools.islice(serving_client.rows_from_csv(f), count))


@pytest.fixture(scope='module')
def rows():
  return csv_rows()


@pytest.fixture(scope='module')
def in_process(real_version_dir):
  """Probabilities from the model's serving_default called in this process."""
  predict = tf.saved_model.load(real_version_dir).signatures['serving_default']

  def probabilities(rows):
    examples = tf.constant([serving_client.to_example(r) for r in rows])
    return predict(examples=examples)['probability'].numpy()
  return probabilities


@pytest.fixture(scope='module')
def version(real_version_dir):
  return int(os.path.basename(real_version_dir.rstrip('/')))


@pytest.fixture(scope='module')
def stub(real_server):
  return prediction_service_pb2_grpc.PredictionServiceStub(real_server.channel)


def post(server, body, method='predict'):
  response = requests.post(f'{server.rest}/v1/models/{MODEL}:{method}', json=body, timeout=30)
  assert response.status_code == 200, response.text
  return response.json()


def required_only(rows):
  """Every row without its optional features (the model fills defaults)."""
  return [{k: r[k] for k in REQUIRED} for r in rows]


def b64(example: bytes) -> dict:
  return {'b64': base64.b64encode(example).decode()}


# ---- REST ---------------------------------------------------------------------------

@pytest.mark.example('taxi')
def test_rest_predict_raw_rows_with_optional_features_omitted(real_server, rows, in_process):
  partial = required_only(rows)
  body = post(real_server, {'signature_name': 'predict_raw', 'instances': partial})
  got = np.array([p['probability'] for p in body['predictions']])
  np.testing.assert_allclose(got, in_process(partial), atol=TOLERANCE)
  assert [p['class'] for p in body['predictions']] == [int(p > 0.5) for p in got]
  assert len(set(np.round(got, 4))) > 1  # Rows really differ.


@pytest.mark.example('taxi')
def test_rest_predict_raw_columns(real_server, rows, in_process):
  partial = required_only(rows[:5])
  columns = {k: [r[k] for r in partial] for k in REQUIRED}
  body = post(real_server, {'signature_name': 'predict_raw', 'inputs': columns})
  np.testing.assert_allclose(body['outputs']['probability'], in_process(partial), atol=TOLERANCE)


@pytest.mark.example('taxi')
def test_rest_predict_b64_examples_on_serving_default(real_server, rows, in_process):
  instances = [b64(serving_client.to_example(r)) for r in rows]
  body = post(real_server, {'instances': instances})  # serving_default by default.
  got = [p['probability'] for p in body['predictions']]
  np.testing.assert_allclose(got, in_process(rows), atol=TOLERANCE)
  body = post(real_server, {'signature_name': 'serving_default', 'inputs': instances[:3]})
  np.testing.assert_allclose(body['outputs']['probability'], in_process(rows[:3]),
                             atol=TOLERANCE)


@pytest.mark.example('taxi')
def test_rest_classify_and_regress_with_json_examples(real_server, rows, in_process):
  examples = [serving_client.typed_row(r) for r in rows]
  expected = in_process(rows)
  results = post(real_server, {'signature_name': 'classification', 'examples': examples},
                 'classify')['results']
  assert [[label for label, _ in r] for r in results] == [['0', '1']] * len(rows)
  np.testing.assert_allclose([r[1][1] for r in results], expected, atol=TOLERANCE)
  np.testing.assert_allclose([r[0][1] for r in results], 1 - expected, atol=TOLERANCE)
  results = post(real_server, {'signature_name': 'regression', 'examples': examples},
                 'regress')['results']
  np.testing.assert_allclose(results, expected, atol=TOLERANCE)
  # A context holds the features all examples share.
  context = {k: examples[0][k] for k in ('trip_start_month', 'payment_type')}
  own = [{k: v for k, v in e.items() if k not in context} for e in examples[:1]]
  results = post(real_server, {'signature_name': 'regression', 'context': context,
                               'examples': own}, 'regress')['results']
  np.testing.assert_allclose(results, expected[:1], atol=TOLERANCE)


def test_rest_bad_raw_input_is_a_400(real_server):
  first, second = [n for n, f in features.RAW_FEATURES.items() if f.dtype == 'float'][:2]
  response = requests.post(
      f'{real_server.rest}/v1/models/{MODEL}:predict', timeout=30,
      json={'signature_name': 'predict_raw', 'inputs': {first: [1.0, 2.0], second: [1.0]}})
  assert response.status_code == 400
  assert 'one value per example' in response.json()['error']
  response = requests.post(
      f'{real_server.rest}/v1/models/{MODEL}:predict', timeout=30,
      json={'signature_name': 'predict_raw', 'instances': [{first: 'cheap'}]})
  assert response.status_code == 400


@pytest.mark.example('taxi')
def test_metadata_shows_all_signatures(real_server, stub, version):
  body = requests.get(f'{real_server.rest}/v1/models/{MODEL}/metadata', timeout=30).json()
  assert body['model_spec']['version'] == str(version)
  signatures = body['metadata']['signature_def']['signature_def']
  assert {k: v['method_name'] for k, v in signatures.items()
          if not k.startswith('__')} == SIGNATURES
  assert set(signatures['predict_raw']['inputs']) == set(features.RAW_FEATURES)
  assert set(signatures['serving_default']['outputs']) == {'probability', 'class'}

  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
  request.model_spec.name = MODEL
  response = stub.GetModelMetadata(request, timeout=30)
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata['signature_def'].Unpack(signature_map)
  assert SIGNATURES.items() <= {k: v.method_name
                                for k, v in signature_map.signature_def.items()}.items()
  assert set(signature_map.signature_def['predict_raw'].defaults) == set(features.RAW_FEATURES)


# ---- gRPC ---------------------------------------------------------------------------

@pytest.mark.example('taxi')
def test_grpc_predict_examples_and_raw(stub, rows, in_process, version):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.inputs['examples'].CopyFrom(tf.make_tensor_proto(
      [serving_client.to_example(r) for r in rows], tf.string))
  response = stub.Predict(request, timeout=30)
  assert response.model_spec.version.value == version
  assert response.model_spec.signature_name == 'serving_default'
  probability = tf.make_ndarray(response.outputs['probability'])
  np.testing.assert_allclose(probability, in_process(rows), atol=TOLERANCE)
  np.testing.assert_array_equal(tf.make_ndarray(response.outputs['class']), probability > 0.5)

  partial = required_only(rows)
  request = predict_pb2.PredictRequest(output_filter=['probability'])
  request.model_spec.name, request.model_spec.signature_name = MODEL, 'predict_raw'
  dtypes = {'float': np.float32, 'int': np.int64, 'string': object}
  for name in REQUIRED:
    values = [r[name] for r in partial]
    kind = features.RAW_FEATURES[name].dtype
    array = (np.array([v.encode() for v in values], object) if kind == 'string'
             else np.array(values, dtypes[kind]))
    request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
  response = stub.Predict(request, timeout=30)
  assert set(response.outputs) == {'probability'}
  np.testing.assert_allclose(tf.make_ndarray(response.outputs['probability']),
                             in_process(partial), atol=TOLERANCE)


@pytest.mark.example('taxi')
def test_grpc_classify_and_regress(stub, rows, in_process, version):
  expected = in_process(rows)
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name, request.model_spec.signature_name = MODEL, 'classification'
  for row in rows:
    request.input.example_list.examples.add().ParseFromString(serving_client.to_example(row))
  response = stub.Classify(request, timeout=30)
  assert response.model_spec.version.value == version
  classes = response.result.classifications
  assert [[c.label for c in r.classes] for r in classes] == [['0', '1']] * len(rows)
  np.testing.assert_allclose([r.classes[1].score for r in classes], expected, atol=TOLERANCE)

  request = regression_pb2.RegressionRequest()
  request.model_spec.name, request.model_spec.signature_name = MODEL, 'regression'
  request.input.CopyFrom(request.input.__class__())
  for row in rows:
    request.input.example_list.examples.add().ParseFromString(serving_client.to_example(row))
  response = stub.Regress(request, timeout=30)
  np.testing.assert_allclose([r.value for r in response.result.regressions], expected,
                             atol=TOLERANCE)


def test_grpc_wrong_method_is_refused(stub, rows):
  request = regression_pb2.RegressionRequest()
  request.model_spec.name, request.model_spec.signature_name = MODEL, 'classification'
  request.input.example_list.examples.add().ParseFromString(serving_client.to_example(rows[0]))
  with pytest.raises(grpc.RpcError) as error:
    stub.Regress(request, timeout=30)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---- Clients and infra check ----------------------------------------------------------

@pytest.mark.example('taxi')
@pytest.mark.parametrize('transport', ['rest', 'grpc'])
@pytest.mark.parametrize('signature', ['predict_raw', 'serving_default', 'classification'])
def test_client_matches_in_process_model(real_server, rows, in_process, transport, signature):
  if transport == 'rest':
    client = serving_client.RestClient(real_server.rest, timeout_s=30)
  else:
    client = serving_client.GrpcClient(real_server.grpc_target, timeout_s=30)
  try:
    call = client.classify if signature == 'classification' else client.predict
    got = call(rows, signature)
  finally:
    client.close()
  expected = in_process(rows)
  np.testing.assert_allclose([p['probability'] for p in got], expected, atol=TOLERANCE)
  assert [p['class'] for p in got] == [int(p > 0.5) for p in expected]


def test_infra_check_blesses_the_real_model(real_version_dir, rows):
  examples = [serving_client.to_example(r) for r in rows[:8]]
  result = check_model(real_version_dir, examples, timeout_s=180)
  assert result.ok, result.details
  assert 'predict_raw' in result.details
  if features.TASK != features.REGRESSION:  # A regression model has no classification signature.
    assert 'gRPC Classify (classification)' in result.details


# ---- A new version pushed under load ------------------------------------------------------

def test_real_push_under_load_fails_no_request(tmp_path, real_version_dir, version, rows):
  """The pipeline pushes the next version (copy to .N.incomplete, rename)
  while gRPC and REST requests run: none fails, and once the old version is
  unloaded every later request is answered by the new one."""
  base = tmp_path / MODEL
  push(real_version_dir, base, version)
  server = start_server('--file_system_poll_wait_seconds=1', '--enable_batching',
                        base_path=str(base), model_name=MODEL)
  stop, failures, seen, lock = threading.Event(), [], [], threading.Lock()
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL
  request.inputs['examples'].CopyFrom(tf.make_tensor_proto(
      [serving_client.to_example(rows[0])], tf.string))
  rest_body = {'instances': [b64(serving_client.to_example(rows[0]))]}

  def grpc_load():
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    while not stop.is_set():
      try:
        answered = stub.Predict(request, timeout=30).model_spec.version.value
        with lock:
          seen.append(answered)
      except grpc.RpcError as e:
        failures.append(f'{e.code()}: {e.details()}')

  def rest_load():
    with requests.Session() as session:
      while not stop.is_set():
        response = session.post(f'{server.rest}/v1/models/{MODEL}:predict', json=rest_body,
                                timeout=30)
        if response.status_code != 200:
          failures.append(response.text)

  def status():
    body = requests.get(f'{server.rest}/v1/models/{MODEL}', timeout=10).json()
    return {int(s['version']): s['state'] for s in body['model_version_status']}

  try:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      workers = [pool.submit(grpc_load) for _ in range(2)] + [pool.submit(rest_load)
                                                             for _ in range(2)]
      time.sleep(0.5)
      push(real_version_dir, base, version + 1)
      deadline = time.monotonic() + 90
      while status().get(version) != 'END' and time.monotonic() < deadline:
        time.sleep(0.1)
      with lock:
        at_switch = len(seen)
      while len(seen) < at_switch + 20 and time.monotonic() < deadline:
        time.sleep(0.05)
      stop.set()
      for worker in workers:
        worker.result()
    assert failures == []
    assert status() == {version + 1: 'AVAILABLE', version: 'END'}
    assert set(seen) == {version, version + 1}
    assert set(seen[at_switch + 2:]) == {version + 1}  # 2 gRPC calls may have been in flight.
    assert not any(name.endswith('.incomplete') for name in os.listdir(base))
  finally:
    server.close()
