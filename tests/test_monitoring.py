"""Monitoring of served traffic, on request logs written by the real local
server (a subprocess) serving the model of the session's pipeline run."""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import json
import pathlib
import struct
import subprocess
import sys
import time

import pytest

from pipeline import monitoring, rollout
from tests import conftest

MODEL = 'taxi_big_tipper'


# ---- a served model and its traffic (helpers shared with test_rollout) ------------------


def model_server_config(base_path, log_prefix, versions=(), labels=None):
  """A ModelServerConfig logging every request to log_prefix."""
  from tensorflow_serving.config import model_server_config_pb2
  config = model_server_config_pb2.ModelServerConfig()
  model = config.model_config_list.config.add(
      name=MODEL, base_path=str(base_path), model_platform='tensorflow')
  if versions:
    model.model_version_policy.specific.versions.extend(versions)
  for label, version in (labels or {}).items():
    model.version_labels[label] = version
  model.logging_config.log_collector_config.filename_prefix = str(log_prefix)
  model.logging_config.sampling_config.sampling_rate = 1.0
  return config


class Server:
  """serving.server in a subprocess on free loopback ports."""

  def __init__(self, config_path, workdir: pathlib.Path):
    import portpicker
    self.grpc_port, self.rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    self.rest = f'http://127.0.0.1:{self.rest_port}'
    self.grpc = f'127.0.0.1:{self.grpc_port}'
    self.log_path = workdir / 'server.log'
    self._log = open(self.log_path, 'w')
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'serving.server', f'--port={self.grpc_port}',
         f'--rest_api_port={self.rest_port}', f'--model_config_file={config_path}',
         '--model_config_file_poll_wait_seconds=1', '--file_system_poll_wait_seconds=1'],
        cwd=str(conftest.REPO), stdout=self._log, stderr=subprocess.STDOUT,
        env={**os.environ, 'TF_USE_LEGACY_KERAS': '1', 'TF_CPP_MIN_LOG_LEVEL': '3'})

  def wait_serving(self, version, attempts=240):
    """Until version is AVAILABLE; fails if the server died."""
    for _ in range(attempts):
      assert self.process.poll() is None, self.log_path.read_text()[-3000:]
      if rollout.version_available(self.rest, MODEL, version):
        return
      time.sleep(0.5)
    raise AssertionError('not serving:\n' + self.log_path.read_text()[-3000:])

  def close(self):
    self.process.terminate()
    try:
      self.process.wait(30)
    except subprocess.TimeoutExpired:
      self.process.kill()
    self._log.close()


def sample_rows():
  from serving.client import typed_row
  header, rows = conftest.sample_rows()
  return [typed_row(dict(zip(header, row))) for row in rows]


def send(server, rows, batch=250):
  """All rows, through REST predict_raw, gRPC serving_default and gRPC
  Classify in turn: every way a request log can hold features."""
  from serving.client import GrpcClient, RestClient
  rest, grpc_client = RestClient(server.rest, MODEL), GrpcClient(server.grpc, MODEL)
  try:
    for i in range(0, len(rows), batch):
      chunk = rows[i:i + batch]
      way = (i // batch) % 3
      if way == 0:
        rest.predict(chunk, 'predict_raw')
      elif way == 1:
        grpc_client.predict(chunk, 'serving_default')
      else:
        grpc_client.classify(chunk)
  finally:
    rest.close()
    grpc_client.close()


def with_payment_shift(rows):
  """Credit card payers turn to cash: the payment mix moves by ~0.4."""
  return [{**r, 'payment_type': 'Cash' if r.get('payment_type') == 'Credit Card'
           else r.get('payment_type')} for r in rows]


def with_fare_inflation(rows, factor=3.0):
  return [{**r, 'fare': r['fare'] * factor} for r in rows]


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope='module')
def logs(tmp_path_factory, pushed_model):
  """Request log prefixes of three traffic mixes served by the pushed model."""
  tmp = tmp_path_factory.mktemp('monitoring')
  config_path = tmp / 'models.config'
  mixes = {'training': sample_rows()}
  mixes['payment'] = with_payment_shift(mixes['training'])
  mixes['fare'] = with_fare_inflation(mixes['training'])
  version = int(sorted(os.listdir(pushed_model))[-1])
  rollout.write_config(model_server_config(pushed_model, tmp / 'logs' / 'idle'), config_path)
  server = Server(config_path, tmp)
  prefixes = {}
  try:
    server.wait_serving(version)
    for name, rows in mixes.items():
      # A new filename_prefix per mix; the reload closes (flushes) the last file.
      prefixes[name] = str(tmp / 'logs' / name)
      rollout.write_config(model_server_config(pushed_model, prefixes[name]), config_path)
      rollout.reload(server.grpc, str(config_path))
      send(server, rows)
    rollout.write_config(model_server_config(pushed_model, tmp / 'logs' / 'idle'), config_path)
    rollout.reload(server.grpc, str(config_path))
  finally:
    server.close()
  return prefixes


