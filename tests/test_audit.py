"""The audit trail and the model cards: the sequences a user runs (a push, the
rollout CLI's canary, promote and rollback, a retrain decision, steps that
fail half-way) each leave their records, in order, never rewritten."""

import errno
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from tfx.types import standard_artifacts

from operations import retrain, rollout
from pipeline import audit
from pipeline import metadata
from pipeline import model_card
from pipeline.components import pusher
from tests import conftest
from tests.test_monitoring import MODEL, NUMERIC, model_server_config
from tests.test_pusher import _push

ENV = {**os.environ, 'TF_USE_LEGACY_KERAS': '1', 'TF_CPP_MIN_LOG_LEVEL': '3',
       'PYTHONPATH': str(conftest.REPO)}


def _git_head() -> str:
  return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=str(conftest.REPO),
                        capture_output=True, text=True, check=True).stdout.strip()


class _Text(HTMLParser):
  """The text a person reads in an HTML page, scripts and styles left out."""

  def __init__(self):
    super().__init__()
    self.parts, self._skip = [], False

  def handle_starttag(self, tag, attrs):
    self._skip = tag in ('script', 'style')

  def handle_endtag(self, tag):
    self._skip = False

  def handle_data(self, data):
    if not self._skip:
      self.parts.append(data)


def _page_text(path) -> str:
  parser = _Text()
  with open(path) as f:
    parser.feed(f.read())
  return ' '.join(' '.join(parser.parts).split())


def _push_again(run, serving_dir):
  """The pipeline's Pusher once more on the run's own model and blessing."""
  model, blessing = standard_artifacts.Model(), standard_artifacts.ModelBlessing()
  model.set_mlmd_artifact(run.output('Trainer', 'model'))
  blessing.set_mlmd_artifact(run.output('Evaluator', 'blessing'))
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(serving_dir.parent / 'pushed_again')
  os.makedirs(pushed.uri)
  destination = json.dumps({'filesystem': {'base_directory': str(serving_dir)}})
  pusher._AtomicPusherExecutor().Do({'model': [model], 'model_blessing': [blessing]},
                                    {'pushed_model': [pushed]}, {'push_destination': destination})


@pytest.mark.slow
def test_a_push_records_what_was_pushed_and_the_version_carries_its_model_card(
    pipeline_run, tmp_path):
  config, summary = pipeline_run
  run = metadata.find_run(metadata.open_run_store(config), config, summary['run_id'])
  pushed = run.output('Pusher', 'pushed_model')
  version = int(metadata.custom_property(pushed, 'pushed_version'))
  audit_dir = audit.audit_dir(config.serving_dir)
  # The session's run pushed first into its serving dir: its two records lead.
  attempted, done = [r for r in audit.history(audit_dir, config.model_name)
                     if r['action'] == 'push'][:2]
  assert (attempted['status'], done['status']) == ('attempted', 'done')
  assert attempted['action_id'] == done['action_id'] and done['version'] == version
  serving_dir = pathlib.Path(config.push_dir)
  assert done['destination'] == str(serving_dir / str(version))
  # What was pushed and why: blessing, metrics, thresholds, spans, code.
  evaluation = run.output('Evaluator', 'evaluation').uri
  assert attempted['blessing']['blessed'] and attempted['evaluation']['validation_ok']
  assert attempted['metrics'] == metadata.evaluation_metrics(evaluation)
  thresholds = attempted['evaluation']['thresholds']
  assert thresholds and thresholds == metadata.metric_thresholds(evaluation)
  fingerprint = attempted['code_fingerprint']
  assert attempted['spans'] == [1] and re.fullmatch('[0-9a-f]{16}', fingerprint)
  # The done record, which the run report links, holds the same facts.
  assert {k: done[k] for k in ('blessing', 'evaluation', 'metrics', 'training', 'spans')} == \
      {k: attempted[k] for k in ('blessing', 'evaluation', 'metrics', 'training', 'spans')}
  by = attempted['by']
  assert by['code']['git_commit'] == _git_head() and by['host'] and by['user']
  assert by['command'] and by['pid'] == os.getpid()
  # The card is inside the version TF Serving loads, and says what a person needs.
  card = serving_dir / str(version) / 'assets.extra' / 'model_card.html'
  assert done['model_card'] == str(card)
  # MLMD's PushedModel names them (what the run report links to).
  outcome = metadata.push_outcome(pushed)
  assert (outcome['audit_record'], outcome['audit_action_id'], outcome['model_card']) == \
      (done['path'], done['action_id'], str(card))
  text = _page_text(card)
  slices = metadata.metrics_by_slice(evaluation)
  overall = slices[0]['metrics']
  headline = next(m for m in metadata.HEADLINE_METRICS if m in overall)
  train_examples = metadata.split_statistics(
      run.output('StatisticsGen', 'statistics').uri)['train'].num_examples
  threshold = thresholds[0]
  expected = ['Intended use', 'Known limits', 'Spans 1', fingerprint,
              f'overall {model_card.number(overall["examples"], count=True)} ',
              model_card.number(overall[headline]),
              f'{threshold["metric"]} {threshold["slices"]}',
              f'Span 1, split train: {model_card.number(train_examples, count=True)} examples',
              f'{conftest.a_feature("float", required=True)} FLOAT 0 mean', done['action_id']]
  expected += [s['slice'] for s in slices[1:2]]  # A slice, when the example has them.
  for phrase in expected:
    assert phrase in text, phrase
  # Pushing the same model again serves nothing new: one 'skipped' record.
  again = tmp_path / 'serving_model' / config.model_name
  shutil.copytree(serving_dir, again)
  _push_again(run, again)
  records = audit.history(audit.audit_dir(str(again.parent)), config.model_name)
  assert records[-1]['status'] == 'skipped' and records[-1]['version'] == version
  assert pusher.version_dirs(str(again)) == pusher.version_dirs(str(serving_dir))


