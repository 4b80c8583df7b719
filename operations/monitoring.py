"""Monitoring of served traffic: skew, drift and prediction shift from request logs.

Reads the TFRecord PredictionLog files that TF Serving (or serving.server)
writes for a model's `logging_config`, extracts the raw features that were
served and the predictions that were returned, and checks them with TFDV:

- serving anomalies: each time window against the curated schema's SERVING
  environment;
- training/serving skew: each window against the training statistics of the
  model version that served it (the version the logs name, its push in MLMD,
  upstream to the statistics), with the schema's skew_comparator thresholds
  (L-infinity for categorical, Jensen-Shannon on the training quantiles for
  numeric features);
- drift: each window against the previous one of the same version
  (drift_comparator thresholds);
- prediction shift: the prediction distribution of every served version
  against the `stable` version's (canary comparison).

    python -m operations.monitoring --logs /models/logs/<MODEL_NAME>

(--metadata and --out default to the pipeline's output root, tfx_output/.)

Exit status: 0 nothing found; 2 skew or drift found (a retraining trigger);
3 only serving anomalies or a prediction shift; 1 the job failed.
"""

import os

import compat.keras  # noqa: F401  First: Keras 2 for TFX (see compat/keras.py).

import argparse
import collections
import dataclasses
import json
import sys
from typing import Dict, List, Optional, Tuple

from models import features
from operations import monitoring_metrics
from pipeline import metadata, project
from reports import monitoring_report
from serving.log_reader import LogReadCounts, read_logs

EXIT_OK, EXIT_FAILED, EXIT_DRIFT_OR_SKEW, EXIT_OTHER_FINDINGS = 0, 1, 2, 3
# The one number per served example that monitoring follows: binary, the
# probability of class 1; multi-class, the probability of the predicted class
# (the model's confidence); regression, the predicted number.
PREDICTION = {features.BINARY: 'probability', features.MULTICLASS: 'top_probability',
              features.REGRESSION: 'prediction'}[features.TASK]
# Quantiles of the predictions in each version's summary.
SUMMARY_QUANTILES = (0.1, 0.5, 0.9)
# Prediction shift between versions, Jensen-Shannon on the histogram of that
# number: the same measure the schema uses for numeric features.
DEFAULT_PREDICTION_JSD = 0.1
# Fewer served examples than this make noisy statistics: such windows are
# reported, not judged. At 500, a sample of the training distribution stays
# below the schema's Jensen-Shannon thresholds with a margin (see
# on_training_quantiles); at 100 its sampling noise alone would exceed them.
DEFAULT_MIN_WINDOW_EXAMPLES = 500


class MonitoringError(Exception):
  """A user error: the message names the cause and the fix."""


# ---- reading request logs ----------------------------------------------------


# ---- served features and predictions -------------------------------------------

Row = Dict[str, object]


def _rows_from_examples(serialized) -> List[Row]:
  from tensorflow.core.example import example_pb2
  return [features.from_example(example_pb2.Example.FromString(s)) for s in serialized]


def _rows_from_input(model_input) -> List[Row]:
  """classify/regress/multi_inference requests: an Input of tf.Examples."""
  kind = model_input.WhichOneof('kind')
  if kind == 'example_list':
    return [features.from_example(e) for e in model_input.example_list.examples]
  if kind == 'example_list_with_context':
    rows = []
    context = features.from_example(model_input.example_list_with_context.context)
    for e in model_input.example_list_with_context.examples:
      row = features.from_example(e)
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
      # optional feature with its default (client.predict does): count it as
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
  """The PREDICTION of each example the response answered: binary, P(class 1)
  (class '1' score for Classify); multi-class, the top class's probability;
  regression, the number (Predict's 'prediction', Regress's value)."""
  kind = log.WhichOneof('log_type')
  multiclass = features.TASK == features.MULTICLASS
  if kind == 'predict_log':
    outputs = log.predict_log.response.outputs
    if features.PREDICTION_KEY not in outputs:
      return []
    import tensorflow as tf
    values = tf.make_ndarray(outputs[features.PREDICTION_KEY])
    if multiclass:
      return [float(p) for p in values.reshape(len(values), -1).max(axis=1)]
    return [float(p) for p in values.reshape(-1)]
  if kind == 'classify_log':
    results = log.classify_log.response.result.classifications
    if multiclass:
      return [max((c.score for c in result.classes), default=float('nan'))
              for result in results]
    return [next((c.score for c in result.classes if c.label == '1'), float('nan'))
            for result in results]
  if kind == 'regress_log':
    return [r.value for r in log.regress_log.response.result.regressions]
  return []


