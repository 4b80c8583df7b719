"""HTML reports people can open: one per pipeline run, and the monitoring one.

The run report describes ONE run (an MLMD `pipeline_run` context): how it
ended (and where and why it failed), what its components did, and only what
they produced: the data statistics (plots), anomalies, the schema in use,
evaluation metrics overall and per slice with the baseline's beside the
candidate's, the blessing with its thresholds, what was pushed and its
lineage span -> model version. Pages are rendered from autoescaped Jinja2
templates (reports/templates/); charts are inline SVG (reports/charts.py).

    python -m reports.run_report [--output-root tfx_output] [--out report.html]
"""

import os

import compat.keras  # noqa: F401  First: Keras 2 for TFX (see compat/keras.py).

import argparse
import datetime
import json
import math
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import jinja2
from markupsafe import Markup

from reports import charts

EXIT_OK, EXIT_NO_RUN = 0, 1
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'templates')
SHOWN_NAMES = {'binary_accuracy': 'accuracy', 'example_count': 'examples'}
COUNT_METRICS = {'example_count'}
# Metrics a slice with one class only (every label 0, or every label 1) has
# no value for; TFMA reports them as 0.
NEED_BOTH_CLASSES = {'auc', 'auc_precision_recall'}


class NoRunFound(LookupError):
  """The output root holds no pipeline run to report on."""


# ---- rendering --------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
  return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                            undefined=jinja2.StrictUndefined, trim_blocks=True,
                            lstrip_blocks=True)


def render(template: str, **values) -> str:
  return _environment().get_template(template).render(**values)


def status(ok: bool, good: str = 'ok', bad: str = 'ANOMALY') -> Markup:
  return Markup('<span class="{}">{}</span>').format('ok' if ok else 'bad', good if ok else bad)


