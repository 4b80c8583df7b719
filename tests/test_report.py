"""The run report and the monitoring report tell the truth: built from real
pipeline runs, checked against MLMD/TFMA/TFDV as HTML and in a real browser
(headless Chromium: `make test` installs it with scripts/ensure_debian_tool.sh)."""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import csv
import glob
import html.parser
import io
import json
import re
import shutil
import subprocess
import sys

import pytest

from models import features
from pipeline import metadata
from reports import feature_plots, monitoring_report
from reports import run_report as report
from tests import conftest
from tests.test_bad_data import REQUIRED_FLOAT

# The taxi run's own slices (trip_start_hour, payment_type), binary metrics
# (AUC) and columns (company, Credit Card): tests that read them run with it.
TAXI_RUN = pytest.mark.example('taxi')

CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu',
                  '--disable-background-networking', '--disable-component-update',
                  '--disable-sync', '--no-first-run']


def chromium() -> str:
  found = shutil.which('chromium') or shutil.which('chromium-browser')
  if not found:
    pytest.fail('headless Chromium is needed: run scripts/ensure_debian_tool.sh chromium "the report tests" chromium')
  return found


def render(html_path, tmp_path):
  """(charts drawn, DOM) after Chromium ran the page's scripts.

  The page's closing script counts the SVG charts with a non-empty layout
  box, and writes each bar's laid-out height; it only runs if nothing before
  it failed."""
  profile = tmp_path / 'chromium-profile'
  dom = subprocess.run(
      [chromium(), *CHROMIUM_FLAGS, f'--user-data-dir={profile}', '--dump-dom',
       f'file://{os.path.abspath(html_path)}'],
      capture_output=True, text=True, timeout=120, check=True).stdout
  marker = re.search(r'data-report-ready="(\d+)"', dom)
  assert marker, 'the report script did not run to its end:\n' + dom[-2000:]
  return int(marker.group(1)), dom


# ---- reading the page back -----------------------------------------------------------------


class _Page(html.parser.HTMLParser):
  """Tables (rows of cell text) and SVG charts (their marks) under each heading."""

  def __init__(self):
    super().__init__()
    self.heading, self.tables, self.charts = '', {}, {}
    self._text, self._in, self._row, self._chart = '', None, None, None

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag in ('h2', 'h3'):
      self._in, self._text = 'heading', ''
    elif tag == 'table':
      self.tables.setdefault(self.heading, []).append([])
    elif tag == 'tr':
      self._row = []
      self.tables[self.heading][-1].append(self._row)
    elif tag in ('td', 'th'):
      self._in, self._text = 'cell', ''
    elif tag == 'svg' and 'chart' in attrs.get('class', ''):
      self._chart = {'attrs': attrs, 'bars': [], 'na': [], 'points': [], 'markers': [],
                     'text': ''}
      self.charts[attrs.get('aria-label', '')] = self._chart
    elif tag == 'rect' and self._chart is not None and attrs.get('class') == 'bar':
      self._chart['bars'].append(attrs)
    elif tag == 'text' and self._chart is not None and attrs.get('class') == 'na':
      self._chart['na'].append(attrs)
    elif tag == 'circle' and self._chart is not None and attrs.get('class') == 'point':
      self._chart['points'].append(attrs)
    elif tag == 'line' and self._chart is not None and attrs.get('class') == 'marker':
      self._chart['markers'].append(attrs)

  def handle_endtag(self, tag):
    if tag in ('h2', 'h3') and self._in == 'heading':
      self.heading, self._in = self._text.strip(), None
    elif tag in ('td', 'th') and self._in == 'cell':
      self._row.append(self._text.strip())
      self._in = None
    elif tag == 'svg':
      self._chart = None

  def handle_data(self, data):
    if self._in:
      self._text += data
    if self._chart is not None:
      self._chart['text'] += data


def read_page(text: str) -> _Page:
  page = _Page()
  page.feed(text)
  return page


def table_dict(rows):
  """{first cell: {column: cell}} of a table with a header row."""
  header = rows[0]
  return {row[0]: dict(zip(header, row)) for row in rows[1:]}


