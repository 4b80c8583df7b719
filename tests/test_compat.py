"""The compatibility fences: each private-API use runs only on the library
version it was written for, falls back to the library as shipped on any
other, and the pins cannot move without these modules being revisited."""

import logging
import pathlib
import re

import apache_beam
import dill
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import core, userstate
from dill import _dill
from tfx import version as tfx_version
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.orchestration.portable import launcher

from compat import beam as compat_beam
from compat import tfx as compat_tfx
from pipeline import configs
from pipeline.components import csv_example_gen

LOCK_FILE = pathlib.Path(configs.REPO_ROOT) / 'requirements.lock'


def _pinned(package: str) -> str:
  found = re.search(rf'^{re.escape(package)}==(\S+)', LOCK_FILE.read_text(), re.MULTILINE)
  assert found, f'{package} is not pinned in requirements.lock'
  return found.group(1)


@pytest.mark.parametrize('package, written_for', [
    ('tfx', compat_tfx.WRITTEN_FOR),
    ('apache-beam', compat_beam.BEAM_WRITTEN_FOR),
    ('dill', compat_beam.DILL_WRITTEN_FOR),
])
def test_the_pins_are_the_versions_the_fences_were_written_for(package, written_for):
  # Moving a pin means re-reading that library's compat module first.
  pinned = _pinned(package)
  assert pinned == written_for or pinned.startswith(written_for + '.'), (
      f'requirements.lock pins {package}=={pinned}, compat/ was written for {written_for}')


def test_the_installed_versions_are_supported(caplog):
  assert compat_tfx.supported('anything')
  assert compat_beam.supported('Apache Beam', compat_beam.BEAM_WRITTEN_FOR)
  assert compat_beam.supported('dill', compat_beam.DILL_WRITTEN_FOR)
  assert not caplog.records


@pytest.fixture
def other_tfx(monkeypatch):
  """An unknown TFX version; the once-per-feature warnings forgotten."""
  monkeypatch.setattr(tfx_version, '__version__', '1.17.0')
  monkeypatch.setattr(compat_tfx, '_warned', set())


def test_on_another_tfx_the_runner_uses_tfx_launcher_as_shipped(other_tfx, caplog):
  with caplog.at_level(logging.WARNING, logger='compat.tfx'):
    assert compat_tfx.launcher_class(lambda node_id: None) is launcher.Launcher
    compat_tfx.launcher_class(lambda node_id: None)
  [warning] = caplog.records  # Once, not per component.
  assert 'TFX 1.17.0 is not the 1.16.x that compat/tfx.py was written for' in warning.message


def test_on_another_tfx_example_gen_runs_tfx_executor_as_shipped(other_tfx, caplog):
  local = configs.load(environ={}).beam_pipeline_args()
  executor = csv_example_gen.Executor(csv_example_gen.Executor.Context(beam_pipeline_args=local))
  with caplog.at_level(logging.WARNING, logger='compat.tfx'):
    assert executor.GetInputSourceToExamplePTransform() is csv_executor._CsvToExample  # pylint: disable=protected-access
    assert type(executor.make_beam_pipeline()) is apache_beam.Pipeline
  assert 'streaming CsvExampleGen' in caplog.records[0].message


def test_on_the_known_tfx_example_gen_streams():
  local = configs.load(environ={}).beam_pipeline_args()
  executor = csv_example_gen.Executor(csv_example_gen.Executor.Context(beam_pipeline_args=local))
  assert executor.GetInputSourceToExamplePTransform() is csv_example_gen._StreamingCsvToExample  # pylint: disable=protected-access
  assert type(executor.make_beam_pipeline()) is csv_example_gen._InMemoryPipeline  # pylint: disable=protected-access


@pytest.fixture
def beam_as_shipped(monkeypatch):
  """Whatever apply() replaces is restored afterwards; apply() may run again."""
  monkeypatch.setattr(core, 'get_function_args_defaults', core.get_function_args_defaults)
  monkeypatch.setattr(userstate, 'get_dofn_specs', userstate.get_dofn_specs)
  monkeypatch.setattr(PipelineOptions, 'view_as', PipelineOptions.view_as)
  monkeypatch.setattr(_dill, '_trace', _dill._trace)  # pylint: disable=protected-access
  monkeypatch.setattr(compat_beam, '_applied', False)
  return (core.get_function_args_defaults, userstate.get_dofn_specs, PipelineOptions.view_as,
          _dill._trace)  # pylint: disable=protected-access


