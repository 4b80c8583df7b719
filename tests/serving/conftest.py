"""Fixtures: tiny SavedModels (versions 1 and 2) and local model servers on
free loopback ports, always shut down."""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import shutil
import sys
import textwrap

import grpc
import portpicker
import pytest

# The repo root, for `import serving` when pytest is not run from it.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from pipeline import configs  # noqa: E402
from serving import server as model_server  # noqa: E402
import tiny_models as models  # noqa: E402  (this directory is on sys.path)

# The name real_server serves the selected example's model under: the one
# its pipeline pushes, which the clients address by default.
REAL_MODEL_NAME = configs.example_defaults().model_name


class RunningServer:
  def __init__(self, server, grpc_port, rest_port, base_path):
    self.server = server
    self.grpc_port, self.rest_port = grpc_port, rest_port
    self.rest = f'http://127.0.0.1:{rest_port}'
    self.grpc_target = f'127.0.0.1:{grpc_port}'
    self.base_path = base_path
    self.channel = grpc.insecure_channel(self.grpc_target)

  def close(self):
    self.channel.close()
    self.server.shutdown()


def start_server(*extra_flags, base_path=None, model_name='tiny'):
  grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
  argv = [f'--port={grpc_port}', f'--rest_api_port={rest_port}', *extra_flags]
  if base_path and not any(f.startswith('--model_config_file') for f in extra_flags):
    argv += [f'--model_name={model_name}', f'--model_base_path={base_path}']
  return RunningServer(model_server.start_in_thread(argv), grpc_port, rest_port, base_path)


@pytest.fixture(scope='session')
def model_dirs(tmp_path_factory):
  """Two exported versions, kept aside; tests copy them into base paths."""
  root = tmp_path_factory.mktemp('exports')
  return {v: models.save_tiny_model(str(root / str(v)), v) for v in (1, 2)}


@pytest.fixture(scope='session')
def tiny_base(tmp_path_factory, model_dirs):
  base = tmp_path_factory.mktemp('tiny')
  for version, path in model_dirs.items():
    shutil.copytree(path, base / str(version))
  return str(base)


@pytest.fixture(scope='session')
def server(tmp_path_factory, tiny_base):
  """Both versions served, labels stable=1 and canary=2, every request
  logged, Prometheus metrics on, batching on."""
  conf = tmp_path_factory.mktemp('conf')
  log_prefix = conf / 'logs' / 'requests'
  (conf / 'models.config').write_text(textwrap.dedent(f'''
      model_config_list {{
        config {{
          name: "tiny"
          base_path: "{tiny_base}"
          model_platform: "tensorflow"
          model_version_policy {{ all {{}} }}
          version_labels {{ key: "stable" value: 1 }}
          version_labels {{ key: "canary" value: 2 }}
          logging_config {{
            log_collector_config {{ type: "" filename_prefix: "{log_prefix}" }}
            sampling_config {{ sampling_rate: 1.0 }}
          }}
        }}
      }}'''))
  (conf / 'monitoring.config').write_text(
      'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }')
  (conf / 'batching.config').write_text(
      'max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n'
      'num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 1000 }\n')
  running = start_server(
      f'--model_config_file={conf / "models.config"}',
      f'--monitoring_config_file={conf / "monitoring.config"}',
      '--enable_batching', f'--batching_parameters_file={conf / "batching.config"}',
      '--max_request_body_bytes=100000', base_path=tiny_base)
  running.log_prefix = str(log_prefix)
  yield running
  running.close()


def push(source, base, version):
  """What our pipeline's pusher does (pipeline/components/pusher.py): copy the
  version to `.<version>.incomplete` next to its final place, then rename it
  in. The server must never see a half-written numeric directory."""
  base = str(base)
  os.makedirs(base, exist_ok=True)
  temp = os.path.join(base, f'.{version}.incomplete')
  shutil.copytree(str(source), temp)
  os.rename(temp, os.path.join(base, str(version)))


@pytest.fixture(scope='session')
def real_model_base(request):
  """The real model's serving base dir: the pipeline-run fixture of
  tests/conftest.py, or $SERVING_TEST_MODEL_BASE (e.g. local_runner.py's
  <serving-dir>/taxi_big_tipper) to skip the pipeline run while iterating."""
  base = os.environ.get('SERVING_TEST_MODEL_BASE')
  return base.rstrip('/') if base else str(request.getfixturevalue('pushed_model'))


@pytest.fixture(scope='session')
def real_version_dir(request, real_model_base):
  if not os.environ.get('SERVING_TEST_MODEL_BASE'):
    return str(request.getfixturevalue('pushed_version_dir'))
  versions = sorted((d for d in os.listdir(real_model_base) if d.isdigit()), key=int)
  assert versions, f'no version in {real_model_base}'
  return os.path.join(real_model_base, versions[-1])


@pytest.fixture(scope='session')
def real_server(tmp_path_factory, real_model_base):
  """The selected example's real pushed model (tests/conftest.py runs the
  pipeline once) under the name the clients address by default, served with
  batching on."""
  conf = tmp_path_factory.mktemp('real_conf')
  (conf / 'batching.config').write_text(
      'max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1000 }\n'
      'num_batch_threads { value: 2 }\n')
  running = start_server('--enable_batching',
                         f'--batching_parameters_file={conf / "batching.config"}',
                         '--file_system_poll_wait_seconds=0',
                         base_path=real_model_base, model_name=REAL_MODEL_NAME)
  yield running
  running.close()