# ---- the session's pipeline run -------------------------------------------------------------


def first_run_id(config) -> str:
  """The pipeline_run context of the fixture's run: the first of its MLMD
  (later tests may run again on the same output root)."""
  from pipeline import metadata
  store = metadata.open_store(config.metadata_path, read_only=True)
  runs = store.get_contexts_by_type('pipeline_run')
  return min(runs, key=lambda c: (c.create_time_since_epoch, c.id)).name


def run_outputs(config, run_id, node, key):
  """node's output `key` in the run run_id, straight from MLMD."""
  from ml_metadata.proto import metadata_store_pb2
  from pipeline import metadata
  store = metadata.open_store(config.metadata_path, read_only=True)
  run = store.get_context_by_type_and_name('pipeline_run', run_id)
  node_context = store.get_context_by_type_and_name('node', f'{config.pipeline_name}.{node}')
  executions = ({e.id for e in store.get_executions_by_context(run.id)} &
                {e.id for e in store.get_executions_by_context(node_context.id)})
  events = [e for e in store.get_events_by_execution_ids(list(executions))
            if e.type == metadata_store_pb2.Event.OUTPUT and e.path.steps[0].key == key]
  return store.get_artifacts_by_id([events[0].artifact_id])[0] if events else None


def tfma_metrics(evaluation_uri):
  """{slice key: {(model name, is_diff): {metric: value}}}, read here from TFMA."""
  import tensorflow_model_analysis as tfma
  found = {}
  for m in tfma.load_metrics(evaluation_uri):
    key = tuple((k.column, k.bytes_value.decode() if k.HasField('bytes_value') else
                 k.int64_value) for k in m.slice_key.single_slice_keys)
    for kv in m.metric_keys_and_values:
      found.setdefault(key, {}).setdefault((kv.key.model_name, kv.key.is_diff), {})[
          kv.key.name] = kv.value.double_value.value
  return found


@pytest.fixture(scope='module')
def run_report(pipeline_run, tmp_path_factory):
  config, summary = pipeline_run
  run_id = summary.get('run_id') or first_run_id(config)
  path = report.write_run_report(config, str(tmp_path_factory.mktemp('report') / 'report.html'),
                                 summary=dict(summary, run_id=run_id))
  with open(path) as f:
    text = f.read()
  evaluation = run_outputs(config, run_id, 'Evaluator', 'evaluation')
  return {'path': path, 'text': text, 'page': read_page(text), 'config': config,
          'summary': summary, 'run_id': run_id, 'metrics': tfma_metrics(evaluation.uri)}


# The metric each task's candidate is judged on first (TFMA's key).
HEADLINE_METRIC = {features.BINARY: 'auc', features.MULTICLASS: 'accuracy',
                   features.REGRESSION: 'rmse'}[features.TASK]


@pytest.mark.slow
def test_report_holds_every_section(run_report):
  text, config = run_report['text'], run_report['config']
  for heading in ('Components of this run', 'Data statistics', 'Anomalies (ExampleValidator)',
                  'Schema in use', 'Training', 'Evaluation and blessing', 'Thresholds',
                  'Pushed, and lineage', *(f'By {s}' for s in config.slices)):
    assert f'>{heading}<' in text, heading
  assert 'SUCCEEDED' in text and run_report['run_id'] in text
  assert f'{run_report["summary"]["metrics"][HEADLINE_METRIC]:.4f}' in text  # The candidate's.
  pushed = run_outputs(config, run_report['run_id'], 'Pusher', 'pushed_model')
  from pipeline import metadata
  assert metadata.custom_property(pushed, 'pushed_destination') in text
  lineage = table_dict(run_report['page'].tables['Pushed, and lineage'][0])
  model = run_outputs(config, run_report['run_id'], 'Trainer', 'model')
  assert lineage['model']['id'] == f'#{model.id}' and lineage['model']['where'] == model.uri
  assert lineage['data span']['id'] == '1'
  # A plot of every model feature's training statistics.
  drawn = {label.split(' (')[0] for label in run_report['page'].charts}
  assert set(features.model_features()) <= drawn, set(features.model_features()) - drawn


