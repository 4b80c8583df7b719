"""Monitoring of served traffic: skew, drift and prediction shift from request logs.

Reads the TFRecord PredictionLog files that TF Serving (or serving.server)
writes for a model's `logging_config`, extracts the raw features that were
served and the predictions that were returned, and checks them with TFDV:

- serving anomalies: each time window against the curated schema's SERVING
  environment;
- training/serving skew: each window against the training statistics of the
  model being served (found through MLMD lineage), with the schema's
  skew_comparator thresholds (L-infinity for categorical, Jensen-Shannon for
  numeric features);
- drift: each window against the previous one (drift_comparator thresholds);
- prediction shift: the prediction distribution of every served version
  against the `stable` version's (canary comparison).

    python -m pipeline.monitoring --logs /models/logs/taxi_big_tipper \\
        --metadata tfx_output/metadata.sqlite --out monitoring/

Exit status: 0 nothing found; 2 skew or drift found (a retraining trigger);
3 only serving anomalies or a prediction shift; 1 the job failed.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse
import collections
import dataclasses
import glob
import json
import struct
import sys
from typing import Dict, Iterator, List, Optional, Tuple

from models import features

EXIT_OK, EXIT_FAILED, EXIT_DRIFT_OR_SKEW, EXIT_OTHER_FINDINGS = 0, 1, 2, 3
PREDICTION = 'probability'
# Prediction shift between versions, Jensen-Shannon on the probability
# histogram: the same measure the schema uses for numeric features.
DEFAULT_PREDICTION_JSD = 0.1
# Fewer served examples than this make noisy statistics, and the schema's
# dataset_constraints flag them anyway: such windows are reported, not judged.
DEFAULT_MIN_WINDOW_EXAMPLES = 100


# ---- reading request logs ----------------------------------------------------


@dataclasses.dataclass
class LogReadCounts:
  records: int = 0  # PredictionLogs read.
  corrupt: int = 0  # Records skipped: bad checksum, not a PredictionLog, torn tail.
  unusable: int = 0  # Valid logs without features we can read (e.g. other models).
  files: int = 0


def _masked_crc(data: bytes) -> int:
  import google_crc32c
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


def _tfrecords(path: str, counts: LogReadCounts) -> Iterator[bytes]:
  """The records of one TFRecord file, skipping corrupt ones.

  tf.data stops at the first bad record and loses the rest of the file; a
  server killed mid-write or a flipped byte must cost one record, not a day
  of logs. The framing is TFRecord's: length, crc(length), data, crc(data).
  """
  with open(path, 'rb') as f:
    while True:
      header = f.read(12)
      if not header:
        return
      if len(header) < 12:
        counts.corrupt += 1  # Torn tail: the writer stopped mid-record.
        return
      length, length_crc = struct.unpack('<QI', header)
      if _masked_crc(header[:8]) != length_crc:
        counts.corrupt += 1  # The length is garbage: nothing after can be framed.
        return
      data, footer = f.read(length), f.read(4)
      if len(data) < length or len(footer) < 4:
        counts.corrupt += 1
        return
      if _masked_crc(data) != struct.unpack('<I', footer)[0]:
        counts.corrupt += 1  # Damaged payload; the framing still holds.
        continue
      yield data


def log_files(pattern: str) -> List[str]:
  """Files of a glob, or of a logging_config filename_prefix."""
  return sorted(glob.glob(pattern) or glob.glob(pattern + '*'))


def read_logs(pattern: str, counts: LogReadCounts):
  """Every readable PredictionLog in the files of pattern."""
  from google.protobuf import message
  from tensorflow_serving.apis import prediction_log_pb2
  for path in log_files(pattern):
    counts.files += 1
    for record in _tfrecords(path, counts):
      try:
        log = prediction_log_pb2.PredictionLog.FromString(record)
      except message.DecodeError:
        counts.corrupt += 1
        continue
      counts.records += 1
      yield log


# ---- served features and predictions -------------------------------------------

Row = Dict[str, object]


def _example_row(example) -> Row:
  row = {}
  for name in features.RAW_FEATURES:
    feature = example.features.feature.get(name)
    kind = feature.WhichOneof('kind') if feature is not None else None
    values = list(getattr(feature, kind).value) if kind else []
    value = values[0] if values else None
    row[name] = value.decode('utf-8', 'replace') if isinstance(value, bytes) else value
  return row


def _rows_from_examples(serialized) -> List[Row]:
  from tensorflow.core.example import example_pb2
  return [_example_row(example_pb2.Example.FromString(s)) for s in serialized]


def _rows_from_input(model_input) -> List[Row]:
  """classify/regress/multi_inference requests: an Input of tf.Examples."""
  kind = model_input.WhichOneof('kind')
  if kind == 'example_list':
    return [_example_row(e) for e in model_input.example_list.examples]
  if kind == 'example_list_with_context':
    rows = []
    context = _example_row(model_input.example_list_with_context.context)
    for e in model_input.example_list_with_context.examples:
      row = _example_row(e)
      rows.append({k: row[k] if row[k] is not None else context[k] for k in row})
    return rows
  return []


def _rows_from_raw_inputs(inputs) -> List[Row]:
  """predict_raw: one tensor per raw feature, [batch] or empty (not sent)."""
  import tensorflow as tf
  columns = {n: tf.make_ndarray(inputs[n]).reshape(-1).tolist() for n in features.RAW_FEATURES
             if n in inputs}
  batch = max((len(v) for v in columns.values()), default=0)
  rows = []
  for i in range(batch):
    row = {}
    for name, spec in features.RAW_FEATURES.items():
      values = columns.get(name)
      value = values[i] if values is not None and len(values) == batch else None
      if isinstance(value, bytes):
        value = value.decode('utf-8', 'replace')
      # predict_raw takes a value for every row, so clients fill a missing
      # optional feature with its default (serving.client does): count it as
      # missing, as it was in the training data, not as a real 0 or ''.
      if not spec.required and value == spec.default:
        value = None
      row[name] = value
    rows.append(row)
  return rows


def served_rows(log) -> List[Row]:
  """The raw feature rows a PredictionLog's request carried."""
  kind = log.WhichOneof('log_type')
  if kind == 'predict_log':
    inputs = log.predict_log.request.inputs
    if 'examples' in inputs:  # serving_default: serialized tf.Examples.
      import tensorflow as tf
      return _rows_from_examples(tf.make_ndarray(inputs['examples']).reshape(-1))
    return _rows_from_raw_inputs(inputs)
  if kind in ('classify_log', 'regress_log', 'multi_inference_log'):
    return _rows_from_input(getattr(log, kind).request.input)
  return []