@pytest.fixture(scope='module')
def inputs(pipeline_run):
  config, _ = pipeline_run
  return lambda logs, **kw: monitoring.MonitoringInputs(
      logs=logs, metadata_path=config.metadata_path, model_name=MODEL, **kw)


# ---- tests ------------------------------------------------------------------------------


def test_lineage_finds_the_training_statistics_of_the_pushed_model(pipeline_run):
  config, summary = pipeline_run
  found = monitoring.Lineage(config.metadata_path).of_pushed()
  assert found['statistics'].uri.startswith(os.path.join(config.pipeline_root, 'StatisticsGen'))
  assert found['examples'].custom_properties['span'].int_value == 1
  assert os.path.basename(summary['pushed_path']) == \
      found['pushed'].custom_properties['pushed_version'].string_value
  assert 'CuratedSchemaGen' in found['schema'].uri


def test_traffic_like_the_training_data_raises_nothing(logs, inputs):
  result, _ = monitoring.run(inputs(logs['training']))
  served = sum(w['examples'] for w in result['windows'])
  assert served == len(sample_rows())
  assert result['records']['corrupt'] == 0
  assert result['findings'] == {'skew': [], 'drift': [], 'serving_anomalies': [],
                                'prediction_shift': []}, result['windows']
  assert not monitoring.drift_or_skew_found(result)
  assert monitoring.exit_code(result) == monitoring.EXIT_OK


def test_payment_mix_shift_is_skew_on_payment_type_only(logs, inputs):
  result, _ = monitoring.run(inputs(logs['payment']))
  assert result['findings']['skew'] == ['payment_type']
  skew = result['windows'][0]['skew']['payment_type']
  assert skew['measure'] == 'L_INFTY' and skew['value'] > skew['threshold'] == 0.1
  assert monitoring.drift_or_skew_found(result)
  assert monitoring.exit_code(result) == monitoring.EXIT_DRIFT_OR_SKEW


def test_fare_inflation_is_skew_on_fare_only(logs, inputs):
  result, _ = monitoring.run(inputs(logs['fare']))
  assert result['findings']['skew'] == ['fare']
  assert result['windows'][0]['skew']['fare']['measure'] == 'JENSEN_SHANNON_DIVERGENCE'


def _retimed(prefix, destination, timestamp, counts):
  """The logs of prefix as if served at timestamp (windows an hour apart)."""
  import tensorflow as tf
  with tf.io.TFRecordWriter(str(destination)) as writer:
    for log in monitoring.read_logs(prefix, counts):
      log.log_metadata.timestamp_secs = timestamp
      writer.write(log.SerializeToString())


def test_drift_between_consecutive_windows(logs, inputs, tmp_path):
  counts = monitoring.LogReadCounts()
  _retimed(logs['training'], tmp_path / 'a.tfrecord', 1_700_000_000, counts)
  _retimed(logs['payment'], tmp_path / 'b.tfrecord', 1_700_003_600, counts)
  result, _ = monitoring.run(inputs(str(tmp_path / '*.tfrecord'), window_seconds=3600))
  first, second = result['windows']
  assert first['drift'] == {} and first['skew_anomalies'] == {}
  assert second['compared_to_window'] == first['start']
  assert sorted(second['drift_anomalies']) == ['payment_type']
  assert result['findings']['drift'] == ['payment_type']


