"""The pipeline DAG, and real runs of it on a small sample."""

import contextlib
import io
import os
import pathlib


import local_runner
from pipeline import configs
from pipeline import pipeline as pipeline_definition
from pipeline.components import infra_check
from tests.conftest import BLESSING_METRIC, meets_the_threshold

EXPECTED_UPSTREAMS = {
    'CsvExampleGen': set(),
    'StatisticsGen': {'CsvExampleGen'},
    'SchemaGen': {'StatisticsGen'},
    'CuratedSchemaGen': set(),
    'ExampleValidator': {'StatisticsGen', 'CuratedSchemaGen'},
    'AnomaliesGate': {'ExampleValidator', 'StatisticsGen'},
    'Transform': {'CsvExampleGen', 'CuratedSchemaGen', 'AnomaliesGate'},
    'Trainer': {'Transform', 'CuratedSchemaGen'},
    'LatestBlessedModelResolver': {'Trainer'},  # Never the candidate itself.
    'Evaluator': {'CsvExampleGen', 'Trainer', 'LatestBlessedModelResolver'},
    'InfraValidator': {'Trainer', 'CsvExampleGen'},
    'Pusher': {'InfraValidator', 'Evaluator'},
}


def _dag(pipeline):
  return {c.id: {u.id for u in c.upstream_nodes} for c in pipeline.components}


def test_dag_wires_every_standard_component():
  pipeline = pipeline_definition.create_pipeline(configs.load(environ={}))
  assert _dag(pipeline) == EXPECTED_UPSTREAMS


def test_tune_flag_puts_the_tuner_between_transform_and_trainer():
  pipeline = pipeline_definition.create_pipeline(configs.load({'tune': True}, environ={}))
  dag = _dag(pipeline)
  assert dag['Tuner'] == {'Transform'}
  assert 'Tuner' in dag['Trainer']


def test_env_and_overrides_reach_the_config():
  config = configs.load({'train_steps': 7}, environ={'TAXI_TUNE': 'true',
                                                      'TAXI_TRAIN_STEPS': '5'})
  assert config.tune is True and config.train_steps == 7


def test_run_pushes_a_blessed_model(pipeline_run):
  config, summary = pipeline_run
  assert summary['blessed'] and summary['pushed']
  version = pathlib.Path(summary['pushed_path'])
  assert version.parent == pathlib.Path(config.push_dir)
  assert version.name.isdigit()
  assert (version / 'saved_model.pb').exists()
  # Nothing half-written is left beside it.
  assert sorted(p.name for p in version.parent.iterdir()) == [version.name]
  assert meets_the_threshold(config, summary['metrics']), summary['metrics']


def _latest(config, node):
  from pipeline import metadata
  store = metadata.open_store(config.metadata_path, read_only=True)
  return metadata.LatestRun(store, config.pipeline_name, node)


def _property(run, name):
  import json
  return json.loads(run.execution.custom_properties[name].string_value)


def test_the_evaluator_judges_the_test_split_only(pipeline_run):
  from pipeline import metadata
  config, summary = pipeline_run
  evaluator = _latest(config, 'Evaluator')
  assert _property(evaluator, 'example_splits') == ['test']
  # Its evaluation counted exactly the test split's examples.
  statistics = metadata.split_statistics(_latest(config, 'StatisticsGen').one('statistics').uri)
  counts = {split: s.num_examples for split, s in statistics.items()}
  assert sorted(counts) == sorted(configs.SPLITS)
  assert summary['metrics']['examples'] == counts['test'] != counts['eval']
  by_name = {c['component']: c for c in summary['components']}
  assert by_name['Evaluator']['result'].startswith(
      f'test ({counts["test"]:,} examples): {BLESSING_METRIC} ')


def test_training_validates_on_eval_and_transform_skips_test(pipeline_run):
  config, _ = pipeline_run
  trainer = _latest(config, 'Trainer')
  assert _property(trainer, 'train_args')['splits'] == ['train']
  assert _property(trainer, 'eval_args')['splits'] == ['eval']
  transform = _latest(config, 'Transform')
  assert _property(transform, 'splits_config') == {'analyze': ['train'],
                                                    'transform': ['train', 'eval']}
  transformed = transform.one('transformed_examples')
  assert transformed.properties['split_names'].string_value == '["train", "eval"]'


