"""--server_processes=2: two real server processes behind the same ports
(`python -m serving.server` subprocesses, tiny models)."""

import collections
import os
import shutil
import signal
import textwrap
import time

import grpc
import numpy as np
import portpicker
import pytest
import requests
from tensorflow_serving.apis import (get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from serving import server_process, tensors, workers
from serving.log_reader import read_prediction_logs

START_TIMEOUT_S = 300  # Three processes importing TensorFlow on a shared machine.


def model_config(base, labels=None):
  config = model_server_config_pb2.ModelServerConfig()
  model = config.model_config_list.config.add(name='tiny', base_path=str(base),
                                              model_platform='tensorflow')
  model.model_version_policy.all.SetInParent()
  model.version_labels.update(labels or {})
  return config


class Workers:
  """The supervisor process and what the tests reach of its workers."""

  def __init__(self, tmp_path, base):
    self.grpc_port, self.rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    self.log_prefix = str(tmp_path / 'logs' / 'requests')
    (tmp_path / 'models.config').write_text(textwrap.dedent(f'''
        model_config_list {{
          config {{
            name: "tiny"
            base_path: "{base}"
            model_platform: "tensorflow"
            model_version_policy {{ all {{}} }}
            logging_config {{
              log_collector_config {{ filename_prefix: "{self.log_prefix}" }}
              sampling_config {{ sampling_rate: 1.0 }}
            }}
          }}
        }}'''))
    (tmp_path / 'monitoring.config').write_text(
        'prometheus_config { enable: true, path: "/metrics" }')
    self.server = server_process.ServerProcess(
        '--server_processes=2', f'--port={self.grpc_port}', f'--rest_api_port={self.rest_port}',
        f'--model_config_file={tmp_path / "models.config"}',
        f'--monitoring_config_file={tmp_path / "monitoring.config"}',
        '--file_system_poll_wait_seconds=1', '--enable_batching',
        log_path=str(tmp_path / 'server.log'))
    self.process = self.server.process
    self.directory = workers.work_dir(self.process.pid)
    self.sockets = [f'unix:{workers.socket_path(self.directory, i)}' for i in range(2)]
    self.shared = f'127.0.0.1:{self.grpc_port}'

  def wait_until_serving(self, version):
    """Until both workers (on their own sockets) serve `version`."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all(available(target, version) for target in self.sockets):
      assert self.process.poll() is None, 'the server exited'
      assert time.monotonic() < deadline, f'version {version} not served by both workers'
      time.sleep(0.2)

  def metrics(self) -> str:
    return requests.get(f'http://127.0.0.1:{self.rest_port}/metrics', timeout=10).text

  def stop(self):
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGTERM)
    return self.process.wait(60)


def available(target, version) -> bool:
  """Whether the server at target reports `version` of tiny AVAILABLE."""
  with grpc.insecure_channel(target) as channel:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = 'tiny'
    try:
      response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
          request, timeout=5)
    except grpc.RpcError:
      return False  # Not listening yet, or the model not loaded yet.
  states = {s.version: s.state for s in response.model_version_status}
  return states.get(version) == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def predict(target, label=''):
  """Predicts on its own connection (not shared with other channels), so
  each call through the shared port is a new connection for the kernel to
  place. Returns the version that answered."""
  options = [('grpc.use_local_subchannel_pool', 1)]
  with grpc.insecure_channel(target, options=options) as channel:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'tiny'
    if label:
      request.model_spec.version_label = label
    request.inputs['x'].CopyFrom(tensors.to_proto(np.array([1.0], np.float32)))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        request, timeout=30)
  return response.model_spec.version.value


def ok_grpc_predicts(metrics_text) -> float:
  return sum(float(line.rsplit(' ', 1)[1]) for line in metrics_text.splitlines()
             if line.startswith(':tensorflow:serving:request_count{')
             and 'entrypoint="GRPC"' in line and 'status="OK"' in line)


def logged_per_file(prefix, expected_total):
  """Request-log records per log file, once `expected_total` are written (the
  writers flush on their own threads)."""
  directory, deadline = os.path.dirname(prefix), time.monotonic() + 60
  while True:
    counts = collections.Counter()
    for name in os.listdir(directory):
      counts[name] = sum(1 for _ in read_prediction_logs(os.path.join(directory, name)))
    if sum(counts.values()) >= expected_total or time.monotonic() > deadline:
      return counts
    time.sleep(0.2)


@pytest.fixture(scope='module')
def tiny_v1_base(tmp_path_factory, model_dirs):
  base = tmp_path_factory.mktemp('workers_base')
  shutil.copytree(model_dirs[1], base / '1')
  return base


@pytest.fixture(scope='module')
def two_workers(tmp_path_factory, tiny_v1_base):
  running = Workers(tmp_path_factory.mktemp('workers'), tiny_v1_base)
  try:
    running.wait_until_serving(1)
    yield running
  finally:
    running.stop()


def test_both_processes_answer_on_the_shared_port_and_metrics_add_up(two_workers):
  for target in two_workers.sockets:  # Each process on its own.
    assert predict(target) == 1
  calls = 40
  for _ in range(calls):
    assert predict(two_workers.shared) == 1
  per_file = logged_per_file(two_workers.log_prefix, calls + 2)
  # One log file per process (its pid in the name), none shared, both used
  # through the shared port (40 connections all on one process: p = 2^-39).
  assert len(per_file) == 2, per_file
  assert sum(per_file.values()) == calls + 2
  assert all(count > 1 for count in per_file.values()), per_file
  # Any process answers a scrape with the requests of both.
  for _ in range(4):
    assert ok_grpc_predicts(two_workers.metrics()) == calls + 2


def test_reload_config_on_the_shared_port_reaches_every_process(two_workers, tiny_v1_base):
  for target in two_workers.sockets:
    with pytest.raises(grpc.RpcError) as error:
      predict(target, label='stable')
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # Unknown label.
  with grpc.insecure_channel(two_workers.shared) as channel:
    request = model_management_pb2.ReloadConfigRequest(
        config=model_config(tiny_v1_base, {'stable': 1}))
    response = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
        request, timeout=60)
  assert response.status.error_code == 0
  # Applied everywhere by the time the reload answered.
  for target in two_workers.sockets:
    assert predict(target, label='stable') == 1


def test_a_new_version_is_served_by_every_process(two_workers, tiny_v1_base, model_dirs):
  shutil.copytree(model_dirs[2], tiny_v1_base / '2')
  two_workers.wait_until_serving(2)
  for target in two_workers.sockets:
    assert predict(target) == 2


def test_sigterm_stops_every_process_and_cleans_up(two_workers):
  # Log files are named <prefix>-<pid>-<ns>.tfrecord: the workers' pids.
  pids = {int(name.split('-')[-2]) for name in os.listdir(os.path.dirname(two_workers.log_prefix))}
  assert len(pids) == 2
  assert two_workers.stop() == 0
  assert not os.path.exists(two_workers.directory)
  for pid in pids:
    assert not os.path.exists(f'/proc/{pid}'), f'worker {pid} still running'