def served_predictions(log) -> List[float]:
  """The probabilities the response returned (class '1' score for Classify)."""
  kind = log.WhichOneof('log_type')
  if kind == 'predict_log':
    outputs = log.predict_log.response.outputs
    if PREDICTION not in outputs:
      return []
    import tensorflow as tf
    return [float(p) for p in tf.make_ndarray(outputs[PREDICTION]).reshape(-1)]
  if kind == 'classify_log':
    return [next((c.score for c in result.classes if c.label == '1'), float('nan'))
            for result in log.classify_log.response.result.classifications]
  if kind == 'regress_log':
    return [r.value for r in log.regress_log.response.result.regressions]
  return []


@dataclasses.dataclass
class ServedTraffic:
  """What the logs hold, ready for statistics."""
  rows_by_window: Dict[int, List[Row]]  # Window start (unix s) -> rows.
  predictions_by_version: Dict[int, List[float]]
  counts: LogReadCounts


def collect(pattern: str, model_name: str = '', window_seconds: int = 3600) -> ServedTraffic:
  counts = LogReadCounts()
  windows: Dict[int, List[Row]] = collections.defaultdict(list)
  predictions: Dict[int, List[float]] = collections.defaultdict(list)
  for log in read_logs(pattern, counts):
    spec = log.log_metadata.model_spec
    if model_name and spec.name and spec.name != model_name:
      counts.unusable += 1
      continue
    rows = served_rows(log)
    if not rows:
      counts.unusable += 1
      continue
    start = log.log_metadata.timestamp_secs // window_seconds * window_seconds
    windows[start].extend(rows)
    predictions[spec.version.value].extend(served_predictions(log))
  return ServedTraffic(dict(sorted(windows.items())), dict(predictions), counts)