def number(value, count: bool = False) -> str:
  """4966 for counts, 0.8916 for rates, n/a for an undefined value."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return 'n/a'
  if count or isinstance(value, int):
    return f'{int(round(value)):,}'
  if isinstance(value, float):
    return f'{value:.4f}'
  return str(value)


# ---- feature statistics ------------------------------------------------------------------


def feature_stats(dataset, name: str):
  for feature in dataset.features:
    if '.'.join(feature.path.step) == name or feature.name == name:
      return feature
  return None


def _common(feature):
  return (feature.string_stats.common_stats if feature.HasField('string_stats')
          else feature.num_stats.common_stats)


def blank_share(feature, num_examples: int) -> Optional[float]:
  """Share of examples without a value.

  CsvExampleGen writes a blank cell as the feature with no values, which TFDV
  counts as present (num_non_missing): for a feature of at most one value,
  the examples without one are num_missing + num_non_missing - tot_num_values.
  """
  if not num_examples:
    return None
  common = _common(feature)
  empty = common.num_non_missing - common.tot_num_values if common.max_num_values <= 1 else 0
  return (common.num_missing + empty) / num_examples


def value_counts(feature) -> Dict[str, float]:
  """Count per value, from the rank histogram: the counts TFDV's L-infinity
  distance compares (each normalized by its own sum; blanks not in it)."""
  return {b.label: b.sample_count for b in feature.string_stats.rank_histogram.buckets}


def shares(feature) -> Dict[str, float]:
  counts = value_counts(feature)
  total = sum(counts.values())
  return {label: count / total for label, count in counts.items()} if total else {}


def quantile_buckets(feature) -> List[Tuple[float, float, float]]:
  for histogram in feature.num_stats.histograms:
    if histogram.type == histogram.QUANTILES:
      return [(b.low_value, b.high_value, b.sample_count) for b in histogram.buckets]
  return []


def _is_categorical(feature) -> bool:
  return feature.HasField('string_stats')


def feature_plot(name: str, datasets: Dict[str, object]) -> Markup:
  """One feature of several DatasetFeatureStatistics, overlaid: shares of
  its values (categorical) or the cumulative share of its values (numeric)."""
  found = {label: feature_stats(d, name) for label, d in datasets.items()}
  found = {label: f for label, f in found.items() if f is not None}
  if not found:
    return charts.no_data(name, 'no statistics')
  if any(_is_categorical(f) for f in found.values()):
    by_label = {label: shares(f) for label, f in found.items()}
    totals: Dict[str, float] = {}
    for values in by_label.values():
      for value, share in values.items():
        totals[value] = totals.get(value, 0.0) + share
    categories = _shown_categories(totals)
    return charts.bars(categories, {label: [s.get(c, 0.0) for c in categories]
                                    for label, s in by_label.items()}, f'{name} (share)')
  return charts.cumulative({label: quantile_buckets(f) for label, f in found.items()},
                           f'{name} (cumulative share)')


def _shown_categories(totals: Dict[str, float]) -> List[str]:
  """Ids in their order (hours 0..23) when all fit; else the most frequent
  values first."""
  if len(totals) <= charts.MAX_CATEGORIES and all(v.lstrip('-').isdigit() for v in totals):
    return sorted(totals, key=int)
  return sorted(totals, key=lambda v: (-totals[v], v))[:charts.MAX_CATEGORIES]


def _summary_text(feature) -> str:
  if _is_categorical(feature):
    top = feature.string_stats.top_values
    return f'{feature.string_stats.unique:,} unique' + (
        f'; most frequent {top[0].value!r}' if top else '')
  s = feature.num_stats
  if not s.common_stats.tot_num_values:
    return 'no values'
  return f'mean {s.mean:.4g}, median {s.median:.4g}, min {s.min:.4g}, max {s.max:.4g}'


# ---- one pipeline run in MLMD -------------------------------------------------------------


def _state_name(execution) -> str:
  from ml_metadata.proto import metadata_store_pb2
  return metadata_store_pb2.Execution.State.Name(execution.last_known_state)


class RunRecord:
  """What one pipeline run did, from MLMD: the executions attributed to its
  pipeline_run context (TFX records cached ones there too) by node id, and
  the artifacts each read and wrote."""

  def __init__(self, store, pipeline_name: str, context):
    from ml_metadata.proto import metadata_store_pb2
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
    return _state_name(execution) if execution is not None else None

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

  def component_rows(self) -> List[List[str]]:
    rows = []
    for node, e in sorted(self.executions.items(), key=lambda item: item[1].id):
      seconds = (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000
      state = self.state(node)
      rows.append([node, status(state != 'FAILED', state.lower(), state),
                   f'{seconds:.1f}s' if state == 'COMPLETE' else ''])
    return rows


def _open_store(config):
  root = config.path(config.output_root)
  if not os.path.exists(config.metadata_path):  # Opening it would create it.
    raise NoRunFound(f'no pipeline run found under {root}: run `python local_runner.py` first')
  from orchestration import progress
  return progress.open_store(config.metadata_path, read_only=True)


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


def outcome(run: Optional[RunRecord], summary: Optional[Dict]) -> Dict:
  """How the run ended: local_runner's summary when given, else what MLMD's
  execution states say."""
  failed = run.failed_nodes() if run is not None else []
  if summary is not None:
    succeeded = bool(summary.get('succeeded'))
    component = summary.get('failed_component') or (failed[0] if failed else None)
    error = summary.get('error')
  else:
    succeeded = not failed and not run.unfinished_nodes()
    component = failed[0] if failed else None
    error = None
  if succeeded:
    state = 'SUCCEEDED'
  elif summary is None and not failed:
    state = 'DID NOT FINISH'  # Executions never ended: the run was killed or is running.
    component = ', '.join(run.unfinished_nodes())
  else:
    state = 'FAILED'
  return {'state': state, 'succeeded': succeeded, 'component': component, 'error': error,
          'before_any_component': run is None}


# ---- run report sections -----------------------------------------------------------------


def _custom(artifact, name, default=None):
  from orchestration.progress import custom_property
  return custom_property(artifact, name, default)


def _load_statistics(statistics_uri: str) -> Dict[str, object]:
  import tensorflow_data_validation as tfdv
  splits = sorted((d[len('Split-'):] for d in os.listdir(statistics_uri)
                   if d.startswith('Split-')), key=lambda s: (s != 'train', s))
  return {split: tfdv.load_stats_binary(os.path.join(
      statistics_uri, f'Split-{split}', 'FeatureStats.pb')).datasets[0] for split in splits}


def statistics_section(statistics_uri: str, schema) -> Dict:
  datasets = _load_statistics(statistics_uri)
  names = [f.name for f in schema.feature] if schema is not None else sorted(
      {'.'.join(f.path.step) for d in datasets.values() for f in d.features})
  rows = []
  for name in names:
    found = {split: feature_stats(d, name) for split, d in datasets.items()}
    first = next((f for f in found.values() if f is not None), None)
    if first is None:
      continue
    missing = [number_percent(blank_share(f, datasets[s].num_examples)) if f is not None
               else 'absent' for s, f in found.items()]
    rows.append([name, 'categorical' if _is_categorical(first) else 'numeric', *missing,
                 _summary_text(first)])
  return {'counts': {split: f'{d.num_examples:,}' for split, d in datasets.items()},
          'header': ['feature', 'kind'] + [f'blank ({s})' for s in datasets] + ['summary'],
          'rows': rows, 'plots': [feature_plot(name, datasets) for name in names]}


def number_percent(share: Optional[float]) -> str:
  if share is None:
    return 'n/a'
  # 99.99 % is not 100 %: a few values are there.
  return f'{share:.2%}' if 0.999 < share < 1 else f'{share:.1%}'


def schema_section(schema, schema_path: str) -> Dict:
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2
  rows = []
  for f in schema.feature:
    domain = f.WhichOneof('domain_info')
    domain_text = f.domain if domain == 'domain' else (
        text_format.MessageToString(getattr(f, domain), as_one_line=True) if domain else '')
    comparators = '; '.join(
        f'{kind}: ' + text_format.MessageToString(getattr(f, kind), as_one_line=True)
        for kind in ('skew_comparator', 'drift_comparator') if f.HasField(kind))
    envs = ('not in ' + ', '.join(f.not_in_environment)) if f.not_in_environment else 'all'
    rows.append([f.name, schema_pb2.FeatureType.Name(f.type),
                 text_format.MessageToString(f.presence, as_one_line=True),
                 domain_text, comparators, envs])
  return {'path': schema_path, 'environments': ', '.join(schema.default_environment),
          'rows': rows}


def anomalies_section(anomalies_artifact) -> List[str]:
  from pipeline.components import anomalies_gate
  from tfx.types import standard_artifacts
  artifact = standard_artifacts.ExampleAnomalies()
  artifact.set_mlmd_artifact(anomalies_artifact)
  return anomalies_gate.read_anomalies(artifact)


# ---- evaluation --------------------------------------------------------------------------


def _slice_value(single_key):
  kind = single_key.WhichOneof('kind')
  value = getattr(single_key, kind)
  return value.decode() if isinstance(value, bytes) else value


def read_metrics(evaluation_uri: str) -> Dict[tuple, Dict[tuple, Dict[str, float]]]:
  """{slice key: {(model name, is diff): {metric key: value}}} of an Evaluator
  output; slice key () is the whole eval split, ((column, value),) a slice."""
  import tensorflow_model_analysis as tfma
  found = {}
  for metrics in tfma.load_metrics(evaluation_uri):
    key = tuple((k.column, _slice_value(k)) for k in metrics.slice_key.single_slice_keys)
    by_model = found.setdefault(key, {})
    for entry in metrics.metric_keys_and_values:
      if entry.value.HasField('double_value'):
        by_model.setdefault((entry.key.model_name, entry.key.is_diff), {})[
            entry.key.name] = entry.value.double_value.value
  return found


def _eval_config(evaluation_uri: str) -> Dict:
  with open(os.path.join(evaluation_uri, 'eval_config.json')) as f:
    return json.load(f)['evalConfig']


def metric_key(class_name: str) -> str:
  """The key TFMA stores a configured metric under: BinaryAccuracy -> binary_accuracy."""
  import tensorflow_model_analysis as tfma
  cls = getattr(tfma.metrics, class_name, None)
  if cls is None:
    raise ValueError(f'unknown TFMA metric {class_name!r} in the EvalConfig: use a class '
                     'of tfma.metrics')
  return cls().name


def metric_keys(eval_config: Dict) -> List[str]:
  """The configured metrics' keys, in the EvalConfig's order."""
  return [metric_key(metric['className']) for spec in eval_config.get('metricsSpecs', [])
          for metric in spec.get('metrics', [])]


def model_roles(eval_config: Dict) -> Dict[str, str]:
  """{'candidate': model name, 'baseline': model name (if there is one)}."""
  roles = {}
  for spec in eval_config['modelSpecs']:
    roles['baseline' if spec.get('isBaseline') else 'candidate'] = spec.get('name', '')
  return roles


def defined(values: Dict[str, float]) -> Dict[str, Optional[float]]:
  """The slice's metrics, None where undefined: NaN, or AUC of one class."""
  one_class = values.get('mean_label') in (0.0, 1.0)
  return {k: None if math.isnan(v) or (one_class and k in NEED_BOTH_CLASSES) else v
          for k, v in values.items()}


