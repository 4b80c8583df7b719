"""The daily loop, as a team runs it: run, run other settings, run the first
again, retrain when a span arrives or monitoring reports skew, tune then
train, drive the runner with TFX's CLI. After each step, what the runner
says was pushed is what a server watching the serving directory serves (its
highest version), and the checkout is left as it was."""

import io
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import threading

import pytest

import local_runner
from orchestration import progress
from pipeline import configs, metadata, project
from operations import retrain
from operations import rollout
from tests.conftest import REPO, sample_rows, small_config, write_csv
from tests.test_bad_data import REQUIRED_FLOAT

# What small_config sets, as a user would: TAXI_* variables and flags. The
# change threshold is off: a model trained for other steps must be blessed.
ENV = {'TAXI_TRAIN_STEPS': '120', 'TAXI_MIN_AUC': '0.8', 'TAXI_MIN_ACCURACY': '0.8',
       'TAXI_MAX_AUC_DROP': '1.0', 'TAXI_TUNER_TRIALS': '1', 'TAXI_TUNER_STEPS': '20'}


def _git_status():
  return subprocess.run(['git', 'status', '--porcelain'], cwd=REPO, check=True,
                        capture_output=True, text=True).stdout


def _fingerprint(version_dir) -> bytes:
  return (pathlib.Path(version_dir) / 'fingerprint.pb').read_bytes()


class Loop:
  """One output root, serving dir and data root, driven by local_runner's
  command line (in this process: a TF import per step would double the time)."""

  def __init__(self, tmp: pathlib.Path, monkeypatch):
    self.tmp = tmp
    self.data_root = tmp / 'data'
    self.serving_config = tmp / 'models.config'
    # The deploy template serves pipeline/project.py's model (taxi's); the
    # loop pushes and labels the selected example's.
    template = (REPO / 'serving' / 'deploy' / 'models.config').read_text()
    self.serving_config.write_text(template.replace(
        f'/{project.MODEL_NAME}"', f'/{configs.load(environ={}).model_name}"').replace(
        f'"{project.MODEL_NAME}"', f'"{configs.load(environ={}).model_name}"'))
    for name, value in ENV.items():
      monkeypatch.setenv(name, value)
    monkeypatch.setenv('TAXI_SERVING_CONFIG_FILE', str(self.serving_config))
    self.config = small_config(tmp, self.data_root)
    self.steps = 0

  def flags(self, data_root=None):
    return ['--data-root', str(data_root or self.data_root),
            '--output-root', self.config.output_root,
            '--serving-dir', self.config.serving_dir]

  def run(self, *flags, data_root=None, capsys=None):
    """(exit code, summary or None, stdout) of one local_runner.py call."""
    self.steps += 1
    out = self.tmp / f'summary-{self.steps}.json'
    code = local_runner.main(self.flags(data_root) + ['--summary-json', str(out), *flags])
    printed = capsys.readouterr().out if capsys else ''
    summary = json.loads(out.read_text()) if out.exists() else None
    return code, summary, printed

  def versions(self):
    """The numeric version dirs, ascending: TF Serving serves the last."""
    push_dir = pathlib.Path(self.config.push_dir)
    names = os.listdir(push_dir) if push_dir.is_dir() else []
    return sorted(int(name) for name in names if name.isdigit())

  def served_dir(self, capsys):
    """The served version's dir; a first run pushes one if none is yet
    (so that each test also runs alone)."""
    if not self.versions():
      code, summary, _ = self.run(capsys=capsys)
      assert summary['pushed'], summary['error']
    return os.path.join(self.config.push_dir, str(self.versions()[-1]))

  def labels(self):
    return rollout.labels(rollout.read_config(str(self.serving_config)),
                          self.config.model_name)


def _assert_summary_matches_directory(loop, code, summary):
  """The runner's word on the push is the serving directory's truth."""
  highest = loop.versions()[-1]
  highest_dir = os.path.join(loop.config.push_dir, str(highest))
  assert code == local_runner.EXIT_OK, summary['error']
  if summary['pushed']:
    assert summary['pushed_path'] == highest_dir, 'pushed, but not the served version'
  assert summary['serving_version'] == highest
  if summary['pushed']:
    assert summary['push_result'] == f'pushed to {highest_dir} (new version {highest})'
  else:
    assert summary['push_result'].startswith(f'not pushed: version {highest} already serves')
  assert loop.labels()['canary'] == highest  # The canary is what was pushed last.
  with open(summary['report_path']) as f:
    assert summary['push_result'] in f.read()  # The report says it too.


@pytest.fixture(scope='module')
def loop(tmp_path_factory):
  with pytest.MonkeyPatch.context() as monkeypatch:
    tmp = tmp_path_factory.mktemp('lifecycle')
    header, rows = sample_rows()
    write_csv(tmp / 'data' / 'span-1' / 'data.csv', header, rows)
    yield Loop(tmp, monkeypatch)


@pytest.fixture(scope='module')
def git_status_before():
  return _git_status()


