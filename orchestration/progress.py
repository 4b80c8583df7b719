"""Quiet progress for pipeline runs: one line per component and its key result.

Each component's line gives its time (or 'cached') and what it produced,
read from its output artifacts in MLMD.
"""

import contextlib
import os
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.components import anomalies_gate



def open_store(metadata_path: str, read_only: bool = False) -> metadata_store.MetadataStore:
  """The pipeline's ML Metadata store (SQLite at metadata_path)."""
  connection = metadata_store_pb2.ConnectionConfig()
  connection.sqlite.filename_uri = metadata_path
  if read_only:
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  return metadata_store.MetadataStore(connection)


class LatestRun:
  """The artifacts a node's latest execution read and wrote, from MLMD."""

  def __init__(self, store: metadata_store.MetadataStore, pipeline_name: str,
               node_id: str):
    self.outputs_by_key: Dict[str, List[metadata_store_pb2.Artifact]] = {}
    self.inputs_by_key: Dict[str, List[metadata_store_pb2.Artifact]] = {}
    self.execution: Optional[metadata_store_pb2.Execution] = None
    context = store.get_context_by_type_and_name('node', f'{pipeline_name}.{node_id}')
    if context is None:
      return
    executions = store.get_executions_by_context(context.id)
    if not executions:
      return
    self.execution = max(executions, key=lambda e: e.id)
    events = store.get_events_by_execution_ids([self.execution.id])
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    for event in events:
      if event.type == metadata_store_pb2.Event.INPUT:
        by_key = self.inputs_by_key
      elif event.type in (metadata_store_pb2.Event.OUTPUT,
                          metadata_store_pb2.Event.DECLARED_OUTPUT):
        by_key = self.outputs_by_key
      else:
        continue
      key = event.path.steps[0].key if event.path.steps else ''
      by_key.setdefault(key, []).append(artifacts[event.artifact_id])

  def inputs(self, key: str) -> List[metadata_store_pb2.Artifact]:
    return self.inputs_by_key.get(key, [])

  def one(self, key: str) -> Optional[metadata_store_pb2.Artifact]:
    found = self.outputs_by_key.get(key)
    return found[0] if found else None


def custom_property(artifact, name, default=None):
  if artifact is None or name not in artifact.custom_properties:
    return default
  value = artifact.custom_properties[name]
  return getattr(value, value.WhichOneof('value'))


# ---- key results, per component type --------------------------------------

def _example_counts(statistics_uri: str) -> Dict[str, int]:
  import tensorflow_data_validation as tfdv
  counts = {}
  for split in sorted(os.listdir(statistics_uri)):
    if split.startswith('Split-'):
      stats = tfdv.load_stats_binary(
          os.path.join(statistics_uri, split, 'FeatureStats.pb'))
      counts[split[len('Split-'):]] = stats.datasets[0].num_examples
  return counts


def _statistics_result(out: LatestRun) -> str:
  counts = _example_counts(out.one('statistics').uri)
  return ', '.join(f'{split} {n:,}' for split, n in counts.items()) + ' examples'


def _example_gen_result(out: LatestRun) -> str:
  examples = out.one('examples')
  span = custom_property(examples, 'span', 0)
  return f'span {span}, splits {examples.properties["split_names"].string_value}'


def _schema_result(out: LatestRun) -> str:
  from tfx.utils import io_utils
  from tensorflow_metadata.proto.v0 import schema_pb2
  schema = io_utils.parse_pbtxt_file(
      os.path.join(out.one('schema').uri, 'schema.pbtxt'), schema_pb2.Schema())
  return f'{len(schema.feature)} features'


def _anomalies_result(out: LatestRun) -> str:
  from tfx.types import standard_artifacts
  artifact = standard_artifacts.ExampleAnomalies()
  artifact.set_mlmd_artifact(out.one('anomalies'))
  problems = anomalies_gate.read_anomalies(artifact)
  return 'no anomalies' if not problems else f'{len(problems)} anomalies'