def threshold_text(threshold: Dict) -> Tuple[str, str]:
  """('≥ 0.93', 'change ≥ -0.001 vs baseline') from an EvalConfig threshold."""
  value = threshold.get('valueThreshold', {})
  bounds = [f'≥ {value["lowerBound"]:g}'] if 'lowerBound' in value else []
  bounds += [f'≤ {value["upperBound"]:g}'] if 'upperBound' in value else []
  change = threshold.get('changeThreshold', {})
  sign = '≤' if change.get('direction') == 'LOWER_IS_BETTER' else '≥'
  changes = [f'change {sign} {change["absolute"]:g} vs baseline'] if 'absolute' in change else []
  changes += ([f'relative change {sign} {change["relative"]:g} vs baseline']
              if 'relative' in change else [])
  return ' and '.join(bounds) or '—', ' and '.join(changes) or '—'


def _slices_text(specs: Sequence[Dict]) -> str:
  parts = []
  for spec in specs or [{}]:
    keys = spec.get('featureKeys', [])
    values = spec.get('featureValues', {})
    parts.append(' and '.join([f'by {k}' for k in keys] +
                              [f'{k} = {v}' for k, v in values.items()]) or 'overall')
  return ', '.join(parts)


def thresholds(eval_config: Dict) -> List[List[str]]:
  rows = []
  for spec in eval_config.get('metricsSpecs', []):
    for metric in spec.get('metrics', []):
      key = metric_key(metric['className'])
      for per_slice in metric.get('perSliceThresholds', []):
        rows.append([SHOWN_NAMES.get(key, key), _slices_text(per_slice.get('slicingSpecs')),
                     *threshold_text(per_slice['threshold'])])
  return rows


