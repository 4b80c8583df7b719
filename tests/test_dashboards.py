"""Dashboards and alerts: the Prometheus files pass promtool, the alerts fire on
series shaped as TF Serving exports them, and the Grafana dashboard and the
alert rules name only metrics (and labels) that the local server's scrape and
the monitoring job's textfile really hold.

promtool is Debian's `prometheus` package (scripts/ensure_debian_tool.sh, which
`make test` runs, installs it where it can).
"""

import json
import os
import re
import shutil
import subprocess
import sys

import jinja2
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline import deploy_files, project
from tests.conftest import REPO

DEPLOY = REPO / 'serving' / 'deploy'
ALERTS = DEPLOY / 'alerts.yml'
DASHBOARD = DEPLOY / 'grafana' / 'dashboards' / 'model-serving.json'
DATASOURCES = DEPLOY / 'grafana' / 'provisioning' / 'datasources' / 'prometheus.yml'
SERVING_PREFIX = ':tensorflow:serving:'
MONITORING_PREFIX = 'model_monitoring_'
# Series that Prometheus itself (up) and the blackbox exporter (probe_success) make.
NOT_FROM_OUR_EXPORTERS = {'up', 'probe_success'}
METRIC = re.compile(r'(:tensorflow:[\w:]+|model_monitoring_\w+|\bup\b|\bprobe_success\b)')
GROUPING = re.compile(r'\bby \(([^)]*)\)')
SELECTOR = re.compile(METRIC.pattern + r'\{([^}]*)\}')


def promtool():
  path = shutil.which('promtool')
  if path:
    return path
  if os.geteuid() == 0 and shutil.which('apt-get'):
    pytest.fail('promtool is missing though this user can install it: run '
                'scripts/ensure_debian_tool.sh (make test runs it)')
  pytest.skip("promtool is missing and cannot be installed here (needs root and apt-get): "
              "install Debian's prometheus package")


def run_promtool(*args, cwd=DEPLOY):
  result = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr
  return result.stdout


def dashboard_exprs():
  dashboard = json.loads(DASHBOARD.read_text())
  exprs = [t['expr'] for p in dashboard['panels'] for t in p.get('targets', [])]
  exprs += [v['definition'] for v in dashboard['templating']['list']]
  return exprs


def alert_exprs():
  rules = yaml.safe_load(ALERTS.read_text())
  return [r['expr'] for group in rules['groups'] for r in group['rules']]


# ---- the Prometheus files ----------------------------------------------------------


def test_alert_rules_pass_promtool():
  assert 'SUCCESS: 10 rules found' in run_promtool('check', 'rules', 'alerts.yml')


def test_scrape_config_and_its_rule_file_pass_promtool():
  output = run_promtool('check', 'config', 'prometheus.yml')
  assert 'SUCCESS: 1 rule files found' in output