def _frame(payload: bytes) -> bytes:
  header = struct.pack('<Q', len(payload))
  return (header + struct.pack('<I', monitoring._masked_crc(header)) + payload +
          struct.pack('<I', monitoring._masked_crc(payload)))


def test_corrupt_records_are_skipped_and_counted(logs, inputs, tmp_path):
  source = monitoring.log_files(logs['payment'])
  assert len(source) == 1
  good = source[0]
  records = list(monitoring._tfrecords(good, monitoring.LogReadCounts()))
  damaged = bytearray(_frame(records[0]))
  damaged[20] ^= 0xFF  # A flipped payload byte: the data checksum fails.
  broken = tmp_path / 'logs-broken.tfrecord'
  broken.write_bytes(bytes(damaged) + _frame(b'not a PredictionLog \xff\xff') +
                     pathlib.Path(good).read_bytes() + _frame(records[1])[:-7])  # Torn tail.
  result, _ = monitoring.run(inputs(str(broken)))
  assert result['records']['corrupt'] == 3
  assert result['records']['records'] == len(records)
  assert result['findings']['skew'] == ['payment_type']


def test_cli_writes_json_and_html_and_exit_code_says_skew(logs, pipeline_run, tmp_path):
  config, _ = pipeline_run
  code = monitoring.main(['--logs', logs['fare'], '--metadata', config.metadata_path,
                          '--out', str(tmp_path)])
  assert code == monitoring.EXIT_DRIFT_OR_SKEW
  result = json.loads((tmp_path / 'monitoring.json').read_text())
  assert result['findings']['skew'] == ['fare']
  assert monitoring.drift_or_skew_found(result)
  html = (tmp_path / 'monitoring.html').read_text()
  assert 'JENSEN_SHANNON_DIVERGENCE' in html and '<svg class="chart"' in html


def test_monitoring_report_renders_in_chromium(logs, inputs, tmp_path):
  from tests.test_report import render
  result, statistics = monitoring.run(inputs(logs['payment']))
  paths = monitoring.write_outputs(result, statistics, str(tmp_path))
  charts, dom = render(paths['html'], tmp_path)
  # Training vs serving for every feature the schema watches, plus predictions.
  assert charts == dom.count('<svg class="chart"') >= 18
  assert 'payment_type (share)' in dom


# ---- distributions: samples of the training data and real shifts (no server) -----------
#
# Request logs written as the server writes them (PredictionLog, serving_default
# tf.Examples), monitored against statistics of the shipped CSV: the training
# data of a pipeline run on it (TFDV statistics, as StatisticsGen computes them).


def _typed(header, rows):
  from serving.client import typed_row
  return [typed_row(dict(zip(header, row))) for row in rows]


def write_request_logs(path, rows, version=1, timestamp=1_700_000_000, model=MODEL, batch=100):
  """rows as predict requests of serving_default, logged as the server logs them."""
  import tensorflow as tf
  from serving.client import to_example
  from tensorflow_serving.apis import prediction_log_pb2
  with tf.io.TFRecordWriter(str(path)) as writer:
    for i in range(0, len(rows), batch):
      log = prediction_log_pb2.PredictionLog()
      log.log_metadata.model_spec.name = model
      log.log_metadata.model_spec.version.value = version
      log.log_metadata.timestamp_secs = timestamp
      examples = [to_example(r) for r in rows[i:i + batch]]
      log.predict_log.request.inputs['examples'].CopyFrom(tf.make_tensor_proto(examples))
      writer.write(log.SerializeToString())


@pytest.fixture(scope='module')
def shipped():
  header, rows = conftest.read_shipped_rows()
  return header, _typed(header, rows)


@pytest.fixture(scope='module')
def shipped_statistics(tmp_path_factory, shipped):
  """A StatisticsGen-like output dir: statistics of the whole shipped CSV."""
  _, rows = shipped
  root = tmp_path_factory.mktemp('training_statistics')
  (root / 'Split-train').mkdir()
  stats = monitoring.statistics_of(rows, monitoring.load_schema(str(SCHEMA)))
  (root / 'Split-train' / 'FeatureStats.pb').write_bytes(stats.SerializeToString())
  return str(root)