@pytest.mark.slow
def test_tune_then_train(loop, git_status_before, capsys):
  # git_status_before: taken before the first run of this module.
  # The selected example's checked-in hyperparameters (taxi's models/hyperparameters.json).
  checked_in_file = loop.config.hyperparameters_file
  checked_in = (REPO / checked_in_file).read_text()
  code, tuned, printed = loop.run('--tune', capsys=capsys)
  assert tuned['succeeded'], tuned['error']
  # The next plain run trains with what the tuning found.
  code, plain, _ = loop.run(capsys=capsys)
  assert plain['succeeded'], plain['error']
  assert tuned['run_id'] and tuned['failed_component'] is None
  _assert_summary_matches_directory(loop, code, plain)
  saved = pathlib.Path(tuned['hyperparameters_saved_to'])
  assert saved == pathlib.Path(loop.config.output_root) / 'tuned_hyperparameters.json'
  assert plain['hyperparameters'] == str(saved)
  assert f'cp {saved} {checked_in_file}' in printed
  # Merged: the tuned knobs over every other value the Trainer needs.
  assert set(json.loads(checked_in)) <= set(json.loads(saved.read_text()))
  assert (REPO / checked_in_file).read_text() == checked_in


@pytest.mark.slow
def test_rerunning_the_first_configuration_serves_its_model_again(loop, capsys):
  # The first configuration: the plain run of test_tune_then_train.
  first_served = loop.served_dir(capsys)

  code, other, _ = loop.run('--train-steps', '200', capsys=capsys)
  _assert_summary_matches_directory(loop, code, other)
  assert other['pushed']

  # The first configuration again: its Trainer is a cache hit, its model is
  # blessed again, and it must become the served (highest) version again.
  versions = len(loop.versions())
  code, again, _ = loop.run(capsys=capsys)
  trainer = [c for c in again['components'] if c['component'] == 'Trainer'][0]
  assert trainer['cached']
  _assert_summary_matches_directory(loop, code, again)
  assert again['pushed'] and len(loop.versions()) == versions + 1
  assert _fingerprint(again['pushed_path']) == _fingerprint(first_served)
  assert again['run_id'] != other['run_id']

  # Nothing changed: no new version, and the summary names the served one.
  code, unchanged, printed = loop.run(capsys=capsys)
  _assert_summary_matches_directory(loop, code, unchanged)
  assert not unchanged['pushed'] and len(loop.versions()) == versions + 1
  assert f'not pushed: version {loop.versions()[-1]} already serves this model' in printed


@pytest.mark.slow
def test_retrain_if_needed_trains_the_new_span(loop, capsys):
  header, rows = sample_rows()
  served_before = int(os.path.basename(loop.served_dir(capsys)))
  write_csv(loop.data_root / 'span-2' / 'data.csv', header, rows[::-1])
  code, summary, printed = loop.run('--retrain-if-needed', capsys=capsys)
  assert 'Retraining: new span 2 (last trained on span 1).' in printed
  _assert_summary_matches_directory(loop, code, summary)
  assert summary['pushed'] and loop.versions()[-1] > served_before
  assert not [c for c in summary['components'] if c['component'] == 'Trainer'][0]['cached']
  # Now trained on: no reason left.
  code, summary, printed = loop.run('--retrain-if-needed', capsys=capsys)
  assert code == local_runner.EXIT_OK and summary is None
  assert 'Not retraining: no new span (latest 2 already trained on)' in printed


@pytest.mark.slow
def test_retrain_for_skew_says_why_the_model_stands(loop, capsys):
  result = loop.tmp / 'monitoring.json'
  result.write_text(json.dumps({'findings': {
      'skew': [REQUIRED_FLOAT], 'drift': [], 'serving_anomalies': [], 'prediction_shift': []}}))
  served_before = int(os.path.basename(loop.served_dir(capsys)))
  code, summary, printed = loop.run('--retrain-if-needed', '--monitoring-result',
                                    str(result), capsys=capsys)
  assert 'Retraining: monitoring found skew or drift' in printed
  # Nothing the model depends on changed: the run says so rather than
  # claiming a retrain, and the served version stays.
  assert 'The Trainer was cached' in printed and 'add it as the next span' in printed
  _assert_summary_matches_directory(loop, code, summary)
  assert not summary['pushed'] and loop.versions()[-1] == served_before


@pytest.mark.slow
def test_a_new_data_root_is_judged_on_its_own_spans(loop):
  # Spans restart at 1 under a new data root: never trained on, whatever
  # span numbers the old root reached (2).
  header, rows = sample_rows()
  new_root = loop.tmp / 'data-2027'
  write_csv(new_root / 'span-1' / 'data.csv', header, rows[1::2])
  config = small_config(loop.tmp, new_root)
  decision = retrain.decide(config)
  assert decision.run and f'span 1 of {new_root} has never been trained on' in decision.reason
  assert not retrain.decide(small_config(loop.tmp, loop.data_root)).run


