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

from ml_metadata.proto import metadata_store_pb2

from pipeline import metadata
from pipeline.components import anomalies_gate
from pipeline.metadata import LatestRun, custom_property


# ---- key results, per component type --------------------------------------

def _statistics_result(out: LatestRun) -> str:
  counts = {split: s.num_examples
            for split, s in sorted(metadata.split_statistics(out.one('statistics').uri).items())}
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
  metrics = metadata.evaluation_metrics(out.one('evaluation').uri)
  blessed = custom_property(out.one('blessing'), 'blessed', 0) == 1
  shown = ', '.join(f'{k} {metrics[k]:.4f}' for k in metadata.HEADLINE_METRICS if k in metrics)
  # Which split the figures are of, and on how many examples.
  on = metadata.evaluated_splits(out.execution)
  if 'examples' in metrics:
    on += f' ({metrics["examples"]:,.0f} examples)'
  baseline = out.inputs('baseline_model')
  against = f'vs baseline model #{baseline[0].id}' if baseline else 'no baseline yet'
  line = f'{on}: {shown} ({against}); {"BLESSED" if blessed else "NOT blessed"}'
  if not blessed:
    line += ': ' + '; '.join(metadata.failed_thresholds(out.one('evaluation').uri))
  return line


def _infra_result(out: LatestRun) -> str:
  blessing = out.one('blessing')
  if custom_property(blessing, 'blessed', 0) == 1:
    return 'serves over REST and gRPC'
  return 'NOT servable: ' + str(custom_property(blessing, 'details', ''))[:300]


def _pusher_result(out: LatestRun) -> str:
  return metadata.push_outcome(out.one('pushed_model'))['result']


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
      return LatestRun(metadata.open_store(self._metadata_path), self._pipeline_name, node_id)
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
