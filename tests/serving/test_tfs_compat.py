"""`python -m serving.server` held to TF Serving's own integration tests
(tensorflow_serving/model_servers/tensorflow_model_server_test.py): the
server runs as a subprocess with tensorflow_model_server's flags, on models
written the ways TF Serving's test models are (tfs_models.py), and answers
are checked field by field against what that test expects."""

import os
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2,
                                     model_management_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

import tfs_models
from conftest import start_server
from serving import server_process

pytestmark = pytest.mark.slow  # Subprocess servers.

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
RPC_TIMEOUT = 10


def server_env():
  return dict(os.environ, PYTHONPATH=REPO, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='3')


class ServerProcess(server_process.ServerProcess):
  """tensorflow_model_server's command line, run as `python -m serving.server`."""

  def __init__(self, *flags):
    super().__init__('--rest_api_timeout_in_ms=5000', *flags, env=server_env())
    self.channel = grpc.insecure_channel(self.grpc_target)
    self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)

  def wait_until_ready(self, timeout_s=180):
    """TF Serving's WaitForServerReady: a Predict for a missing model
    answers 'Servable not found' once the server serves."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'intentionally_missing_model'
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      self.check_running()
      try:
        self.stub.Predict(request, timeout=RPC_TIMEOUT)
      except grpc.RpcError as error:
        if 'Servable' in (error.details() or ''):
          return self
      time.sleep(0.5)
    raise AssertionError(f'server not ready in time:\n{self.log_tail()}')

  def close(self):
    self.channel.close()
    self.stop()


def model_config(models):
  entries = ''.join(f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
                    for name, path in models.items())
  return f'model_config_list {{\n{entries}}}\n'


@pytest.fixture(scope='module')
def bases(tmp_path_factory):
  root = tmp_path_factory.mktemp('tfs_models')
  tfs_models.save_half_plus_two(str(root / 'half_plus_two'))  # In 00000123.
  tfs_models.save_half_plus_three(str(root / 'half_plus_three'))  # In 00000123.
  tfs_models.save_tf2_half_plus_two(str(root / 'tf2'))  # In 123.
  tfs_models.save_keras_half_plus_two(str(root / 'keras'))  # In 1.
  return {name: str(root / name) for name in ('half_plus_two', 'half_plus_three', 'tf2', 'keras')}


@pytest.fixture(scope='module')
def tfs(tmp_path_factory, bases):
  """One server for the module: TF Serving's good_model_config (half_plus_two
  and half_plus_three) plus the TF2 and Keras models, gRPC also on a socket."""
  conf = tmp_path_factory.mktemp('tfs_conf')
  (conf / 'good_model_config.conf').write_text(model_config(bases))
  server = ServerProcess(f'--model_config_file={conf / "good_model_config.conf"}',
                         f'--grpc_socket_path={conf / "grpc.sock"}')
  server.socket_path = str(conf / 'grpc.sock')
  try:
    yield server.wait_until_ready()
  finally:
    server.close()


def predict_request(model_name, specify_output=True, signature=''):
  """TF Serving's VerifyPredictRequest: x = [2.0] of shape [1], by float_val."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature
  request.inputs['x'].dtype = types_pb2.DT_FLOAT
  request.inputs['x'].float_val.append(2.0)
  request.inputs['x'].tensor_shape.dim.add().size = 1
  if specify_output:
    request.output_filter.append('y')
  return request


def assert_model_spec(spec, name, signature_name, version):
  assert (spec.name, spec.signature_name, spec.version.value) == (name, signature_name, version)


# ---- gRPC PredictionService ------------------------------------------------------

@pytest.mark.parametrize('model, expected, version', [
    ('half_plus_two', 3.0, 123), ('half_plus_three', 4.0, 123), ('tf2', 3.0, 123)])