SCHEMA = conftest.REPO / 'schema' / 'schema.pbtxt'


def monitor_windows(tmp_path, statistics_dir, *windows):
  """Monitoring of hourly windows of rows (one log file each) against statistics_dir."""
  for i, rows in enumerate(windows):
    write_request_logs(tmp_path / f'requests-{i}.tfrecord', rows, timestamp=1_700_000_000 + 3600 * i)
  result, _ = monitoring.run(monitoring.MonitoringInputs(
      logs=str(tmp_path / 'requests-*.tfrecord'), model_name=MODEL,
      training_statistics=statistics_dir, schema_file=str(SCHEMA)))
  assert [w['examples'] for w in result['windows']] == [len(w) for w in windows]
  return result


def _sample(rows, n, seed):
  import random
  return random.Random(seed).sample(rows, n)


def _generated(header, n, seed, **drift):
  from data import generate
  return _typed(header, [r for chunk in generate.generate_rows(n, seed, generate.Drift(**drift))
                         for r in chunk])


@pytest.mark.parametrize('n', [500, 2000, 10000])
def test_samples_of_the_training_data_raise_no_skew_or_drift(n, shipped, shipped_statistics,
                                                            tmp_path):
  _, rows = shipped
  result = monitor_windows(tmp_path, shipped_statistics, _sample(rows, n, 1),
                           _sample(rows, n, 2))
  assert result['findings']['skew'] == [] and result['findings']['drift'] == [], \
      [(w['skew'], w['drift']) for w in result['windows']]
  fare = result['windows'][0]['skew']['fare']
  assert fare['measure'] == 'JENSEN_SHANNON_DIVERGENCE' and fare['value'] < fare['threshold']


def test_generated_traffic_without_drift_raises_nothing(shipped, shipped_statistics, tmp_path):
  header, _ = shipped
  result = monitor_windows(tmp_path, shipped_statistics, _generated(header, 2000, 1),
                           _generated(header, 2000, 2))
  assert result['findings']['skew'] == [] and result['findings']['drift'] == []


@pytest.mark.parametrize('n', [500, 2000])
def test_fare_inflation_of_20_percent_is_skew_and_drift_on_fare_only(n, shipped,
                                                                    shipped_statistics, tmp_path):
  header, _ = shipped
  result = monitor_windows(tmp_path, shipped_statistics, _generated(header, n, 1),
                           _generated(header, n, 2, fare_inflation=0.2))
  clean, inflated = result['windows']
  assert clean['skew_anomalies'] == {}
  assert sorted(inflated['skew_anomalies']) == ['fare']
  assert sorted(inflated['drift_anomalies']) == ['fare']
  assert result['findings']['skew'] == result['findings']['drift'] == ['fare']


def test_payment_mix_change_is_skew_on_payment_type_only(shipped, shipped_statistics, tmp_path):
  header, _ = shipped
  result = monitor_windows(tmp_path, shipped_statistics,
                           _generated(header, 2000, 1, payment_mix={'Credit Card': 0.6}))
  assert result['findings']['skew'] == ['payment_type']
  assert monitoring.exit_code(result) == monitoring.EXIT_DRIFT_OR_SKEW


def test_served_values_are_counted_in_the_training_quantile_buckets():
  from tensorflow_metadata.proto.v0 import statistics_pb2
  histogram = statistics_pb2.Histogram(type=statistics_pb2.Histogram.QUANTILES)
  for low, high in [(0, 0), (0, 0), (0, 1), (1, 5), (5, 5), (5, 10)]:
    histogram.buckets.add(low_value=low, high_value=high)
  # -3 and 700 lie beyond the training's extremes: they count in the end buckets.
  assert monitoring.bucket_counts(histogram.buckets, [-3, 0, 0, 0.5, 1, 3, 5, 7, 700]) == \
      [3, 0, 2, 1, 1, 2]