def _current():
  return (core.get_function_args_defaults, userstate.get_dofn_specs, PipelineOptions.view_as,
          _dill._trace)  # pylint: disable=protected-access


def test_on_another_beam_its_memoizations_are_left_out(beam_as_shipped, monkeypatch, caplog):
  monkeypatch.setattr(apache_beam, '__version__', '2.60.0')
  with caplog.at_level(logging.WARNING, logger='compat.beam'):
    compat_beam.apply()
  shipped, now = beam_as_shipped, _current()
  assert now[:3] == shipped[:3]  # Beam's own functions.
  assert now[3] is not shipped[3]  # dill is the pinned one: still memoized.
  assert 'Apache Beam 2.60.0 is not the 2.59' in caplog.records[0].message


def test_on_another_dill_its_memoization_is_left_out(beam_as_shipped, monkeypatch, caplog):
  monkeypatch.setattr(dill, '__version__', '0.3.8')
  with caplog.at_level(logging.WARNING, logger='compat.beam'):
    compat_beam.apply()
  shipped, now = beam_as_shipped, _current()
  assert now[3] is shipped[3]
  assert all(n is not s for n, s in zip(now[:3], shipped[:3]))
  assert 'dill 0.3.8 is not the 0.3.1.1' in caplog.records[0].message


def test_on_the_pinned_versions_everything_is_memoized(beam_as_shipped):
  compat_beam.apply()
  assert all(n is not s for n, s in zip(_current(), beam_as_shipped))


@pytest.mark.slow
def test_on_another_tfx_the_runner_still_runs_the_pipeline(other_tfx, tmp_path):
  from tests.test_parallel_runner import _pipeline, _Recorder
  recorder = _Recorder()
  recorder.runner().run(_pipeline(tmp_path))
  # One component at a time, no on_execute hint; the progress hooks as ever.
  assert recorder.events == [('start', 'Produce'), ('finish', 'Produce'),
                             ('start', 'Consume'), ('finish', 'Consume')]


# ---- compat/keras.py: TF_USE_LEGACY_KERAS, in one place ---------------------

ENTRY_POINTS = ['local_runner.py', 'kubeflow_v2_runner.py', 'reports/run_report.py',
                'operations/monitoring.py', 'operations/rollout.py', 'client/predict.py',
                'data/generate_taxi.py', 'serving/server.py', 'pipeline/schema_bootstrap.py']


@pytest.mark.parametrize('path', ENTRY_POINTS)
def test_every_entry_point_imports_compat_keras_first(path):
  """Before any import but the standard library's (which loads no TF)."""
  import ast
  import sys
  tree = ast.parse((pathlib.Path(configs.REPO_ROOT) / path).read_text())
  imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
  names = [node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
           for node in imports]
  assert 'compat.keras' in names, path
  before = names[:names.index('compat.keras')]
  assert all(name.split('.')[0] in sys.stdlib_module_names for name in before), (path, before)


def _python(code_or_args, environ):
  import os
  import subprocess
  import sys
  env = {k: v for k, v in os.environ.items() if k != 'TF_USE_LEGACY_KERAS'}
  env.update(environ, PYTHONPATH=configs.REPO_ROOT)
  return subprocess.run([sys.executable, *code_or_args], env=env, cwd=configs.REPO_ROOT,
                        capture_output=True, text=True, timeout=120)


def test_an_entry_point_sets_legacy_keras_when_unset():
  done = _python(['-c', 'import compat.keras, os; print(os.environ["TF_USE_LEGACY_KERAS"])'], {})
  assert done.returncode == 0 and done.stdout == '1\n', done.stderr


def test_a_user_setting_of_keras_3_is_one_line_and_exit_2():
  done = _python(['-m', 'data.generate_taxi', '--help'], {'TF_USE_LEGACY_KERAS': '0'})
  assert done.returncode == 2
  assert done.stderr == ('error: TF_USE_LEGACY_KERAS=0 selects Keras 3, which TFX 1.16 '
                         'cannot use: unset it or set it to 1.\n')


def test_tensorflow_imported_before_it_is_an_error(monkeypatch):
  import importlib
  import tensorflow  # noqa: F401  Already imported, as by a careless entry module.
  from compat import keras as compat_keras
  monkeypatch.delenv('TF_USE_LEGACY_KERAS')
  with pytest.raises(ImportError, match='TensorFlow was imported before compat.keras'):
    importlib.reload(compat_keras)
