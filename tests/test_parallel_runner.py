"""The parallel runner's scheduling: upstream first, independent side by side,
and a failure stops what has not started. (Real pipeline runs with it are in
test_pipeline.py and test_bad_data.py.)"""

import io
import logging
import shutil
import threading

import pytest
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.portable import launcher
from tfx.proto.orchestration import pipeline_pb2
from tfx.types import standard_artifacts

from orchestration.runner import ParallelLocalDagRunner, _run_when_ready

def _nodes(graph):
  """PipelineNodes from {node id: [upstream ids]}, in the given order."""
  nodes = []
  for node_id, upstream in graph.items():
    node = pipeline_pb2.PipelineNode()
    node.node_info.id = node_id
    node.upstream_nodes.extend(upstream)
    nodes.append(node)
  return nodes


# The taxi pipeline's tail: Evaluator and InfraValidator both wait for the Trainer.
TAIL = {'Trainer': [], 'InfraValidator': ['Trainer'], 'Resolver': ['Trainer'],
        'Evaluator': ['Trainer', 'Resolver'], 'Pusher': ['Evaluator', 'InfraValidator']}


def test_each_component_starts_after_its_upstream_ones_finish():
  finished, lock = [], threading.Lock()

  def launch(node):
    with lock:
      assert set(node.upstream_nodes) <= set(finished), node.node_info.id
      finished.append(node.node_info.id)

  _run_when_ready(_nodes(TAIL), launch, max_parallel=2)
  assert sorted(finished) == sorted(TAIL)
  assert finished[0] == 'Trainer' and finished[-1] == 'Pusher'


def test_independent_components_run_at_the_same_time():
  # Both must be inside launch() at once to pass the barrier; run one by
  # one, the first would wait alone and the barrier would break.
  together = threading.Barrier(2, timeout=30)

  def launch(node):
    if node.node_info.id in ('InfraValidator', 'Evaluator'):
      together.wait()

  _run_when_ready(_nodes(TAIL), launch, max_parallel=2)


def test_one_at_a_time_keeps_the_given_order():
  order = []
  _run_when_ready(_nodes(TAIL), lambda n: order.append(n.node_info.id), max_parallel=1)
  assert order == list(TAIL)


def test_a_failure_lets_running_components_finish_and_starts_nothing_new():
  evaluator_may_finish = threading.Event()
  launched = []

  def launch(node):
    launched.append(node.node_info.id)
    if node.node_info.id == 'InfraValidator':
      evaluator_may_finish.set()
      raise ValueError('model does not serve')
    if node.node_info.id == 'Evaluator':
      evaluator_may_finish.wait(30)

  graph = {'Trainer': [], 'Evaluator': ['Trainer'], 'InfraValidator': ['Trainer'],
           'Pusher': ['Evaluator', 'InfraValidator']}
  with pytest.raises(ValueError, match='does not serve'):
    _run_when_ready(_nodes(graph), launch, max_parallel=2)
  assert sorted(launched) == ['Evaluator', 'InfraValidator', 'Trainer']


def test_a_component_whose_upstream_never_runs_is_an_error():
  with pytest.raises(RuntimeError, match='No component can start: B'):
    _run_when_ready(_nodes({'A': [], 'B': ['A', 'B']}), lambda n: None, max_parallel=2)


# ---- real runs of a two-component pipeline, with the runner's hooks ---------




@component
def Produce(text: OutputArtifact[standard_artifacts.String]):
  text.value = 'produced'


@component
def Consume(text: InputArtifact[standard_artifacts.String],
            copy: OutputArtifact[standard_artifacts.String]):
  copy.value = text.value + ', consumed'


def _pipeline(root, enable_cache=True):
  produce = Produce()
  consume = Consume(text=produce.outputs['text'])
  return tfx_pipeline.Pipeline(
      pipeline_name='hooks', pipeline_root=str(root / 'root'),
      components=[produce, consume], enable_cache=enable_cache,
      metadata_connection_config=metadata.sqlite_metadata_connection_config(
          str(root / 'metadata.sqlite')))


class _Recorder:
  """What the hooks saw, and whether TFX's Launcher was left alone."""

  def __init__(self):
    self.events = []
    self.launcher_replaced = False

  def hook(self, name):
    original = launcher.Launcher

    def record(node_id):
      self.events.append((name, node_id))
      self.launcher_replaced |= launcher.Launcher is not original
    return record

  def runner(self, **kwargs):
    return ParallelLocalDagRunner(
        on_start=self.hook('start'), on_finish=self.hook('finish'),
        on_execute=self.hook('execute'), **kwargs)


@pytest.mark.slow
def test_hooks_see_each_component_and_only_real_executions(tmp_path):
  first = _Recorder()
  first.runner().run(_pipeline(tmp_path))
  assert first.events == [('start', 'Produce'), ('execute', 'Produce'), ('finish', 'Produce'),
                          ('start', 'Consume'), ('execute', 'Consume'), ('finish', 'Consume')]
  assert not first.launcher_replaced
  cached = _Recorder()
  cached.runner().run(_pipeline(tmp_path))
  assert cached.events == [('start', 'Produce'), ('finish', 'Produce'),
                           ('start', 'Consume'), ('finish', 'Consume')]


@pytest.mark.slow
def test_a_partial_run_goes_through_the_same_hooks(tmp_path):
  _Recorder().runner().run(_pipeline(tmp_path))
  partial = _Recorder()
  partial.runner().run(_pipeline(tmp_path, enable_cache=False),
                       run_options=tfx_pipeline.RunOptions(from_nodes=['Consume']))
  assert partial.events == [('start', 'Consume'), ('execute', 'Consume'), ('finish', 'Consume')]


# ---- a user's own logging in a real run, quiet mode -------------------------



def logging_preprocessing_fn(inputs):
  """The project's preprocessing_fn, logging as a user's code would."""
  from models import preprocessing
  logging.getLogger(__name__).info("the user's record from preprocessing_fn")
  return preprocessing.preprocessing_fn(inputs)


def logging_run_fn(fn_args):
  from models import model
  logging.info("the user's record from run_fn")
  model.run_fn(fn_args)


@pytest.mark.slow
def test_a_users_logging_in_run_fn_and_preprocessing_reaches_the_run_log(
    pipeline_run, sample_data_root, tmp_path):
  import local_runner
  from tests.conftest import small_config
  session_config, _ = pipeline_run
  # The session run's metadata, copied: ExampleGen and statistics stay cached,
  # and the session run's own state is left alone.
  config = small_config(tmp_path, sample_data_root, infra_validator='none',
                        preprocessing_fn=f'{__name__}.logging_preprocessing_fn',
                        run_fn=f'{__name__}.logging_run_fn')
  (tmp_path / 'tfx_output').mkdir()
  shutil.copy(session_config.metadata_path, config.metadata_path)
  console = io.StringIO()
  summary = local_runner.run(config, stream=console)  # Quiet, as by default.
  assert summary['succeeded'], summary['error']
  ran = {c['component'] for c in summary['components'] if not c['cached']}
  assert {'Transform', 'Trainer'} <= ran
  with open(summary['log_path']) as f:
    log = f.read()
  assert "the user's record from preprocessing_fn" in log
  assert "the user's record from run_fn" in log
  assert "the user's record" not in console.getvalue()  # INFO: the file only.