def test_a_push_whose_rename_fails_is_recorded_as_failed(tmp_path, monkeypatch):
  serving = tmp_path / 'serving' / MODEL

  def full_disk(source, target):
    raise OSError(errno.ENOSPC, 'No space left on device', target)

  monkeypatch.setattr(pusher.os, 'rename', full_disk)
  with pytest.raises(OSError):
    _push(tmp_path, b'a model', serving)
  monkeypatch.undo()
  records = audit.history(str(tmp_path / 'serving' / 'audit'))
  assert [r['status'] for r in records] == ['attempted', 'failed']
  failed = records[-1]
  assert 'No space left on device' in failed['error']
  assert failed['left_behind'] == {'version_dir_exists': False, 'staging_dir_removed': True}
  assert pusher.version_dirs(str(serving)) == [] and os.listdir(serving) == []
  # The blessing had no Evaluator output beside it: the record says so.
  assert 'no Evaluator output' in records[0]['evaluation']['unavailable']


def _rollout(*args, expect=0):
  done = subprocess.run([sys.executable, '-m', 'operations.rollout', *args],
                        cwd=str(conftest.REPO), env=ENV, capture_output=True, text=True,
                        timeout=180)
  assert done.returncode == expect, done.stderr
  return done


def _contents(directory):
  return {name: (directory / name).read_bytes() for name in os.listdir(directory)}


@pytest.mark.slow
def test_rollout_steps_leave_their_records_in_order_and_history_prints_them(tmp_path):
  serving = tmp_path / 'serving_model'
  config = str(serving / 'models.config')
  trail = serving / 'audit'
  _rollout('--config', config, 'init', '--serving-dir', str(serving))
  # The model the generated config serves (the template's: serving/deploy/models.config).
  model = rollout.model_config(rollout.read_config(config)).name
  _rollout('--config', config, 'canary', model, '1')
  _rollout('--config', config, 'canary', model, '2')
  first_records = _contents(trail)
  passed = tmp_path / 'monitoring.json'
  passed.write_text(json.dumps({
      'labels': {'stable': 1, 'canary': 2}, 'findings': {'prediction_shift': []},
      'predictions_by_version': {'2': {'count': 300, 'shift': {'anomalous': False}}}}))
  _rollout('--config', config, 'promote', model, '--monitoring', str(passed))
  _rollout('--config', config, 'canary', model, '3')
  refused = _rollout('--config', config, 'promote', model, expect=1)
  assert 'has not passed' in refused.stderr
  _rollout('--config', config, 'rollback', model)

  records = [json.loads(line) for line in
             _rollout('--config', config, 'history', model, '--json').stdout.splitlines()]
  assert [(r['action'], r['status']) for r in records] == [
      ('canary', 'attempted'), ('canary', 'done'), ('canary', 'attempted'), ('canary', 'done'),
      ('promote', 'attempted'), ('promote', 'done'), ('canary', 'attempted'),
      ('canary', 'done'), ('promote', 'attempted'), ('promote', 'refused'),
      ('rollback', 'attempted'), ('rollback', 'done')]
  assert [r['labels'] for r in records if r['status'] == 'done'] == [
      {'stable': 1, 'canary': 1}, {'stable': 1, 'canary': 2}, {'stable': 2, 'canary': 2},
      {'stable': 2, 'canary': 3}, {'stable': 2, 'canary': 2}]
  # The promote holds the comparison that justified it, and its file's hash.
  justified = records[5]['monitoring']
  assert justified['source'] == str(passed) and justified['predictions_by_version']['2'][
      'shift'] == {'anomalous': False}
  import hashlib
  assert justified['sha256'] == hashlib.sha256(passed.read_bytes()).hexdigest()
  assert records[5]['by']['code']['git_commit'] == _git_head()
  # History for people: one line per record, oldest first.
  lines = _rollout('--config', config, 'history', model).stdout.splitlines()
  assert len(lines) == len(records)
  assert 'promote  refused   refused: canary vs stable comparison has not passed' in lines[9]
  assert lines[-1].split()[1:5] == [model, 'rollback', 'done', 'stable=2']
  # The whole trail, init included; no record was rewritten by a later step.
  everything = _rollout('--config', config, 'history', '--json').stdout.splitlines()
  assert json.loads(everything[0])['action'] == 'init'
  now = _contents(trail)
  assert {name: now[name] for name in first_records} == first_records
  assert all(not os.stat(trail / name).st_mode & 0o222 for name in now)