# ---- statistics ------------------------------------------------------------------


def rows_to_dataframe(rows: List[Row]):
  """Rows typed per models/features.py; missing values stay missing (NA), so
  TFDV counts them as absent, as in the training statistics."""
  import pandas as pd
  dtypes = {'int': 'Int64', 'float': 'float64', 'string': object}
  return pd.DataFrame({
      name: pd.Series([r.get(name) for r in rows], dtype=dtypes[spec.dtype])
      for name, spec in features.RAW_FEATURES.items()})


def statistics_of(rows: List[Row], schema):
  import tensorflow_data_validation as tfdv
  return tfdv.generate_statistics_from_dataframe(
      rows_to_dataframe(rows), tfdv.StatsOptions(schema=schema))


def load_schema(path: str):
  import tensorflow_data_validation as tfdv
  return tfdv.load_schema_text(path)


# ---- the served model's training data, through MLMD --------------------------------


class Lineage:
  """Walks MLMD from a pushed model back to what produced it."""

  def __init__(self, metadata_path: str):
    from pipeline import progress
    self.store = progress.open_store(metadata_path, read_only=True)  # A monitor never writes.
    self._types = {t.id: t.name for t in self.store.get_artifact_types()}

  def type_of(self, artifact) -> str:
    return self._types.get(artifact.type_id, '')

  def pushed_models(self) -> list:
    """PushedModel artifacts that were pushed, oldest first."""
    from pipeline.progress import custom_property
    pushed = self.store.get_artifacts_by_type('PushedModel')
    return sorted((a for a in pushed if custom_property(a, 'pushed', 0) == 1),
                  key=lambda a: a.id)

  def pushed_model(self, version: Optional[int] = None):
    """The push of version (the newest push when None)."""
    from pipeline.progress import custom_property
    pushed = self.pushed_models()
    if version is not None:
      pushed = [a for a in pushed if str(custom_property(a, 'pushed_version')) == str(version)]
    if not pushed:
      raise LookupError(f'no pushed model {"version " + str(version) if version else ""} '
                        'in MLMD')
    return pushed[-1]

  def ancestors(self, artifact) -> list:
    """Every artifact upstream of artifact, nearest first."""
    from ml_metadata.proto import metadata_store_pb2
    inputs = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
    outputs = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
    seen, frontier, found = {artifact.id}, [artifact.id], []
    while frontier:
      events = self.store.get_events_by_artifact_ids(frontier)
      producers = {e.execution_id for e in events if e.type in outputs}
      frontier = []
      if producers:
        upstream = {e.artifact_id for e in self.store.get_events_by_execution_ids(
            list(producers)) if e.type in inputs} - seen
        seen |= upstream
        frontier = sorted(upstream)
        found += self.store.get_artifacts_by_id(frontier)
    return found

  def outputs_of_consumers(self, artifact, type_name: str) -> list:
    """Artifacts of type_name produced by executions that read artifact."""
    from ml_metadata.proto import metadata_store_pb2
    consumers = {e.execution_id for e in self.store.get_events_by_artifact_ids([artifact.id])
                 if e.type == metadata_store_pb2.Event.INPUT}
    produced = [e.artifact_id for e in self.store.get_events_by_execution_ids(list(consumers))
                if e.type == metadata_store_pb2.Event.OUTPUT]
    return [a for a in self.store.get_artifacts_by_id(produced) if self.type_of(a) == type_name]

  def of_pushed(self, version: Optional[int] = None) -> Dict[str, object]:
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


