"""The monitoring job's HTML report: per window, training vs serving per
feature (skew), the previous window (drift), and the predictions of each
served version."""

import datetime
from typing import Dict, List

from markupsafe import Markup

from models import features

from reports.feature_plots import feature_plot
from reports.render import number, render, status


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
      plots=[feature_plot(name, datasets) for name in compared if name not in features.label_columns()],
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
  name = result.get('prediction_name', 'probability')  # Older results: binary.
  version_labels: Dict[str, List[str]] = {}
  for label, version in result.get('labels', {}).items():
    version_labels.setdefault(str(version), []).append(label)
  rows = []
  binary = features.TASK == features.BINARY
  for version, p in sorted(result['predictions_by_version'].items(), key=lambda kv: int(kv[0])):
    shift = p['shift']
    quantiles = p.get('quantiles', {})
    rows.append([version, ', '.join(version_labels.get(version, [])),
                 number(p['count'], count=True), number(p['mean']), number(p.get('std'))] +
                [number(quantiles.get(q)) for q in QUANTILE_COLUMNS] +
                ([number(p['positive_rate'])] if binary else []) +
                ['' if p['compared_to'] is None else str(p['compared_to']),
                 number(shift['value']) if shift else '',
                 number(shift['threshold']) if shift else '',
                 status(not shift['anomalous'], 'ok', 'SHIFT') if shift else ''])
  header = (['version', 'labels', 'count', f'mean {name}', 'std'] + list(QUANTILE_COLUMNS) +
            (['positive rate'] if binary else []) +
            ['compared to', 'JS divergence', 'threshold', 'result'])
  plot = None
  if statistics.get('predictions'):
    plot = feature_plot(name, {
        f'v{v}' + (f' ({", ".join(version_labels[str(v)])})' if str(v) in version_labels else ''):
        s.datasets[0] for v, s in sorted(statistics['predictions'].items())})
  return {'header': header, 'rows': rows, 'plot': plot}


QUANTILE_COLUMNS = ('p10', 'p50', 'p90')  # operations/monitoring.py's SUMMARY_QUANTILES.