@pytest.mark.parametrize('specify_output', [True, False])
def test_predict(tfs, model, expected, version, specify_output):
  result = tfs.stub.Predict(predict_request(model, specify_output), RPC_TIMEOUT)
  assert list(result.outputs) == ['y']
  assert result.outputs['y'].dtype == types_pb2.DT_FLOAT
  assert list(result.outputs['y'].float_val) == [expected]  # Typed field, as TF Serving.
  assert not result.outputs['y'].tensor_content
  assert [d.size for d in result.outputs['y'].tensor_shape.dim] == [1]
  assert_model_spec(result.model_spec, model, 'serving_default', version)


def test_predict_second_signature_of_tf2_model(tfs):
  result = tfs.stub.Predict(predict_request('tf2', signature='plus_three'), RPC_TIMEOUT)
  assert list(result.outputs['y'].float_val) == [4.0]
  assert_model_spec(result.model_spec, 'tf2', 'plus_three', 123)


def test_predict_keras_model(tfs):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = 'keras'
  request.inputs['dense_input'].CopyFrom(tf.make_tensor_proto(np.array([[2.0], [4.0]], np.float32)))
  result = tfs.stub.Predict(request, RPC_TIMEOUT)
  assert list(result.outputs['dense'].float_val) == [3.0, 4.0]
  assert [d.size for d in result.outputs['dense'].tensor_shape.dim] == [2, 1]
  assert_model_spec(result.model_spec, 'keras', 'serving_default', 1)


def _x_is_2(request, signature_name=''):
  """The request with one tf.Example, x = 2.0 (half_plus_two: y = 3.0), as
  TF Serving's tests send it."""
  if signature_name:
    request.model_spec.name = 'half_plus_two'
    request.model_spec.signature_name = signature_name
  request.input.example_list.examples.add().features.feature['x'].float_list.value.extend([2.0])
  return request


def test_classify(tfs):
  request = _x_is_2(classification_pb2.ClassificationRequest(), 'classify_x_to_y')
  result = tfs.stub.Classify(request, RPC_TIMEOUT)
  assert len(result.result.classifications) == 1
  assert len(result.result.classifications[0].classes) == 1
  assert result.result.classifications[0].classes[0].score == 3.0
  assert result.result.classifications[0].classes[0].label == ''
  assert_model_spec(result.model_spec, 'half_plus_two', 'classify_x_to_y', 123)


def test_regress(tfs):
  request = _x_is_2(regression_pb2.RegressionRequest(), 'regress_x_to_y')
  result = tfs.stub.Regress(request, RPC_TIMEOUT)
  assert [r.value for r in result.result.regressions] == [3.0]
  assert_model_spec(result.model_spec, 'half_plus_two', 'regress_x_to_y', 123)


def test_multi_inference(tfs):
  request = inference_pb2.MultiInferenceRequest()
  for signature, method in (('regress_x_to_y', 'tensorflow/serving/regress'),
                            ('classify_x_to_y', 'tensorflow/serving/classify')):
    task = request.tasks.add(method_name=method)
    task.model_spec.name, task.model_spec.signature_name = 'half_plus_two', signature
  _x_is_2(request)
  result = tfs.stub.MultiInference(request, RPC_TIMEOUT)
  assert len(result.results) == 2
  assert result.results[0].regression_result.regressions[0].value == 3.0
  assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
  for i, signature in enumerate(('regress_x_to_y', 'classify_x_to_y')):
    assert_model_spec(result.results[i].model_spec, 'half_plus_two', signature, 123)


def test_get_model_metadata(tfs):
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
  request.model_spec.name = 'half_plus_two'
  result = tfs.stub.GetModelMetadata(request, RPC_TIMEOUT)
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  result.metadata['signature_def'].Unpack(signature_map)
  assert set(signature_map.signature_def) == {
      'serving_default', 'regress_x_to_y', 'regress_x_to_y2', 'classify_x_to_y'}
  assert signature_map.signature_def['serving_default'].inputs['x'].dtype == types_pb2.DT_FLOAT
  assert_model_spec(result.model_spec, 'half_plus_two', '', 123)


