"""InfraValidator semantics without Docker: does the candidate model really
serve?

check_model() starts the local model server in a subprocess on free
loopback ports, with a temporary base path holding the candidate as version
1, waits until it is AVAILABLE, sends real requests over REST (predict on
serving_default with b64 examples, and on predict_raw if present) and gRPC
(Predict and Classify), checks that the answers are well-formed and finite,
and shuts the server down.
"""

import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, NamedTuple

import grpc
import numpy as np
import portpicker
import requests

MODEL_NAME = 'infra_check'
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class InfraCheckResult(NamedTuple):
  ok: bool
  details: str


class _CheckFailed(Exception):
  pass


def check_model(model_dir: str, examples: List[bytes], timeout_s: float = 120.0) -> InfraCheckResult:
  """Blesses model_dir (ok=True) if it loads and serves examples correctly."""
  if not examples:
    return InfraCheckResult(False, 'no examples to send')
  workdir = tempfile.mkdtemp(prefix='infra_check_')
  server = None
  try:
    base_path = os.path.join(workdir, MODEL_NAME)
    shutil.copytree(model_dir, os.path.join(base_path, '1'))
    grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    server = _start_server(base_path, grpc_port, rest_port, workdir)
    rest = f'http://127.0.0.1:{rest_port}/v1/models/{MODEL_NAME}'
    _wait_until_available(server, rest, time.monotonic() + timeout_s, workdir)
    checks = _check_rest(rest, examples) + _check_grpc(f'127.0.0.1:{grpc_port}', examples, rest)
    return InfraCheckResult(True, '; '.join(checks))
  except _CheckFailed as e:
    return InfraCheckResult(False, str(e))
  except Exception as e:  # Anything unexpected refuses the model, with why.
    return InfraCheckResult(False, f'{type(e).__name__}: {e}')
  finally:
    if server is not None:
      _stop(server)
    shutil.rmtree(workdir, ignore_errors=True)


def _start_server(base_path, grpc_port, rest_port, workdir) -> subprocess.Popen:
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1',
             PYTHONPATH=os.pathsep.join(filter(None, [_REPO_ROOT, os.environ.get('PYTHONPATH')])))
  with open(os.path.join(workdir, 'server.log'), 'wb') as log:
    return subprocess.Popen(
        [sys.executable, '-m', 'serving.server', f'--port={grpc_port}',
         f'--rest_api_port={rest_port}', f'--model_name={MODEL_NAME}',
         f'--model_base_path={base_path}', '--file_system_poll_wait_seconds=0',
         '--max_num_load_retries=0'],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=_REPO_ROOT)


def _server_log(workdir, lines=15) -> str:
  with open(os.path.join(workdir, 'server.log'), errors='replace') as f:
    return ' | '.join(line.strip() for line in f.readlines()[-lines:]
                      if 'cuda' not in line and 'TensorRT' not in line)


def _wait_until_available(server, rest, deadline, workdir) -> None:
  while time.monotonic() < deadline:
    if server.poll() is not None:
      raise _CheckFailed(f'model server exited with {server.returncode}: {_server_log(workdir)}')
    try:
      status = requests.get(rest, timeout=2).json()['model_version_status'][0]
      if status['state'] == 'AVAILABLE':
        return
      if status['state'] == 'END':
        raise _CheckFailed(f'model failed to load: {status["status"]["error_message"]}')
    except (requests.ConnectionError, requests.Timeout, ValueError, KeyError, IndexError):
      pass  # Not listening yet: the server listens once the initial load is done.
    time.sleep(0.25)
  raise _CheckFailed(f'model not AVAILABLE within the timeout: {_server_log(workdir)}')


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
  from tensorflow_serving.apis import (classification_pb2, predict_pb2,
                                       prediction_service_pb2_grpc)
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
    classify = [k for k, v in signatures.items() if v['method_name'] == 'tensorflow/serving/classify']
    if not classify:
      return checks + ['gRPC Classify: no classification signature']
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL_NAME, classify[0]
    for example in examples:
      request.input.example_list.examples.add().ParseFromString(example)
    try:
      result = stub.Classify(request, timeout=30).result
    except grpc.RpcError as e:
      raise _CheckFailed(f'gRPC Classify: {e.code().name} {e.details()}') from None
    scores = [[c.score for c in row.classes] for row in result.classifications]
    _finite(scores, 'gRPC Classify scores', len(examples))
    return checks + [f'gRPC Classify ({classify[0]}): {len(examples)} answers']


def _stop(server: subprocess.Popen) -> None:
  server.terminate()
  try:
    server.wait(timeout=15)
  except subprocess.TimeoutExpired:
    server.kill()
    server.wait()