def test_a_promote_whose_config_write_fails_is_recorded_as_failed(tmp_path, monkeypatch):
  path = str(tmp_path / 'models.config')
  rollout.write_config(model_server_config('/models/taxi', tmp_path / 'logs'), path)
  rollout.canary(path, MODEL, 1)
  rollout.canary(path, MODEL, 2)
  before = open(path).read()

  def full_disk(source, target):
    raise OSError(errno.ENOSPC, 'No space left on device', target)

  monkeypatch.setattr(rollout.os, 'replace', full_disk)
  with pytest.raises(OSError):
    rollout.promote(path, MODEL, force=True)
  monkeypatch.undo()
  records = audit.history(str(tmp_path / 'audit'), MODEL)
  attempted, failed = records[-2:]
  assert (attempted['action'], attempted['status'], failed['status']) == \
      ('promote', 'attempted', 'failed')
  assert attempted['forced'] and attempted['action_id'] == failed['action_id']
  assert 'No space left on device' in failed['error']
  # What the failure left in force: the labels as they were.
  assert failed['left_behind'] == {'labels': {'stable': 1, 'canary': 2},
                                   'versions_served': [1, 2]}
  assert open(path).read() == before
  assert 'promote  failed' in audit.format_history(records)


def test_an_action_that_died_before_its_outcome_is_flagged(tmp_path):
  trail = str(tmp_path / 'audit')
  audit.Action(trail, MODEL, 'promote', 'stable to canary version 2')  # Then killed.
  text = audit.format_history(audit.history(trail))
  assert 'WARNING: promote' in text and 'has no outcome' in text


def test_a_record_is_never_replaced(tmp_path):
  record = audit.write(str(tmp_path), MODEL, 'rollback', 'done', 'canary back to stable')
  before = open(record['path'], 'rb').read()
  with pytest.raises(FileExistsError):
    audit._write_local(record['path'], b'{}')
  assert open(record['path'], 'rb').read() == before
  assert os.listdir(tmp_path) == [os.path.basename(record['path'])]  # No staging file left.


def test_a_retrain_decision_records_what_justified_it(tmp_path):
  header, rows = conftest.sample_rows()
  conftest.write_csv(tmp_path / 'data' / 'span-1' / 'data.csv', header, rows[:50])
  config = conftest.small_config(tmp_path, tmp_path / 'data')
  os.makedirs(os.path.dirname(config.metadata_path))
  metadata.open_store(config.metadata_path)  # Earlier runs: none of this data root.
  result = tmp_path / 'monitoring.json'
  findings = {'skew': [NUMERIC], 'drift': []}
  result.write_text(json.dumps({'findings': findings}))
  decision = retrain.decide(config, str(result))
  assert decision.run and 'span 1' in decision.reason
  [record] = audit.history(str(tmp_path / 'serving_model' / 'audit'))
  assert (record['action'], record['status'], record['model']) == \
      ('retrain', 'decided', config.model_name)
  assert record['reason'] == decision.reason and record['latest_span_on_disk'] == 1
  assert record['monitoring']['findings'] == findings
  assert record['monitoring']['source'] == str(result)


def test_a_canary_whose_version_never_loads_is_recorded_half_done(tmp_path):
  path = str(tmp_path / 'models.config')
  rollout.write_config(model_server_config('/models/taxi', tmp_path / 'logs'), path)
  rollout.canary(path, MODEL, 1)

  def never_loads(version):
    raise rollout.RolloutError(f'version {version} did not become AVAILABLE in 120s')

  with pytest.raises(rollout.RolloutError):
    rollout.canary(path, MODEL, 2, never_loads)
  failed = audit.history(str(tmp_path / 'audit'), MODEL)[-1]
  assert (failed['action'], failed['status']) == ('canary', 'failed')
  assert 'did not become AVAILABLE' in failed['error']
  # Step 1 (serve version 2) happened, step 2 (the label) did not.
  assert failed['left_behind'] == {'labels': {'stable': 1, 'canary': 1},
                                   'versions_served': [1, 2]}


def test_code_without_a_git_checkout_reports_the_commit_the_image_was_built_from(
    tmp_path, monkeypatch):
  # A container image: the code has no .git; the build set $PIPELINE_GIT_COMMIT.
  monkeypatch.setenv(audit.GIT_COMMIT_ENV, 'abc123-dirty')
  assert audit.code_version(str(tmp_path)) == {
      'git_commit': 'abc123', 'git_dirty': True,
      'source': f'${audit.GIT_COMMIT_ENV} (set when the image was built)'}
  monkeypatch.delenv(audit.GIT_COMMIT_ENV)
  audit._code_cache.clear()
  unknown = audit.code_version(str(tmp_path))
  assert unknown['git_commit'] == 'unknown' and 'not a git checkout' in unknown['source']
