"""What a pipeline run recorded, read back: the one place that queries ML Metadata.

Opening the store, the latest execution of a node, one pipeline run's
executions and artifacts, artifact properties, the push outcome, lineage from a
pushed model back to its data, and evaluation metrics under one naming (so the
progress lines, the run summary, the report and monitoring agree). Also the
readers of what those artifacts hold (statistics, metrics), for the same reason.
"""

import collections
import os
from typing import Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2

# TFMA's metric keys, as the summary, the report and monitoring show them.
SHOWN_NAMES = {'binary_accuracy': 'accuracy', 'example_count': 'examples'}
FINISHED = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
_INPUTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
_OUTPUTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
# Artifact -> execution and execution -> artifact each count one: enough for
# PushedModel back to ExampleGen's Examples with room for longer pipelines.
LINEAGE_HOPS = 40


class NoRunFound(LookupError):
  """The output root holds no pipeline run to report on."""


# ---- the store ---------------------------------------------------------------------------


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


# ---- one pipeline run --------------------------------------------------------------------


def state_name(execution) -> str:
  return metadata_store_pb2.Execution.State.Name(execution.last_known_state)


class RunRecord:
  """What one pipeline run did, from MLMD: the executions attributed to its
  pipeline_run context (TFX records cached ones there too) by node id, and
  the artifacts each read and wrote."""

  def __init__(self, store, pipeline_name: str, context):
    self.run_id = context.name
    self.executions: Dict[str, object] = {}
    prefix, node_type = pipeline_name + '.', store.get_context_type('node').id
    for execution in sorted(store.get_executions_by_context(context.id), key=lambda e: e.id):
      for node in store.get_contexts_by_execution(execution.id):
        if node.type_id == node_type and node.name.startswith(prefix):
          self.executions[node.name[len(prefix):]] = execution
    self._inputs: Dict[str, Dict[str, list]] = {}
    self._outputs: Dict[str, Dict[str, list]] = {}
    ids = {e.id: node for node, e in self.executions.items()}
    events = store.get_events_by_execution_ids(list(ids))
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    outputs = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
    for event in events:
      side = self._outputs if event.type in outputs else self._inputs
      key = event.path.steps[0].key if event.path.steps else ''
      side.setdefault(ids[event.execution_id], {}).setdefault(key, []).append(
          artifacts[event.artifact_id])

  def state(self, node: str) -> Optional[str]:
    execution = self.executions.get(node)
    return state_name(execution) if execution is not None else None

  def produced(self, node: str) -> bool:
    return self.state(node) in ('COMPLETE', 'CACHED')

  def output(self, node: str, key: str):
    """The node's output artifact in this run, if it ran (or was cached)."""
    found = self._outputs.get(node, {}).get(key) if self.produced(node) else None
    return found[0] if found else None

  def inputs(self, node: str, key: str) -> list:
    return self._inputs.get(node, {}).get(key, [])

  def failed_nodes(self) -> List[str]:
    return [n for n in self.executions if self.state(n) == 'FAILED']

  def unfinished_nodes(self) -> List[str]:
    return [n for n in self.executions
            if self.state(n) not in ('COMPLETE', 'CACHED', 'FAILED')]


def open_run_store(config):
  """The MLMD of config's output root, read-only; NoRunFound if there is none."""
  root = config.path(config.output_root)
  if not os.path.exists(config.metadata_path):  # Opening it would create it.
    raise NoRunFound(f'no pipeline run found under {root}: run `python local_runner.py` first')
  return open_store(config.metadata_path, read_only=True)


def find_run(store, config, run_id: Optional[str] = None) -> RunRecord:
  """The run named run_id, else the pipeline's latest run."""
  root = config.path(config.output_root)
  if run_id:
    context = store.get_context_by_type_and_name('pipeline_run', run_id)
    if context is None:
      raise NoRunFound(f'MLMD under {root} has no pipeline run {run_id!r}: give the run id '
                       'of a run of this output root')
    return RunRecord(store, config.pipeline_name, context)
  pipeline = store.get_context_by_type_and_name('pipeline', config.pipeline_name)
  runs = []
  if pipeline is not None:
    run_type = store.get_context_type('pipeline_run').id
    runs = [c for c in store.get_children_contexts_by_context(pipeline.id)
            if c.type_id == run_type]
  if not runs:
    raise NoRunFound(f'no pipeline run found under {root}: run `python local_runner.py` first')
  latest = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
  return RunRecord(store, config.pipeline_name, latest)


def finished_executions(store, config, node_id, keep=lambda e: True) -> List[int]:
  """Ids of node_id's executions that completed (or were cached) and pass keep."""
  context = store.get_context_by_type_and_name('node', f'{config.pipeline_name}.{node_id}')
  if context is None:
    return []
  return [e.id for e in store.get_executions_by_context(context.id)
          if e.last_known_state in FINISHED and keep(e)]


def artifacts_of(store, execution_ids, event_type):
  """Ids of the artifacts the executions read (INPUT) or wrote (OUTPUT)."""
  if not execution_ids:
    return set()
  return {e.artifact_id for e in store.get_events_by_execution_ids(execution_ids)
          if e.type == event_type}


# ---- lineage ----------------------------------------------------------------------------