def test_grpc_on_the_unix_socket(tfs):
  with grpc.insecure_channel(f'unix:{tfs.socket_path}') as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    result = stub.Predict(predict_request('half_plus_two'), RPC_TIMEOUT)
  assert list(result.outputs['y'].float_val) == [3.0]


# ---- gRPC ModelService -------------------------------------------------------------

def test_get_model_status_of_zero_padded_version(tfs):
  """`00000123` on disk is version 123, AVAILABLE."""
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = 'half_plus_two'
  result = tfs.model_stub.GetModelStatus(request, RPC_TIMEOUT)
  assert len(result.model_version_status) == 1
  assert result.model_version_status[0].version == 123
  assert result.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
  assert result.model_version_status[0].status.error_code == 0


# ---- REST ------------------------------------------------------------------------

@pytest.mark.parametrize('path, body, expected', [
    (':classify', {'signature_name': 'classify_x_to_y', 'examples': [{'x': 2.0}]},
     {'results': [[['', 3.0]]]}),
    (':regress', {'signature_name': 'regress_x_to_y', 'examples': [{'x': 2.0}]},
     {'results': [3.0]}),
    (':predict', {'instances': [2.0, 3.0, 4.0]}, {'predictions': [3.0, 3.5, 4.0]}),
    (':predict', {'inputs': [2.0, 3.0, 4.0]}, {'outputs': [3.0, 3.5, 4.0]}),
])
def test_rest(tfs, path, body, expected):
  response = requests.post(f'{tfs.rest}/v1/models/half_plus_two{path}', json=body, timeout=10)
  assert response.status_code == 200, response.text
  assert response.json() == expected


def test_rest_predict_unshaped_model(tfs):
  response = requests.post(f'{tfs.rest}/v1/models/half_plus_three:predict',
                           json={'instances': [2.0, 3.0, 4.0]}, timeout=10)
  assert response.json() == {'predictions': [4.0, 4.5, 5.0]}


def test_rest_status(tfs):
  response = requests.get(f'{tfs.rest}/v1/models/half_plus_two', timeout=10)
  assert response.json() == {'model_version_status': [{
      'version': '123', 'state': 'AVAILABLE',
      'status': {'error_code': 'OK', 'error_message': ''}}]}


def test_rest_metadata(tfs):
  body = requests.get(f'{tfs.rest}/v1/models/half_plus_two/metadata', timeout=10).json()
  assert body['model_spec'] == {'name': 'half_plus_two', 'signature_name': '', 'version': '123'}
  assert set(body['metadata']['signature_def']['signature_def']) == {
      'serving_default', 'regress_x_to_y', 'regress_x_to_y2', 'classify_x_to_y'}


# ---- Bad requests: INVALID_ARGUMENT (or RESOURCE_EXHAUSTED), never INTERNAL ----------

def tensor(dtype, dims, **values):
  shape = tensor_shape_pb2.TensorShapeProto(
      dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
  return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **values)


@pytest.mark.parametrize('x, code, message', [
    (tensor(types_pb2.DT_RESOURCE, [1]), grpc.StatusCode.INVALID_ARGUMENT, 'DT_RESOURCE'),
    (tensor(types_pb2.DT_VARIANT, [1]), grpc.StatusCode.INVALID_ARGUMENT, 'DT_VARIANT'),
    (tensor(types_pb2.DT_FLOAT, [2**40], float_val=[1.0]), grpc.StatusCode.RESOURCE_EXHAUSTED,
     'memory'),
    (tensor(types_pb2.DT_FLOAT, [1] * 33, float_val=[1.0]), grpc.StatusCode.INVALID_ARGUMENT,
     'rank 33'),
    (tensor(types_pb2.DT_FLOAT, [-1], float_val=[1.0]), grpc.StatusCode.INVALID_ARGUMENT,
     'negative'),
    (tensor(types_pb2.DT_STRING, [1], string_val=[b'a']), grpc.StatusCode.INVALID_ARGUMENT,
     'to be float'),
])
def test_bad_tensors_are_client_errors(tfs, x, code, message):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = 'half_plus_two'
  request.inputs['x'].CopyFrom(x)
  with pytest.raises(grpc.RpcError) as error:
    tfs.stub.Predict(request, RPC_TIMEOUT)
  assert error.value.code() == code
  assert message in error.value.details()


