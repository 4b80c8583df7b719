"""Versions as TF Serving manages them: polling, policies, labels, hot
load/unload, broken and incomplete version directories."""

import concurrent.futures
import os
import shutil
import threading
import time

import grpc
import pytest
import requests
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

import tiny_models
from conftest import push, start_server


def served_versions(server):
  body = requests.get(server.rest + '/v1/models/tiny', timeout=10).json()
  return {int(s['version']): s['state'] for s in body['model_version_status']}


def wait_for(condition, timeout_s=30):
  """Polls until condition() holds (the server polls its base path each second)."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if condition():
      return
    time.sleep(0.1)
  raise AssertionError('condition not reached in time')


def predict_version(server, path=':predict'):
  response = requests.post(server.rest + '/v1/models/tiny' + path,
                           json={'instances': [1.0]}, timeout=10)
  assert response.status_code == 200, response.text
  return response.json()['predictions'][0]['version']


@pytest.fixture
def base(tmp_path, model_dirs):
  base = tmp_path / 'tiny'
  shutil.copytree(model_dirs[1], base / '1')
  return base


@pytest.fixture
def polling_server(base):
  server = start_server('--file_system_poll_wait_seconds=1', base_path=str(base))
  yield server
  server.close()


def test_hot_load_then_unload_previous(polling_server, base, model_dirs):
  assert predict_version(polling_server) == 1
  push(model_dirs[2], base, 2)
  wait_for(lambda: served_versions(polling_server) == {2: 'AVAILABLE', 1: 'END'})
  assert predict_version(polling_server) == 2
  response = requests.post(polling_server.rest + '/v1/models/tiny/versions/1:predict',
                           json={'instances': [1.0]}, timeout=10)
  assert response.status_code == 404


def test_non_numeric_and_incomplete_dirs_are_ignored(polling_server, base, model_dirs):
  shutil.copytree(model_dirs[2], base / '.5.incomplete')
  shutil.copytree(model_dirs[2], base / 'latest')
  (base / '7').mkdir()  # Being copied: no saved_model.pb yet.
  time.sleep(2.5)  # Two polls.
  assert served_versions(polling_server) == {1: 'AVAILABLE'}
  assert predict_version(polling_server) == 1


def test_broken_version_is_never_served(polling_server, base):
  (base / '3').mkdir()
  (base / '3' / 'saved_model.pb').write_bytes(b'not a model')
  wait_for(lambda: served_versions(polling_server).get(3) == 'END')
  status = requests.get(polling_server.rest + '/v1/models/tiny/versions/3', timeout=10).json()
  assert status['model_version_status'][0]['status']['error_code'] != 'OK'
  assert served_versions(polling_server)[1] == 'AVAILABLE'
  assert predict_version(polling_server) == 1


def test_failing_warmup_fails_the_load(polling_server, base, model_dirs):
  shutil.copytree(model_dirs[2], base / '.4.incomplete')
  tiny_models.write_warmup(str(base / '.4.incomplete'), input_name='not_an_input')
  os.rename(base / '.4.incomplete', base / '4')
  wait_for(lambda: served_versions(polling_server).get(4) == 'END')
  assert predict_version(polling_server) == 1


def test_old_version_serves_until_the_new_one_is_warmed(base, model_dirs, tmp_path):
  """Availability preserving, as TF Serving: while version 2 loads and
  replays its warmup records it is LOADING and requests for the latest
  version are answered by version 1; version 2 answers once warmed."""
  server = start_server('--file_system_poll_wait_seconds=1',
                        '--num_request_iterations_for_warmup=5', base_path=str(base))
  try:
    staged = tmp_path / 'v2'
    shutil.copytree(model_dirs[2], staged)
    tiny_models.write_warmup(str(staged), records=1000)  # 5,000 calls: seconds of warmup.
    push(staged, base, 2)
    wait_for(lambda: served_versions(server).get(2) == 'LOADING')
    assert [predict_version(server) for _ in range(5)] == [1] * 5
    wait_for(lambda: served_versions(server) == {2: 'AVAILABLE', 1: 'END'}, timeout_s=120)
    assert predict_version(server) == 2
  finally:
    server.close()


def test_push_under_load_fails_no_request(polling_server, base, model_dirs):
  """Requests in flight across the switch all succeed; later ones see v2."""
  stop = threading.Event()
  failures, seen = [], []

  def load():
    with requests.Session() as session:
      while not stop.is_set():
        response = session.post(polling_server.rest + '/v1/models/tiny:predict',
                                json={'instances': [1.0]}, timeout=10)
        if response.status_code != 200:
          failures.append(response.text)
        else:
          seen.append(response.json()['predictions'][0]['version'])

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    workers = [pool.submit(load) for _ in range(4)]
    time.sleep(0.5)
    push(model_dirs[2], base, 2)
    wait_for(lambda: served_versions(polling_server).get(1) == 'END')
    count_at_switch = len(seen)
    wait_for(lambda: len(seen) > count_at_switch + 20)
    stop.set()
    for worker in workers:
      worker.result()
  assert failures == []
  assert set(seen) == {1, 2}
  assert set(seen[count_at_switch + 4:]) == {2}  # 4 may have been in flight.


def _config(base, policy, labels=None):
  config = model_server_config_pb2.ModelServerConfig()
  model = config.model_config_list.config.add(name='tiny', base_path=str(base),
                                              model_platform='tensorflow')
  text_format.Parse(policy, model.model_version_policy)
  for label, version in (labels or {}).items():
    model.version_labels[label] = version
  return config


def test_reload_config_changes_policy_and_labels(base, model_dirs):
  shutil.copytree(model_dirs[2], base / '2')
  server = start_server('--file_system_poll_wait_seconds=0', base_path=str(base))
  try:
    stub = model_service_pb2_grpc.ModelServiceStub(server.channel)
    assert served_versions(server) == {2: 'AVAILABLE'}

    request = model_management_pb2.ReloadConfigRequest(config=_config(
        base, 'all {}', {'stable': 1, 'canary': 2}))
    stub.HandleReloadConfigRequest(request, timeout=60)
    assert served_versions(server) == {1: 'AVAILABLE', 2: 'AVAILABLE'}
    assert predict_version(server, '/labels/stable:predict') == 1
    assert predict_version(server, '/labels/canary:predict') == 2

    # A label may not point at a version that is not available...
    request = model_management_pb2.ReloadConfigRequest(config=_config(
        base, 'specific { versions: 1 versions: 2 }', {'stable': 9}))
    with pytest.raises(grpc.RpcError) as error:
      stub.HandleReloadConfigRequest(request, timeout=60)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert predict_version(server, '/labels/stable:predict') == 1

    # ...and `specific` serves exactly the listed versions.
    request = model_management_pb2.ReloadConfigRequest(config=_config(
        base, 'specific { versions: 1 }', {'stable': 1}))
    stub.HandleReloadConfigRequest(request, timeout=60)
    assert served_versions(server) == {1: 'AVAILABLE', 2: 'END'}
  finally:
    server.close()


def test_labels_for_unavailable_models_flag(tmp_path, base):
  config_file = tmp_path / 'models.config'
  config_file.write_text(text_format.MessageToString(
      _config(base, 'all {}', {'canary': 5})))
  server = start_server(f'--model_config_file={config_file}',
                        '--allow_version_labels_for_unavailable_models=true')
  try:
    response = requests.post(server.rest + '/v1/models/tiny/labels/canary:predict',
                             json={'instances': [1.0]}, timeout=10)
    assert response.status_code == 404  # Label known, version 5 not loaded (yet).
    assert predict_version(server) == 1
  finally:
    server.close()
