"""InfraValidator semantics without Docker: does the candidate model really
serve?

check_model() serves the candidate as version 1 of a model with the local
model server in a subprocess on free loopback ports (loaded the way TF
Serving's model management does it, by ModelService.HandleReloadConfigRequest),
waits until it is AVAILABLE, sends real requests over REST (predict on
serving_default with b64 examples, and on predict_raw if present) and gRPC
(Predict, and Classify and Regress on the signatures that have their method
names), checks that the answers are well-formed and finite,
and shuts the server down.

A server's start-up is mostly importing TensorFlow (about 4 s of one core).
start_standby() starts the server the next check will use ahead of need: the
local runner calls it as the first component really executes, so the start-up
runs on the other core while the pipeline works and the check itself only
loads the model.
"""

import base64
import os
import shutil
import subprocess
import tempfile
import time
from typing import List, NamedTuple, Optional

import grpc
import numpy as np
import requests

from serving.server_process import ServerProcess

MODEL_NAME = 'infra_check'
_EMPTY_CONFIG = 'model_config_list {}\n'


class InfraCheckResult(NamedTuple):
  ok: bool
  details: str


class _CheckFailed(Exception):
  pass


class _Server(NamedTuple):
  process: subprocess.Popen
  grpc_port: int
  rest_port: int
  workdir: str  # Its log, config file and the model it serves; removed with it.

  @property
  def rest(self) -> str:
    return f'http://127.0.0.1:{self.rest_port}/v1/models/{MODEL_NAME}'


_standby: Optional[_Server] = None


def start_standby() -> None:
  """Starts the server the next check_model() in this process will use."""
  global _standby
  if _standby is None or _standby.process.poll() is not None:
    _standby = _start_server()


def stop_standby() -> None:
  """Stops the standby server if no check used it (a cached or failed run)."""
  global _standby
  server, _standby = _standby, None
  if server is not None:
    _stop(server)


def _take_standby() -> Optional[_Server]:
  global _standby
  server, _standby = _standby, None
  if server is not None and server.process.poll() is not None:
    _stop(server)  # It died (its log is gone with it): start a fresh one.
    return None
  return server


def check_model(model_dir: str, examples: List[bytes], timeout_s: float = 120.0) -> InfraCheckResult:
  """Blesses model_dir (ok=True) if it loads and serves examples correctly."""
  if not examples:
    return InfraCheckResult(False, 'no examples to send')
  server = None
  try:
    server = _take_standby() or _start_server()
    deadline = time.monotonic() + timeout_s
    _load(server, model_dir, deadline)
    _wait_until_available(server, deadline)
    checks = _check_rest(server.rest, examples) + _check_grpc(
        f'127.0.0.1:{server.grpc_port}', examples, server.rest)
    return InfraCheckResult(True, '; '.join(checks))
  except _CheckFailed as e:
    return InfraCheckResult(False, str(e))
  except Exception as e:  # Anything unexpected refuses the model, with why.
    return InfraCheckResult(False, f'{type(e).__name__}: {e}')
  finally:
    if server is not None:
      _stop(server)


def _start_server() -> _Server:
  """A model server serving no model yet, with its own work folder."""
  workdir = tempfile.mkdtemp(prefix='infra_check_')
  config_file = os.path.join(workdir, 'models.config')
  with open(config_file, 'w') as f:
    f.write(_EMPTY_CONFIG)
  server = ServerProcess(f'--model_config_file={config_file}',
                         '--file_system_poll_wait_seconds=0', '--max_num_load_retries=0',
                         log_path=os.path.join(workdir, 'server.log'))
  return _Server(server.process, server.port, server.rest_port, workdir)