def test_prometheus_yml_is_the_rendering_of_its_template():
  # Rendered as pipeline/deploy_files.py renders (the availability probe names the model).
  environment = jinja2.Environment(
      loader=jinja2.FileSystemLoader(deploy_files.TEMPLATE_DIR),
      undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
  rendered = environment.get_template('prometheus.yml.j2').render(project.NAMES)
  assert (DEPLOY / 'prometheus.yml').read_text() == rendered, (
      'run python -m pipeline.deploy_files --out serving/deploy (edit the template)')
  assert f"/v1/models/{project.MODEL_NAME}'" in rendered


ALERT_TESTS = """
rule_files: [{alerts}]
evaluation_interval: 1m
tests:
  # 10% of model calls fail (TF Serving's request_count: model_name and status only; its
  # OK count also holds REST status GETs, which request_latency labels API="").
  - interval: 1m
    input_series:
      - series: ':tensorflow:serving:request_count{{model_name="m",status="OK"}}'
        values: '0+1000x40'
      - series: ':tensorflow:serving:request_count{{model_name="m",status="INVALID_ARGUMENT"}}'
        values: '0+10x40'
      - series: ':tensorflow:serving:request_latency_count{{model_name="m",API="predict",entrypoint="REST"}}'
        values: '0+90x40'
      - series: ':tensorflow:serving:request_latency_count{{model_name="m",API="",entrypoint="REST"}}'
        values: '0+910x40'
      - series: ':tensorflow:serving:request_latency_bucket{{model_name="m",API="predict",entrypoint="REST",le="100000"}}'
        values: '0+0x40'
      - series: ':tensorflow:serving:request_latency_bucket{{model_name="m",API="predict",entrypoint="REST",le="1000000"}}'
        values: '0+90x40'
      - series: ':tensorflow:serving:request_latency_bucket{{model_name="m",API="predict",entrypoint="REST",le="+Inf"}}'
        values: '0+90x40'
    alert_rule_test:
      - eval_time: 3m
        alertname: ModelHighErrorRate
        exp_alerts: []
      - {{eval_time: 15m, alertname: ModelHighErrorRate, exp_alerts: [{{exp_labels: {{severity: page, model_name: m}}}}]}}
      - {{eval_time: 8m, alertname: ModelHighLatencyP99, exp_alerts: []}}
      - {{eval_time: 25m, alertname: ModelHighLatencyP99, exp_alerts: [{{exp_labels: {{severity: warn, model_name: m}}}}]}}
      - {{eval_time: 35m, alertname: ModelNoTraffic, exp_alerts: []}}
  # Model calls stop at 20m (health checks go on): the 15m rate is 0 from 35m, the alert
  # fires 15m later.
  - interval: 1m
    input_series:
      - series: ':tensorflow:serving:request_latency_count{{model_name="m",API="Predict",entrypoint="GRPC"}}'
        values: '0+100x20 2000x60'
      - series: ':tensorflow:serving:request_latency_count{{model_name="m",API="",entrypoint="REST"}}'
        values: '0+6x80'
    alert_rule_test:
      - {{eval_time: 45m, alertname: ModelNoTraffic, exp_alerts: []}}
      - {{eval_time: 55m, alertname: ModelNoTraffic, exp_alerts: [{{exp_labels: {{severity: warn, model_name: m}}}}]}}
  # Every call fails from the start (no version loaded): no latency series at all.
  - interval: 1m
    input_series:
      - series: ':tensorflow:serving:request_count{{model_name="m",status="NOT_FOUND"}}'
        values: '0+10x20'
    alert_rule_test:
      - {{eval_time: 10m, alertname: ModelHighErrorRate, exp_alerts: [{{exp_labels: {{severity: page, model_name: m}}}}]}}
  # The server is down; the model is not available.
  - interval: 1m
    input_series:
      - series: 'up{{job="model-server",instance="tf-serving:8501"}}'
        values: '0x10'
      - series: 'probe_success{{job="model-availability",instance="x",model_name="m"}}'
        values: '1 1 0x10'
    alert_rule_test:
      - {{eval_time: 5m, alertname: ModelServerDown, exp_alerts: [{{exp_labels: {{severity: page, job: model-server, instance: "tf-serving:8501"}}}}]}}
      - {{eval_time: 3m, alertname: ModelNotAvailable, exp_alerts: []}}
      - {{eval_time: 5m, alertname: ModelNotAvailable, exp_alerts: [{{exp_labels: {{severity: page, job: model-availability, instance: x, model_name: m}}}}]}}
  # The monitoring job's textfile: drift on fare only; its last success 4 hours ago.
  - interval: 1m
    input_series:
      - series: 'model_monitoring_drift_anomalous{{model_name="m",version="1",feature="fare",measure="JENSEN_SHANNON_DIVERGENCE"}}'
        values: '1x300'
      - series: 'model_monitoring_drift_anomalous{{model_name="m",version="1",feature="trip_miles",measure="JENSEN_SHANNON_DIVERGENCE"}}'
        values: '0x300'
      - series: 'model_monitoring_skew_anomalous{{model_name="m",version="1",feature="fare",measure="JENSEN_SHANNON_DIVERGENCE"}}'
        values: '0x300'
      - series: 'model_monitoring_last_success_timestamp_seconds{{model_name="m"}}'
        values: '0x300'
    alert_rule_test:
      - {{eval_time: 1m, alertname: FeatureDriftDetected, exp_alerts: [{{exp_labels: {{severity: warn, model_name: m, version: "1", feature: fare, measure: JENSEN_SHANNON_DIVERGENCE}}}}]}}
      - {{eval_time: 1m, alertname: TrainingServingSkewDetected, exp_alerts: []}}
      - {{eval_time: 2h, alertname: MonitoringJobStale, exp_alerts: []}}
      - {{eval_time: 4h, alertname: MonitoringJobStale, exp_alerts: [{{exp_labels: {{severity: warn, model_name: m}}}}]}}
"""


def test_alerts_fire_on_series_as_tf_serving_and_the_monitoring_job_export_them(tmp_path):
  # The rules without their annotations (promtool would compare every text;
  # `check rules` checks their templates): expressions, durations and labels.
  rules = yaml.safe_load(ALERTS.read_text())
  for group in rules['groups']:
    for rule in group['rules']:
      rule.pop('annotations')
  (tmp_path / 'alerts.yml').write_text(yaml.safe_dump(rules))
  tests = tmp_path / 'alerts_test.yml'
  tests.write_text(ALERT_TESTS.format(alerts=tmp_path / 'alerts.yml'))
  run_promtool('test', 'rules', str(tests), cwd=tmp_path)


def test_compose_stack_mounts_every_file_its_services_read():
  compose = yaml.safe_load((DEPLOY / 'docker-compose.yml').read_text())['services']
  assert {'tf-serving', 'prometheus', 'blackbox-exporter', 'node-exporter', 'grafana'} <= \
      set(compose)
  for service in ('prometheus', 'blackbox-exporter'):
    assert './:/config:ro' in compose[service]['volumes']
    config = [a for a in compose[service]['command'] if a.startswith('--config.file=/config/')]
    assert config and (DEPLOY / config[0].split('/config/', 1)[1]).is_file(), service
  grafana = {v.split(':')[1]: v.split(':')[0] for v in compose['grafana']['volumes']}
  assert (DEPLOY / grafana['/etc/grafana/provisioning']).is_dir()
  assert (DEPLOY / grafana['/var/lib/grafana/dashboards'] / DASHBOARD.name).is_file()
  prometheus = yaml.safe_load((DEPLOY / 'prometheus.yml').read_text())
  targets = {job['job_name']: job['static_configs'][0]['targets'] for job in
             prometheus['scrape_configs']}
  assert targets['model-server'] == ['tf-serving:8501']  # The compose service and REST port.


def test_dashboard_loads_and_uses_the_provisioned_datasource():
  dashboard = json.loads(DASHBOARD.read_text())
  uid = yaml.safe_load(DATASOURCES.read_text())['datasources'][0]['uid']
  panels = dashboard['panels']
  assert len({p['id'] for p in panels}) == len(panels)
  for panel in panels:
    for target in panel.get('targets', []):
      assert target['datasource']['uid'] == uid, panel['title']
      assert METRIC.search(target['expr']), f'{panel["title"]}: {target["expr"]} names no metric'


def test_textfile_flag_needs_a_prom_file_name(capsys):
  from operations import monitoring
  with pytest.raises(SystemExit) as exit_info:
    monitoring.main(['--logs', 'x', '--prometheus-textfile', '/tmp/monitoring.txt'])
  assert exit_info.value.code == monitoring.EXIT_FAILED
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and 'reads only *.prom files' in err, err


# ---- against the real exporters ------------------------------------------------------


def _exposed(text):
  """{sample name: label names} as the exposition text writes them (prometheus_client's
  parser would rename counter samples to '<name>_total'); the text must parse."""
  assert list(text_string_to_metric_families(text))
  found = {}
  for line in text.splitlines():
    if line and not line.startswith('#'):
      name, _, rest = re.match(r'([^{\s]+)(\{([^}]*)\})?', line).groups()
      found.setdefault(name, set()).update(re.findall(r'(\w+)="', rest or ''))
  return found


def _samples(text, family):
  return [s for f in text_string_to_metric_families(text) if f.name == family for s in f.samples]


@pytest.fixture(scope='module')
def model_base(request):
  """The real pushed model: $SERVING_TEST_MODEL_BASE, else the session pipeline run."""
  base = os.environ.get('SERVING_TEST_MODEL_BASE')
  return base.rstrip('/') if base else str(request.getfixturevalue('pushed_model'))


@pytest.fixture(scope='module')
def scrape(model_base, tmp_path_factory):
  """The local server's metrics after what users do: REST and gRPC predicts,
  a request for a missing version, batching on."""
  from client.predict import GrpcClient, RestClient, typed_row
  from serving.server_process import ServerProcess
  from tests.conftest import read_shipped_rows
  conf = tmp_path_factory.mktemp('dashboard_conf')
  (conf / 'batching.config').write_text('max_batch_size { value: 16 }\n'
                                        'batch_timeout_micros { value: 1000 }\n')
  header, rows = read_shipped_rows()
  rows = [typed_row(dict(zip(header, r))) for r in rows[:5]]
  with ServerProcess(f'--model_name={project.MODEL_NAME}', f'--model_base_path={model_base}',
                     '--enable_batching', f'--batching_parameters_file={conf / "batching.config"}',
                     f'--monitoring_config_file={DEPLOY / "monitoring.config"}') as server:
    server.wait_until_available(project.MODEL_NAME)
    RestClient(server.rest).predict(rows)
    GrpcClient(server.grpc_target).predict(rows)
    missing = requests.post(f'{server.rest}/v1/models/{project.MODEL_NAME}/versions/7:predict',
                            json={'instances': [1.0]}, timeout=30)
    assert missing.status_code == 404, missing.text
    requests.get(f'{server.rest}/v1/models/{project.MODEL_NAME}/metadata',
                 timeout=30).raise_for_status()
    return requests.get(server.rest + '/monitoring/prometheus/metrics', timeout=30).text


@pytest.mark.slow
def test_local_server_names_metrics_as_tf_serving_does(scrape):
  exposed = _exposed(scrape)
  count = SERVING_PREFIX + 'request_count'
  # TF Serving: a counter ':tensorflow:serving:request_count', no '_total', no '_created'.
  assert f'# TYPE {count} counter' in scrape.splitlines()
  assert count in exposed and {'model_name', 'status'} <= exposed[count]
  assert not [name for name in exposed if name.endswith(('_total', '_created'))]
  counts = {(s.labels['API'], s.labels['entrypoint'], s.labels['status']): s.value
            for s in _samples(scrape, count)}
  # TF Serving's API names: 'Predict' over gRPC, 'predict' over REST, '' for REST GETs.
  assert counts == {('Predict', 'GRPC', 'OK'): 1, ('predict', 'REST', 'OK'): 1,
                    ('predict', 'REST', 'NOT_FOUND'): 1, ('', 'REST', 'OK'): 1}
  latency = _samples(scrape, SERVING_PREFIX + 'request_latency')
  timed = {(s.labels['API'], s.labels['entrypoint']): s.value
           for s in latency if s.name.endswith('_count')}
  # Only successes are timed.
  assert timed == {('Predict', 'GRPC'): 1, ('predict', 'REST'): 1, ('', 'REST'): 1}
  buckets = [s.labels['le'] for s in latency
             if s.name.endswith('_bucket') and s.labels['entrypoint'] == 'GRPC']
  # TF's Exponential(10, 1.8, 33) and +Inf.
  assert len(buckets) == 34 and float(buckets[0]) == 10 and buckets[-1] == '+Inf'
  assert float(buckets[32]) == pytest.approx(10 * 1.8 ** 32)


def _prediction_output(value, n):
  """The serving_default output of n examples whose followed prediction
  (operations.monitoring.PREDICTION) is value: binary, P(class 1); multi-class,
  the top class's probability (value >= 0.5); regression, the number."""
  from models import features
  if features.TASK == features.MULTICLASS:
    row = [value, 1 - value] + [0.0] * (features.NUM_CLASSES - 2)
  else:
    row = [value]
  return features.PREDICTION_KEY, [row] * n


def _write_logs(path, rows, timestamp, version=1, prediction=0.6, batch=100):
  """rows as serving_default predict requests and their responses, logged as the
  server logs them."""
  import tensorflow as tf
  from client.predict import to_example
  from tensorflow_serving.apis import prediction_log_pb2
  with tf.io.TFRecordWriter(str(path)) as writer:
    for i in range(0, len(rows), batch):
      examples = [to_example(r) for r in rows[i:i + batch]]
      log = prediction_log_pb2.PredictionLog()
      log.log_metadata.model_spec.name = project.MODEL_NAME
      log.log_metadata.model_spec.version.value = version
      log.log_metadata.timestamp_secs = timestamp
      log.predict_log.request.inputs['examples'].CopyFrom(tf.make_tensor_proto(examples))
      key, values = _prediction_output(prediction, len(examples))
      log.predict_log.response.outputs[key].CopyFrom(tf.make_tensor_proto(values, tf.float32))
      writer.write(log.SerializeToString())


@pytest.fixture(scope='module')
def textfile(tmp_path_factory):
  """The monitoring CLI's --prometheus-textfile on two hourly windows of the
  shipped data served by the stable version 1, the second with a numeric
  feature 20% higher (drift on it), and a canary version 2 whose predictions
  differ."""
  from models import features
  from operations import monitoring
  from tests import conftest
  from tests.test_monitoring import SCHEMA, _typed, inflated, resampled
  tmp = tmp_path_factory.mktemp('monitoring_textfile')
  header, rows = conftest.read_shipped_rows()
  rows = [features.from_example(features.to_example(r)) for r in _typed(header, rows)]
  stats_dir = tmp / 'training_statistics' / 'Split-train'
  stats_dir.mkdir(parents=True)
  stats = monitoring.statistics_of(rows, monitoring.load_schema(str(SCHEMA)))
  (stats_dir / 'FeatureStats.pb').write_bytes(stats.SerializeToString())
  served = resampled(rows, 2000, 0)  # As many whatever the size of the example's data.
  _write_logs(tmp / 'requests-0.tfrecord', served[:1000], 1_700_000_000)
  _write_logs(tmp / 'requests-1.tfrecord', inflated(served[1000:]), 1_700_003_600)
  _write_logs(tmp / 'requests-2.tfrecord', served[:600], 1_700_003_600, version=2, prediction=0.9)
  config = tmp / 'models.config'
  config.write_text(f'''model_config_list {{ config {{
      name: "{project.MODEL_NAME}" base_path: "/models/{project.MODEL_NAME}"
      model_platform: "tensorflow"
      version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }}
  }} }}''')
  path = tmp / 'textfile' / 'model_monitoring.prom'
  path.parent.mkdir()
  args = ['--logs', str(tmp / 'requests-*.tfrecord'), '--model-name', project.MODEL_NAME,
          '--training-statistics', str(stats_dir.parent), '--schema', str(SCHEMA),
          '--serving-config', str(config), '--out', str(tmp / 'out')]
  code = monitoring.main(args + ['--prometheus-textfile', str(path)])
  result = json.loads((tmp / 'out' / 'monitoring.json').read_text())
  return code, result, path.read_text(), args


@pytest.mark.slow
def test_unwritable_textfile_is_one_line_and_exit_1(textfile, tmp_path, capsys):
  from operations import monitoring
  capsys.readouterr()
  missing = tmp_path / 'no-such-dir' / 'model_monitoring.prom'
  code = monitoring.main(textfile[3] + ['--prometheus-textfile', str(missing)])
  assert code == monitoring.EXIT_FAILED
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and f'cannot write --prometheus-textfile {missing}' in err, err


@pytest.mark.slow
def test_monitoring_textfile_parses_and_holds_the_results(textfile):
  from operations import monitoring
  code, result, text, _ = textfile
  from tests.test_monitoring import NUMERIC
  assert code == monitoring.EXIT_DRIFT_OR_SKEW and NUMERIC in result['findings']['drift']
  values = {}
  for family in text_string_to_metric_families(text):
    for sample in family.samples:
      values[(sample.name, sample.labels.get('feature'), sample.labels.get('kind'))] = \
          (sample.value, sample.labels)
  newest = result['windows'][-1]
  drift = newest['drift'][NUMERIC]
  value, labels = values[(MONITORING_PREFIX + 'drift_distance', NUMERIC, None)]
  assert value == pytest.approx(drift['value']) and labels['version'] == str(result['version'])
  assert labels['model_name'] == project.MODEL_NAME and labels['measure'] == drift['measure']
  assert values[(MONITORING_PREFIX + 'drift_anomalous', NUMERIC, None)][0] == 1
  assert values[(MONITORING_PREFIX + 'drift_threshold', NUMERIC, None)][0] == \
      pytest.approx(drift['threshold'])
  assert values[(MONITORING_PREFIX + 'records', None, 'read')][0] == result['records']['records']
  by_version = {(s.name, s.labels['version']): s.value
                for f in text_string_to_metric_families(text) for s in f.samples
                if s.name.startswith(MONITORING_PREFIX + 'prediction_')}
  canary = result['predictions_by_version']['2']
  assert canary['shift']['anomalous'] and canary['mean'] == pytest.approx(0.9)
  assert by_version == {
      (MONITORING_PREFIX + 'prediction_mean', '1'): pytest.approx(0.6),
      (MONITORING_PREFIX + 'prediction_mean', '2'): pytest.approx(0.9),
      (MONITORING_PREFIX + 'prediction_count', '1'): 2000,
      (MONITORING_PREFIX + 'prediction_count', '2'): 600,
      (MONITORING_PREFIX + 'prediction_shift', '2'): pytest.approx(canary['shift']['value']),
      (MONITORING_PREFIX + 'prediction_shift_anomalous', '2'): 1}


@pytest.mark.slow
def test_dashboard_and_alerts_name_only_exported_metrics_and_labels(scrape, textfile):
  exported = _exposed(scrape)
  exported.update(_exposed(textfile[2]))
  for expr in dashboard_exprs() + alert_exprs():
    names = set(METRIC.findall(expr))
    assert names, f'{expr} names no metric'
    grouped = {label.strip() for labels in GROUPING.findall(expr) for label in labels.split(',')}
    for name in names - NOT_FROM_OUR_EXPORTERS:
      assert name in exported, f'{expr}: no {name} in the scrape or the textfile'
      assert grouped <= exported[name], f'{expr}: {name} has no label {grouped - exported[name]}'
    for name, selector in SELECTOR.findall(expr):
      if name not in NOT_FROM_OUR_EXPORTERS:
        used = set(re.findall(r'(\w+)\s*(?:=|!=|=~|!~)\s*"', selector))
        assert used <= exported[name], f'{expr}: {name} has no label {used - exported[name]}'


if __name__ == '__main__':
  sys.exit(pytest.main([__file__]))