class Lineage:
  """Walks MLMD from a pushed model back to what produced it."""

  def __init__(self, metadata_path: str):
    if not os.path.isfile(metadata_path):
      raise LookupError(f'no MLMD at {metadata_path}: run the pipeline first, or pass '
                        '--metadata (or --training-statistics and --schema)')
    self.path = metadata_path
    try:
      self.store = open_store(metadata_path, read_only=True)  # A monitor never writes.
      self._types = {t.id: t.name for t in self.store.get_artifact_types()}
    except RuntimeError as e:
      raise LookupError(f'{metadata_path} is not a readable MLMD database: pass the '
                        'metadata.sqlite the pipeline wrote') from e

  def type_of(self, artifact) -> str:
    return self._types.get(artifact.type_id, '')

  def pushed_models(self) -> list:
    """PushedModel artifacts that were pushed, oldest first."""
    pushed = self.store.get_artifacts_by_type('PushedModel')
    return sorted((a for a in pushed if custom_property(a, 'pushed', 0) == 1),
                  key=lambda a: a.id)

  def pushed_model(self, version=None):
    """The push of version: its pushed_version, or the name of the directory
    it was pushed to (the version TF Serving reads). The newest when None."""
    pushed = self.pushed_models()
    if version is None:
      if not pushed:
        raise LookupError(f'MLMD {self.path} records no pushed model: run the pipeline first')
      return pushed[-1]
    matching = [a for a in pushed if str(version) in (
        str(custom_property(a, 'pushed_version')),
        os.path.basename(str(custom_property(a, 'pushed_destination', '')).rstrip('/')))]
    if not matching:
      known = ', '.join(str(custom_property(a, 'pushed_version')) for a in pushed) or 'none'
      raise LookupError(
          f'MLMD {self.path} has no push of version {version} (pushed versions: {known}): '
          'pass the --metadata of the pipeline that pushed it, or --training-statistics '
          'and --schema')
    return matching[-1]

  def ancestors(self, artifact) -> list:
    """Every artifact upstream of artifact, nearest first."""
    options = metadata_store_pb2.LineageSubgraphQueryOptions(
        starting_artifacts=metadata_store_pb2.LineageSubgraphQueryOptions.StartingNodes(
            filter_query=f'id = {artifact.id}'),
        max_num_hops=LINEAGE_HOPS,
        direction=metadata_store_pb2.LineageSubgraphQueryOptions.UPSTREAM)
    graph = self.store.get_lineage_subgraph(options, ['artifacts', 'events'])
    # The subgraph is unordered: walk its events from the artifact, by hops.
    produced_by = collections.defaultdict(set)  # Artifact id -> execution ids.
    read_by = collections.defaultdict(set)  # Execution id -> artifact ids.
    for e in graph.events:
      if e.type in _OUTPUTS:
        produced_by[e.artifact_id].add(e.execution_id)
      elif e.type in _INPUTS:
        read_by[e.execution_id].add(e.artifact_id)
    artifacts = {a.id: a for a in graph.artifacts}
    seen, frontier, found = {artifact.id}, [artifact.id], []
    while frontier:
      upstream = {a for x in frontier for ex in produced_by[x] for a in read_by[ex]} - seen
      seen |= upstream
      frontier = sorted(upstream)
      found += [artifacts[a] for a in frontier if a in artifacts]
    return found

  def outputs_of_consumers(self, artifact, type_name: str) -> list:
    """Artifacts of type_name produced by executions that read artifact."""
    consumers = {e.execution_id for e in self.store.get_events_by_artifact_ids([artifact.id])
                 if e.type == metadata_store_pb2.Event.INPUT}
    produced = [e.artifact_id for e in self.store.get_events_by_execution_ids(list(consumers))
                if e.type == metadata_store_pb2.Event.OUTPUT]
    return [a for a in self.store.get_artifacts_by_id(produced) if self.type_of(a) == type_name]

  def of_pushed(self, version=None) -> Dict[str, object]:
    """The pushed model and, upstream of it, the model, the schema it was
    trained with, the ExampleGen examples (span) and their statistics."""
    pushed = self.pushed_model(version)
    upstream = self.ancestors(pushed)
    by_type = collections.defaultdict(list)
    for a in upstream:
      by_type[self.type_of(a)].append(a)
    # ExampleGen's Examples carry a span; Transform's transformed ones do not.
    examples = [a for a in by_type['Examples'] if 'span' in a.custom_properties]
    statistics = [s for e in examples for s in self.outputs_of_consumers(e, 'ExampleStatistics')]
    first = lambda items: items[0] if items else None
    return {'pushed': pushed, 'model': first(by_type['Model']),
            'schema': first(by_type['Schema']), 'examples': first(examples),
            'statistics': first(statistics)}

# ---- what artifacts hold -----------------------------------------------------------------


def split_statistics(statistics_uri: str) -> Dict[str, statistics_pb2.DatasetFeatureStatistics]:
  """{split: its statistics} of an ExampleStatistics artifact, train first."""
  splits = sorted((d[len('Split-'):] for d in os.listdir(statistics_uri)
                   if d.startswith('Split-')), key=lambda s: (s != 'train', s))
  return {split: read_statistics(statistics_uri, split).datasets[0] for split in splits}


def read_statistics(statistics_uri: str, split: str = 'train'
                    ) -> statistics_pb2.DatasetFeatureStatisticsList:
  """One split's FeatureStats.pb (what tfdv.load_stats_binary reads, without
  importing TFDV)."""
  stats = statistics_pb2.DatasetFeatureStatisticsList()
  with open(os.path.join(statistics_uri, f'Split-{split}', 'FeatureStats.pb'), 'rb') as f:
    stats.ParseFromString(f.read())
  return stats


# ---- evaluation metrics -------------------------------------------------------------------


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
  for slice_key, by_output in slicing_metrics(evaluation_uri):
    if slice_key == ():
      return {SHOWN_NAMES.get(k, k): v for k, v in metric_values(by_output).items()}
  return {}
