"""HTML reports people can open: one per pipeline run, and the monitoring one.

The run report is built from MLMD and the run's artifacts: the data
statistics (plots), anomalies, the schema in use, evaluation metrics overall
and per slice, the blessing with its thresholds (and the baseline's numbers
beside the candidate's), what was pushed, and the lineage span -> model
version. Plots are inline SVG drawn here: the page needs no network, no
JavaScript library, and opens from a file or a CI artifact store.

    python -m pipeline.report --output-root tfx_output [--out report.html]
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse
import datetime
import html
import json
import sys
from typing import Dict, List, Optional, Sequence, Tuple

COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728']
MAX_CATEGORIES = 12  # Bars per categorical plot: the most frequent values.
esc = lambda value: html.escape(str(value))

# ---- SVG charts --------------------------------------------------------------------


def _legend(names: Sequence[str], x: float) -> str:
  return ''.join(
      f'<rect x="{x}" y="{4 + 14 * i}" width="10" height="10" fill="{COLORS[i % 4]}"/>'
      f'<text x="{x + 14}" y="{13 + 14 * i}" font-size="11">{esc(n)}</text>'
      for i, n in enumerate(names))


def svg_bars(categories: Sequence[str], series: Dict[str, Sequence[float]], title: str = '',
             width: int = 460, height: int = 200, value_format: str = '{:.2f}') -> str:
  """Grouped vertical bars: one group per category, one bar per series."""
  top, bottom, left = 20, 50, 40
  plot_w, plot_h = width - left - 110, height - top - bottom
  peak = max([v for values in series.values() for v in values] + [1e-12])
  group_w = plot_w / max(len(categories), 1)
  bar_w = group_w * 0.8 / max(len(series), 1)
  parts = []
  for s, (name, values) in enumerate(series.items()):
    for i, value in enumerate(values):
      h = plot_h * value / peak
      x = left + i * group_w + group_w * 0.1 + s * bar_w
      parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                   f'height="{h:.1f}" fill="{COLORS[s % 4]}"><title>{esc(name)} '
                   f'{esc(categories[i])}: {value_format.format(value)}</title></rect>')
  for i, category in enumerate(categories):
    x = left + (i + 0.5) * group_w
    parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 12}" font-size="9" '
                 f'text-anchor="end" transform="rotate(-35 {x:.1f} {top + plot_h + 12})">'
                 f'{esc(str(category)[:14])}</text>')
  parts.append(f'<text x="2" y="{top + 8}" font-size="9">{value_format.format(peak)}</text>')
  return _svg(width, height, title, parts, list(series), left, top, plot_w, plot_h)


def svg_steps(series: Dict[str, Sequence[Tuple[float, float, float]]], title: str = '',
              width: int = 460, height: int = 200) -> str:
  """Histograms as step lines on one x axis: (low, high, density) buckets."""
  top, bottom, left = 20, 30, 40
  plot_w, plot_h = width - left - 110, height - top - bottom
  buckets = [b for values in series.values() for b in values]
  if not buckets:
    return _svg(width, height, title, [], [], left, top, plot_w, plot_h)
  lo, hi = min(b[0] for b in buckets), max(b[1] for b in buckets)
  peak = max(b[2] for b in buckets) or 1.0
  span = (hi - lo) or 1.0
  x_of = lambda v: left + plot_w * (v - lo) / span
  y_of = lambda d: top + plot_h * (1 - d / peak)
  parts = []
  for s, (name, values) in enumerate(series.items()):
    points = []
    for low, high, density in values:
      points += [(x_of(low), y_of(0)), (x_of(low), y_of(density)),
                 (x_of(high), y_of(density)), (x_of(high), y_of(0))]
    path = ' '.join(f'{x:.1f},{y:.1f}' for x, y in points)
    parts.append(f'<polyline points="{path}" fill="{COLORS[s % 4]}" fill-opacity="0.15" '
                 f'stroke="{COLORS[s % 4]}" stroke-width="1.5"><title>{esc(name)}</title>'
                 '</polyline>')
  parts.append(f'<text x="{left}" y="{height - 8}" font-size="10">{lo:.4g}</text>'
               f'<text x="{left + plot_w}" y="{height - 8}" font-size="10" '
               f'text-anchor="end">{hi:.4g}</text>')
  return _svg(width, height, title, parts, list(series), left, top, plot_w, plot_h)


def _svg(width, height, title, parts, names, left, top, plot_w, plot_h) -> str:
  axes = (f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
          f'stroke="#444"/><line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" '
          'stroke="#444"/>')
  return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
          f'height="{height}" role="img" aria-label="{esc(title)}">'
          f'<text x="{left}" y="12" font-size="12" font-weight="bold">{esc(title)}</text>'
          + axes + ''.join(parts) + _legend(names, left + plot_w + 10) + '</svg>')


# ---- feature statistics as plots ---------------------------------------------------------


def _feature_stats(dataset, name: str):
  for feature in dataset.features:
    if '.'.join(feature.path.step) == name or feature.name == name:
      return feature
  return None


def _category_shares(feature) -> Dict[str, float]:
  """Share of each value: from the rank histogram, else the top values."""
  string_stats = feature.string_stats
  buckets = [(b.label, b.sample_count) for b in string_stats.rank_histogram.buckets] or \
      [(v.value, v.frequency) for v in string_stats.top_values]
  total = string_stats.common_stats.num_non_missing or sum(c for _, c in buckets) or 1
  return {label: count / total for label, count in buckets}


def _densities(feature) -> List[Tuple[float, float, float]]:
  """The standard histogram as densities, so datasets of any size compare."""
  histograms = [h for h in feature.num_stats.histograms if h.type == h.STANDARD]
  if not histograms:
    return []
  buckets = histograms[0].buckets
  total = sum(b.sample_count for b in buckets) or 1.0
  return [(b.low_value, b.high_value,
           b.sample_count / total / max(b.high_value - b.low_value, 1e-9)) for b in buckets]


def feature_plot(name: str, datasets: Dict[str, object]) -> str:
  """One feature of several DatasetFeatureStatistics, overlaid."""
  found = {label: _feature_stats(d, name) for label, d in datasets.items()}
  found = {label: f for label, f in found.items() if f is not None}
  if not found:
    return '<p class="muted">no statistics</p>'
  if any(f.HasField('string_stats') for f in found.values()):
    shares = {label: _category_shares(f) for label, f in found.items()}
    totals: Dict[str, float] = {}
    for values in shares.values():
      for value, share in values.items():
        totals[value] = totals.get(value, 0.0) + share
    categories = sorted(totals, key=totals.get, reverse=True)[:MAX_CATEGORIES]
    return svg_bars(categories, {label: [s.get(c, 0.0) for c in categories]
                                 for label, s in shares.items()}, f'{name} (share)')
  return svg_steps({label: _densities(f) for label, f in found.items()}, f'{name} (density)')


# ---- page --------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.bad{color:#b00;font-weight:bold}.ok{color:#070;font-weight:bold}
.muted{color:#777}.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #e3e3e3;padding:6px;border-radius:4px}
"""