def failure_text(failure) -> str:
  """'auc (change vs baseline) = -0.002' from a TFMA ValidationFailure."""
  key = failure.metric_key
  kind = 'change vs baseline' if key.is_diff else 'value'
  value = failure.metric_value.double_value.value
  return f'{key.name} ({kind}) = {value:.6g}' + (f': {failure.message}' if failure.message else '')


def _sort_key(value):
  # Hours are numbers: 2 before 10.
  return (0, value, '') if isinstance(value, (int, float)) else (1, 0, str(value))


def evaluation_section(evaluation_uri: str, blessing) -> Dict:
  import tensorflow_model_analysis as tfma
  config = _eval_config(evaluation_uri)
  roles = model_roles(config)
  metrics = read_metrics(evaluation_uri)
  keys = metric_keys(config)
  overall = {role: metrics.get((), {}).get((name, False), {}) for role, name in roles.items()}
  diff = metrics.get((), {}).get((roles['candidate'], True), {})
  rows = []
  for key in keys:
    if not any(key in values for values in overall.values()):
      continue  # A plot, not a metric.
    count = key in COUNT_METRICS
    row = [SHOWN_NAMES.get(key, key)] + [number(overall[r].get(key), count) for r in roles]
    if 'baseline' in roles:
      change = diff.get(key)
      row.append('' if change is None else f'{change:+.4f}' if not count else number(change, True))
    rows.append(row)
  validation = tfma.load_validation_result(evaluation_uri)
  failures = [failure_text(f) for fs in validation.metric_validations_per_slice
              for f in fs.failures]
  return {
      'blessed': _custom(blessing, 'blessed', 0) == 1,
      'has_baseline': 'baseline' in roles,
      'header': ['metric'] + list(roles) + (['change'] if 'baseline' in roles else []),
      'rows': rows, 'thresholds': thresholds(config), 'failures': failures,
      'slices': [_slice_table(feature, metrics, roles) for feature in _sliced_features(config)],
  }