@dataclasses.dataclass
class ServedTraffic:
  """What the logs hold, ready for statistics."""
  # Served version -> window start (unix s) -> rows: each version is judged
  # against its own training data.
  rows: Dict[int, Dict[int, List[Row]]]
  predictions_by_version: Dict[int, List[float]]
  counts: LogReadCounts

  def examples_by_version(self) -> Dict[int, int]:
    return {v: sum(map(len, windows.values())) for v, windows in sorted(self.rows.items())}


def collect(pattern: str, model_name: str = '', window_seconds: int = 3600) -> ServedTraffic:
  counts = LogReadCounts()
  rows: Dict[int, Dict[int, List[Row]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  predictions: Dict[int, List[float]] = collections.defaultdict(list)
  for log in read_logs(pattern, counts):
    spec = log.log_metadata.model_spec
    counts.models[spec.name] = counts.models.get(spec.name, 0) + 1
    if model_name and spec.name and spec.name != model_name:
      counts.unusable += 1
      continue
    served = served_rows(log)
    if not served:
      counts.unusable += 1
      continue
    start = log.log_metadata.timestamp_secs // window_seconds * window_seconds
    rows[spec.version.value][start].extend(served)
    predictions[spec.version.value].extend(served_predictions(log))
  return ServedTraffic({v: dict(sorted(w.items())) for v, w in rows.items()},
                       dict(predictions), counts)


def require_usable(traffic: ServedTraffic, pattern: str, model_name: str) -> None:
  """Zero usable records is a mistake in the inputs, never a clean bill."""
  counts = traffic.counts
  if counts.files == 0:
    raise MonitoringError(f'no request log files match --logs {pattern!r}: give the '
                          'logging_config filename_prefix or a glob of its .tfrecord files')
  if counts.records == 0:
    raise MonitoringError(f'the {counts.files} file(s) matching {pattern!r} hold no readable '
                          f'PredictionLog ({counts.corrupt} corrupt records): point --logs at '
                          "the server's request logs")
  if not traffic.rows and (not model_name or model_name in counts.models):
    raise MonitoringError(
        f'the {counts.records} request logs read carry no features (only requests such as '
        'model metadata, or inputs of another model): point --logs at the logs of predict, '
        'classify or regress requests')
  if not traffic.rows:
    models = ', '.join(f'{name or "(unnamed)"}: {n}' for name, n in sorted(counts.models.items()))
    raise MonitoringError(
        f'none of the {counts.records} request logs read is usable for model {model_name!r} '
        f'(logs per model: {models}): pass --model-name with the served model\'s name')


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


def serving_statistics(rows: List[Row], schema, training_stats):
  """Statistics of served rows, comparable with training_stats (see below)."""
  return on_training_quantiles(statistics_of(rows, schema), rows, training_stats, schema)


def load_schema(path: str):
  import tensorflow_data_validation as tfdv
  return tfdv.load_schema_text(path)


# ---- numeric distributions on the training quantiles ------------------------------
#
# TFDV's Jensen-Shannon divergence compares two histograms after putting them
# on the union of their bucket boundaries, assuming values spread uniformly
# inside each bucket. Its default (STANDARD) histograms are equal-width from
# min to max, so one 700.07 fare makes the training's first bucket 0-70 and
# the comparison of clean traffic measures that uniformity assumption
# (JS ~0.3), not the data. Counting the served values in the training's own
# quantile buckets makes the two histograms share boundaries exactly: no
# rebucketing, and every bucket holds ~1/10 of the training data (values
# repeated on a boundary are shared between buckets as in the training's
# counts: see bucket_counts), so the JS divergence of a sample of the
# training distribution is only its sampling noise, ~(buckets - 1) /
# (8 n ln 2) bits for n served examples.


def jsd_features(schema) -> List[str]:
  """Features whose skew or drift comparator is a Jensen-Shannon divergence."""
  return [f.name for f in schema.feature
          if f.skew_comparator.HasField('jensen_shannon_divergence')
          or f.drift_comparator.HasField('jensen_shannon_divergence')]


def compare_on_quantiles(schema):
  """A copy of schema whose Jensen-Shannon comparators read QUANTILES histograms."""
  from tensorflow_metadata.proto.v0 import schema_pb2
  copy = schema_pb2.Schema()
  copy.CopyFrom(schema)
  for feature in copy.feature:
    for comparator in (feature.skew_comparator, feature.drift_comparator):
      if comparator.HasField('jensen_shannon_divergence'):
        comparator.jensen_shannon_divergence.source.type = schema_pb2.HistogramSelection.QUANTILES
  return copy


def _feature_stats(stats, name: str):
  return next((f for f in stats.datasets[0].features
               if f.name == name or list(f.path.step) == [name]), None)


def _quantiles(feature_stats):
  return next((h for h in feature_stats.num_stats.histograms if h.type == h.QUANTILES), None)


def bucket_counts(buckets, values) -> List[float]:
  """How many of values fall in each bucket of a TFDV quantiles histogram of
  the training data, counted as the training's own counts were.

  Bucket i ends where the training's cumulative share reaches T_i (its
  sample_counts). A value inside a bucket counts in it. A value repeated on
  a boundary (iris's petal widths: 0.2 ends one bucket and is a zero-width
  bucket of its own) was split between the buckets that touch it by the
  training's quantiles; the served ties are split at the same shares: the
  served cumulative share at bucket i's end is T_i, kept between the served
  shares below and up to that boundary value. Values beyond the training's
  min or max go to the end buckets: those are the sample's extremes, not
  bounds of the distribution.
  """
  import numpy as np
  values = np.sort(np.asarray(values, dtype=float))
  highs = np.array([b.high_value for b in buckets])
  trained = np.cumsum([b.sample_count for b in buckets])
  if not len(values) or trained[-1] <= 0:
    raise ValueError('bucket_counts got no served values or a histogram without counts: pass '
                     'values and the QUANTILES histogram of TFDV training statistics')
  below = np.searchsorted(values, highs, side='left') / len(values)
  up_to = np.searchsorted(values, highs, side='right') / len(values)
  served = np.clip(trained / trained[-1], below, up_to)
  served[-1] = 1.0
  return (np.diff(served, prepend=0.0) * len(values)).tolist()


def on_training_quantiles(stats, rows: List[Row], training_stats, schema):
  """stats with, for every Jensen-Shannon feature, a QUANTILES histogram that
  counts the served values in the training statistics' quantile buckets."""
  import math
  for name in jsd_features(schema):
    served, trained = _feature_stats(stats, name), _feature_stats(training_stats, name)
    if served is None or trained is None or _quantiles(trained) is None:
      continue  # TFDV reports a feature missing on one side itself.
    values = [r[name] for r in rows if r.get(name) is not None and math.isfinite(r[name])]
    if not values:
      continue
    training_histogram = _quantiles(trained)
    buckets = training_histogram.buckets
    histogram = _quantiles(served) or served.num_stats.histograms.add(
        type=training_histogram.type)
    del histogram.buckets[:]
    for bucket, count in zip(buckets, bucket_counts(buckets, values)):
      histogram.buckets.add(low_value=bucket.low_value, high_value=bucket.high_value,
                            sample_count=count)
  return stats


# ---- the served model's training data, through MLMD --------------------------------


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
  schema = compare_on_quantiles(schema)  # stats come from serving_statistics().
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


def prediction_summary(values: List[float]) -> Dict:
  """Count, mean, standard deviation and quantiles of one version's
  predictions; the share of class 1 for a binary task (None otherwise)."""
  import numpy as np
  array = np.asarray(values, dtype=np.float64)
  # A positive rate only means something for a binary task.
  positive_rate = float(np.mean(array > 0.5)) if features.TASK == features.BINARY else None
  return {'count': len(values), 'mean': float(array.mean()), 'std': float(array.std()),
          'quantiles': {f'p{round(q * 100)}': float(np.quantile(array, q))
                        for q in SUMMARY_QUANTILES},
          'positive_rate': positive_rate}


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
    entry = dict(prediction_summary(values), compared_to=None, shift=None)
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
  model_name: str = ''  # Logs of other models are skipped; '' reads every model's.
  model_version: Optional[int] = None  # Judge only this served version.
  training_statistics: str = ''  # Or give a StatisticsGen output dir directly.
  schema_file: str = ''  # Default: the schema the served model was trained with.
  serving_config: str = ''  # model_config_list with the stable/canary labels.
  window_seconds: int = 3600
  min_window_examples: int = DEFAULT_MIN_WINDOW_EXAMPLES
  prediction_jsd_threshold: float = DEFAULT_PREDICTION_JSD


def _training_side(inputs: MonitoringInputs, version: int) -> Tuple[object, object, Dict]:
  """(training statistics, schema, provenance) of the model version that served."""
  provenance = {}
  stats_uri, schema_file = inputs.training_statistics, inputs.schema_file
  if not (stats_uri and schema_file):
    if not inputs.metadata_path:
      raise MonitoringError('need --metadata (MLMD of the pipeline that pushed the model) or '
                            'both --training-statistics and --schema')
    if version == 0:  # TF Serving always fills it; a hand-made log may not.
      raise MonitoringError('the request logs do not say which model version served them, so '
                            'MLMD cannot tell its training data: pass --training-statistics '
                            'and --schema')
    found = metadata.Lineage(inputs.metadata_path).of_pushed(version)
    if found['statistics'] is None:
      raise LookupError(f'MLMD has no statistics upstream of pushed version {version}: pass '
                        '--training-statistics')
    stats_uri = stats_uri or found['statistics'].uri
    if not schema_file and found['schema'] is not None:
      schema_file = os.path.join(found['schema'].uri, 'schema.pbtxt')
    provenance = {
        'pushed_version': metadata.custom_property(found['pushed'], 'pushed_version'),
        'model_uri': found['model'].uri if found['model'] else None,
        'span': metadata.custom_property(found['examples'], 'span') if found['examples'] else None,
        'examples_uri': found['examples'].uri if found['examples'] else None}
  if not schema_file:
    raise MonitoringError('MLMD has no schema upstream of the pushed model: pass --schema')
  provenance.update(statistics_uri=stats_uri, schema_file=schema_file)
  stats_file = os.path.join(stats_uri, 'Split-train', 'FeatureStats.pb')
  for path, what in ((stats_file, 'training statistics'), (schema_file, 'schema')):
    if not os.path.isfile(path):
      raise MonitoringError(f'the {what} file {path} does not exist: pass a StatisticsGen '
                            'output dir to --training-statistics and a schema.pbtxt to --schema, '
                            'or the --metadata that recorded them')
  return metadata.read_statistics(stats_uri), load_schema(schema_file), provenance


def primary_version(served: Dict[int, int], named: Optional[int], labels: Dict[str, int]) -> int:
  """The version the report shows: the one named, the only one, the `stable`
  label's, else the newest served."""
  listed = ', '.join(f'{v} ({n} examples)' for v, n in served.items())
  if named is not None:
    if named not in served:
      raise MonitoringError(f'version {named} served nothing in these logs (served: {listed}): '
                            'pass --model-version with one of those')
    return named
  if labels.get('stable') in served:
    return labels['stable']
  return max(served)


def require_a_judged_window(windows_rows: Dict[int, List[Row]], version: int,
                            inputs: MonitoringInputs) -> None:
  """A run that can judge no window would exit 0, "nothing found", unchecked."""
  largest = max(map(len, windows_rows.values()))
  if largest < inputs.min_window_examples:
    raise MonitoringError(
        f'no {inputs.window_seconds}-second window of version {version} holds '
        f'{inputs.min_window_examples} examples (at most {largest} in '
        f'{len(windows_rows)} windows), so nothing can be judged: pass a larger '
        '--window-seconds, or a smaller --min-window-examples (noisier)')


def judge_version(inputs: MonitoringInputs, windows_rows: Dict[int, List[Row]],
                  version: int) -> Tuple[Dict, Dict]:
  """Skew and drift of one served version's windows against its own training
  data; (entry, statistics)."""
  train_stats, schema, provenance = _training_side(inputs, version)
  windows, window_stats, previous, previous_start = [], {}, None, None
  for start, rows in windows_rows.items():
    window = {'version': version, 'start': start, 'end': start + inputs.window_seconds,
              'examples': len(rows)}
    windows.append(window)
    if len(rows) < inputs.min_window_examples:
      window['skipped'] = f'fewer than {inputs.min_window_examples} examples'
      continue
    stats = serving_statistics(rows, schema, train_stats)
    window.update(validate_window(stats, schema, train_stats, previous))
    window['compared_to_window'] = previous_start
    window_stats[start] = stats
    previous, previous_start = stats, start
  entry = {'examples': sum(map(len, windows_rows.values())), 'training': provenance,
           'windows': windows}
  entry['findings'] = window_findings(windows)
  return entry, {'training': train_stats, 'windows': window_stats, 'schema': schema}


def run(inputs: MonitoringInputs) -> Tuple[Dict, Dict]:
  """Returns (result, statistics): the JSON-able result, and the TFDV
  statistics it was computed from (for the HTML report).

  Each served version is compared with the training data of that version's
  push (MLMD lineage); the top-level training and windows are the primary
  version's (see primary_version), every version's are under `versions`.
  """
  traffic = collect(inputs.logs, inputs.model_name, inputs.window_seconds)
  require_usable(traffic, inputs.logs, inputs.model_name)
  labels = read_labels(inputs.serving_config, inputs.model_name) if inputs.serving_config else {}
  served = traffic.examples_by_version()
  primary = primary_version(served, inputs.model_version, labels)
  require_a_judged_window(traffic.rows[primary], primary, inputs)
  entry, statistics = judge_version(inputs, traffic.rows[primary], primary)
  versions = {str(primary): entry}
  if inputs.model_version is None:
    for version in served:
      if version == primary:
        continue
      try:
        versions[str(version)] = judge_version(inputs, traffic.rows[version], version)[0]
      except (LookupError, MonitoringError) as e:  # E.g. a canary copied in by hand.
        versions[str(version)] = {'examples': served[version], 'not_judged': str(e)}
  predictions, prediction_stats = compare_predictions(
      traffic.predictions_by_version, labels.get('stable'), inputs.prediction_jsd_threshold)
  result = {
      'logs': inputs.logs, 'model_name': inputs.model_name, 'version': primary,
      'training': entry['training'], 'records': dataclasses.asdict(traffic.counts),
      'windows': entry['windows'], 'versions': versions, 'labels': labels,
      'prediction_name': PREDICTION, 'predictions_by_version': predictions,
  }
  result['findings'] = findings(result)
  statistics['predictions'] = prediction_stats
  return result, statistics


def read_labels(config_path: str, model_name: str = '') -> Dict[str, int]:
  from google.protobuf import text_format
  from operations import rollout
  try:
    return rollout.labels(rollout.read_config(config_path), model_name)
  except (OSError, text_format.ParseError) as e:
    raise MonitoringError(f'cannot read --serving-config {config_path} ({e}): pass the '
                          "server's model_config_list file") from e


def window_findings(windows: List[Dict]) -> Dict[str, List[str]]:
  """Which features each check flagged in the judged windows."""
  judged = [w for w in windows if 'skipped' not in w]
  flagged = lambda key: sorted({f for w in judged for f in w[key]})
  return {'skew': flagged('skew_anomalies'), 'drift': flagged('drift_anomalies'),
          'serving_anomalies': flagged('serving_anomalies')}


def findings(result: Dict) -> Dict[str, List[str]]:
  """Which features (any judged version) or versions each check flagged."""
  per_version = [v['findings'] for v in result['versions'].values() if 'findings' in v]
  found = {key: sorted({f for v in per_version for f in v[key]})
           for key in ('skew', 'drift', 'serving_anomalies')}
  found['prediction_shift'] = sorted(
      v for v, p in result['predictions_by_version'].items()
      if p['shift'] and p['shift']['anomalous'])
  return found


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
  paths = {'json': os.path.join(out_dir, 'monitoring.json'),
           'html': os.path.join(out_dir, 'monitoring.html')}
  html = monitoring_report.monitoring_html(result, statistics)
  try:
    os.makedirs(out_dir, exist_ok=True)
    with open(paths['json'], 'w') as f:
      json.dump(result, f, indent=2, sort_keys=True)
    with open(paths['html'], 'w') as f:
      f.write(html)
  except OSError as e:
    raise MonitoringError(f'cannot write the results to {out_dir} ({e.strerror}): pass a '
                          'writable --out') from e
  return paths


ENV_PREFIX = project.NAMES['env_var_prefix']
EPILOG = f"""exit status:
  {EXIT_OK}  nothing found
  {EXIT_DRIFT_OR_SKEW}  skew or drift found (a retraining trigger)
  {EXIT_OTHER_FINDINGS}  only serving anomalies or a prediction shift
  {EXIT_FAILED}  the job failed, or a usage error (one line on stderr says why)

environment:
  {ENV_PREFIX}OUTPUT_ROOT, {ENV_PREFIX}MODEL_NAME, ... (pipeline/configs.py) set the defaults of
  --metadata, --out and --model-name, as for the pipeline run.
"""


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    # argparse's own status 2 would read as "skew found" to a scheduler.
    self.exit(EXIT_FAILED, f'{self.prog}: error: {message}\n')


def parse_args(argv):
  from pipeline import configs
  config = configs.load()
  parser = _Parser(prog='python -m operations.monitoring', description=__doc__.split('\n\n')[0],
                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--logs', required=True,
                      help='request log glob, or the logging_config filename_prefix (required)')
  parser.add_argument('--metadata', default=config.metadata_path,
                      help='MLMD sqlite of the pipeline that pushed the served model '
                           '(default: %(default)s)')
  parser.add_argument('--model-name', default=config.model_name,
                      help="the served model's name in the logs, '' for any "
                           '(default: %(default)s)')
  parser.add_argument('--model-version', type=int,
                      help='judge only this served version (default: every served version; '
                           'the report shows the stable one, else the newest)')
  parser.add_argument('--training-statistics', default='',
                      help='StatisticsGen output dir, instead of MLMD (default: from MLMD)')
  parser.add_argument('--schema', default='', help='schema.pbtxt (default: from MLMD)')
  parser.add_argument('--serving-config', default='',
                      help='model_config_list file with stable/canary version labels '
                           '(default: none)')
  parser.add_argument('--window-seconds', type=int, default=3600,
                      help='length of a time window (default: %(default)s)')
  parser.add_argument('--min-window-examples', type=int, default=DEFAULT_MIN_WINDOW_EXAMPLES,
                      help='smaller windows are reported, not judged (default: %(default)s)')
  parser.add_argument('--prediction-jsd-threshold', type=float, default=DEFAULT_PREDICTION_JSD,
                      help='prediction shift between versions, Jensen-Shannon '
                           '(default: %(default)s)')
  parser.add_argument('--out', default=os.path.join(config.path(config.output_root), 'monitoring'),
                      help='writes monitoring.json and monitoring.html here '
                           '(default: %(default)s)')
  parser.add_argument('--prometheus-textfile', default='', type=monitoring_metrics.textfile_path,
                      help="also writes the results as Prometheus metrics to this *.prom file, "
                           "for node_exporter's textfile collector (default: none)")
  return parser.parse_args(argv)


def _summary(result: Dict) -> str:
  found = result['findings']
  versions = ', '.join(f'{v} ({e["examples"]} examples' + (', not judged' if 'not_judged' in e
                                                          else '') + ')'
                       for v, e in sorted(result['versions'].items()))
  return (f'{result["records"]["records"]} logs read, {result["records"]["corrupt"]} corrupt '
          f'skipped; versions served: {versions}; skew: {found["skew"] or "none"}; drift: '
          f'{found["drift"] or "none"}; serving anomalies: {found["serving_anomalies"] or "none"}; '
          f'prediction shift: {found["prediction_shift"] or "none"}')


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
    paths = write_outputs(result, statistics, args.out)
    monitoring_metrics.write_textfile(args.prometheus_textfile, result)
    print(_summary(result))
    for version, entry in sorted(result['versions'].items()):
      if 'not_judged' in entry:
        print(f'version {version} not judged: {entry["not_judged"]}')
    print(f'Report: {paths["html"]}  JSON: {paths["json"]}', flush=True)
  except BrokenPipeError:
    # The reader of stdout went away (e.g. `| head`): say so once, on stderr.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print('monitoring: stdout was closed before the summary was written', file=sys.stderr)
    return EXIT_FAILED
  except (MonitoringError, LookupError, ValueError, OSError, RuntimeError) as e:
    print(f'monitoring failed: {e}', file=sys.stderr)
    return EXIT_FAILED
  return exit_code(result)


if __name__ == '__main__':
  sys.exit(main())
