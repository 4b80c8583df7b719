"""The monitoring job's results as Prometheus metrics, in node_exporter's textfile format.

    python -m operations.monitoring --logs ... \\
        --prometheus-textfile /var/lib/node_exporter/textfile/model_monitoring.prom

node_exporter (--collector.textfile.directory) serves the file on its own
/metrics, so drift and skew alerts (serving/deploy/alerts.yml) live beside
the serving alerts. Each run replaces the file (atomically: node_exporter may
read it at any moment) with the run's state:

  model_monitoring_skew_distance / _threshold / _anomalous
  model_monitoring_drift_distance / _threshold / _anomalous
      {model_name, version, feature, measure}: the newest judged window of
      each served version (drift: against the window before it);
  model_monitoring_prediction_mean / _count / _shift / _shift_anomalous
      {model_name, version}: predictions served (shift: Jensen-Shannon
      against the stable version);
  model_monitoring_records {model_name, kind=read|corrupt|unusable};
  model_monitoring_last_success_timestamp_seconds {model_name}.
"""

import argparse
import time
from typing import Dict, Optional

import prometheus_client as prom

PREFIX = 'model_monitoring_'
_COMPARISON_LABELS = ['model_name', 'version', 'feature', 'measure']


def textfile_path(path: str) -> str:
  """--prometheus-textfile's argparse type: node_exporter reads only *.prom files.
  ('' is the flag's default, no file: argparse passes string defaults through here.)"""
  if path and not path.endswith('.prom'):
    raise argparse.ArgumentTypeError(
        f"{path!r}: node_exporter's textfile collector reads only *.prom files: "
        'name it <something>.prom')
  return path


def newest_judged_window(windows) -> Optional[Dict]:
  judged = [w for w in windows if 'skipped' not in w]
  return max(judged, key=lambda w: w['start']) if judged else None


def registry_of(result: Dict, now: Optional[float] = None) -> prom.CollectorRegistry:
  """The metrics of one monitoring result (operations.monitoring.run's dict)."""
  registry = prom.CollectorRegistry()
  model = result['model_name']

  def gauge(name, doc, labels):
    return prom.Gauge(PREFIX + name, doc, labels, registry=registry)

  comparisons = {
      check: (gauge(f'{check}_distance', f'{check} distance of a feature, newest judged window',
                    _COMPARISON_LABELS),
              gauge(f'{check}_threshold', f"the schema's {check} threshold", _COMPARISON_LABELS),
              gauge(f'{check}_anomalous', f'1 if TFDV found {check} on the feature',
                    _COMPARISON_LABELS))
      for check in ('skew', 'drift')}
  for version, entry in result['versions'].items():
    window = newest_judged_window(entry.get('windows', []))
    if window is None:
      continue  # Not judged (too few examples, or no training data): no distances.
    for check, (distance, threshold, anomalous) in comparisons.items():
      for feature, measured in window[check].items():
        labels = (model, version, feature, measured['measure'])
        distance.labels(*labels).set(measured['value'])
        threshold.labels(*labels).set(measured['threshold'])
        anomalous.labels(*labels).set(1 if measured['anomalous'] else 0)

  mean = gauge('prediction_mean', 'mean served prediction', ['model_name', 'version'])
  count = gauge('prediction_count', 'predictions read from the logs', ['model_name', 'version'])
  shift = gauge('prediction_shift', 'prediction shift against the stable version '
                '(Jensen-Shannon)', ['model_name', 'version'])
  shifted = gauge('prediction_shift_anomalous', '1 if the shift is above its threshold',
                  ['model_name', 'version'])
  for version, summary in result['predictions_by_version'].items():
    mean.labels(model, version).set(summary['mean'])
    count.labels(model, version).set(summary['count'])
    if summary['shift']:  # Only versions compared with a stable one.
      shift.labels(model, version).set(summary['shift']['value'])
      shifted.labels(model, version).set(1 if summary['shift']['anomalous'] else 0)

  records = gauge('records', 'request log records of the run', ['model_name', 'kind'])
  for kind, key in (('read', 'records'), ('corrupt', 'corrupt'), ('unusable', 'unusable')):
    records.labels(model, kind).set(result['records'][key])
  gauge('last_success_timestamp_seconds', 'when the monitoring job last succeeded',
        ['model_name']).labels(model).set(time.time() if now is None else now)
  return registry


def write_textfile(path: str, result: Dict) -> None:
  """Replaces path with result's metrics; path '' (the flag not given) writes nothing."""
  if not path:
    return
  try:
    prom.write_to_textfile(path, registry_of(result))  # Writes a temporary file, renames it.
  except OSError as e:
    raise RuntimeError(f'cannot write --prometheus-textfile {path} ({e.strerror}): pass a '
                       "writable path in node_exporter's textfile directory") from e
