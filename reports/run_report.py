"""The HTML report of one pipeline run.

It describes ONE run (an MLMD `pipeline_run` context): how it ended (and
where and why it failed), what its components did, and only what they
produced: the data statistics (plots), anomalies, the schema in use,
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

from models import features
from pipeline import metadata, project, quiet
from reports import charts
from pipeline.metadata import NoRunFound, RunRecord, custom_property
from reports.feature_plots import (blank_share, feature_plot, feature_stats, is_categorical,
                                   summary_text)
from reports.render import number, render, status

EXIT_OK, EXIT_NO_RUN = 0, 1
COUNT_METRICS = {'example_count'}
# Metrics a slice with one class only (every label 0, or every label 1) has
# no value for; TFMA reports them as 0.
NEED_BOTH_CLASSES = {'auc', 'auc_precision_recall'}


def component_rows(run: RunRecord) -> List[List[str]]:
  rows = []
  for node, e in sorted(run.executions.items(), key=lambda item: item[1].id):
    seconds = (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000
    state = run.state(node)
    rows.append([node, status(state != 'FAILED', state.lower(), state),
                 f'{seconds:.1f}s' if state == 'COMPLETE' else ''])
  return rows


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


def statistics_section(statistics_uri: str, schema) -> Dict:
  datasets = metadata.split_statistics(statistics_uri)
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
    rows.append([name, 'categorical' if is_categorical(first) else 'numeric', *missing,
                 summary_text(first)])
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
  # Imported here: they load TFX (seconds), which only a run with anomalies needs.
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
  output; slice key () is the whole evaluated (test) split, ((column, value),) a slice."""
  import tensorflow_model_analysis as tfma
  found = {}
  for metrics in tfma.load_metrics(evaluation_uri):
    key = tuple((k.column, _slice_value(k)) for k in metrics.slice_key.single_slice_keys)
    by_model = found.setdefault(key, {})
    for entry in metrics.metric_keys_and_values:
      if entry.value.HasField('double_value'):
        by_model.setdefault((entry.key.model_name, entry.key.is_diff), {})[
            _per_class_key(entry.key.name, entry.key.sub_key.class_id.value)
            if entry.key.sub_key.HasField('class_id') else entry.key.name] = \
            entry.value.double_value.value
  return found


def _eval_config(evaluation_uri: str) -> Dict:
  with open(os.path.join(evaluation_uri, 'eval_config.json')) as f:
    return json.load(f)['evalConfig']


def _per_class_key(name: str, class_id: int) -> str:
  """'precision/setosa': a metric of one class against the rest."""
  names = features.CLASS_NAMES
  return f'{name}/{names[class_id] if 0 <= class_id < len(names) else class_id}'


def metric_key(class_name: str, config: str = '') -> str:
  """The key TFMA stores a configured metric under: BinaryAccuracy -> binary_accuracy,
  a metric configured with {"name": ...} under that name."""
  import tensorflow_model_analysis as tfma
  named = json.loads(config).get('name') if config else None
  if named:
    return named
  cls = getattr(tfma.metrics, class_name, None)
  if cls is None:
    raise ValueError(f'unknown TFMA metric {class_name!r} in the EvalConfig: use a class '
                     'of tfma.metrics, or name it in its config')
  return cls().name