def _load(server: _Server, model_dir: str, deadline: float) -> None:
  """Copies the candidate in as version 1 and has the server load it."""
  from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
  base_path = os.path.join(server.workdir, MODEL_NAME)
  shutil.copytree(model_dir, os.path.join(base_path, '1'))
  request = model_management_pb2.ReloadConfigRequest()
  request.config.model_config_list.config.add(
      name=MODEL_NAME, base_path=base_path, model_platform='tensorflow')
  with grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}') as channel:
    _wait_until_listening(server, channel, deadline)
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    try:  # Answers once the model is loaded and warmed, or failed to be.
      response = stub.HandleReloadConfigRequest(
          request, timeout=max(deadline - time.monotonic(), 0.1))
    except grpc.RpcError as e:
      if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise _CheckFailed(f'model not loaded within the timeout: {_server_log(server)}')
      raise _CheckFailed(f'model failed to load: {e.code().name} {e.details()}')
  if response.status.error_code:
    raise _CheckFailed(f'model failed to load: {response.status.error_message}')


def _wait_until_listening(server: _Server, channel, deadline: float) -> None:
  """Waits for the server's gRPC port, a second at a time so that a server
  that died is reported at once."""
  while True:
    _check_running(server)
    try:
      grpc.channel_ready_future(channel).result(
          timeout=min(1.0, max(deadline - time.monotonic(), 0.1)))
      return
    except grpc.FutureTimeoutError:
      if time.monotonic() >= deadline:
        raise _CheckFailed(f'model server not up within the timeout: {_server_log(server)}')


def _check_running(server: _Server) -> None:
  if server.process.poll() is not None:
    raise _CheckFailed(f'model server exited with {server.process.returncode}:'
                       f' {_server_log(server)}')


def _server_log(server: _Server, lines=15) -> str:
  with open(os.path.join(server.workdir, 'server.log'), errors='replace') as f:
    return ' | '.join(line.strip() for line in f.readlines()[-lines:]
                      if 'cuda' not in line and 'TensorRT' not in line)


def _wait_until_available(server: _Server, deadline: float) -> None:
  while time.monotonic() < deadline:
    _check_running(server)
    try:
      status = requests.get(server.rest, timeout=2).json()['model_version_status'][0]
      if status['state'] == 'AVAILABLE':
        return
      if status['state'] == 'END':
        raise _CheckFailed(f'model failed to load: {status["status"]["error_message"]}')
    except (requests.ConnectionError, requests.Timeout, ValueError, KeyError, IndexError):
      pass  # Not listed yet.
    time.sleep(0.05)
  raise _CheckFailed(f'model not AVAILABLE within the timeout: {_server_log(server)}')


def _finite(values, what: str, count: int) -> None:
  array = np.asarray(values, dtype=np.float64)
  if array.shape[:1] != (count,):
    raise _CheckFailed(f'{what}: expected {count} answers, got shape {array.shape}')
  if not np.all(np.isfinite(array)):
    raise _CheckFailed(f'{what}: non-finite values {array.tolist()[:5]}')


def _numeric_outputs(outputs: dict) -> dict:
  return {k: v for k, v in outputs.items()
          if not (isinstance(v, list) and v and isinstance(np.ravel(v)[0], (str, dict)))}


def _post(url, body) -> dict:
  response = requests.post(url, json=body, timeout=30)
  if response.status_code != 200:
    raise _CheckFailed(f'REST {url.rsplit("/", 1)[-1]} {body.get("signature_name")}:'
                       f' HTTP {response.status_code} {response.text[:300]}')
  return response.json()


def _check_rest(rest: str, examples: List[bytes]) -> List[str]:
  signatures = requests.get(rest + '/metadata', timeout=10).json()[
      'metadata']['signature_def']['signature_def']
  b64 = [{'b64': base64.b64encode(e).decode()} for e in examples]
  outputs = _post(rest + ':predict', {'signature_name': 'serving_default', 'inputs': b64})['outputs']
  outputs = outputs if isinstance(outputs, dict) else {'output': outputs}
  for name, values in _numeric_outputs(outputs).items():
    _finite(values, f'REST predict serving_default {name}', len(examples))
  checks = [f'REST predict serving_default: {len(examples)} answers']
  if 'predict_raw' in signatures:
    raw = _raw_columns(examples, signatures['predict_raw']['inputs'])
    outputs = _post(rest + ':predict', {'signature_name': 'predict_raw', 'inputs': raw})['outputs']
    outputs = outputs if isinstance(outputs, dict) else {'output': outputs}
    for name, values in _numeric_outputs(outputs).items():
      _finite(values, f'REST predict predict_raw {name}', len(examples))
    checks.append('REST predict predict_raw: ok')
  return checks