def test_summary_reports_each_component_once(pipeline_run):
  _, summary = pipeline_run
  ran = [c['component'] for c in summary['components']]
  assert sorted(ran) == sorted(EXPECTED_UPSTREAMS)
  by_name = {c['component']: c for c in summary['components']}
  assert 'examples' in by_name['StatisticsGen']['result']
  assert by_name['ExampleValidator']['result'] == 'no anomalies'
  assert by_name['Pusher']['result'].startswith('pushed to ')


@contextlib.contextmanager
def _edited(path: pathlib.Path):
  """Appends a comment to a copy's file (code or schema) for the block, then
  restores it."""
  original = path.read_bytes()
  try:
    path.write_bytes(original + b'\n# edited by a test\n')
    yield
  finally:
    path.write_bytes(original)


def _rerun(config):
  summary = local_runner.run(config, stream=io.StringIO())
  assert summary['succeeded'], summary['error']
  return {c['component'] for c in summary['components'] if not c['cached']}


def _record_standby_use(monkeypatch):
  """Servers started by start_standby(), and what each check took."""
  started, taken = [], []
  start, take = infra_check.start_standby, infra_check._take_standby  # pylint: disable=protected-access
  monkeypatch.setattr(infra_check, 'start_standby', lambda: started.append(1) or start())
  monkeypatch.setattr(infra_check, '_take_standby', lambda: taken.append(take()) or taken[-1])
  return started, taken


def test_reruns_exactly_what_an_edit_affects(pipeline_run, repo_copy, monkeypatch):
  # One test, in order, to share the runs: each step starts from the cache
  # the previous one left.
  config, _ = pipeline_run
  # The Pusher always executes: it compares with the serving directory.
  always = {'CuratedSchemaGen', 'LatestBlessedModelResolver', 'AnomaliesGate', 'Pusher'}
  after_training = {'Trainer', 'Evaluator', 'InfraValidator'}
  standby_started, standby_taken = _record_standby_use(monkeypatch)

  # Nothing changed: everything is cached, even though the model the first
  # run blessed is now a blessed baseline (it is not its own baseline).
  # No infra check server is started for it either.
  versions = sorted(os.listdir(config.push_dir))
  assert _rerun(config) - always == set()
  assert sorted(os.listdir(config.push_dir)) == versions
  assert standby_started == [] and standby_taken == []

  checkout_model = pathlib.Path(__file__).resolve().parents[1] / 'models' / 'model.py'
  unedited = checkout_model.read_bytes()
  with _edited(repo_copy / 'models' / 'model.py'):
    assert _rerun(config) - always == after_training
    assert checkout_model.read_bytes() == unedited  # The edit is the copy's alone.
  # The infra check served the candidate from the server started early.
  assert len(standby_started) == 1 and standby_taken[0] is not None
  assert infra_check._standby is None  # pylint: disable=protected-access

  with _edited(repo_copy / 'models' / 'preprocessing.py'):
    assert _rerun(config) - always == {'Transform'} | after_training

  with _edited(pathlib.Path(config.path(config.schema_file))):
    assert _rerun(config) - always == {'ExampleValidator', 'Transform'} | after_training


def test_a_new_push_becomes_the_canary(tmp_path):
  from operations import rollout
  serving_config = tmp_path / 'models.config'
  # What users run first (README): the config the canary flow rewrites.
  rollout.init(str(serving_config), str(tmp_path / 'serving_model'))
  config = configs.load({'serving_config_file': str(serving_config)}, environ={})
  push_dir = f'/serving/{config.model_name}'
  first = local_runner._label_canary(config, f'{push_dir}/1700000000')
  assert first == {'stable': 1700000000, 'canary': 1700000000}
  second = local_runner._label_canary(config, f'{push_dir}/1700003600')
  assert second == {'stable': 1700000000, 'canary': 1700003600}
  # The file TF Serving polls says the same.
  assert rollout.labels(rollout.read_config(str(serving_config)), config.model_name) == second
