"""A user error ends every CLI with one line on stderr and a non-zero exit,
never a traceback; a closed pipe (`| head`) is no error at all."""

import os
import subprocess
import sys

import portpicker
import pytest

from pipeline import project
from tests import conftest

MODEL = project.MODEL_NAME

PY = sys.executable
ROLLOUT = [PY, '-m', 'operations.rollout']
GENERATE = [PY, '-m', 'data.generate_taxi']
KUBEFLOW = [PY, 'kubeflow_v2_runner.py']


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith('TAXI_')}
  env.update(TF_USE_LEGACY_KERAS='1', PYTHONPATH=str(conftest.REPO), **extra)
  return env


def _run(argv, env=None, stdout=subprocess.PIPE, timeout=300):
  return subprocess.run(argv, cwd=str(conftest.REPO), env=env or _env(), stdout=stdout,
                        stderr=subprocess.PIPE, text=True, timeout=timeout)


def _assert_one_line_error(done, *words):
  assert done.returncode != 0, done.stdout
  assert 'Traceback' not in done.stderr, done.stderr
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1, done.stderr
  for word in words:
    assert word in lines[0]


def _run_into_closed_pipe(argv, env=None):
  """As `argv | head -0`: the reader is gone before the CLI prints."""
  read_end, write_end = os.pipe()
  os.close(read_end)
  try:
    return _run(argv, env=env, stdout=write_end)
  finally:
    os.close(write_end)


# ---- python -m operations.rollout ------------------------------------------------------


def test_rollout_without_its_config_names_the_init_command(tmp_path):
  done = _run(ROLLOUT + ['--config', str(tmp_path / 'models.config'), 'show', MODEL])
  _assert_one_line_error(done, 'no serving config', 'operations.rollout', 'init')


def test_rollout_with_a_config_that_is_not_one(tmp_path):
  path = tmp_path / 'models.config'
  path.write_text('model_config_list { nonsense: 1 }\n')
  _assert_one_line_error(_run(ROLLOUT + ['--config', str(path), 'show', MODEL]),
                         'is not a ModelServerConfig text proto')


def _initialized(tmp_path) -> str:
  path = str(tmp_path / 'models.config')
  assert _run(ROLLOUT + ['--config', path, 'init', '--serving-dir', str(tmp_path)]
              ).returncode == 0
  return path


def test_rollout_with_a_monitoring_file_that_is_not_json(tmp_path):
  path = _initialized(tmp_path)
  assert _run(ROLLOUT + ['--config', path, 'canary', MODEL, '5']).returncode == 0
  bad = tmp_path / 'monitoring.json'
  bad.write_text('{not json')
  _assert_one_line_error(_run(ROLLOUT + ['--config', path, 'promote', MODEL,
                                         '--monitoring', str(bad)]), 'is not JSON')
  _assert_one_line_error(_run(ROLLOUT + ['--config', path, 'promote', MODEL,
                                         '--monitoring', str(tmp_path / 'none.json')]),
                         'cannot read --monitoring')


@pytest.mark.slow
def test_rollout_reload_of_an_unreachable_server_says_so_after_retries(tmp_path):
  path = _initialized(tmp_path)
  target = f'127.0.0.1:{portpicker.pick_unused_port()}'  # Nobody listens.
  done = _run(ROLLOUT + ['--config', path, '--reload', target, 'canary', MODEL, '5'])
  _assert_one_line_error(done, f'no model server answers at {target}', '5 attempts')


def test_rollout_into_a_closed_pipe(tmp_path):
  path = _initialized(tmp_path)
  done = _run_into_closed_pipe(ROLLOUT + ['--config', path, 'show', MODEL])
  assert done.returncode == 0 and done.stderr == ''


def test_rollout_help_shows_defaults_exit_codes_and_environment():
  done = _run(ROLLOUT + ['--help'])
  assert done.returncode == 0
  for text in ('default:', 'exit status', 'TAXI_SERVING_CONFIG_FILE', 'TAXI_SERVING_DIR'):
    assert text in done.stdout


# ---- python -m data.generate_taxi ---------------------------------------------------


@pytest.mark.parametrize('mix, words', [
    ('Credit Card', ['is not TYPE=SHARE']),
    ('Bitcoin=0.5', ['payment types not in the data: Bitcoin', 'Credit Card']),
    ('Cash=1.5', ['add up to at most 1']),
    ('=0.5', ['names no payment type']),
])
def test_generate_with_a_bad_payment_mix(tmp_path, mix, words):
  done = _run(GENERATE + ['--root', str(tmp_path), '--rows', '10', '--payment-mix', mix])
  _assert_one_line_error(done, *words)
  assert not (tmp_path / 'span-1').exists()