def page(title: str, body: str) -> str:
  # The closing script is the page's only JavaScript: it marks that the page
  # ran to its end, and how many charts drew (the browser test reads it).
  return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
          f'<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{body}'
          '<script>document.body.setAttribute("data-report-ready", String('
          'Array.from(document.querySelectorAll("svg.chart")).filter('
          'function(s){return s.getBBox().width > 0;}).length));</script></body></html>')


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  head = ''.join(f'<th>{esc(h)}</th>' for h in header)
  body = ''.join('<tr>' + ''.join(f'<td>{c}</td>' for c in row) + '</tr>' for row in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def _number(value) -> str:
  return f'{value:.4f}' if isinstance(value, float) else esc(value)


def _status(ok: bool, good: str = 'ok', bad: str = 'ANOMALY') -> str:
  return f'<span class="ok">{good}</span>' if ok else f'<span class="bad">{bad}</span>'


# ---- monitoring report ------------------------------------------------------------------


def _comparison_rows(comparisons: Dict, anomalies: Dict) -> List[List[str]]:
  return [[esc(name), esc(c['measure']), _number(c['value']), _number(c['threshold']),
           _status(not c['anomalous']) + (f'<br>{esc(anomalies[name]["description"])}'
                                          if name in anomalies else '')]
          for name, c in sorted(comparisons.items())]


def monitoring_html(result: Dict, statistics: Dict) -> str:
  """The monitoring job's report: per window, training vs serving per feature."""
  found = result['findings']
  counts = result['records']
  parts = [
      '<h2>Summary</h2>',
      table(['check', 'flagged'], [[k, _status(not v, 'none', ', '.join(map(str, v)))]
                                   for k, v in found.items()]),
      f'<p>{counts["records"]} logged requests in {counts["files"]} files; '
      f'<b>{counts["corrupt"]}</b> corrupt records skipped; {counts["unusable"]} unusable.</p>',
      '<p>Training data: ' + esc(json.dumps(result['training'])) + '</p>',
  ]
  schema = statistics.get('schema')
  watched = [f.name for f in schema.feature] if schema is not None else []
  previous = None
  for window in result['windows']:
    start = datetime.datetime.utcfromtimestamp(window['start']).isoformat()
    parts.append(f'<h2>Window {esc(start)}Z ({window["examples"]} examples)</h2>')
    if 'skipped' in window:
      parts.append(f'<p class="muted">not judged: {esc(window["skipped"])}</p>')
      continue
    anomalies = window['serving_anomalies']
    parts.append('<p>Serving anomalies (schema, SERVING environment): ' + (
        ', '.join(f'<span class="bad">{esc(k)}</span>: {esc(v["description"])}'
                  for k, v in anomalies.items()) or '<span class="ok">none</span>') + '</p>')
    parts.append('<h3>Skew: training vs serving</h3>' + table(
        ['feature', 'measure', 'value', 'threshold', 'result'],
        _comparison_rows(window['skew'], window['skew_anomalies'])))
    if window['drift']:
      parts.append('<h3>Drift: this window vs the previous one</h3>' + table(
          ['feature', 'measure', 'value', 'threshold', 'result'],
          _comparison_rows(window['drift'], window['drift_anomalies'])))
    datasets = {'training': statistics['training'].datasets[0],
                'serving': statistics['windows'][window['start']].datasets[0]}
    if previous is not None:
      datasets['previous window'] = previous
    compared = sorted(window['skew']) + [n for n in watched if n not in window['skew']]
    parts.append('<div class="grid">' + ''.join(
        f'<div class="card">{feature_plot(name, datasets)}</div>'
        for name in compared if name != 'tips') + '</div>')
    previous = datasets['serving']
  parts.append(_predictions_section(result, statistics))
  return page(f'Monitoring: {result.get("model_name") or "model"}', ''.join(parts))


def _predictions_section(result: Dict, statistics: Dict) -> str:
  by_version = result['predictions_by_version']
  version_labels = {}
  for label, version in result.get('labels', {}).items():
    version_labels.setdefault(str(version), []).append(label)
  rows = []
  for version, p in sorted(by_version.items()):
    shift = p['shift']
    rows.append([esc(version), esc(', '.join(version_labels.get(version, []))), p['count'],
                 _number(p['mean']), _number(p['positive_rate']),
                 esc(p['compared_to'] or ''),
                 _number(shift['value']) if shift else '',
                 _number(shift['threshold']) if shift else '',
                 _status(not shift['anomalous'], 'ok', 'SHIFT') if shift else ''])
  plot = ''
  if statistics.get('predictions'):
    plot = feature_plot('probability', {
        f'v{v}' + (f' ({", ".join(version_labels[str(v)])})' if str(v) in version_labels else ''):
        s.datasets[0] for v, s in sorted(statistics['predictions'].items())})
  return ('<h2>Predictions per model version</h2>' + table(
      ['version', 'labels', 'count', 'mean probability', 'positive rate', 'compared to',
       'JS divergence', 'threshold', 'result'], rows) + plot)


# ---- run report -------------------------------------------------------------------------


def _statistics_section(statistics_uri: str, schema) -> str:
  import tensorflow_data_validation as tfdv
  splits = sorted(d[len('Split-'):] for d in os.listdir(statistics_uri) if d.startswith('Split-'))
  datasets = {split: tfdv.load_stats_binary(os.path.join(
      statistics_uri, f'Split-{split}', 'FeatureStats.pb')).datasets[0] for split in splits}
  counts = ', '.join(f'{s}: {d.num_examples:,}' for s, d in datasets.items())
  names = [f.name for f in schema.feature] if schema is not None else sorted(
      {'.'.join(f.path.step) for d in datasets.values() for f in d.features})
  rows = []
  for name in names:
    feature = _feature_stats(next(iter(datasets.values())), name)
    if feature is None:
      continue
    common = (feature.num_stats.common_stats if feature.HasField('num_stats')
              else feature.string_stats.common_stats)
    missing = common.num_missing / max(common.num_missing + common.num_non_missing, 1)
    extra = (f'mean {feature.num_stats.mean:.4g}, min {feature.num_stats.min:.4g}, '
             f'max {feature.num_stats.max:.4g}' if feature.HasField('num_stats') else
             f'{feature.string_stats.unique} unique')
    rows.append([esc(name), f'{missing:.1%}', esc(extra)])
  return (f'<h2>Data statistics</h2><p>Examples per split: {esc(counts)}</p>' +
          table(['feature', 'missing (first split)', 'summary'], rows) +
          '<div class="grid">' + ''.join(
              f'<div class="card">{feature_plot(name, datasets)}</div>' for name in names) +
          '</div>')


def _schema_section(schema, schema_uri: str) -> str:
  from google.protobuf import text_format
  rows = []
  for f in schema.feature:
    domain = f.WhichOneof('domain_info')
    domain_text = f.domain if domain == 'domain' else (
        text_format.MessageToString(getattr(f, domain), as_one_line=True) if domain else '')
    comparators = '; '.join(
        f'{kind}: ' + text_format.MessageToString(getattr(f, kind), as_one_line=True)
        for kind in ('skew_comparator', 'drift_comparator') if f.HasField(kind))
    envs = ('not in ' + ', '.join(f.not_in_environment)) if f.not_in_environment else 'all'
    rows.append([esc(f.name), esc(schema.feature[0].DESCRIPTOR.fields_by_name['type']
                                   .enum_type.values_by_number[f.type].name),
                 esc(text_format.MessageToString(f.presence, as_one_line=True)),
                 esc(domain_text), esc(comparators), esc(envs)])
  return (f'<h2>Schema in use</h2><p class="muted">{esc(schema_uri)}; environments: '
          f'{esc(", ".join(schema.default_environment))}</p>' +
          table(['feature', 'type', 'presence', 'domain', 'comparators', 'environments'], rows))


def _eval_results(evaluation_uri: str) -> Dict[str, object]:
  """Slicing metrics by role: 'candidate' (and 'baseline' when there is one)."""
  from pipeline.progress import slicing_metrics
  with open(os.path.join(evaluation_uri, 'eval_config.json')) as f:
    names = [s.get('name', '') for s in json.load(f)['evalConfig']['modelSpecs']]
  results = {}
  for name in names:
    role = 'baseline' if name == 'baseline' else 'candidate'
    results[role] = slicing_metrics(evaluation_uri, model_name=name or None)
  return results


def _thresholds(evaluation_uri: str) -> List[List[str]]:
  with open(os.path.join(evaluation_uri, 'eval_config.json')) as f:
    specs = json.load(f)['evalConfig']['metricsSpecs']
  rows = []
  for spec in specs:
    for metric in spec.get('metrics', []):
      for per_slice in metric.get('perSliceThresholds', []):
        threshold = per_slice['threshold']
        rows.append([esc(metric['className']), esc(json.dumps(per_slice.get('slicingSpecs'))),
                     esc(json.dumps(threshold.get('valueThreshold', ''))),
                     esc(json.dumps(threshold.get('changeThreshold', '')))])
  return rows


def _failure_text(failure) -> str:
  """'auc (change vs baseline) = -0.002' from a TFMA ValidationFailure."""
  key = failure.metric_key
  kind = 'change vs baseline' if key.is_diff else 'value'
  value = failure.metric_value.double_value.value
  return f'{key.name} ({kind}) = {value:.6g}' + (f': {failure.message}' if failure.message else '')


def _evaluation_section(evaluation_uri: str, blessing, slices: Sequence[str]) -> str:
  import tensorflow_model_analysis as tfma
  from pipeline.progress import custom_property, metric_values
  results = _eval_results(evaluation_uri)
  overall = {role: next((metric_values(m) for key, m in r if key == ()), {})
             for role, r in results.items()}
  shown = ['example_count', 'auc', 'accuracy', 'precision', 'recall', 'auc_precision_recall',
           'calibration', 'mean_label', 'mean_prediction', 'loss']
  roles = list(overall)
  rows = [[esc(m)] + [_number(overall[r].get(m, '')) for r in roles] for m in shown
          if any(m in overall[r] for r in roles)]
  blessed = custom_property(blessing, 'blessed', 0) == 1
  validation = tfma.load_validation_result(evaluation_uri)
  failures = [esc(_failure_text(f)) for fs in validation.metric_validations_per_slice
              for f in fs.failures]
  parts = [
      '<h2>Evaluation and blessing</h2>',
      f'<p>Decision: {_status(blessed, "BLESSED", "NOT BLESSED")}'
      f'{"" if "baseline" in results else " (no baseline: first blessed model)"}</p>',
      table(['metric'] + roles, rows),
      '<h3>Thresholds</h3>',
      table(['metric', 'slices', 'value threshold', 'change threshold vs baseline'],
            _thresholds(evaluation_uri)),
      '<p>Failed thresholds: ' + ('<br>'.join(failures) or '<span class="ok">none</span>') +
      '</p>']
  candidate = results['candidate']
  for feature in slices:
    per_value = sorted(((key[0][1], metric_values(m)) for key, m in candidate
                        if len(key) == 1 and key[0][0] == feature), key=lambda kv: str(kv[0]))
    if not per_value:
      continue
    parts.append(f'<h3>By {esc(feature)}</h3>')
    parts.append(table([feature, 'examples', 'auc', 'accuracy', 'mean label',
                        'mean prediction'],
                       [[esc(value)] + [_number(m.get(k, '')) for k in (
                           'example_count', 'auc', 'accuracy', 'mean_label',
                           'mean_prediction')] for value, m in per_value]))
    parts.append(svg_bars([str(v) for v, _ in per_value],
                          {'auc': [m.get('auc', 0.0) for _, m in per_value],
                           'accuracy': [m.get('accuracy', 0.0) for _, m in per_value]},
                          f'AUC and accuracy by {feature}', width=760))
  return ''.join(parts)


def _anomalies_section(anomalies_artifact) -> str:
  from pipeline import components
  from tfx.types import standard_artifacts
  artifact = standard_artifacts.ExampleAnomalies()
  artifact.set_mlmd_artifact(anomalies_artifact)
  problems = components.read_anomalies(artifact)
  return ('<h2>Anomalies (ExampleValidator)</h2>' +
          ('<ul>' + ''.join(f'<li class="bad">{esc(p)}</li>' for p in problems) + '</ul>'
           if problems else '<p class="ok">none</p>'))


def _lineage_section(metadata_path: str, pushed) -> str:
  from pipeline import monitoring
  from pipeline.progress import custom_property
  if pushed is None or custom_property(pushed, 'pushed', 0) != 1:
    return '<h2>Pushed</h2><p class="bad">nothing pushed in this run</p>'
  found = monitoring.Lineage(metadata_path).of_pushed(custom_property(pushed, 'pushed_version'))
  examples, model = found['examples'], found['model']
  rows = [
      ['data span', esc(custom_property(examples, 'span', '?') if examples else '?'),
       esc(examples.uri if examples else '')],
      ['statistics', '', esc(found['statistics'].uri if found['statistics'] else '')],
      ['schema', '', esc(found['schema'].uri if found['schema'] else '')],
      ['model', f'#{model.id}' if model else '', esc(model.uri if model else '')],
      ['pushed version', esc(custom_property(pushed, 'pushed_version')),
       esc(custom_property(pushed, 'pushed_destination'))],
  ]
  return ('<h2>Pushed, and lineage</h2><p>data span &rarr; statistics/schema &rarr; model '
          '&rarr; pushed version</p>' + table(['step', 'id', 'where'], rows))


def build_run_report(config) -> str:
  """The HTML of the latest run of config's pipeline, from MLMD."""
  from pipeline import progress
  import tensorflow_data_validation as tfdv
  store = progress.open_store(config.metadata_path)
  out = lambda node: progress.LatestRun(store, config.pipeline_name, node)
  schema_artifact = out('CuratedSchemaGen').one('schema')
  schema = schema_path = None
  if schema_artifact is not None:
    schema_path = os.path.join(schema_artifact.uri, 'schema.pbtxt')
    schema = tfdv.load_schema_text(schema_path)
  examples = out('CsvExampleGen').one('examples')
  parts = [f'<p>Pipeline <b>{esc(config.pipeline_name)}</b>; data {esc(config.path(config.data_root))}'
           f'; span {esc(progress.custom_property(examples, "span", "?"))}; report made '
           f'{datetime.datetime.now().isoformat(timespec="seconds")}</p>']
  statistics = out('StatisticsGen').one('statistics')
  if statistics is not None:
    parts.append(_statistics_section(statistics.uri, schema))
  anomalies = out('ExampleValidator').one('anomalies')
  if anomalies is not None:
    parts.append(_anomalies_section(anomalies))
  if schema is not None:
    parts.append(_schema_section(schema, schema_path))
  evaluator = out('Evaluator')
  if evaluator.one('evaluation') is not None:
    parts.append(_evaluation_section(evaluator.one('evaluation').uri,
                                     evaluator.one('blessing'), config.slices))
  parts.append(_lineage_section(config.metadata_path, out('Pusher').one('pushed_model')))
  return page(f'Pipeline run report: {config.pipeline_name}', ''.join(parts))


def write_run_report(config, out_path: Optional[str] = None) -> str:
  """Writes the run report (default <output_root>/report.html); returns its path."""
  out_path = out_path or os.path.join(config.path(config.output_root), 'report.html')
  text = build_run_report(config)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, 'w') as f:
    f.write(text)
  return out_path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--output-root', help='pipeline artifacts and MLMD (config default)')
  parser.add_argument('--out', help='where to write (default <output-root>/report.html)')
  args = parser.parse_args(argv)
  from pipeline import configs
  config = configs.load({'output_root': args.output_root})
  print(write_run_report(config, args.out))
  return 0


if __name__ == '__main__':
  sys.exit(main())
