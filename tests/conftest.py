"""Shared fixtures: a small sample of the shipped data and one real pipeline
run on it, reused by every test that needs a trained, pushed model."""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')  # Before TensorFlow loads.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import csv  # pylint: disable=g-import-not-at-top
import io
import json
import pathlib
import shutil

import pytest

import examples
from models import features
from pipeline import configs

REPO = pathlib.Path(configs.REPO_ROOT)
# The selected example's shipped data (<ENV_PREFIX>_EXAMPLE; taxi by default).
SHIPPED_CSV = REPO / examples.selected().CONFIG_DEFAULTS.get(
    'data_root', configs.PipelineConfig.data_root) / 'span-1' / 'data.csv'
SAMPLE_ROWS = 2_500  # At most about this many: enough to train, quick to run.


def pytest_collection_modifyitems(config, items):
  """`@pytest.mark.example('taxi')` marks a test about one example's own data
  (its columns, its generator, its curated schema): it runs only when that
  example is selected, so the rest of the suite runs on any example."""
  del config
  selected = examples.selected_name()
  for item in items:
    marker = item.get_closest_marker('example')
    if marker and selected not in marker.args:
      item.add_marker(pytest.mark.skip(
          reason=f'about the {"/".join(marker.args)} example; {examples.SWITCH}={selected} runs'))


# ---- The selected example's columns, for tests about any example ----------------------

def required_features() -> list:
  """The features every row and every serving request carries."""
  return [n for n, f in features.RAW_FEATURES.items() if f.required]


def a_feature(dtype=None, required=None) -> str:
  """The first model feature of that type (and requiredness), else an error."""
  for name, spec in features.model_features().items():
    if (dtype is None or spec.dtype == dtype) and (required is None or spec.required == required):
      return name
  raise LookupError(f'examples/{features.EXAMPLE_NAME}.py has no model feature of '
                    f'dtype {dtype}, required {required}')


def ignored_feature():
  """A column the model does not read, or None when the example has none."""
  return next((n for n, f in features.RAW_FEATURES.items() if f.kind == 'ignored'), None)


def a_cross() -> str:
  """A feature cross of two model features, as the hyperparameters write it."""
  return '*'.join(list(features.model_features())[-2:])


def example_hyperparameters() -> dict:
  """The hyperparameters the selected example trains with (its file)."""
  config = configs.load(environ={})
  return json.loads(pathlib.Path(config.path(config.hyperparameters_file)).read_text())


# The metric a model of the task is blessed on: the first the run's summary
# shows, and whether a better model has a higher one.
BLESSING_METRIC = {features.BINARY: 'auc', features.MULTICLASS: 'accuracy',
                   features.REGRESSION: 'rmse'}[features.TASK]
HIGHER_IS_BETTER = features.TASK != features.REGRESSION
# The config field bounding how much worse than the baseline a blessed model
# may be (an absolute drop, or a fraction of the RMSE).
ALLOWED_CHANGE = {features.BINARY: 'max_auc_drop', features.MULTICLASS: 'max_accuracy_drop',
                  features.REGRESSION: 'max_rmse_increase'}[features.TASK]


def meets_the_threshold(config, metrics) -> bool:
  """The blessing metric is within the config's absolute threshold."""
  value = metrics[BLESSING_METRIC]
  if features.TASK == features.REGRESSION:
    return value <= config.max_rmse
  return value >= (config.min_auc if features.TASK == features.BINARY else config.min_accuracy)


def read_shipped_rows():
  with open(SHIPPED_CSV, newline='') as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def write_csv(path: pathlib.Path, header, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator='\n').writerows([header] + rows)
  path.write_text(buffer.getvalue())


def sample_rows():
  header, rows = read_shipped_rows()
  return header, rows[::max(1, len(rows) // SAMPLE_ROWS)]


def small_config(tmp: pathlib.Path, data_root: pathlib.Path, **overrides):
  """A config for quick runs: own output/serving dirs, short training, floors
  a small sample can meet."""
  values = dict(data_root=str(data_root), output_root=str(tmp / 'tfx_output'),
                serving_dir=str(tmp / 'serving_model'), train_steps=120,
                min_auc=0.8, min_accuracy=0.8)
  values.update(overrides)
  return configs.load(values, environ={})


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
  """A copy of the code and schema that the pipeline is built from, so a
  test can edit it without touching the checkout."""
  for folder in ('models', 'pipeline', 'compat', 'schema', 'examples'):
    shutil.copytree(REPO / folder, tmp_path / folder,
                    ignore=shutil.ignore_patterns('__pycache__'))
  monkeypatch.setattr(configs, 'REPO_ROOT', str(tmp_path))
  return tmp_path


@pytest.fixture(scope='session')
def sample_data_root(tmp_path_factory):
  root = tmp_path_factory.mktemp('data')
  header, rows = sample_rows()
  write_csv(root / 'span-1' / 'data.csv', header, rows)
  return root


@pytest.fixture(scope='session')
def pipeline_run(tmp_path_factory, sample_data_root):
  """One real LocalDagRunner run of the whole pipeline on the sample."""
  import local_runner
  tmp = tmp_path_factory.mktemp('run')
  # Its own copy of the schema, which a test may edit (the checkout is never edited).
  schema = tmp / 'schema.pbtxt'
  shipped = configs.load({}, environ={})
  shutil.copyfile(shipped.path(shipped.schema_file), schema)
  config = small_config(tmp, sample_data_root, schema_file=str(schema))
  summary = local_runner.run(config, stream=io.StringIO())
  assert summary['succeeded'], summary['error']
  return config, summary


@pytest.fixture(scope='session')
def pushed_model(pipeline_run):
  """Serving base dir (<serving_dir>/<model_name>) holding one pushed version."""
  config, summary = pipeline_run
  assert summary['pushed'], summary
  return config.push_dir


@pytest.fixture(scope='session')
def pushed_version_dir(pipeline_run):
  _, summary = pipeline_run
  return summary['pushed_path']