@pytest.mark.slow
@TAXI_RUN
def test_the_taxi_report_shows_its_values(run_report):
  assert 'Credit Card' in run_report['text']
  assert 'fare (cumulative share)' in run_report['text']


# The report's name of each metric of the selected task, and its TFMA key.
SHOWN_METRICS = {features.BINARY: {'accuracy': 'binary_accuracy', 'auc': 'auc'},
                 features.MULTICLASS: {'accuracy': 'accuracy'},
                 features.REGRESSION: {'rmse': 'rmse'}}[features.TASK]
# The metric each slice's table shows first: its column, its TFMA key.
SLICE_METRIC = {features.BINARY: ('accuracy', 'binary_accuracy'),
                features.MULTICLASS: ('accuracy', 'accuracy'),
                features.REGRESSION: ('RMSE', 'rmse')}[features.TASK]


@pytest.mark.slow
def test_metrics_are_shown_by_their_tfma_keys(run_report):
  overall = run_report['metrics'][()][('', False)]
  rows = table_dict(run_report['page'].tables['Evaluation and blessing'][0])
  for shown, key in SHOWN_METRICS.items():
    assert rows[shown]['candidate'] == f'{overall[key]:.4f}', shown
  # Counts are integers.
  assert rows['examples']['candidate'] == f'{int(overall["example_count"]):,}'
  column, key = SLICE_METRIC
  for feature in run_report['config'].slices:
    typed = int if features.RAW_FEATURES[feature].dtype == 'int' else str
    for value, row in table_dict(run_report['page'].tables[f'By {feature}'][0]).items():
      expected = run_report['metrics'][((feature, typed(value)),)][('', False)]
      assert row[column] == f'{expected[key]:.4f}', (feature, value)
      assert row['examples'] == f'{int(expected["example_count"]):,}', (feature, value)


@pytest.mark.slow
@TAXI_RUN
def test_numeric_slices_sort_as_numbers(run_report):
  rows = run_report['page'].tables['By trip_start_hour'][0][1:]
  hours = [int(r[0]) for r in rows]
  assert hours == sorted(hours) and len(hours) > 10


@pytest.mark.slow
@TAXI_RUN
def test_auc_of_a_one_class_slice_is_na(run_report):
  rows = table_dict(run_report['page'].tables['By payment_type'][0])
  one_class = 0
  for value, row in rows.items():
    metrics = run_report['metrics'][(('payment_type', value),)][('', False)]
    if metrics['mean_label'] in (0.0, 1.0):  # Cash: nobody tips cash by card.
      assert row['AUC'] == 'n/a', value
      one_class += 1
    else:
      assert row['AUC'] == f'{metrics["auc"]:.4f}', value
  assert one_class >= 1


@pytest.mark.slow
def test_thresholds_read_as_text(run_report):
  rows = run_report['page'].tables['Thresholds'][0]
  thresholds = table_dict(rows)
  config = run_report['config']
  # small_config's floors (AUC, accuracy), the example's RMSE ceiling.
  expected = {features.BINARY: {'auc': '≥ 0.8', 'accuracy': '≥ 0.8'},
              features.MULTICLASS: {'accuracy': '≥ 0.8'},
              features.REGRESSION: {'rmse': f'≤ {config.max_rmse:g}'}}[features.TASK]
  assert {k: thresholds[k]['value threshold'] for k in expected} == expected, thresholds
  assert thresholds[HEADLINE_METRIC]['applies to'] == 'overall'
  assert not any('{' in cell or '"' in cell for row in rows for cell in row)


def _blank_shares_in_csv(path, columns):
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  return {c: sum(not r[c].strip() for r in rows) / len(rows) for c in columns}


