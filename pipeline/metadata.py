"""What a pipeline run recorded, read back: the one place that queries ML Metadata.

Opening the store, the latest execution of a node, one pipeline run's
executions and artifacts, artifact properties, the push outcome, lineage from a
pushed model back to its data, and evaluation metrics under one naming (so the
progress lines, the run summary, the report and monitoring agree). Also the
readers of what those artifacts hold (statistics, metrics), for the same reason.
"""

import collections
import json
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
  'result': one line, 'audit_record', 'audit_action_id', 'model_card'}.
  pipeline/components/pusher.py marks a model the highest version already
  holds with reused_version=1, and names the push's audit record (the
  decision, pushed or not) and the version's model card (None when the
  push predates them)."""
  recorded = {k: custom_property(pushed_model, k)
              for k in ('audit_record', 'audit_action_id', 'model_card')}
  if custom_property(pushed_model, 'pushed', 0) != 1:
    return {'new_version': False, 'version': None, 'path': None,
            'result': 'nothing pushed (not blessed)', **recorded}
  version = custom_property(pushed_model, 'pushed_version')
  path = custom_property(pushed_model, 'pushed_destination', '?')
  if custom_property(pushed_model, 'reused_version', 0) == 1:
    return {'new_version': False, 'version': version, 'path': path,
            'result': f'not pushed: version {version} already serves this model ({path})',
            **recorded}
  return {'new_version': True, 'version': version, 'path': path,
          'result': f'pushed to {path} (new version {version})', **recorded}


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

  def training_of_model(self, model_id: int) -> Dict:
    """What trained the Model artifact model_id: its spans (ExampleGen's
    examples upstream of it), their statistics, and the Trainer's code
    fingerprint, hyperparameters and pipeline run."""
    [model] = self.store.get_artifacts_by_id([model_id])
    examples = sorted((a for a in self.ancestors(model)
                       if self.type_of(a) == 'Examples' and 'span' in a.custom_properties),
                      key=lambda a: custom_property(a, 'span'))
    statistics = {e.id: self.outputs_of_consumers(e, 'ExampleStatistics') for e in examples}
    trainer = self._producer(model)
    custom_config = _json_property(trainer, 'custom_config')
    return {
        'spans': [custom_property(e, 'span') for e in examples],
        'examples': [{'span': custom_property(e, 'span'), 'uri': e.uri,
                      'statistics_uri': statistics[e.id][0].uri if statistics[e.id] else None}
                     for e in examples],
        'model_uri': model.uri,
        'trainer_code_fingerprint': custom_config.get('code_fingerprint'),
        'hyperparameters': custom_config.get('hyperparameters'),
        'pipeline_run': self._run_of(trainer),
    }

  def _producer(self, artifact):
    """The execution that wrote artifact, or None."""
    ids = [e.execution_id for e in self.store.get_events_by_artifact_ids([artifact.id])
           if e.type in _OUTPUTS]
    return self.store.get_executions_by_id(ids[:1])[0] if ids else None

  def _run_of(self, execution) -> Optional[str]:
    if execution is None:
      return None
    run_type = self.store.get_context_type('pipeline_run').id
    runs = [c.name for c in self.store.get_contexts_by_execution(execution.id)
            if c.type_id == run_type]
    return runs[0] if runs else None

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


def _json_property(execution, name) -> Dict:
  """An execution property TFX stores as JSON text (e.g. custom_config)."""
  import json
  text = custom_property(execution, name) if execution is not None else None
  return json.loads(text) if text else {}


def local_metadata_path(artifact_uri: str) -> Optional[str]:
  """The SQLite MLMD of a local run that wrote artifact_uri, if there is one.

  The local runners keep <output_root>/metadata.sqlite beside the pipeline
  root <output_root>/<pipeline_name>, whose artifacts are
  <node>/<output key>/<execution id> (TFX's local layout). Kubeflow's
  metadata is a service a component cannot open: None there.
  """
  if '://' in artifact_uri:
    return None
  output_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.normpath(artifact_uri)))))
  path = os.path.join(output_root, 'metadata.sqlite')
  return path if os.path.isfile(path) else None


# ---- what artifacts hold -----------------------------------------------------------------


def split_statistics(statistics_uri: str) -> Dict[str, statistics_pb2.DatasetFeatureStatistics]:
  """{split: its statistics} of an ExampleStatistics artifact, train first."""
  splits = sorted((d[len('Split-'):] for d in os.listdir(statistics_uri)
                   if d.startswith('Split-')), key=lambda s: (s != 'train', s))
  return {split: read_statistics(statistics_uri, split).datasets[0] for split in splits}


def evaluated_splits(evaluator_execution) -> str:
  """The splits an Evaluator execution read (its example_splits), e.g. 'test'."""
  properties = evaluator_execution.custom_properties if evaluator_execution else {}
  text = properties['example_splits'].string_value if 'example_splits' in properties else ''
  # Unset, TFX's Evaluator reads 'eval'.
  return ', '.join(json.loads(text)) if text and text != 'null' else 'eval'


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


def evaluation_of_blessing(blessing_uri: str) -> str:
  """The Evaluator's `evaluation` output beside its `blessing` output: TFX
  names output folders by output key, locally <node>/blessing/<id> and on
  Vertex <node>_<id>/blessing, so the sibling is the same path with the key
  swapped."""
  parts = blessing_uri.rstrip('/').split('/')
  if 'blessing' not in parts:
    raise LookupError(f'{blessing_uri} is not an Evaluator blessing folder (no "blessing" '
                      'in its path): pass the Evaluator\'s blessing output')
  at = len(parts) - 1 - parts[::-1].index('blessing')
  return '/'.join(parts[:at] + ['evaluation'] + parts[at + 1:])


def slice_name(slice_key) -> str:
  """'overall' or 'feature=value, ...' for a TFMA slice key."""
  return ', '.join(f'{k}={v}' for k, v in slice_key) if slice_key else 'overall'


def metrics_by_slice(evaluation_uri: str) -> List[Dict]:
  """[{'slice', 'metrics': {short name: value}}] of an Evaluator output,
  overall first, then the slices by name."""
  rows = [{'slice': slice_name(key), 'overall': key == (),
           'metrics': {SHOWN_NAMES.get(k, k): v for k, v in metric_values(by_output).items()}}
          for key, by_output in slicing_metrics(evaluation_uri)]
  return sorted(rows, key=lambda r: (not r['overall'], r['slice']))


def _metric_key(class_name: str) -> str:
  """TFMA's metric key of a metric class: AUCPrecisionRecall -> auc_precision_recall."""
  import re
  return re.sub(r'(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])', '_', class_name).lower()


def metric_thresholds(evaluation_uri: str) -> List[Dict]:
  """The thresholds the Evaluator judged with, from its eval_config.json:
  [{'metric', 'slices', 'value': {lowerBound/upperBound}, 'change': {...}}]."""
  import json
  from tfx.dsl.io import fileio  # The Evaluator's output may be in a bucket.
  with fileio.open(os.path.join(evaluation_uri, 'eval_config.json')) as f:
    eval_config = json.load(f)['evalConfig']
  rows = []
  for spec in eval_config.get('metricsSpecs', []):
    for metric in spec.get('metrics', []):
      name = SHOWN_NAMES.get(_metric_key(metric['className']), _metric_key(metric['className']))
      judged = ([([{}], metric['threshold'])] if 'threshold' in metric else []) + [
          (t.get('slicingSpecs', [{}]), t['threshold']) for t in metric.get('perSliceThresholds', [])]
      for slicing_specs, threshold in judged:
        slices = ', '.join('overall' if not s else
                           '*'.join(s.get('featureKeys', [])) or json.dumps(s, sort_keys=True)
                           for s in slicing_specs)
        rows.append({'metric': name, 'slices': slices,
                     'value': threshold.get('valueThreshold', {}),
                     'change': threshold.get('changeThreshold', {})})
  return rows


def validation_passed(evaluation_uri: str) -> Optional[bool]:
  """The Evaluator's verdict on its thresholds (validations.tfrecord)."""
  import tensorflow_model_analysis as tfma
  from tfx.dsl.io import fileio
  if not fileio.exists(os.path.join(evaluation_uri, 'validations.tfrecord')):
    return None
  return tfma.load_validation_result(evaluation_uri).validation_ok


def failed_thresholds(evaluation_uri: str) -> List[str]:
  """Why the Evaluator did not bless: one phrase per failed threshold."""
  import tensorflow_model_analysis as tfma
  reasons = []
  for per_slice in tfma.load_validation_result(evaluation_uri).metric_validations_per_slice:
    for failure in per_slice.failures:
      name, value = failure.metric_key.name, failure.metric_value.double_value.value
      if failure.metric_threshold.HasField('change_threshold'):
        change = failure.metric_threshold.change_threshold
        # A regression's RMSE may grow by a fraction of the baseline's.
        allowed = (f'{change.relative.value:+.1%} of the baseline\'s' if change.HasField('relative')
                   else f'{change.absolute.value:+.4f}')
        reasons.append(f'{name} {value:+.4f} vs the baseline (allowed {allowed})')
      else:
        reasons.append(f'{name} {value:.4f} outside its bound')
  return reasons


# The Evaluator's overall metrics a run's summary shows, whichever the task.
HEADLINE_METRICS = ('auc', 'accuracy', 'rmse', 'mean_absolute_error')


def statistics_summary(statistics_uri: str) -> Dict:
  """{split: {'examples', 'features': [{'name', 'type', 'missing', 'summary'}]}}."""
  summary = {}
  for split, dataset in split_statistics(statistics_uri).items():
    features = []
    for feature in dataset.features:
      name = feature.path.step[-1] if feature.path.step else feature.name
      kind = statistics_pb2.FeatureNameStatistics.Type.Name(feature.type)
      if feature.HasField('num_stats'):
        s = feature.num_stats
        common, text = s.common_stats, (f'mean {s.mean:.4g}, std {s.std_dev:.4g}, '
                                        f'min {s.min:.4g}, max {s.max:.4g}')
      elif feature.HasField('string_stats'):
        s = feature.string_stats
        top = f', most common {s.top_values[0].value!r}' if s.top_values else ''
        common, text = s.common_stats, f'{s.unique} distinct values{top}'
      else:
        common, text = None, ''
      features.append({'name': name, 'type': kind,
                       'missing': int(common.num_missing) if common else None, 'summary': text})
    summary[split] = {'examples': int(dataset.num_examples),
                      'features': sorted(features, key=lambda f: f['name'])}
  return summary