def training_statistics(statistics_uri: str, split: str = 'train'):
  import tensorflow_data_validation as tfdv
  return tfdv.load_stats_binary(os.path.join(statistics_uri, f'Split-{split}', 'FeatureStats.pb'))


# ---- validation --------------------------------------------------------------------


def _anomalies(anomalies) -> Dict[str, Dict]:
  return {name: {'short': info.short_description, 'description': info.description}
          for name, info in anomalies.anomaly_info.items()}


def _comparisons(anomalies, field: str) -> Dict[str, Dict]:
  """Every comparator's measured value and threshold, anomalous or not."""
  found = {}
  anomalous = set(anomalies.anomaly_info)
  for info in anomalies.drift_skew_info:
    name = '.'.join(info.path.step)
    for m in getattr(info, field):
      found[name] = {'measure': m.Type.Name(m.type), 'value': m.value,
                     'threshold': m.threshold, 'anomalous': name in anomalous and
                     m.value > m.threshold}
  return found


def _comparator_anomalies(anomalies, comparisons) -> Dict[str, Dict]:
  return {k: v for k, v in _anomalies(anomalies).items()
          if k in comparisons and comparisons[k]['anomalous']}


def validate_window(stats, schema, training_stats, previous_stats=None) -> Dict:
  """Serving anomalies, skew against training and drift against previous."""
  import tensorflow_data_validation as tfdv
  serving = tfdv.validate_statistics(stats, schema, environment='SERVING')
  # TFDV's skew check takes training as `statistics`, serving beside it; the
  # training data was validated by the pipeline, so only comparators count.
  skew = tfdv.validate_statistics(training_stats, schema, environment='TRAINING',
                                  serving_statistics=stats)
  skew_values = _comparisons(skew, 'skew_measurements')
  result = {'serving_anomalies': _anomalies(serving),
            'skew': skew_values, 'skew_anomalies': _comparator_anomalies(skew, skew_values),
            'drift': {}, 'drift_anomalies': {}}
  if previous_stats is not None:
    drift = tfdv.validate_statistics(stats, schema, environment='SERVING',
                                     previous_statistics=previous_stats)
    drift_values = _comparisons(drift, 'drift_measurements')
    result.update(drift=drift_values,
                  drift_anomalies=_comparator_anomalies(drift, drift_values))
  return result


def _prediction_schema(threshold: float):
  from tensorflow_metadata.proto.v0 import schema_pb2
  schema = schema_pb2.Schema()
  feature = schema.feature.add(name=PREDICTION, type=schema_pb2.FLOAT)
  feature.drift_comparator.jensen_shannon_divergence.threshold = threshold
  return schema


def compare_predictions(predictions: Dict[int, List[float]], baseline_version: Optional[int],
                        threshold: float = DEFAULT_PREDICTION_JSD):
  """Prediction distribution per version, each against baseline_version's.

  Returns (per-version summary, statistics by version)."""
  import pandas as pd
  import tensorflow_data_validation as tfdv
  stats = {v: tfdv.generate_statistics_from_dataframe(pd.DataFrame({PREDICTION: p}))
           for v, p in predictions.items() if p}
  schema = _prediction_schema(threshold)
  summary = {}
  for version, values in sorted(predictions.items()):
    if not values:
      continue
    entry = {'count': len(values), 'mean': sum(values) / len(values),
             'positive_rate': sum(p > 0.5 for p in values) / len(values),
             'compared_to': None, 'shift': None}
    if baseline_version in stats and version != baseline_version:
      anomalies = tfdv.validate_statistics(stats[version], schema,
                                           previous_statistics=stats[baseline_version])
      entry['compared_to'] = baseline_version
      entry['shift'] = _comparisons(anomalies, 'drift_measurements').get(PREDICTION)
    summary[str(version)] = entry
  return summary, stats