@pytest.mark.slow
@TAXI_RUN
def test_blank_share_per_feature(run_report, sample_data_root):
  expected = _blank_shares_in_csv(sample_data_root / 'span-1' / 'data.csv',
                                  ['company', 'pickup_census_tract', 'payment_type'])
  page = run_report['page']
  rows = table_dict(page.tables['Data statistics'][0])
  counts = dict(re.findall(r'(\w+): ([\d,]+)', re.search(
      r'Examples per split: ([^<]*)<', run_report['text']).group(1)))
  counts = {split: int(n.replace(',', '')) for split, n in counts.items()}
  for feature, share in expected.items():
    shown = {split: float(rows[feature][f'blank ({split})'].rstrip('%')) / 100
             for split in counts}
    # The splits partition the CSV's rows: their blanks add up to its blanks.
    combined = sum(shown[s] * counts[s] for s in counts) / sum(counts.values())
    assert combined == pytest.approx(share, abs=0.002), feature
  assert expected['company'] > 0.2 and expected['pickup_census_tract'] > 0.99


@pytest.mark.slow
@TAXI_RUN
def test_report_draws_in_chromium(run_report, tmp_path):
  charts, dom = render(run_report['path'], tmp_path)
  text = run_report['text']
  svgs = text.count('<svg class="chart')
  # A plot per schema feature, AUC and accuracy per slice for both slices.
  assert svgs >= 18 + 4
  assert charts == svgs  # Every chart laid out with a size: none failed to draw.
  page = read_page(dom)
  for feature in ('trip_start_hour', 'payment_type'):
    for key, label in (('auc', 'AUC'), ('binary_accuracy', 'accuracy')):
      chart = page.charts[f'{label} by {feature}']
      plot_height = float(chart['attrs']['data-plot-height'])
      y_max = float(chart['attrs']['data-y-max'])
      drawn = {bar['data-category']: float(bar['data-drawn-height']) for bar in chart['bars']}
      categories = [bar['data-category'] for bar in chart['bars']]
      if feature == 'trip_start_hour':
        assert categories == sorted(categories, key=int)
      for (column, value), in (k for k in run_report['metrics'] if len(k) == 1):
        if column != feature:
          continue
        metrics = run_report['metrics'][((column, value),)][('', False)]
        if key == 'auc' and metrics['mean_label'] in (0.0, 1.0):
          assert str(value) not in drawn  # No bar for an undefined AUC, but 'n/a'.
          assert str(value) in [na['data-category'] for na in chart['na']]
          continue
        assert drawn[str(value)] == pytest.approx(plot_height * metrics[key] / y_max, abs=0.05)
  # A feature with no value at all is said, not drawn as an empty box.
  assert 'no data' in page.charts['pickup_census_tract (share)']['text'] or \
      'no data' in page.charts['pickup_census_tract (cumulative share)']['text']