@pytest.mark.slow
def test_tfx_cli_creates_and_runs_the_pipeline(loop, tmp_path):
  """The TFX templates' flow: `tfx pipeline create`, then `tfx run create`."""
  env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(REPO),
             TAXI_DATA_ROOT=str(loop.data_root), TAXI_OUTPUT_ROOT=loop.config.output_root,
             TAXI_SERVING_DIR=loop.config.serving_dir)
  tfx = str(pathlib.Path(sys.executable).parent / 'tfx')
  created = subprocess.run(
      [tfx, 'pipeline', 'create', '--engine', 'local', '--pipeline_path',
       str(REPO / 'local_runner.py')], cwd=REPO, env=env, capture_output=True, text=True)
  assert created.returncode == 0, created.stderr[-2000:]
  assert f'Pipeline "{loop.config.pipeline_name}" created successfully.' in created.stdout
  ran = subprocess.run(
      [tfx, 'run', 'create', '--engine', 'local', '--pipeline_name',
       loop.config.pipeline_name], cwd=REPO, env=env, capture_output=True, text=True)
  assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
  assert 'already serves this model' in ran.stdout


@pytest.mark.slow
def test_a_failed_run_names_its_component_and_shows_its_log(loop, capsys):
  header, rows = sample_rows()
  column = header.index(REQUIRED_FLOAT)
  bad = [row[:column] + ['n/a'] + row[column + 1:] for row in rows[:300]]
  write_csv(loop.data_root / 'span-3' / 'data.csv', header, bad)
  try:
    code, summary, printed = loop.run(capsys=capsys)
    # No model was trained on span 3: once its data is fixed, it is still new.
    assert retrain.decide(small_config(loop.tmp, loop.data_root)).run
  finally:
    shutil.rmtree(loop.data_root / 'span-3')
  assert code == local_runner.EXIT_FAILED
  assert summary['failed_component'] == 'AnomaliesGate'
  # The run id names this run's context in MLMD.
  store = metadata.open_store(loop.config.metadata_path)
  assert store.get_context_by_type_and_name('pipeline_run', summary['run_id']) is not None
  assert '\n' not in summary['error'] and REQUIRED_FLOAT in summary['error']
  assert 'FAILED in AnomaliesGate' in printed
  assert f'Last lines of the log ({summary["log_path"]}):' in printed
  assert 'DataValidationError' in pathlib.Path(summary['log_path']).read_text()
  assert 'Traceback' not in printed.split('Last lines of the log')[0]


@pytest.mark.slow
def test_documented_commands_leave_the_checkout_clean(loop, git_status_before):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  shown = subprocess.run([sys.executable, 'local_runner.py', '--help'], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
  for documented in ('default: 300', 'exit status:', 'TAXI_<FIELD>', '3  the run finished'):
    assert documented in shown
  # Every run above (--tune among them) wrote under its own roots only.
  assert _git_status() == git_status_before


@pytest.mark.slow
@pytest.mark.parametrize('flags, env, message', [
    (['--retrain-if-needed'], {}, 'no pipeline metadata at'),
    (['--retrain-if-needed', '--monitoring-result', 'missing.json'], {},
     'no monitoring result at missing.json'),
    ([], {'TAXI_TRAIN_STEPS': 'many'}, 'bad configuration'),
    ([], {'TAXI_BEAM_PROFILE': 'spark'}, "bad configuration: beam_profile 'spark' is not one of"),
])
def test_user_errors_are_one_line(tmp_path, flags, env, message):
  result = subprocess.run(
      [sys.executable, 'local_runner.py', '--output-root', str(tmp_path / 'out'), *flags],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), **env),
      capture_output=True, text=True)
  assert result.returncode == local_runner.EXIT_USAGE
  assert result.stderr.startswith('local_runner.py: error: ') and message in result.stderr
  assert 'Traceback' not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


def test_quiet_logging_keeps_library_logs_out_of_the_console_but_in_the_file(
    tmp_path, capsys):
  log = tmp_path / 'run.log'
  console = logging.StreamHandler(sys.stderr)
  logging.getLogger().addHandler(console)
  try:
    with local_runner._logging_to(str(log), verbose=False):  # pylint: disable=protected-access
      logging.getLogger('apache_beam.runners').info('a library detail')
      logging.getLogger('tfx.components').warning('a library warning')
      logging.getLogger('my_run_fn').info('the user\'s own record')
      logging.getLogger('my_run_fn').warning('the user\'s warning')
  finally:
    logging.getLogger().removeHandler(console)
  shown = capsys.readouterr().err
  written = log.read_text()
  for text in ('a library detail', 'a library warning', "the user's own record",
               "the user's warning"):
    assert text in written
  assert "the user's warning" in shown
  assert 'library' not in shown and 'own record' not in shown


def test_a_long_step_shows_it_is_alive():
  stream = io.StringIO()
  printer = progress.ProgressPrinter('p', '/nonexistent/metadata.sqlite', stream,
                                     heartbeat_seconds=0.05)
  with printer.watching():
    printer.start('Evaluator')
    for _ in range(400):  # Until the heartbeat thread wrote (at most ~20 s).
      if 'still running Evaluator (' in stream.getvalue():
        break
      threading.Event().wait(0.05)
  assert 'still running Evaluator (' in stream.getvalue()