# ---- the job ---------------------------------------------------------------------


@dataclasses.dataclass
class MonitoringInputs:
  logs: str  # Glob or filename_prefix of the request logs.
  metadata_path: str = ''  # MLMD: finds the served model's training statistics.
  model_name: str = ''
  model_version: Optional[int] = None  # Training data of this push (default: newest).
  training_statistics: str = ''  # Or give a StatisticsGen output dir directly.
  schema_file: str = ''  # Default: the schema the served model was trained with.
  serving_config: str = ''  # model_config_list with the stable/canary labels.
  window_seconds: int = 3600
  min_window_examples: int = DEFAULT_MIN_WINDOW_EXAMPLES
  prediction_jsd_threshold: float = DEFAULT_PREDICTION_JSD


def _training_side(inputs: MonitoringInputs) -> Tuple[object, object, Dict]:
  """(training statistics, schema, provenance) of the served model."""
  provenance = {}
  stats_uri, schema_file = inputs.training_statistics, inputs.schema_file
  if inputs.metadata_path and not (stats_uri and schema_file):
    from pipeline.progress import custom_property
    found = Lineage(inputs.metadata_path).of_pushed(inputs.model_version)
    if found['statistics'] is None:
      raise LookupError('MLMD has no statistics upstream of the pushed model')
    stats_uri = stats_uri or found['statistics'].uri
    if not schema_file and found['schema'] is not None:
      schema_file = os.path.join(found['schema'].uri, 'schema.pbtxt')
    provenance = {
        'pushed_version': custom_property(found['pushed'], 'pushed_version'),
        'span': custom_property(found['examples'], 'span') if found['examples'] else None,
        'examples_uri': found['examples'].uri if found['examples'] else None}
  if not stats_uri or not schema_file:
    raise ValueError('need MLMD (--metadata) or --training-statistics and --schema')
  provenance.update(statistics_uri=stats_uri, schema_file=schema_file)
  return training_statistics(stats_uri), load_schema(schema_file), provenance


def run(inputs: MonitoringInputs) -> Tuple[Dict, Dict]:
  """Returns (result, statistics): the JSON-able result, and the TFDV
  statistics it was computed from (for the HTML report)."""
  train_stats, schema, provenance = _training_side(inputs)
  traffic = collect(inputs.logs, inputs.model_name, inputs.window_seconds)
  windows, window_stats, previous = [], {}, None
  for start, rows in traffic.rows_by_window.items():
    window = {'start': start, 'end': start + inputs.window_seconds, 'examples': len(rows)}
    if len(rows) < inputs.min_window_examples:
      window['skipped'] = f'fewer than {inputs.min_window_examples} examples'
      windows.append(window)
      continue
    stats = statistics_of(rows, schema)
    window.update(validate_window(stats, schema, train_stats, previous))
    window['compared_to_window'] = windows[-1]['start'] if previous is not None else None
    window_stats[start] = stats
    windows.append(window)
    previous = stats
  labels = read_labels(inputs.serving_config, inputs.model_name) if inputs.serving_config else {}
  predictions, prediction_stats = compare_predictions(
      traffic.predictions_by_version, labels.get('stable'), inputs.prediction_jsd_threshold)
  result = {
      'logs': inputs.logs, 'model_name': inputs.model_name, 'training': provenance,
      'records': dataclasses.asdict(traffic.counts), 'windows': windows,
      'labels': labels, 'predictions_by_version': predictions,
  }
  result['findings'] = findings(result)
  return result, {'training': train_stats, 'windows': window_stats,
                  'predictions': prediction_stats, 'schema': schema}


def read_labels(config_path: str, model_name: str = '') -> Dict[str, int]:
  from pipeline import rollout
  return rollout.labels(rollout.read_config(config_path), model_name)