def _sliced_features(eval_config: Dict) -> List[str]:
  return [k for spec in eval_config.get('slicingSpecs', []) for k in spec.get('featureKeys', [])
          if len(spec.get('featureKeys', [])) == 1]


def _slice_table(feature: str, metrics: Dict, roles: Dict[str, str]) -> Dict:
  per_value = sorted(((key[0][1], {role: defined(by_model.get((name, False), {}))
                                   for role, name in roles.items()})
                      for key, by_model in metrics.items()
                      if len(key) == 1 and key[0][0] == feature),
                     key=lambda item: _sort_key(item[0]))
  shown = [('auc', 'AUC'), ('binary_accuracy', 'accuracy')]
  header = [feature, 'examples']
  for _, label in shown:
    header += [label] + ([f'{label} (baseline)'] if 'baseline' in roles else [])
  header += ['mean label', 'mean prediction']
  rows = []
  for value, by_role in per_value:
    candidate = by_role['candidate']
    row = [str(value), number(candidate.get('example_count'), count=True)]
    for key, _ in shown:
      row += [number(by_role[r].get(key)) for r in roles]
    row += [number(candidate.get('mean_label')), number(candidate.get('mean_prediction'))]
    rows.append(row)
  categories = [str(v) for v, _ in per_value]
  plots = [charts.bars(categories, {role: [m[role].get(key) for _, m in per_value]
                                    for role in roles},
                       f'{label} by {feature}', y_max=1.0, width=760)
           for key, label in shown]
  return {'feature': feature, 'header': header, 'rows': rows, 'plots': plots}


# ---- what was pushed ---------------------------------------------------------------------


def pushed_section(run: RunRecord) -> Dict:
  """What this run pushed, and where it came from, all from this run."""
  pushed = run.output('Pusher', 'pushed_model')
  if pushed is None:
    return {'pushed': False, 'why': 'the Pusher did not run' if run.state('Pusher') is None
            else f'the Pusher {run.state("Pusher").lower()}'}
  if _custom(pushed, 'pushed', 0) != 1:
    return {'pushed': False, 'why': 'the model was not blessed'}
  # The model blessed and pushed: this pipeline's Pusher takes it from the
  # infra blessing, so the Evaluator's input names it (a cached execution
  # records outputs only: then the Trainer's).
  model = next(iter(run.inputs('Pusher', 'model') or run.inputs('Evaluator', 'model')),
               run.output('Trainer', 'model'))
  examples = run.inputs('Transform', 'examples') or [run.output('CsvExampleGen', 'examples')]
  statistics = run.output('StatisticsGen', 'statistics')
  schema = run.output('CuratedSchemaGen', 'schema')
  rows = [['data span' + ('s' if len(examples) > 1 else ''),
           ', '.join(str(_custom(e, 'span', '?')) for e in examples if e is not None),
           ', '.join(e.uri for e in examples if e is not None)],
          ['statistics', '', statistics.uri if statistics else ''],
          ['schema', '', schema.uri if schema else ''],
          ['model', f'#{model.id}' if model else '', model.uri if model else ''],
          ['pushed version', str(_custom(pushed, 'pushed_version')),
           str(_custom(pushed, 'pushed_destination'))]]
  from orchestration import progress
  return {'pushed': True, 'cached': run.state('Pusher') == 'CACHED', 'rows': rows,
          'result': progress.push_outcome(pushed)['result']}