def _raw_columns(examples: List[bytes], inputs: dict) -> dict:
  """Raw feature columns from the examples, for inputs every example has."""
  from tensorflow.core.example import example_pb2
  parsed = [example_pb2.Example.FromString(e).features.feature for e in examples]
  columns = {}
  for name in inputs:
    if all(name in f for f in parsed):
      values = [_first_value(f[name]) for f in parsed]
      if None not in values:
        columns[name] = values
  return columns


def _first_value(feature):
  kind = feature.WhichOneof('kind')
  values = getattr(feature, kind).value if kind else []
  if not values:
    return None
  value = values[0]
  return {'b64': base64.b64encode(value).decode()} if kind == 'bytes_list' else value


def _check_grpc(target: str, examples: List[bytes], rest: str) -> List[str]:
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
  signatures = requests.get(rest + '/metadata', timeout=10).json()[
      'metadata']['signature_def']['signature_def']
  input_name = next(iter(signatures['serving_default']['inputs']))
  with grpc.insecure_channel(target) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL_NAME, 'serving_default'
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(examples, tf.string))
    try:
      response = stub.Predict(request, timeout=30)
    except grpc.RpcError as e:
      raise _CheckFailed(f'gRPC Predict: {e.code().name} {e.details()}') from None
    for name, tensor in response.outputs.items():
      array = tf.make_ndarray(tensor)
      if array.dtype.kind in 'fiub':
        _finite(array, f'gRPC Predict {name}', len(examples))
    checks = [f'gRPC Predict: {len(examples)} answers']
    return checks + [_check_classify(stub, signatures, examples),
                     _check_regress(stub, signatures, examples)]


def _signature_of(signatures: dict, method: str) -> Optional[str]:
  """The first signature TF Serving's Classify or Regress API would accept."""
  return next((k for k, v in sorted(signatures.items())
               if v['method_name'] == f'tensorflow/serving/{method}'), None)


def _example_input(request, examples: List[bytes]) -> None:
  for example in examples:
    request.input.example_list.examples.add().ParseFromString(example)


def _check_classify(stub, signatures: dict, examples: List[bytes]) -> str:
  from tensorflow_serving.apis import classification_pb2
  signature = _signature_of(signatures, 'classify')
  if signature is None:  # A regression model has none.
    return 'gRPC Classify: no classification signature'
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name, request.model_spec.signature_name = MODEL_NAME, signature
  _example_input(request, examples)
  try:
    result = stub.Classify(request, timeout=30).result
  except grpc.RpcError as e:
    raise _CheckFailed(f'gRPC Classify: {e.code().name} {e.details()}') from None
  scores = [[c.score for c in row.classes] for row in result.classifications]
  _finite(scores, 'gRPC Classify scores', len(examples))
  return f'gRPC Classify ({signature}): {len(examples)} answers'


def _check_regress(stub, signatures: dict, examples: List[bytes]) -> str:
  from tensorflow_serving.apis import regression_pb2
  signature = _signature_of(signatures, 'regress')
  if signature is None:
    return 'gRPC Regress: no regression signature'
  request = regression_pb2.RegressionRequest()
  request.model_spec.name, request.model_spec.signature_name = MODEL_NAME, signature
  _example_input(request, examples)
  try:
    result = stub.Regress(request, timeout=30).result
  except grpc.RpcError as e:
    raise _CheckFailed(f'gRPC Regress: {e.code().name} {e.details()}') from None
  _finite([r.value for r in result.regressions], 'gRPC Regress outputs', len(examples))
  return f'gRPC Regress ({signature}): {len(examples)} answers'


def _stop(server: _Server) -> None:
  # Killed, not terminated: a check's server holds nothing that needs a
  # graceful shutdown, and the exit of a process with TF loaded takes seconds.
  server.process.kill()
  server.process.wait()
  shutil.rmtree(server.workdir, ignore_errors=True)