@pytest.mark.parametrize('argv, words', [
    (['--rows', '0'], ['--rows 0']),
    (['--rows', 'ten'], ['invalid int value']),
    (['--rows', '10', '--fare-inflation', '-1'], ['--fare-inflation']),
])
def test_generate_with_bad_numbers(tmp_path, argv, words):
  _assert_one_line_error(_run(GENERATE + ['--root', str(tmp_path)] + argv), *words)


def test_generate_under_a_root_it_cannot_write(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  done = _run(GENERATE + ['--root', str(blocker / 'data'), '--rows', '10'])
  _assert_one_line_error(done, 'cannot write under')


def test_generate_into_a_closed_pipe(tmp_path):
  done = _run_into_closed_pipe(GENERATE + ['--root', str(tmp_path), '--rows', '10'])
  assert done.returncode == 0 and done.stderr == ''
  assert (tmp_path / 'span-1' / 'data.csv').exists()


def test_generate_help_shows_defaults_and_exit_codes():
  done = _run(GENERATE + ['--help'])
  assert done.returncode == 0
  for text in ('(default: 1)', 'exit status', 'environment variables'):
    assert text in done.stdout


# ---- kubeflow_v2_runner.py -----------------------------------------------------------


@pytest.mark.parametrize('argv, env, words', [
    ([], {}, ['gcs_bucket']),
    (['--gcs-bucket', 'b'], {'TAXI_TRAIN_STEP': '5'}, ['TAXI_TRAIN_STEP', 'TAXI_TRAIN_STEPS']),
    (['--gcs-bucket', 'b'], {'TAXI_INFRA_VALIDATOR': 'kubernets'}, ['infra_validator']),
    (['--gcs-bucket', 'b', '--submit'], {}, ['--submit needs a project']),
    (['--gcs-bucket', 'b'], {'TAXI_SCHEMA_FILE': '/nowhere/schema.pbtxt'},
     ['schema_file /nowhere/schema.pbtxt does not exist']),
    (['--gcs-bucket', 'b', '--beam-profile', 'flink'], {}, ['invalid choice']),
])
def test_kubeflow_runner_with_a_bad_setting(argv, env, words):
  _assert_one_line_error(_run(KUBEFLOW + argv, env=_env(**env)), *words)


@pytest.mark.slow
def test_kubeflow_runner_with_an_unwritable_output(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  done = _run(KUBEFLOW + ['--gcs-bucket', 'b', '--output', str(blocker / 'spec.json')])
  _assert_one_line_error(done, 'cannot write', '--output')


@pytest.mark.slow
def test_kubeflow_runner_into_a_closed_pipe(tmp_path):
  out = tmp_path / 'spec.json'
  done = _run_into_closed_pipe(KUBEFLOW + ['--gcs-bucket', 'b', '--output', str(out)])
  assert done.returncode == 0 and 'Traceback' not in done.stderr, done.stderr
  assert out.exists()


def test_kubeflow_runner_help_shows_defaults_exit_codes_and_environment():
  done = _run(KUBEFLOW + ['--help'])
  assert done.returncode == 0
  for text in ('$TAXI_GCP_REGION, else us-central1', 'exit status', 'TAXI_<FIELD>'):
    assert text in done.stdout


def test_a_failed_evaluator_is_reported_as_its_own_error(tmp_path):
  """The summary of a run whose Evaluator failed names that failure (it used
  to raise AttributeError reading the Evaluator's missing output)."""
  import types

  import local_runner
  from pipeline import metadata
  from tests.conftest import small_config
  (tmp_path / 'data' / 'span-1').mkdir(parents=True)
  config = small_config(tmp_path, tmp_path / 'data')
  os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
  metadata.open_store(config.metadata_path)  # An MLMD with no Evaluator output.
  printer = types.SimpleNamespace(components=[
      {'component': 'Trainer', 'seconds': 1.0, 'cached': False, 'result': ''},
      {'component': 'Evaluator', 'seconds': 1.0, 'cached': False, 'failed': True,
       'result': 'failed: TFMA could not load the model'}])
  error = RuntimeError('TFMA could not load the model')
  summary = local_runner.summarize(config, printer, error, 2.0, run_id='run-1')
  assert not summary['succeeded']
  assert summary['failed_component'] == 'Evaluator'
  assert 'TFMA could not load the model' in summary['error']