def _tuner_result(out: LatestRun) -> str:
  return 'best hyperparameters in ' + out.one('best_hyperparameters').uri


def _trainer_result(out: LatestRun) -> str:
  return 'model exported'


def _resolver_result(out: LatestRun) -> str:
  return ''  # Resolved as the Evaluator's input: its line names the baseline.


def _evaluator_result(out: LatestRun) -> str:
  metrics = evaluation_metrics(out.one('evaluation').uri)
  blessed = custom_property(out.one('blessing'), 'blessed', 0) == 1
  shown = ', '.join(f'{k} {v:.4f}' for k, v in metrics.items() if k in ('auc', 'accuracy'))
  baseline = out.inputs('baseline_model')
  against = f'vs baseline model #{baseline[0].id}' if baseline else 'no baseline yet'
  return f'{shown} ({against}); {"BLESSED" if blessed else "NOT blessed"}'


def _infra_result(out: LatestRun) -> str:
  blessing = out.one('blessing')
  if custom_property(blessing, 'blessed', 0) == 1:
    return 'serves over REST and gRPC'
  return 'NOT servable: ' + str(custom_property(blessing, 'details', ''))[:300]


def push_outcome(pushed_model) -> Dict:
  """What a Pusher output says: {'new_version': bool, 'version', 'path',
  'result': one line}. pipeline/components/pusher.py marks a model the highest
  version already holds with reused_version=1."""
  if custom_property(pushed_model, 'pushed', 0) != 1:
    return {'new_version': False, 'version': None, 'path': None,
            'result': 'nothing pushed (not blessed)'}
  version = custom_property(pushed_model, 'pushed_version')
  path = custom_property(pushed_model, 'pushed_destination', '?')
  if custom_property(pushed_model, 'reused_version', 0) == 1:
    return {'new_version': False, 'version': version, 'path': path,
            'result': f'not pushed: version {version} already serves this model ({path})'}
  return {'new_version': True, 'version': version, 'path': path,
          'result': f'pushed to {path} (new version {version})'}


def _pusher_result(out: LatestRun) -> str:
  return push_outcome(out.one('pushed_model'))['result']


RESULTS: Dict[str, Callable[[LatestRun], str]] = {
    'CsvExampleGen': _example_gen_result,
    'StatisticsGen': _statistics_result,
    'SchemaGen': _schema_result,
    'CuratedSchemaGen': _schema_result,
    'ExampleValidator': _anomalies_result,
    'Tuner': _tuner_result,
    'Trainer': _trainer_result,
    'LatestBlessedModelResolver': _resolver_result,
    'Evaluator': _evaluator_result,
    'InfraValidator': _infra_result,
    'Pusher': _pusher_result,
}


def slicing_metrics(evaluation_uri: str, model_name: Optional[str] = None) -> List:
  """[(slice key, metrics by output)] for one model of an Evaluator output.

  Metrics only: tfma.load_eval_result also converts every plot to a dict,
  which takes seconds.
  """
  import tensorflow_model_analysis as tfma
  from tensorflow_model_analysis.view import util as view_util
  converted = (view_util.convert_metrics_proto_to_dict(m, model_name=model_name)
               for m in tfma.load_metrics(evaluation_uri))
  return [c for c in converted if c is not None]


def metric_values(by_output: Dict) -> Dict[str, float]:
  """{metric name: value} of one slice's metrics (the model's only output)."""
  values = by_output.get('', {}).get('', {})
  return {k: v['doubleValue'] for k, v in values.items() if 'doubleValue' in v}


def evaluation_metrics(evaluation_uri: str) -> Dict[str, float]:
  """Overall (unsliced) metrics of an Evaluator output, by short name."""
  names = {'binary_accuracy': 'accuracy', 'example_count': 'examples'}
  for slice_key, by_output in slicing_metrics(evaluation_uri):
    if slice_key == ():
      return {names.get(k, k): v for k, v in metric_values(by_output).items()}
  return {}