# ---- the run report ----------------------------------------------------------------------


def _schema_of(run: RunRecord):
  import tensorflow_data_validation as tfdv
  artifact = run.output('CuratedSchemaGen', 'schema')
  if artifact is None:
    return None, None
  path = os.path.join(artifact.uri, 'schema.pbtxt')
  return tfdv.load_schema_text(path), path


def _data_root(run: Optional[RunRecord], config) -> str:
  """The folder the run read: its ExampleGen's input_base, else the config's."""
  execution = run.executions.get('CsvExampleGen') if run is not None else None
  if execution is not None and 'input_base' in execution.custom_properties:
    return execution.custom_properties['input_base'].string_value
  return config.path(config.data_root)


def build_run_report(config, summary: Optional[Dict] = None) -> str:
  """The HTML of one run of config's pipeline: summary['run_id']'s when a
  summary is given (None: it failed before any component), else the latest."""
  if summary is not None and summary.get('run_id') is None and not summary.get('succeeded'):
    run = None  # Nothing ran, so nothing of any run belongs in the report.
  else:
    run = find_run(_open_store(config), config, (summary or {}).get('run_id'))
  values = {
      'pipeline': config.pipeline_name, 'data_root': _data_root(run, config),
      'made': datetime.datetime.now().isoformat(timespec='seconds'),
      'outcome': outcome(run, summary), 'run_id': run.run_id if run else None,
  }
  if run is not None:
    schema, schema_path = _schema_of(run)
    examples = run.output('CsvExampleGen', 'examples')
    statistics = run.output('StatisticsGen', 'statistics')
    anomalies = run.output('ExampleValidator', 'anomalies')
    evaluation = run.output('Evaluator', 'evaluation')
    values.update(
        span=_custom(examples, 'span') if examples is not None else None,
        components=run.component_rows(),
        statistics=statistics_section(statistics.uri, schema) if statistics else None,
        anomalies=anomalies_section(anomalies) if anomalies else None,
        schema=schema_section(schema, schema_path) if schema is not None else None,
        evaluation=(evaluation_section(evaluation.uri, run.output('Evaluator', 'blessing'))
                    if evaluation else None),
        pushed=pushed_section(run))
  return render('run_report.html.j2', title=f'Pipeline run report: {config.pipeline_name}',
                **values)


def write_run_report(config, out_path: Optional[str] = None,
                     summary: Optional[Dict] = None) -> str:
  """Writes the report of one run (default <output_root>/report.html); returns
  its path. summary is local_runner's: 'run_id' (the MLMD pipeline_run
  context's name, None if the run failed before any component), 'succeeded',
  'error', 'failed_component'. Without it: the latest run, as MLMD tells."""
  out_path = out_path or os.path.join(config.path(config.output_root), 'report.html')
  text = build_run_report(config, summary)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, 'w') as f:
    f.write(text)
  return out_path


# ---- monitoring report ------------------------------------------------------------------


def _comparison_rows(comparisons: Dict, anomalies: Dict) -> List[List]:
  rows = []
  for name, c in sorted(comparisons.items()):
    result = status(not c['anomalous'])
    if name in anomalies:
      result += Markup('<br>') + anomalies[name]['description']
    rows.append([name, c['measure'], number(c['value']), number(c['threshold']), result])
  return rows


def _window_values(window: Dict, statistics: Dict, previous, watched: List[str]) -> Dict:
  start = datetime.datetime.fromtimestamp(window['start'], datetime.timezone.utc)
  values = {'start': start.strftime('%Y-%m-%dT%H:%M:%SZ'),
            'examples': number(window['examples'], count=True),
            'skipped': window.get('skipped')}
  if 'skipped' in window:
    return values
  datasets = {'training': statistics['training'].datasets[0],
              'serving': statistics['windows'][window['start']].datasets[0]}
  if previous is not None:
    datasets['previous window'] = previous
  compared = sorted(window['skew']) + [n for n in watched if n not in window['skew']]
  values.update(
      anomalies=window['serving_anomalies'],
      skew=_comparison_rows(window['skew'], window['skew_anomalies']),
      drift=(_comparison_rows(window['drift'], window['drift_anomalies'])
             if window['drift'] else None),
      plots=[feature_plot(name, datasets) for name in compared if name != 'tips'],
      serving=datasets['serving'])
  return values