def test_shape_the_graph_rejects_is_invalid_argument(tfs):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = 'keras'
  request.inputs['dense_input'].CopyFrom(tf.make_tensor_proto(np.ones([1, 3], np.float32)))
  with pytest.raises(grpc.RpcError) as error:
    tfs.stub.Predict(request, RPC_TIMEOUT)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_empty_model_name_is_invalid_argument(tfs):
  with pytest.raises(grpc.RpcError) as error:
    tfs.stub.Predict(predict_request(''), RPC_TIMEOUT)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert error.value.details() == 'ModelSpec has no name specified.'


# ---- Start-up and reload -----------------------------------------------------------

def test_reload_config_swaps_one_model_for_another(tmp_path, bases):
  (tmp_path / 'models.config').write_text(model_config({'half_plus_two': bases['half_plus_two']}))
  server = ServerProcess(f'--model_config_file={tmp_path / "models.config"}')
  try:
    server.wait_until_ready()
    request = model_management_pb2.ReloadConfigRequest()
    config = request.config.model_config_list.config.add(
        name='half_plus_three', base_path=bases['half_plus_three'], model_platform='tensorflow')
    assert config.name == 'half_plus_three'
    response = server.model_stub.HandleReloadConfigRequest(request, 60)
    assert response.status.error_code == 0
    result = server.stub.Predict(predict_request('half_plus_three'), RPC_TIMEOUT)
    assert list(result.outputs['y'].float_val) == [4.0]
    with pytest.raises(grpc.RpcError) as error:
      server.stub.Predict(predict_request('half_plus_two'), RPC_TIMEOUT)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
  finally:
    server.close()


def run_to_exit(*flags):
  proc = subprocess.run([sys.executable, '-m', 'serving.server', '--port=0', *flags],
                        env=server_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
  return proc.returncode, proc.stderr


def test_bad_model_config_fails_to_start(tmp_path):
  """TF Serving's testBadModelConfig (bad_model_config.txt), plus its exit code."""
  bad = tmp_path / 'bad_model_config.txt'
  bad.write_text('improperly formatted file\n')
  code, stderr = run_to_exit(f'--model_config_file={bad}')
  assert code == 255
  assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{bad}'" in stderr
  assert 'Error parsing text-format tensorflow.serving.ModelServerConfig' in stderr
  assert 'Traceback' not in stderr


def test_model_that_cannot_load_fails_to_start(tmp_path):
  (tmp_path / 'broken' / '1').mkdir(parents=True)
  (tmp_path / 'broken' / '1' / 'saved_model.pb').write_bytes(b'not a model')
  code, stderr = run_to_exit('--model_name=broken', f'--model_base_path={tmp_path / "broken"}',
                             '--max_num_load_retries=0')
  assert code == 255
  assert ('Failed to start server. Error: UNKNOWN: 1 model(s) did not become available:'
          ' {{{name: broken version: 1} due to error: ') in stderr
  assert 'Traceback' not in stderr


def test_tensor_content_flag(tmp_path, bases):
  server = start_server('--enable_serialization_as_tensor_content=true',
                        base_path=bases['half_plus_two'], model_name='half_plus_two')
  try:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    result = stub.Predict(predict_request('half_plus_two'), RPC_TIMEOUT)
  finally:
    server.close()
  assert not result.outputs['y'].float_val
  assert tf.make_ndarray(result.outputs['y']).tolist() == [3.0]
  assert result.outputs['y'].tensor_content == np.float32([3.0]).tobytes()