def event_scalars(log_dir):
  """{tag: [(step, value)]} of the event files in log_dir, read here with
  TensorFlow's own summary iterator."""
  import tensorflow as tf
  found = {}
  for path in sorted(glob.glob(os.path.join(log_dir, 'events.out.tfevents.*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        found.setdefault(value.tag, []).append(
            (event.step, float(tf.make_ndarray(value.tensor))))
  return found


@pytest.mark.slow
def test_report_draws_the_training_curves(run_report):
  config, run_id, page = run_report['config'], run_report['run_id'], run_report['page']
  model_run = run_outputs(config, run_id, 'Trainer', 'model_run').uri
  logged = {split: event_scalars(os.path.join(model_run, split))
            for split in ('train', 'validation')}
  with open(os.path.join(model_run, 'training_record.json')) as f:
    record = json.load(f)
  # The selected task's curves: the loss, and the metrics Keras logs for it.
  curves = {features.BINARY: [('epoch_loss', 'loss'), ('epoch_auc', 'AUC'),
                              ('epoch_accuracy', 'accuracy')],
            features.MULTICLASS: [('epoch_loss', 'loss'), ('epoch_accuracy', 'accuracy')],
            features.REGRESSION: [('epoch_loss', 'loss'), ('epoch_rmse', 'RMSE'),
                                  ('epoch_mae', 'MAE')]}[features.TASK]
  for tag, label in curves:
    chart = page.charts[f'{label} by training step']
    for series, split in (('train', 'train'), ('eval split', 'validation')):
      points = [p for p in chart['points'] if p['data-series'] == series]
      assert [int(float(p['data-x'])) for p in points] == [s for s, _ in logged[split][tag]]
      assert [float(p['data-value']) for p in points] == pytest.approx(
          [v for _, v in logged[split][tag]]), (label, series)
    assert [float(m['data-x']) for m in chart['markers']] == [record['best_step']]
  assert f'exported the weights of step {record["best_step"]}' in run_report['text']
  assert model_run in run_report['text']  # Where to point TensorBoard.


# ---- command line ------------------------------------------------------------------------


def _cli(*args, **kwargs):
  return subprocess.run([sys.executable, '-m', 'reports.run_report', *args], cwd=str(conftest.REPO),
                        capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.slow
def test_report_cli(pipeline_run, tmp_path):
  config, _ = pipeline_run
  out = tmp_path / 'r.html'
  assert report.main(['--output-root', config.path(config.output_root), '--out', str(out)]) == 0
  assert out.exists() and out.read_text().startswith('<!DOCTYPE html>')


def test_cli_without_a_run_says_so_in_one_line(tmp_path):
  empty = tmp_path / 'nothing_here'
  result = _cli('--output-root', str(empty))
  assert result.returncode == report.EXIT_NO_RUN
  assert result.stderr.strip() == (f'report: no pipeline run found under {empty}: run '
                                   '`python local_runner.py` first')
  assert not empty.exists()  # Asking created no MLMD.


def test_cli_help_shows_defaults_and_exit_codes():
  result = _cli('--help')
  assert result.returncode == 0
  text = ' '.join(result.stdout.split())  # However argparse wrapped it.
  assert 'Exit status: 0 report written; 1 no pipeline run found' in text
  assert 'default: <output-root>/report.html' in text
  assert 'default: $TAXI_OUTPUT_ROOT, else tfx_output' in text


@pytest.mark.slow
def test_cli_into_a_closed_pipe(pipeline_run, tmp_path):
  config, _ = pipeline_run
  process = subprocess.Popen(
      [sys.executable, '-m', 'reports.run_report', '--output-root', config.path(config.output_root),
       '--out', str(tmp_path / 'r.html')], cwd=str(conftest.REPO), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE)
  process.stdout.close()  # Like `| head -0`.
  stderr = process.stderr.read().decode()
  assert process.wait(timeout=300) == 0, stderr
  assert 'Traceback' not in stderr and (tmp_path / 'r.html').exists()


# ---- a failed run ------------------------------------------------------------------------


def _latest_run_id(config) -> str:
  from pipeline import metadata
  store = metadata.open_store(config.metadata_path, read_only=True)
  return max(store.get_contexts_by_type('pipeline_run'),
             key=lambda c: (c.create_time_since_epoch, c.id)).name


@pytest.fixture(scope='module')
def later_runs(pipeline_run, tmp_path_factory):
  """After the fixture's blessed and pushed run, on a copy of its output root
  (other tests read its latest run): a retrained model, judged against the
  fixture's (a baseline); then a run on a new span with a string in a number
  column, which stops at the AnomaliesGate."""
  import local_runner
  config, first = pipeline_run
  tmp = tmp_path_factory.mktemp('later_runs')
  shutil.copytree(config.path(config.output_root), tmp / 'tfx_output')
  retrained = conftest.small_config(tmp, config.path(config.data_root),
                                    train_steps=config.train_steps + 30)
  second = local_runner.run(retrained, stream=io.StringIO())
  assert second['succeeded'], second['error']
  second = dict(second, run_id=second.get('run_id') or _latest_run_id(retrained))
  header, rows = conftest.sample_rows()
  conftest.write_csv(tmp / 'data' / 'span-1' / 'data.csv', header, rows)
  for row in rows[:20]:
    row[header.index(REQUIRED_FLOAT)] = 'twelve'
  conftest.write_csv(tmp / 'data' / 'span-2' / 'data.csv', header, rows)
  failing = conftest.small_config(tmp, tmp / 'data')
  summary = local_runner.run(failing, stream=io.StringIO())
  assert not summary['succeeded'] and REQUIRED_FLOAT in summary['error']
  summary = dict(summary, run_id=summary.get('run_id') or _latest_run_id(failing))
  return {'config': failing, 'first': first, 'second': second, 'failed': summary}


@pytest.fixture(scope='module')
def failed_run(later_runs, tmp_path_factory):
  runs = later_runs
  path = report.write_run_report(runs['config'], str(tmp_path_factory.mktemp('failed') /
                                                     'failed.html'), summary=runs['failed'])
  with open(path) as f:
    return runs['config'], runs['first'], runs['failed'], f.read()


@pytest.mark.slow
@TAXI_RUN
def test_baseline_is_shown_beside_the_candidate(later_runs, tmp_path):
  config, second = later_runs['config'], later_runs['second']
  path = report.write_run_report(config, str(tmp_path / 'r.html'), summary=second)
  with open(path) as f:
    page = read_page(f.read())
  metrics = tfma_metrics(run_outputs(config, second['run_id'], 'Evaluator', 'evaluation').uri)
  overall = table_dict(page.tables['Evaluation and blessing'][0])
  for role in ('candidate', 'baseline'):
    assert overall['auc'][role] == f'{metrics[()][(role, False)]["auc"]:.4f}', role
    assert overall['accuracy'][role] == f'{metrics[()][(role, False)]["binary_accuracy"]:.4f}'
  assert overall['auc']['change'] == f'{metrics[()][("candidate", True)]["auc"]:+.4f}'
  chart = page.charts['AUC by trip_start_hour']
  assert {bar['data-series'] for bar in chart['bars']} == {'candidate', 'baseline'}
  for bar in chart['bars']:
    hour = (('trip_start_hour', int(bar['data-category'])),)
    assert float(bar['data-value']) == pytest.approx(
        metrics[hour][(bar['data-series'], False)]['auc'])


@pytest.mark.slow
def test_failed_run_report_says_where_and_why(failed_run):
  _, _, summary, text = failed_run
  page = read_page(text)
  assert re.search(r'Run <span class="bad">FAILED</span> at <b>AnomaliesGate</b>', text)
  assert f'{REQUIRED_FLOAT}: Expected data of type: FLOAT' in text  # The error, as text.
  assert summary['run_id'] in text
  components = table_dict(page.tables['Components of this run'][0])
  assert components['AnomaliesGate']['state'] == 'FAILED'
  assert 'Transform' not in components and 'Pusher' not in components
  # A cached component is part of the run (MLMD attributes it to the run), and
  # what it produced is shown.
  assert components['CuratedSchemaGen']['state'] == 'cached'
  assert '>Schema in use<' in text


@pytest.mark.slow
def test_failed_run_report_shows_nothing_of_the_previous_run(failed_run):
  config, first, _, text = failed_run
  assert 'BLESSED' not in text and 'Evaluation and blessing' not in text
  assert os.path.basename(first['pushed_path']) not in re.sub(r'\d{4}-\d\d-\d\dT[\d:.]+', '', text)
  assert '<td>auc</td>' not in text and 'Pushed, and lineage' not in text
  assert 'Nothing pushed in this run' in text
  assert '; span 2;' in text  # This run's data, not span 1's.
  # The statistics are this run's: span 2's counts.
  statistics = run_outputs(config, _latest_run_id(config), 'StatisticsGen', 'statistics')
  assert statistics.uri.startswith(config.pipeline_root)
  import tensorflow_data_validation as tfdv
  train = tfdv.load_stats_binary(os.path.join(statistics.uri, 'Split-train', 'FeatureStats.pb'))
  assert f'train: {train.datasets[0].num_examples:,}' in text


@pytest.mark.slow
def test_failed_run_report_without_summary_reads_mlmd(failed_run, tmp_path):
  config, _, summary, _ = failed_run
  out = tmp_path / 'cli.html'
  assert report.main(['--output-root', config.path(config.output_root), '--out', str(out)]) == 0
  text = out.read_text()
  assert 'FAILED</span> at <b>AnomaliesGate</b>' in text and 'BLESSED' not in text
  # The data the run read, though the CLI's config has another data root.
  assert f'data {config.path(config.data_root)}; span 2' in text
  # local_runner's own report of that run says the same.
  with open(summary['report_path']) as f:
    assert 'FAILED</span> at <b>AnomaliesGate</b>' in f.read()


@pytest.mark.slow
def test_run_that_failed_before_any_component(pipeline_run, tmp_path):
  config, _ = pipeline_run
  path = report.write_run_report(config, str(tmp_path / 'r.html'), summary={
      'run_id': None, 'succeeded': False, 'error': 'no such file: <data>/span-*/*.csv',
      'failed_component': None, 'pushed': False, 'pushed_path': None})
  text = open(path).read()
  assert 'FAILED</span> before any component ran' in text
  assert 'no such file: &lt;data&gt;/span-*/*.csv' in text
  for other in ('Components of this run', 'Data statistics', 'BLESSED', 'Pushed'):
    assert other not in text


# ---- the monitoring report's charts --------------------------------------------------------


def _served_rows(header, rows):
  """The sample as the monitoring job reads served requests: typed values,
  blank cells absent."""
  from models import features
  cast = {'int': int, 'float': float, 'string': str}
  served = []
  for row in rows:
    values = dict(zip(header, row))
    served.append({name: cast[spec.dtype](values[name]) if values[name].strip() else None
                   for name, spec in features.RAW_FEATURES.items()})
  return served


@pytest.fixture(scope='module')
def training_and_serving(pipeline_run):
  from operations import monitoring
  config, _ = pipeline_run
  statistics = run_outputs(config, first_run_id(config), 'StatisticsGen', 'statistics')
  schema_artifact = run_outputs(config, first_run_id(config), 'CuratedSchemaGen', 'schema')
  schema = monitoring.load_schema(os.path.join(schema_artifact.uri, 'schema.pbtxt'))
  training = metadata.read_statistics(statistics.uri)
  header, rows = conftest.read_shipped_rows()
  rows = rows[3::6]  # Other trips than the sample's: a small real skew.
  rows[0][header.index('payment_type')] = '<b>Bitcoin</b>'  # Markup in served data.
  serving = monitoring.statistics_of(_served_rows(header, rows), schema)
  return training, serving, schema


@pytest.mark.slow
@TAXI_RUN
def test_share_charts_use_the_counts_the_distance_uses(training_and_serving):
  from operations import monitoring
  training, serving, schema = training_and_serving
  skew = monitoring.validate_window(serving, schema, training)['skew']
  for feature in ('company', 'payment_type', 'trip_start_hour'):
    assert skew[feature]['measure'] == 'L_INFTY'
    plot = feature_plots.feature_plot(feature, {'training': training.datasets[0],
                                         'serving': serving.datasets[0]})
    bars = read_page(str(plot)).charts[f'{feature} (share)']['bars']
    drawn = {}
    for bar in bars:
      drawn.setdefault(bar['data-category'], {})[bar['data-series']] = float(bar['data-value'])
    largest = max(abs(v.get('training', 0) - v.get('serving', 0)) for v in drawn.values())
    assert largest == pytest.approx(skew[feature]['value'], abs=1e-6), feature


@pytest.mark.slow
@TAXI_RUN
def test_monitoring_report_escapes_what_it_shows(training_and_serving):
  from operations import monitoring
  training, serving, schema = training_and_serving
  window = dict(start=1_700_000_000, end=1_700_003_600, examples=100,
                compared_to_window=None, **monitoring.validate_window(serving, schema, training))
  assert 'payment_type' in window['serving_anomalies']
  result = {'logs': 'x', 'model_name': 'taxi_big_tipper', 'training': {'span': 1},
            'records': {'files': 1, 'records': 100, 'corrupt': 0, 'unusable': 0},
            'windows': [window], 'labels': {}, 'predictions_by_version': {}}
  result['findings'] = {**monitoring.window_findings([window]), 'prediction_shift': []}
  text = monitoring_report.monitoring_html(result, {'training': training, 'windows': {
      window['start']: serving}, 'predictions': {}, 'schema': schema})
  assert '<b>Bitcoin' not in text and '&lt;b&gt;Bitcoin' in text
  assert 'Window 2023-11-14T22:13:20Z (100 examples)' in text