def monitoring_html(result: Dict, statistics: Dict) -> str:
  """The monitoring job's report: per window, training vs serving per feature."""
  schema = statistics.get('schema')
  watched = [f.name for f in schema.feature] if schema is not None else []
  windows, previous = [], None
  for window in result['windows']:
    values = _window_values(window, statistics, previous, watched)
    previous = values.get('serving', previous)
    windows.append(values)
  counts = result['records']
  return render(
      'monitoring.html.j2', title=f'Monitoring: {result.get("model_name") or "model"}',
      findings=[[check, status(not flagged, 'none', ', '.join(map(str, flagged)))]
                for check, flagged in result['findings'].items()],
      counts={k: number(v, count=True) for k, v in counts.items() if not isinstance(v, dict)},
      models=counts.get('models', {}),
      training=[[k, '' if v is None else str(v)] for k, v in result['training'].items()],
      windows=windows, predictions=_predictions(result, statistics))


def _predictions(result: Dict, statistics: Dict) -> Dict:
  version_labels: Dict[str, List[str]] = {}
  for label, version in result.get('labels', {}).items():
    version_labels.setdefault(str(version), []).append(label)
  rows = []
  for version, p in sorted(result['predictions_by_version'].items(), key=lambda kv: int(kv[0])):
    shift = p['shift']
    rows.append([version, ', '.join(version_labels.get(version, [])),
                 number(p['count'], count=True), number(p['mean']), number(p['positive_rate']),
                 '' if p['compared_to'] is None else str(p['compared_to']),
                 number(shift['value']) if shift else '',
                 number(shift['threshold']) if shift else '',
                 status(not shift['anomalous'], 'ok', 'SHIFT') if shift else ''])
  plot = None
  if statistics.get('predictions'):
    plot = feature_plot('probability', {
        f'v{v}' + (f' ({", ".join(version_labels[str(v)])})' if str(v) in version_labels else ''):
        s.datasets[0] for v, s in sorted(statistics['predictions'].items())})
  return {'rows': rows, 'plot': plot}


# ---- command line -----------------------------------------------------------------------


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m reports.run_report',
      description='Writes the HTML report of the latest pipeline run under an output root.',
      epilog=f'Exit status: {EXIT_OK} report written; {EXIT_NO_RUN} no pipeline run found '
             '(or the output root is unreadable); 2 bad arguments.')
  parser.add_argument('--output-root',
                      help='pipeline artifacts and MLMD (default: $TAXI_OUTPUT_ROOT, else '
                           'tfx_output in the repository)')
  parser.add_argument('--out', help='where to write (default: <output-root>/report.html)')
  return parser.parse_args(argv)


def _quiet_libraries():
  """Keeps library deprecation chatter off stderr, where the one line that
  matters (the error) goes."""
  import logging
  import warnings
  warnings.filterwarnings('ignore')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  for name in ('absl', 'tensorflow', 'apache_beam'):
    logging.getLogger(name).setLevel(logging.ERROR)


def main(argv=None) -> int:
  args = parse_args(argv)
  _quiet_libraries()
  from pipeline import configs
  try:
    config = configs.load({'output_root': args.output_root})
    path = write_run_report(config, args.out)
  except (NoRunFound, OSError, ValueError) as e:
    print(f'report: {e}', file=sys.stderr)
    return EXIT_NO_RUN
  try:
    print(path)
    sys.stdout.flush()
  except BrokenPipeError:  # `| head -0`: the report is written, nobody reads its path.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
  return EXIT_OK


if __name__ == '__main__':
  sys.exit(main())
