"""Continuous training: new spans, the rolling window, the analyzer cache, and
the change threshold that keeps a worse model from being pushed."""

import io
import os
import re

import pytest

import local_runner
from pipeline import configs
from pipeline import metadata
from operations import retrain
from pipeline import audit
from tests.conftest import (ALLOWED_CHANGE, BLESSING_METRIC, HIGHER_IS_BETTER, sample_rows,
                            small_config, write_csv)


def _latest_inputs(config, node_id):
  """{input key: [artifact]} of the node's latest execution."""
  store = metadata.open_store(config.metadata_path)
  return metadata.LatestRun(store, config.pipeline_name, node_id).inputs_by_key


def _run(config):
  summary = local_runner.run(config, stream=io.StringIO())
  assert summary['succeeded'], summary['error']
  return summary


@pytest.fixture(scope='module')
def two_spans(tmp_path_factory):
  """Span 1 trained on; then span 2 arrives and is trained on with span 1."""
  tmp = tmp_path_factory.mktemp('ct')
  header, rows = sample_rows()
  half = len(rows) // 2
  data_root = tmp / 'data'
  write_csv(data_root / 'span-1' / 'data.csv', header, rows[:half])
  # Any change vs the baseline is allowed: the second model is pushed.
  config = small_config(tmp, data_root, span_window=2, **{ALLOWED_CHANGE: 1.0})
  first = _run(config)
  before_span_2 = retrain.decide(config)
  write_csv(data_root / 'span-2' / 'data.csv', header, rows[half:])
  with_span_2 = retrain.decide(config)
  second = _run(config)
  return config, first, second, before_span_2, with_span_2


def test_retrain_decision_follows_new_spans(two_spans):
  config, _, _, before_span_2, with_span_2 = two_spans
  assert not before_span_2.run and 'no new span' in before_span_2.reason
  assert with_span_2.run and 'new span 2' in with_span_2.reason
  assert not retrain.decide(config).run  # Span 2 is now trained on.


def test_new_span_is_trained_with_the_previous_one(two_spans):
  config, _, second, _, _ = two_spans
  spans = sorted(a.custom_properties['span'].int_value
                 for a in _latest_inputs(config, 'Transform')['examples'])
  assert spans == [1, 2]
  assert second['pushed']


def test_new_model_is_judged_against_the_blessed_one(two_spans):
  config, first, second, _, _ = two_spans
  baseline = _latest_inputs(config, 'Evaluator')['baseline_model']
  first_line = [c for c in first['components'] if c['component'] == 'Evaluator']
  second_line = [c for c in second['components'] if c['component'] == 'Evaluator']
  assert 'no baseline yet' in first_line[0]['result']
  assert f'vs baseline model #{baseline[0].id}' in second_line[0]['result']
  model = _latest_inputs(config, 'Evaluator')['model'][0]
  assert baseline[0].id != model.id


def test_transform_reuses_the_previous_analysis(two_spans):
  config, _, _, _, _ = two_spans
  caches = _latest_inputs(config, 'Transform').get('analyzer_cache', [])
  assert len(caches) == 1
  assert os.listdir(caches[0].uri)  # The first run's analysis, per span.


def test_a_worse_model_is_not_pushed(two_spans):
  config, _, second, _, _ = two_spans
  pushed_before = sorted(os.listdir(config.push_dir))
  # Barely trained: its metric is worse than the blessed baseline's.
  worse = configs.load(dict(vars(config), train_steps=2, **{ALLOWED_CHANGE: 0.0}), environ={})
  summary = _run(worse)
  assert not summary['blessed'] and not summary['pushed']
  change = summary['metrics'][BLESSING_METRIC] - second['metrics'][BLESSING_METRIC]
  assert change < 0 if HIGHER_IS_BETTER else change > 0
  assert local_runner.exit_code(summary) == local_runner.EXIT_NOT_BLESSED
  # The run's Evaluator line names the change and the one allowed.
  [line] = [c['result'] for c in summary['components'] if c['component'] == 'Evaluator']
  allowed = "+0.0% of the baseline's" if ALLOWED_CHANGE == 'max_rmse_increase' else '-0.0000'
  assert re.search(rf'{BLESSING_METRIC} [+-][\d.]+ vs the baseline \(allowed {re.escape(allowed)}\)',
                   line), line
  assert sorted(os.listdir(config.push_dir)) == pushed_before
  # The report says why.
  with open(summary['report_path']) as f:
    report = f.read()
  worse_sign = '-' if HIGHER_IS_BETTER else ''
  assert 'NOT BLESSED' in report
  assert re.search(rf'{BLESSING_METRIC} \(change vs baseline\) = {worse_sign}\d', report)


def test_each_push_and_retrain_decision_is_recorded(two_spans):
  """The real pipeline's pushes: a record each, linked from MLMD, and a model
  card in each version holding that version's metrics."""
  config, first, second, _, with_span_2 = two_spans
  records = audit.history(audit.audit_dir(config.path(config.serving_dir)), config.model_name)
  done = [r for r in records if (r['action'], r['status']) == ('push', 'done')]
  assert [r['destination'] for r in done][:2] == [first['pushed_path'], second['pushed_path']]
  retrains = [r for r in records if r['action'] == 'retrain']
  assert [r['reason'] for r in retrains][:1] == [with_span_2.reason]
  assert retrains[0]['time'] < done[1]['time']  # The decision, then the push it led to.
  store = metadata.open_store(config.metadata_path, read_only=True)
  pushes = [a for a in store.get_artifacts_by_type('PushedModel')
            if metadata.push_outcome(a)['new_version']]
  for push, record, summary in zip(pushes, done, (first, second)):
    assert metadata.push_outcome(push)['audit_record'] == record['path']
    assert record['spans'] == ([1] if summary is first else [1, 2])
    assert record['metrics'][BLESSING_METRIC] == summary['metrics'][BLESSING_METRIC]
    with open(os.path.join(record['destination'], 'assets.extra', 'model_card.html')) as f:
      assert f'{summary["metrics"][BLESSING_METRIC]:.4f}' in f.read()