def metric_keys(eval_config: Dict) -> List[str]:
  """The configured metrics' keys, in the EvalConfig's order; a binarized
  spec's metrics once per class."""
  keys = []
  for spec in eval_config.get('metricsSpecs', []):
    class_ids = spec.get('binarize', {}).get('classIds', {}).get('values')
    for metric in spec.get('metrics', []):
      key = metric_key(metric['className'], metric.get('config', ''))
      keys += [_per_class_key(key, int(i)) for i in class_ids] if class_ids else [key]
  return keys


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
      key = metric_key(metric['className'], metric.get('config', ''))
      for per_slice in metric.get('perSliceThresholds', []):
        rows.append([metadata.SHOWN_NAMES.get(key, key), _slices_text(per_slice.get('slicingSpecs')),
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
    row = [metadata.SHOWN_NAMES.get(key, key)] + [number(overall[r].get(key), count) for r in roles]
    if 'baseline' in roles:
      change = diff.get(key)
      row.append('' if change is None else f'{change:+.4f}' if not count else number(change, True))
    rows.append(row)
  validation = tfma.load_validation_result(evaluation_uri)
  failures = [failure_text(f) for fs in validation.metric_validations_per_slice
              for f in fs.failures]
  return {
      'blessed': custom_property(blessing, 'blessed', 0) == 1,
      'has_baseline': 'baseline' in roles,
      'header': ['metric'] + list(roles) + (['change'] if 'baseline' in roles else []),
      'rows': rows, 'thresholds': thresholds(config), 'failures': failures,
      'slices': [_slice_table(feature, metrics, roles) for feature in _sliced_features(config)],
  }


def _sliced_features(eval_config: Dict) -> List[str]:
  return [k for spec in eval_config.get('slicingSpecs', []) for k in spec.get('featureKeys', [])
          if len(spec.get('featureKeys', [])) == 1]


# The metrics each slice table shows, by task.
SLICE_METRICS = {features.BINARY: [('auc', 'AUC'), ('binary_accuracy', 'accuracy')],
                 features.MULTICLASS: [('accuracy', 'accuracy')],
                 features.REGRESSION: [('rmse', 'RMSE'), ('mean_absolute_error', 'MAE')]}


def _slice_table(feature: str, metrics: Dict, roles: Dict[str, str]) -> Dict:
  per_value = sorted(((key[0][1], {role: defined(by_model.get((name, False), {}))
                                   for role, name in roles.items()})
                      for key, by_model in metrics.items()
                      if len(key) == 1 and key[0][0] == feature),
                     key=lambda item: _sort_key(item[0]))
  shown = SLICE_METRICS[features.TASK]
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
                       f'{label} by {feature}', width=760,
                       y_max=None if features.TASK == features.REGRESSION else 1.0)
           for key, label in shown]
  return {'feature': feature, 'header': header, 'rows': rows, 'plots': plots}


# ---- training ----------------------------------------------------------------------------

# The curves drawn, by task: (TensorBoard tag, label); the Trainer's Keras
# TensorBoard callback writes epoch_<metric> into model_run/train and
# model_run/validation, one point per scoring of the eval split.
TRAINING_CURVES = {features.BINARY: [('epoch_loss', 'loss'), ('epoch_auc', 'AUC'),
                                     ('epoch_accuracy', 'accuracy')],
                   features.MULTICLASS: [('epoch_loss', 'loss'), ('epoch_accuracy', 'accuracy')],
                   features.REGRESSION: [('epoch_loss', 'loss'), ('epoch_rmse', 'RMSE'),
                                         ('epoch_mae', 'MAE')]}
# Written by models/model.py's run_fn beside the logs (its TRAINING_RECORD_FILE;
# not imported: that would load TensorFlow and TFX for a file name).
TRAINING_RECORD_FILE = 'training_record.json'


def read_scalars(log_dir: str) -> Dict[str, List[Tuple[int, float]]]:
  """{tag: [(step, value)]} of the TensorBoard event files in log_dir, read
  with TensorBoard's own loader (what `tensorboard --logdir` shows)."""
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util
  if not os.path.isdir(log_dir):
    return {}
  accumulator = event_accumulator.EventAccumulator(
      log_dir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
  accumulator.Reload()
  tags = accumulator.Tags()
  found = {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                 for e in accumulator.Tensors(tag)] for tag in tags['tensors']}
  found.update({tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
                for tag in tags['scalars']})
  return found