class ProgressPrinter:
  """Prints a line as each component starts and ends; keeps a summary."""

  def __init__(self, pipeline_name: str, metadata_path: str, stream=sys.stdout,
               heartbeat_seconds: float = 20):
    self._heartbeat_seconds = heartbeat_seconds
    self._pipeline_name = pipeline_name
    self._metadata_path = metadata_path
    self._stream = stream
    self._running: Dict[str, float] = {}  # Node id -> start time.
    self._lock = threading.Lock()  # Components may run side by side.
    self.components: List[Dict] = []

  @contextlib.contextmanager
  def watching(self):
    """Writes a heartbeat line while a long step runs inside the block.
    The lines per component come from start() and finish(), which the
    runner calls (ParallelLocalDagRunner's on_start and on_finish)."""
    stop = threading.Event()
    heartbeat = threading.Thread(target=self._heartbeat, args=(stop,), daemon=True,
                                 name='progress-heartbeat')
    heartbeat.start()
    try:
      yield self
    finally:
      stop.set()
      heartbeat.join()

  def _heartbeat(self, stop: threading.Event):
    """A line now and then while a long step (the Evaluator, the Tuner) runs,
    so a quiet run never looks hung."""
    while not stop.wait(self._heartbeat_seconds):
      with self._lock:
        now = time.time()
        long_steps = [f'{node_id} ({now - since:.0f} s)'
                      for node_id, since in self._running.items()
                      if now - since >= self._heartbeat_seconds]
        if not long_steps:
          continue
        line = '  still running ' + ', '.join(long_steps)
        if self._stream.isatty():  # Overwritten by the step's own line.
          self._write('\r' + line.ljust(70), end='')
        else:
          self._write(line)

  def start(self, node_id: str):
    with self._lock:
      self._running[node_id] = time.time()
      if self._stream.isatty() and len(self._running) == 1:  # Overwritten when done.
        self._write(f'  {node_id:<28} running ...', end='')

  def finish(self, node_id: str):
    seconds = time.time() - self._running[node_id]
    outputs = self._outputs(node_id)
    cached = (outputs is not None and outputs.execution is not None and
              outputs.execution.last_known_state == metadata_store_pb2.Execution.CACHED)
    result = self._result(node_id, outputs)
    status = 'cached' if cached else f'{seconds:5.1f}s'
    with self._lock:
      del self._running[node_id]
      line = f'\r  {node_id:<28} {status:>7}  {result}'
      self._write(line.ljust(72) if self._stream.isatty() else line)
      self.components.append({'component': node_id, 'seconds': round(seconds, 2),
                              'cached': cached, 'result': result})

  def fail(self, error: BaseException):
    """Ends the lines of the components still running with the error."""
    with self._lock:
      for node_id, started in self._running.items():
        seconds = time.time() - started
        self._write(f'\r  {node_id:<28} {seconds:5.1f}s  FAILED')
        self.components.append({'component': node_id, 'seconds': round(seconds, 2),
                                'cached': False, 'failed': True,
                                'result': 'failed: ' + str(error)[:200]})
      self._running.clear()

  def _outputs(self, node_id: str) -> Optional[LatestRun]:
    try:
      return LatestRun(open_store(self._metadata_path), self._pipeline_name, node_id)
    except Exception:  # A progress line must never break the run.
      return None

  def _result(self, node_id: str, outputs: Optional[LatestRun]) -> str:
    describe = RESULTS.get(node_id)
    if describe is None or outputs is None:
      return ''
    try:
      return describe(outputs)
    except Exception as e:  # A progress line must never break the run.
      return f'(result unavailable: {e})'

  def _write(self, text: str, end: str = '\n'):
    self._stream.write(text + end)
    self._stream.flush()
