"""TFX's LocalDagRunner, with components whose inputs are ready running side
by side.

TFX's LocalDagRunner launches one component at a time in topological order
(its TODO b/171319478). This runner launches each component once every
component upstream of it has finished, on up to `max_parallel` threads. In
this project's pipeline the InfraValidator (a model server in a subprocess) then
runs beside the Evaluator (TFMA on Beam): both wait only for the Trainer.

Each launch is TFX's own Launcher. ML Metadata, a SQLite file here, is used
by one launch at a time: a lock is held for all a launch does (input
resolution, caching, publishing) except running the executor (the one
private TFX hook this needs is in compat/tfx.py). Progress and other hooks
are arguments; nothing global is replaced.
"""

import concurrent.futures
import contextlib
import datetime
import threading
from typing import Callable, Dict, Optional, Sequence

from absl import logging
from tfx.dsl.compiler import constants
from tfx.orchestration import metadata
from tfx.orchestration.local import local_dag_runner
from tfx.orchestration.local import runner_utils
from tfx.orchestration.portable import partial_run_utils
from tfx.orchestration.portable import runtime_parameter_utils
from tfx.proto.orchestration import pipeline_pb2
from tfx.utils import telemetry_utils

from compat import tfx as compat_tfx


# A hook takes the node id; see ParallelLocalDagRunner.
Hook = Optional[Callable[[str], None]]


class ParallelLocalDagRunner(local_dag_runner.LocalDagRunner):
  """Runs a pipeline in this process, independent components concurrently."""

  def __init__(self, max_parallel: int = 2, run_id: Optional[str] = None,
               never_cached: Sequence[str] = (), on_start: Hook = None,
               on_finish: Hook = None, on_execute: Hook = None):
    """run_id: the run's id (its MLMD 'pipeline_run' context), chosen by the
    caller so it can find the run; default the start time. never_cached:
    node ids that always execute (their result depends on state outside
    MLMD, e.g. the Pusher on the serving directory).

    Hooks, each called with the node id: on_start as a component's launch
    begins, on_finish after it succeeded (both holding the MLMD lock, so they
    may read MLMD), on_execute just before its executor really runs (not for
    a cached or system node; not at all on a TFX version compat/tfx.py was
    not written for, where components run one at a time).
    """
    super().__init__()
    self._max_parallel = max_parallel
    self._run_id = run_id
    self._never_cached = set(never_cached)
    self._on_start = on_start or _no_hook
    self._on_finish = on_finish or _no_hook
    self._on_execute = on_execute or _no_hook

  def run_with_ir(self, pipeline: pipeline_pb2.Pipeline,
                  run_options: Optional[pipeline_pb2.RunOptions] = None) -> None:
    run_id = self._run_id or datetime.datetime.now().isoformat()
    runtime_parameter_utils.substitute_runtime_parameter(
        pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    for node in pipeline.nodes:
      if node.pipeline_node.node_info.id in self._never_cached:
        node.pipeline_node.execution_options.caching_options.enable_cache = False
    if run_options is not None:
      # A partial run, as LocalDagRunner does it: nodes outside the range are
      # marked skipped, and their outputs are reused (the snapshot below).
      partial = run_options.partial_run
      partial_run_utils.mark_pipeline(
          pipeline, from_nodes=partial.from_nodes or None,
          to_nodes=partial.to_nodes or None, snapshot_settings=partial.snapshot_settings)
    deployment_config = runner_utils.extract_local_deployment_config(pipeline)
    connection = deployment_config.metadata_connection_config
    connection_config = getattr(connection, connection.WhichOneof('connection_config'))
    lock = threading.Lock()
    launcher_class = compat_tfx.launcher_class(self._executor_unlocked(lock))

    def launch(node: pipeline_pb2.PipelineNode) -> None:
      node_id = node.node_info.id
      with lock:
        self._on_start(node_id)
        launcher_class(
            pipeline_node=node,
            mlmd_connection=metadata.Metadata(connection_config),
            pipeline_info=pipeline.pipeline_info,
            pipeline_runtime_spec=pipeline.runtime_spec,
            executor_spec=runner_utils.extract_executor_spec(deployment_config, node_id),
            custom_driver_spec=runner_utils.extract_custom_driver_spec(deployment_config, node_id),
        ).launch()
        self._on_finish(node_id)

    nodes = [n.pipeline_node for n in pipeline.nodes
             if not n.pipeline_node.execution_options.HasField('skip')]
    if any(node.execution_options.run.perform_snapshot for node in nodes):
      # Before any node starts: LocalDagRunner snapshots as its first node to
      # run starts, and here other nodes may start beside that one.
      with metadata.Metadata(connection_config) as mlmd_handle:
        partial_run_utils.snapshot(mlmd_handle, pipeline)
    with telemetry_utils.scoped_labels({telemetry_utils.LABEL_TFX_RUNNER: 'local'}):
      _run_when_ready(nodes, launch, self._max_parallel)

  def _executor_unlocked(self, lock: threading.Lock):
    """The context an executor runs in: without the MLMD lock, so that other
    components resolve, cache and publish meanwhile."""

    @contextlib.contextmanager
    def executor_context(node_id: str):
      lock.release()
      try:
        self._on_execute(node_id)
        yield
      finally:
        lock.acquire()

    return executor_context


def _no_hook(node_id: str) -> None:
  del node_id


def _run_when_ready(nodes, launch, max_parallel: int) -> None:
  """Launches each node once its upstream nodes are done, in the nodes'
  (topological) order. After a failure nothing new starts; the components
  already running finish, then the first error is raised."""
  ids = {node.node_info.id for node in nodes}
  upstream = {node.node_info.id: set(node.upstream_nodes) & ids for node in nodes}
  waiting = list(nodes)
  done, error = set(), None
  running: Dict[concurrent.futures.Future, str] = {}
  with concurrent.futures.ThreadPoolExecutor(max_parallel, thread_name_prefix='component') as pool:
    while running or (waiting and error is None):
      for node in [n for n in waiting if upstream[n.node_info.id] <= done]:
        if error is not None or len(running) >= max_parallel:
          break
        waiting.remove(node)
        logging.info('Component %s is running.', node.node_info.id)
        running[pool.submit(launch, node)] = node.node_info.id
      if not running:
        raise RuntimeError('No component can start: '
                           + ', '.join(n.node_info.id for n in waiting))
      finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in finished:
        node_id = running.pop(future)
        if future.exception() is None:
          done.add(node_id)
          logging.info('Component %s is finished.', node_id)
        elif error is None:
          error = future.exception()
  if error is not None:
    raise error