def findings(result: Dict) -> Dict[str, List[str]]:
  """Which features (or versions) each check flagged."""
  judged = [w for w in result['windows'] if 'skipped' not in w]
  flagged = lambda key: sorted({f for w in judged for f in w[key]})
  return {
      'skew': flagged('skew_anomalies'),
      'drift': flagged('drift_anomalies'),
      'serving_anomalies': flagged('serving_anomalies'),
      'prediction_shift': sorted(
          v for v, p in result['predictions_by_version'].items()
          if p['shift'] and p['shift']['anomalous']),
  }


def drift_or_skew_found(result: Dict) -> bool:
  """The retraining trigger: served data moved away from the training data
  (skew) or from the previous window (drift)."""
  return bool(result['findings']['skew'] or result['findings']['drift'])


def exit_code(result: Dict) -> int:
  if drift_or_skew_found(result):
    return EXIT_DRIFT_OR_SKEW
  other = result['findings']
  return EXIT_OTHER_FINDINGS if other['serving_anomalies'] or other['prediction_shift'] else EXIT_OK


def write_outputs(result: Dict, statistics: Dict, out_dir: str) -> Dict[str, str]:
  """monitoring.json and monitoring.html in out_dir."""
  from pipeline import report
  os.makedirs(out_dir, exist_ok=True)
  paths = {'json': os.path.join(out_dir, 'monitoring.json'),
           'html': os.path.join(out_dir, 'monitoring.html')}
  with open(paths['json'], 'w') as f:
    json.dump(result, f, indent=2, sort_keys=True)
  with open(paths['html'], 'w') as f:
    f.write(report.monitoring_html(result, statistics))
  return paths


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--logs', required=True,
                      help='request log glob, or the logging_config filename_prefix')
  parser.add_argument('--metadata', default='', help='MLMD sqlite of the pipeline')
  parser.add_argument('--model-name', default='taxi_big_tipper')
  parser.add_argument('--model-version', type=int,
                      help='training data of this pushed version (default: newest push)')
  parser.add_argument('--training-statistics', default='',
                      help='StatisticsGen output dir (instead of MLMD)')
  parser.add_argument('--schema', default='', help='schema.pbtxt (default: from MLMD)')
  parser.add_argument('--serving-config', default='',
                      help='model_config_list file with stable/canary version labels')
  parser.add_argument('--window-seconds', type=int, default=3600)
  parser.add_argument('--min-window-examples', type=int, default=DEFAULT_MIN_WINDOW_EXAMPLES)
  parser.add_argument('--prediction-jsd-threshold', type=float, default=DEFAULT_PREDICTION_JSD)
  parser.add_argument('--out', default='monitoring', help='writes monitoring.json/.html here')
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  inputs = MonitoringInputs(
      logs=args.logs, metadata_path=args.metadata, model_name=args.model_name,
      model_version=args.model_version, training_statistics=args.training_statistics,
      schema_file=args.schema, serving_config=args.serving_config,
      window_seconds=args.window_seconds, min_window_examples=args.min_window_examples,
      prediction_jsd_threshold=args.prediction_jsd_threshold)
  try:
    result, statistics = run(inputs)
  except (LookupError, ValueError, OSError) as e:
    print(f'monitoring failed: {e}', file=sys.stderr)
    return EXIT_FAILED
  paths = write_outputs(result, statistics, args.out)
  found = result['findings']
  print(f'{result["records"]["records"]} logs read, {result["records"]["corrupt"]} corrupt '
        f'skipped; skew: {found["skew"] or "none"}; drift: {found["drift"] or "none"}; '
        f'serving anomalies: {found["serving_anomalies"] or "none"}; prediction shift: '
        f'{found["prediction_shift"] or "none"}')
  print(f'Report: {paths["html"]}  JSON: {paths["json"]}')
  return exit_code(result)


if __name__ == '__main__':
  sys.exit(main())