def _training_record(model_run_uri: str) -> Optional[Dict]:
  path = os.path.join(model_run_uri, TRAINING_RECORD_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def _stopping_text(record: Optional[Dict], objective_label: str) -> str:
  if record is None:
    return 'This Trainer wrote no training record: which step was exported is not known.'
  every = f'every {record["eval_every"]} steps' if record['eval_every'] else 'after the last step'
  stopped = (f'stopped early at step {record["steps"]} of at most {record["max_steps"]} '
             f'({record["patience"]} scorings without a better {objective_label})'
             if record['steps'] < record['max_steps'] else
             f'ran all {record["max_steps"]} steps')
  best = ('' if record['best_step'] is None else
          f'; exported the weights of step {record["best_step"]} '
          f'(eval-split {objective_label} {record["best_value"]:.4f})')
  return f'Scored on the eval split {every}; {stopped}{best}.'


def training_section(model_run_uri: str) -> Optional[Dict]:
  """Loss and metrics against the training step, train beside eval split,
  from the Trainer's TensorBoard logs; None when it wrote none."""
  train = read_scalars(os.path.join(model_run_uri, 'train'))
  evaluated = read_scalars(os.path.join(model_run_uri, 'validation'))
  if not train and not evaluated:
    return None
  record = _training_record(model_run_uri)
  best_step = record.get('best_step') if record else None
  objective = (record or {}).get('objective', '').replace('val_', '')
  labels = dict(TRAINING_CURVES[features.TASK])
  plots = [charts.lines({'train': train.get(tag, []), 'eval split': evaluated.get(tag, [])},
                        f'{label} by training step', marker=best_step,
                        marker_label=f'exported: step {best_step}')
           for tag, label in TRAINING_CURVES[features.TASK]]
  return {'log_dir': model_run_uri, 'plots': plots,
          'text': _stopping_text(record, labels.get(f'epoch_{objective}', objective))}


# ---- what was pushed ---------------------------------------------------------------------


def pushed_section(run: RunRecord) -> Dict:
  """What this run pushed, and where it came from, all from this run."""
  pushed = run.output('Pusher', 'pushed_model')
  if pushed is None:
    return {'pushed': False, 'why': 'the Pusher did not run' if run.state('Pusher') is None
            else f'the Pusher {run.state("Pusher").lower()}'}
  if custom_property(pushed, 'pushed', 0) != 1:
    return {'pushed': False, 'why': 'the model was not blessed'}
  # The model blessed and pushed: this pipeline's Pusher takes it from the
  # infra blessing, so the Evaluator's input names it (a cached execution
  # records outputs only: then the Trainer's).
  model = next(iter(run.inputs('Pusher', 'model') or run.inputs('Evaluator', 'model')),
               run.output('Trainer', 'model'))
  examples = run.inputs('Transform', 'examples') or [run.output('CsvExampleGen', 'examples')]
  statistics = run.output('StatisticsGen', 'statistics')
  schema = run.output('CuratedSchemaGen', 'schema')
  outcome = metadata.push_outcome(pushed)
  rows = [['data span' + ('s' if len(examples) > 1 else ''),
           ', '.join(str(custom_property(e, 'span', '?')) for e in examples if e is not None),
           ', '.join(e.uri for e in examples if e is not None)],
          ['statistics', '', statistics.uri if statistics else ''],
          ['schema', '', schema.uri if schema else ''],
          ['model', f'#{model.id}' if model else '', model.uri if model else ''],
          ['pushed version', str(custom_property(pushed, 'pushed_version')),
           str(custom_property(pushed, 'pushed_destination'))],
          ['audit record', outcome['audit_action_id'] or '',
           outcome['audit_record'] or 'none (pushed before the audit trail)'],
          ['model card', '', outcome['model_card'] or 'none']]
  return {'pushed': True, 'cached': run.state('Pusher') == 'CACHED', 'rows': rows,
          'result': outcome['result']}


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
    run = metadata.find_run(metadata.open_run_store(config), config, (summary or {}).get('run_id'))
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
    model_run = run.output('Trainer', 'model_run')
    values.update(
        span=custom_property(examples, 'span') if examples is not None else None,
        components=component_rows(run),
        statistics=statistics_section(statistics.uri, schema) if statistics else None,
        anomalies=anomalies_section(anomalies) if anomalies else None,
        schema=schema_section(schema, schema_path) if schema is not None else None,
        training=training_section(model_run.uri) if model_run is not None else None,
        evaluation=(evaluation_section(evaluation.uri, run.output('Evaluator', 'blessing'))
                    if evaluation else None),
        evaluated_split=metadata.evaluated_splits(run.executions.get('Evaluator')),
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


# ---- command line -----------------------------------------------------------------------


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m reports.run_report',
      description='Writes the HTML report of the latest pipeline run under an output root.',
      epilog=f'Exit status: {EXIT_OK} report written; {EXIT_NO_RUN} no pipeline run found '
             '(or the output root is unreadable); 2 bad arguments.')
  parser.add_argument('--output-root',
                      help=f'pipeline artifacts and MLMD (default: ${project.NAMES["env_var_prefix"]}OUTPUT_ROOT, else '
                           'tfx_output in the repository)')
  parser.add_argument('--out', help='where to write (default: <output-root>/report.html)')
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  quiet.quiet_libraries()  # Off stderr, where the one line that matters (the error) goes.
  from pipeline import configs  # After the libraries are quieted: one line on error.
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
