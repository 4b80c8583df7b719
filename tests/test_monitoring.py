"""Monitoring of served traffic: on request logs written by the real local
server (a subprocess) serving the model of the session's pipeline run (slow),
and on request logs written here as the server writes them, for the
distribution, lineage and user-error cases (fast)."""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import json
import pathlib
import struct
import subprocess
import sys
import time

import pytest

from models import features
from operations import rollout
from operations import monitoring
from pipeline import configs, metadata
from serving import log_reader
from tests import conftest

# The selected example's model name and curated schema, as a pipeline run of it uses them.
CONFIG = configs.load(environ={})
MODEL = CONFIG.model_name
SCHEMA = pathlib.Path(CONFIG.path(CONFIG.schema_file))


def watched_feature(kinds, comparator: str):
  """The first required model feature of one of kinds (models/features.py)
  whose skew the schema measures with comparator; None if the example has
  none. Shifting it must be found as skew on it alone."""
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2
  schema = text_format.Parse(SCHEMA.read_text(), schema_pb2.Schema())
  skew = {f.name: f.skew_comparator for f in schema.feature}
  return next((name for name, spec in features.model_features().items()
               if spec.kind in kinds and spec.required and name in skew
               and skew[name].HasField(comparator)), None)


# A number (Jensen-Shannon on the training quantiles) and a category
# (L-infinity) that every row has: taxi's fare and trip_start_hour, iris's
# sepal_length (no category), diabetes's age and sex.
NUMERIC = watched_feature(('numeric', 'log_numeric'), 'jensen_shannon_divergence')
CATEGORICAL = watched_feature(('categorical', 'vocab'), 'infinity_norm')
needs_a_categorical = pytest.mark.skipif(
    CATEGORICAL is None, reason=f'the {features.EXAMPLE_NAME} example has no categorical feature '
                                'with a skew comparator')


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
  """The session's sample, typed; drawn again up to conftest.SAMPLE_ROWS when
  the example's data is too small to fill two judged windows."""
  from client.predict import typed_row
  header, rows = conftest.sample_rows()
  typed = [typed_row(dict(zip(header, row))) for row in rows]
  if len(typed) < 2 * monitoring.DEFAULT_MIN_WINDOW_EXAMPLES:
    return resampled(typed, conftest.SAMPLE_ROWS, 0)
  return typed


def send(server, rows, batch=250):
  """All rows, through REST predict_raw, gRPC serving_default and gRPC
  Classify (Regress for a regression) in turn: every way a request log can
  hold features."""
  from client.predict import GrpcClient, RestClient
  rest, grpc_client = RestClient(server.rest, MODEL), GrpcClient(server.grpc, MODEL)
  try:
    for i in range(0, len(rows), batch):
      chunk = rows[i:i + batch]
      way = (i // batch) % 3
      if way == 0:
        rest.predict(chunk, 'predict_raw')
      elif way == 1:
        grpc_client.predict(chunk, 'serving_default')
      elif features.TASK == features.REGRESSION:
        grpc_client.regress(chunk)
      else:
        grpc_client.classify(chunk)
  finally:
    rest.close()
    grpc_client.close()


def resampled(rows, n, seed):
  """n rows drawn with replacement: a sample of the distribution rows are
  from, as large as a test needs whatever the size of the example's data."""
  import random
  return random.Random(seed).choices(rows, k=n)


def inflated(rows, name=NUMERIC, factor=1.2):
  """Every value of a numeric feature 20% higher (prices went up)."""
  scale = lambda v: v if v is None else round(v * factor) if isinstance(v, int) else v * factor
  return [{**r, name: scale(r.get(name))} for r in rows]


def concentrated(rows, name=CATEGORICAL, share=0.5, seed=0):
  """Half the rows take the feature's most common value: its share grows by
  half the rest (at least 0.2 for a value under 60%), beyond the L-infinity 0.1."""
  import collections
  import random
  top = collections.Counter(r[name] for r in rows if r.get(name) is not None).most_common(1)[0][0]
  rng = random.Random(seed)
  return [{**r, name: top} if rng.random() < share else r for r in rows]


def l_infinity_threshold(name):
  """The threshold of name's L-infinity skew comparator in the schema."""
  schema = monitoring.load_schema(str(SCHEMA))
  return next(f for f in schema.feature if f.name == name).skew_comparator.infinity_norm.threshold


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope='module')
def logs(tmp_path_factory, pushed_model):
  """Request log prefixes of three traffic mixes served by the pushed model."""
  tmp = tmp_path_factory.mktemp('monitoring')
  config_path = tmp / 'models.config'
  mixes = {'training': sample_rows()}
  mixes['numeric'] = inflated(mixes['training'])
  if CATEGORICAL:
    mixes['categorical'] = concentrated(mixes['training'])
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


@pytest.mark.slow  # The session pipeline run and a served model.
def test_lineage_finds_the_training_statistics_of_the_pushed_model(pipeline_run):
  config, summary = pipeline_run
  found = metadata.Lineage(config.metadata_path).of_pushed()
  assert found['statistics'].uri.startswith(os.path.join(config.pipeline_root, 'StatisticsGen'))
  assert found['examples'].custom_properties['span'].int_value == 1
  assert os.path.basename(summary['pushed_path']) == \
      found['pushed'].custom_properties['pushed_version'].string_value
  assert 'CuratedSchemaGen' in found['schema'].uri


@pytest.mark.slow  # The session pipeline run and a served model.
def test_traffic_like_the_training_data_raises_nothing(logs, inputs, pushed_version_dir):
  result, _ = monitoring.run(inputs(logs['training']))
  # Judged against the training data of the version the server logged.
  version = int(os.path.basename(pushed_version_dir))
  assert result['version'] == version and list(result['versions']) == [str(version)]
  assert result['training']['pushed_version'] == str(version)
  served = sum(w['examples'] for w in result['windows'])
  assert served == len(sample_rows())
  assert result['records']['corrupt'] == 0
  assert result['findings'] == {'skew': [], 'drift': [], 'serving_anomalies': [],
                                'prediction_shift': []}, result['windows']
  assert not monitoring.drift_or_skew_found(result)
  assert monitoring.exit_code(result) == monitoring.EXIT_OK


@pytest.mark.slow  # The session pipeline run and a served model.
@needs_a_categorical
def test_a_categorical_mix_shift_is_skew_on_it_only(logs, inputs):
  result, _ = monitoring.run(inputs(logs['categorical']))
  assert result['findings']['skew'] == [CATEGORICAL]
  skew = result['windows'][0]['skew'][CATEGORICAL]
  assert skew['measure'] == 'L_INFTY'
  assert skew['value'] > skew['threshold'] == pytest.approx(l_infinity_threshold(CATEGORICAL))
  assert monitoring.drift_or_skew_found(result)
  assert monitoring.exit_code(result) == monitoring.EXIT_DRIFT_OR_SKEW


@pytest.mark.slow  # The session pipeline run and a served model.
def test_numeric_inflation_is_skew_on_it_only(logs, inputs):
  result, _ = monitoring.run(inputs(logs['numeric']))
  assert result['findings']['skew'] == [NUMERIC]
  assert result['windows'][0]['skew'][NUMERIC]['measure'] == 'JENSEN_SHANNON_DIVERGENCE'


def _retimed(prefix, destination, timestamp, counts):
  """The logs of prefix as if served at timestamp (windows an hour apart)."""
  import tensorflow as tf
  with tf.io.TFRecordWriter(str(destination)) as writer:
    for log in log_reader.read_logs(prefix, counts):
      log.log_metadata.timestamp_secs = timestamp
      writer.write(log.SerializeToString())


@pytest.mark.slow  # The session pipeline run and a served model.
def test_drift_between_consecutive_windows(logs, inputs, tmp_path):
  counts = log_reader.LogReadCounts()
  _retimed(logs['training'], tmp_path / 'a.tfrecord', 1_700_000_000, counts)
  _retimed(logs['numeric'], tmp_path / 'b.tfrecord', 1_700_003_600, counts)
  result, _ = monitoring.run(inputs(str(tmp_path / '*.tfrecord'), window_seconds=3600))
  first, second = result['windows']
  assert first['drift'] == {} and first['skew_anomalies'] == {}
  assert second['compared_to_window'] == first['start']
  assert sorted(second['drift_anomalies']) == [NUMERIC]
  assert result['findings']['drift'] == [NUMERIC]


def _frame(payload: bytes) -> bytes:
  header = struct.pack('<Q', len(payload))
  return (header + struct.pack('<I', log_reader._masked_crc(header)) + payload +
          struct.pack('<I', log_reader._masked_crc(payload)))


@pytest.mark.slow  # The session pipeline run and a served model.
def test_corrupt_records_are_skipped_and_counted(logs, inputs, tmp_path):
  source = log_reader.log_files(logs['numeric'])
  assert len(source) == 1
  good = source[0]
  records = list(log_reader._tfrecords(good, log_reader.LogReadCounts()))
  damaged = bytearray(_frame(records[0]))
  damaged[20] ^= 0xFF  # A flipped payload byte: the data checksum fails.
  broken = tmp_path / 'logs-broken.tfrecord'
  broken.write_bytes(bytes(damaged) + _frame(b'not a PredictionLog \xff\xff') +
                     pathlib.Path(good).read_bytes() + _frame(records[1])[:-7])  # Torn tail.
  result, _ = monitoring.run(inputs(str(broken)))
  assert result['records']['corrupt'] == 3
  assert result['records']['records'] == len(records)
  assert result['findings']['skew'] == [NUMERIC]


@pytest.mark.slow  # The session pipeline run and a served model.
def test_cli_writes_json_and_html_and_exit_code_says_skew(logs, pipeline_run, tmp_path):
  config, _ = pipeline_run
  code = monitoring.main(['--logs', logs['numeric'], '--metadata', config.metadata_path,
                          '--out', str(tmp_path)])
  assert code == monitoring.EXIT_DRIFT_OR_SKEW
  result = json.loads((tmp_path / 'monitoring.json').read_text())
  assert result['findings']['skew'] == [NUMERIC]
  assert monitoring.drift_or_skew_found(result)
  html = (tmp_path / 'monitoring.html').read_text()
  assert 'JENSEN_SHANNON_DIVERGENCE' in html and '<svg class="chart"' in html


@pytest.mark.slow  # The session pipeline run and a served model.
def test_monitoring_report_renders_in_chromium(logs, inputs, tmp_path):
  from tests.test_report import render
  result, statistics = monitoring.run(inputs(logs['numeric']))
  paths = monitoring.write_outputs(result, statistics, str(tmp_path))
  charts, dom = render(paths['html'], tmp_path)
  # Every chart drawn: training vs serving for every model feature, plus predictions.
  assert charts == dom.count('<svg class="chart"') >= len(features.model_features()) + 1
  for name, spec in features.model_features().items():
    shown = 'share' if spec.kind in ('categorical', 'vocab') else 'cumulative share'
    assert f'aria-label="{name} ({shown})"' in dom, name


# ---- distributions: samples of the training data and real shifts (no server) -----------
#
# Request logs written as the server writes them (PredictionLog, serving_default
# tf.Examples), monitored against statistics of the shipped CSV: the training
# data of a pipeline run on it (TFDV statistics, as StatisticsGen computes them).


def _typed(header, rows):
  from client.predict import typed_row
  return [typed_row(dict(zip(header, row))) for row in rows]


def write_request_logs(path, rows, version=1, timestamp=1_700_000_000, model=MODEL, batch=100):
  """rows as predict requests of serving_default, logged as the server logs them."""
  import tensorflow as tf
  from client.predict import to_example
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
  """The shipped rows as tf.Examples hold them, in training (ExampleGen) and
  in served requests alike: floats are float32 (0.2 is 0.20000000298...)."""
  header, rows = conftest.read_shipped_rows()
  return header, [features.from_example(features.to_example(r)) for r in _typed(header, rows)]


@pytest.fixture(scope='module')
def shipped_statistics(tmp_path_factory, shipped):
  """A StatisticsGen-like output dir: statistics of the whole shipped CSV."""
  _, rows = shipped
  root = tmp_path_factory.mktemp('training_statistics')
  (root / 'Split-train').mkdir()
  stats = monitoring.statistics_of(rows, monitoring.load_schema(str(SCHEMA)))
  (root / 'Split-train' / 'FeatureStats.pb').write_bytes(stats.SerializeToString())
  return str(root)


def monitor_windows(tmp_path, statistics_dir, *windows):
  """Monitoring of hourly windows of rows (one log file each) against statistics_dir."""
  for i, rows in enumerate(windows):
    write_request_logs(tmp_path / f'requests-{i}.tfrecord', rows, timestamp=1_700_000_000 + 3600 * i)
  result, _ = monitoring.run(monitoring.MonitoringInputs(
      logs=str(tmp_path / 'requests-*.tfrecord'), model_name=MODEL,
      training_statistics=statistics_dir, schema_file=str(SCHEMA)))
  assert [w['examples'] for w in result['windows']] == [len(w) for w in windows]
  return result


def _generated(header, n, seed, **drift):
  from data import generate_taxi as generate
  return _typed(header, [r for chunk in generate.generate_rows(n, seed, generate.Drift(**drift))
                         for r in chunk])


@pytest.mark.parametrize('n', [500, 2000, 10000])
def test_samples_of_the_training_data_raise_no_skew_or_drift(n, shipped, shipped_statistics,
                                                            tmp_path):
  _, rows = shipped
  result = monitor_windows(tmp_path, shipped_statistics, resampled(rows, n, 1),
                           resampled(rows, n, 2))
  assert result['findings']['skew'] == [] and result['findings']['drift'] == [], \
      [(w['skew'], w['drift']) for w in result['windows']]
  numeric = result['windows'][0]['skew'][NUMERIC]
  assert numeric['measure'] == 'JENSEN_SHANNON_DIVERGENCE'
  assert numeric['value'] < numeric['threshold']


@pytest.mark.parametrize('n', [500, 2000])
def test_a_numeric_feature_20_percent_higher_is_skew_and_drift_on_it_only(
    n, shipped, shipped_statistics, tmp_path):
  _, rows = shipped
  result = monitor_windows(tmp_path, shipped_statistics, resampled(rows, n, 1),
                           inflated(resampled(rows, n, 2)))
  clean, shifted = result['windows']
  assert clean['skew_anomalies'] == {}
  assert sorted(shifted['skew_anomalies']) == [NUMERIC]
  assert sorted(shifted['drift_anomalies']) == [NUMERIC]
  assert result['findings']['skew'] == result['findings']['drift'] == [NUMERIC]
  assert monitoring.exit_code(result) == monitoring.EXIT_DRIFT_OR_SKEW


@needs_a_categorical
def test_a_categorical_mix_change_is_skew_on_it_only(shipped, shipped_statistics, tmp_path):
  _, rows = shipped
  result = monitor_windows(tmp_path, shipped_statistics, concentrated(resampled(rows, 2000, 1)))
  assert result['findings']['skew'] == [CATEGORICAL]
  skew = result['windows'][0]['skew'][CATEGORICAL]
  assert skew['measure'] == 'L_INFTY' and skew['value'] > skew['threshold']
  assert monitoring.exit_code(result) == monitoring.EXIT_DRIFT_OR_SKEW


def test_the_report_shows_the_skew_and_a_plot_of_every_model_feature(shipped, shipped_statistics,
                                                                     tmp_path):
  from tests.test_report import read_page, table_dict
  _, rows = shipped
  write_request_logs(tmp_path / 'requests.tfrecord', inflated(resampled(rows, 600, 1)))
  result, statistics = monitoring.run(monitoring.MonitoringInputs(
      logs=str(tmp_path / 'requests.tfrecord'), model_name=MODEL,
      training_statistics=shipped_statistics, schema_file=str(SCHEMA)))
  paths = monitoring.write_outputs(result, statistics, str(tmp_path / 'out'))
  page = read_page(pathlib.Path(paths['html']).read_text())
  skew = table_dict(page.tables['Skew: training vs serving'][0])
  assert skew[NUMERIC]['measure'] == 'JENSEN_SHANNON_DIVERGENCE'
  assert [name for name, row in skew.items() if row['result'] != 'ok'] == [NUMERIC]
  drawn = {label.split(' (')[0] for label in page.charts}
  assert set(features.model_features()) <= drawn, set(features.model_features()) - drawn
  assert not drawn & set(features.label_columns())  # The label is never served.


@pytest.mark.example('taxi')  # The taxi data generator's traffic.
def test_generated_traffic_without_drift_raises_nothing(shipped, shipped_statistics, tmp_path):
  header, _ = shipped
  result = monitor_windows(tmp_path, shipped_statistics, _generated(header, 2000, 1),
                           _generated(header, 2000, 2))
  assert result['findings']['skew'] == [] and result['findings']['drift'] == []


@pytest.mark.example('taxi')  # A string vocabulary, moved by the generator's payment mix.
def test_payment_mix_change_is_skew_on_payment_type_only(shipped, shipped_statistics, tmp_path):
  header, _ = shipped
  result = monitor_windows(tmp_path, shipped_statistics,
                           _generated(header, 2000, 1, payment_mix={'Credit Card': 0.6}))
  assert result['findings']['skew'] == ['payment_type']
  assert monitoring.exit_code(result) == monitoring.EXIT_DRIFT_OR_SKEW


def _quantiles_histogram(buckets):
  from tensorflow_metadata.proto.v0 import statistics_pb2
  histogram = statistics_pb2.Histogram(type=statistics_pb2.Histogram.QUANTILES)
  for low, high, count in buckets:
    histogram.buckets.add(low_value=low, high_value=high, sample_count=count)
  return histogram


def test_served_values_are_counted_in_the_training_quantile_buckets():
  # Training: 6 values, one per bucket; 0 is a point mass of two buckets.
  histogram = _quantiles_histogram([(0, 0, 1), (0, 0, 1), (0, 1, 1), (1, 5, 1), (5, 5, 1),
                                    (5, 10, 1)])
  # -3 and 700 lie beyond the training's extremes: they count in the end
  # buckets. The ties at 0 and at 5 are shared as the training's shares them.
  counts = monitoring.bucket_counts(histogram.buckets, [-3, 0, 0, 0.5, 1, 3, 5, 7, 700])
  assert counts == pytest.approx([1.5, 1.5, 1.5, 1.5, 1, 2])
  assert sum(counts) == 9


def test_the_training_data_counted_in_its_own_quantile_buckets_gives_their_counts(shipped):
  """Repeated values (iris's petal widths, diabetes's tch) sit on bucket
  boundaries that TFDV's quantiles split between buckets: counting them all
  in one bucket made the training data itself skewed from its statistics
  (JS 0.1, threshold 0.015) and every clean window an alarm."""
  _, rows = shipped
  schema = monitoring.load_schema(str(SCHEMA))
  stats = monitoring.statistics_of(rows, schema)
  checked = 0
  for name in monitoring.jsd_features(schema):
    if name not in features.RAW_FEATURES:
      continue  # The label: never served.
    histogram = monitoring._quantiles(monitoring._feature_stats(stats, name))
    values = [r[name] for r in rows if r.get(name) is not None]
    expected = [b.sample_count for b in histogram.buckets]
    assert monitoring.bucket_counts(histogram.buckets, values) == pytest.approx(
        expected, abs=0.01 * len(values)), name
    checked += 1
  assert checked >= 1


# ---- lineage: the training data of the version that served ----------------------------


def _mlmd_with_two_pushes(path, pushes):
  """An MLMD store as the pipeline writes it, with one run per (version,
  statistics uri, schema uri): ExampleGen -> StatisticsGen, Trainer -> Pusher."""
  from ml_metadata import metadata_store
  from ml_metadata.proto import metadata_store_pb2 as mlmd
  connection = mlmd.ConnectionConfig()
  connection.sqlite.filename_uri = str(path)
  connection.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
  store = metadata_store.MetadataStore(connection)
  types = {name: store.put_artifact_type(mlmd.ArtifactType(name=name)) for name in
           ('Examples', 'ExampleStatistics', 'Schema', 'Model', 'PushedModel')}
  exec_type = store.put_execution_type(mlmd.ExecutionType(name='component'))

  def artifact(type_name, uri, **props):
    a = mlmd.Artifact(type_id=types[type_name], uri=str(uri))
    for k, v in props.items():
      if isinstance(v, int):
        a.custom_properties[k].int_value = v
      else:
        a.custom_properties[k].string_value = v
    return a

  def execution(inputs, outputs):
    events = [(a, mlmd.Event(type=mlmd.Event.INPUT)) for a in inputs] + \
             [(a, mlmd.Event(type=mlmd.Event.OUTPUT)) for a in outputs]
    store.put_execution(mlmd.Execution(type_id=exec_type), events, [])

  for version, statistics_uri, schema_uri in pushes:
    examples = artifact('Examples', f'/examples/{version}', span=1)
    [examples.id] = store.put_artifacts([examples])
    execution([], [examples])
    execution([examples], [artifact('ExampleStatistics', statistics_uri)])
    schema = artifact('Schema', schema_uri)
    [schema.id] = store.put_artifacts([schema])
    model = artifact('Model', f'/model/{version}')
    [model.id] = store.put_artifacts([model])
    execution([examples, schema], [model])
    execution([model], [artifact('PushedModel', f'/pushed/{version}', pushed=1,
                                 pushed_version=str(version),
                                 pushed_destination=f'/serving/{MODEL}/{version}')])


@pytest.fixture
def two_pushes(tmp_path, shipped_statistics):
  """MLMD of two runs: version 100, then version 200 (the newest push), each
  with its own statistics."""
  import shutil
  second = tmp_path / 'statistics-200'
  shutil.copytree(shipped_statistics, second)
  schema_dir = tmp_path / 'schema'
  schema_dir.mkdir()
  shutil.copy(SCHEMA, schema_dir / 'schema.pbtxt')
  path = tmp_path / 'metadata.sqlite'
  _mlmd_with_two_pushes(path, [(100, shipped_statistics, schema_dir), (200, second, schema_dir)])
  return str(path), {100: shipped_statistics, 200: str(second)}


@pytest.fixture(scope='module')
def traffic(shipped):
  """1,800 requests drawn from the shipped data (iris has 150 rows)."""
  return resampled(shipped[1], 1800, 0)


def test_lineage_follows_the_version_that_served_not_the_newest_push(two_pushes, traffic,
                                                                    tmp_path):
  metadata, statistics = two_pushes
  rows = traffic
  write_request_logs(tmp_path / 'requests.tfrecord', rows[:600], version=100)
  result, _ = monitoring.run(monitoring.MonitoringInputs(
      logs=str(tmp_path / 'requests.tfrecord'), metadata_path=metadata, model_name=MODEL))
  assert result['training']['statistics_uri'] == statistics[100]
  assert result['training']['pushed_version'] == '100'
  assert result['version'] == 100


def test_every_served_version_is_judged_against_its_own_push(two_pushes, traffic, tmp_path):
  metadata, statistics = two_pushes
  rows = traffic
  write_request_logs(tmp_path / 'requests-a.tfrecord', rows[:600], version=100)
  write_request_logs(tmp_path / 'requests-b.tfrecord', rows[600:1200], version=200)
  write_request_logs(tmp_path / 'requests-c.tfrecord', rows[1200:1800], version=7)
  result, _ = monitoring.run(monitoring.MonitoringInputs(
      logs=str(tmp_path / 'requests-*'), metadata_path=metadata, model_name=MODEL))
  assert result['version'] == 200  # The newest served: no stable label given.
  versions = result['versions']
  assert sorted(versions) == ['100', '200', '7']
  assert versions['100']['training']['statistics_uri'] == statistics[100]
  assert versions['200']['training']['statistics_uri'] == statistics[200]
  assert [w['examples'] for w in versions['100']['windows']] == [600]
  assert 'has no push of version 7' in versions['7']['not_judged']
  named, _ = monitoring.run(monitoring.MonitoringInputs(
      logs=str(tmp_path / 'requests-*'), metadata_path=metadata, model_name=MODEL,
      model_version=100))
  assert named['version'] == 100 and sorted(named['versions']) == ['100']


def test_a_version_mlmd_never_pushed_is_an_error(two_pushes, traffic, tmp_path, capsys):
  metadata, _ = two_pushes
  rows = traffic
  write_request_logs(tmp_path / 'requests.tfrecord', rows[:600], version=300)
  code = monitoring.main(['--logs', str(tmp_path / 'requests.tfrecord'), '--metadata', metadata,
                          '--out', str(tmp_path / 'out')])
  assert code == monitoring.EXIT_FAILED
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and 'no push of version 300' in err and '100, 200' in err


# ---- user errors: one line on stderr, exit 1 ---------------------------------------------


@pytest.fixture
def good_logs(tmp_path, traffic):
  path = tmp_path / 'good.tfrecord'
  write_request_logs(path, traffic[:600])
  return str(path)


def _one_line_error(capsys) -> str:
  captured = capsys.readouterr()
  err = captured.err.strip()
  assert err and '\n' not in err and 'Traceback' not in err, captured
  return err


def test_a_model_name_matching_nothing_in_the_logs_is_an_error(good_logs, shipped_statistics,
                                                              tmp_path, capsys):
  code = monitoring.main(['--logs', good_logs, '--model-name', f'{MODEL}_other',
                          '--training-statistics', shipped_statistics, '--schema', str(SCHEMA),
                          '--out', str(tmp_path / 'out')])
  assert code == monitoring.EXIT_FAILED
  err = _one_line_error(capsys)
  assert f"'{MODEL}_other'" in err and f'{MODEL}: 6' in err and '6 request logs' in err
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('case', ['no files', 'no mlmd', 'corrupt', 'not mlmd', 'version',
                                  'unversioned', 'too few'])
def test_user_errors_are_one_line_and_exit_1(case, good_logs, traffic, tmp_path, capsys):
  args = {'--logs': good_logs, '--metadata': str(tmp_path / 'metadata.sqlite'),
          '--out': str(tmp_path / 'out')}
  if case == 'no files':
    args['--logs'] = str(tmp_path / 'nothing-here')
  elif case == 'corrupt':
    (tmp_path / 'corrupt.tfrecord').write_bytes(b'\x07 not a TFRecord ' * 40)
    args['--logs'] = str(tmp_path / 'corrupt.tfrecord')
  elif case == 'not mlmd':
    (tmp_path / 'metadata.sqlite').write_text('not a database')
  elif case == 'version':
    args['--model-version'] = '5'
  elif case == 'unversioned':
    write_request_logs(tmp_path / 'unversioned.tfrecord', traffic[:600], version=0)
    args['--logs'] = str(tmp_path / 'unversioned.tfrecord')
  elif case == 'too few':
    args['--min-window-examples'] = '601'  # good_logs: 600 examples in one window.
  code = monitoring.main([x for kv in args.items() for x in kv])
  assert code == monitoring.EXIT_FAILED
  err = _one_line_error(capsys)
  expected = {'no files': 'no request log files match', 'no mlmd': 'no MLMD at',
              'corrupt': 'hold no readable PredictionLog', 'not mlmd': 'not a readable MLMD',
              'version': 'version 5 served nothing',
              'unversioned': 'do not say which model version',
              'too few': 'holds 601 examples (at most 600 in 1 windows)'}[case]
  assert expected in err, err


def test_usage_errors_exit_1_not_the_skew_status(capsys):
  with pytest.raises(SystemExit) as exit_info:
    monitoring.main(['--window-seconds', 'hourly'])
  assert exit_info.value.code == monitoring.EXIT_FAILED != monitoring.EXIT_DRIFT_OR_SKEW
  assert 'error' in _one_line_error(capsys).splitlines()[-1]


def test_help_shows_defaults_exit_codes_and_environment(capsys, monkeypatch):
  monkeypatch.setenv('TAXI_MODEL_NAME', 'taxi_other')
  with pytest.raises(SystemExit) as exit_info:
    monitoring.main(['--help'])
  assert exit_info.value.code == 0
  out = ' '.join(capsys.readouterr().out.split())  # Unwrapped.
  assert '(default: taxi_other)' in out and '(default: 500)' in out
  assert 'exit status' in out and '2 skew or drift found' in out and 'TAXI_OUTPUT_ROOT' in out


def test_defaults_come_from_the_pipeline_config_and_outputs_go_under_its_output_root(
    monkeypatch, tmp_path):
  from pipeline import configs
  args = monitoring.parse_args(['--logs', 'x'])
  config = configs.load()
  assert args.model_name == config.model_name
  assert args.metadata == config.metadata_path
  assert args.out == os.path.join(config.path(config.output_root), 'monitoring')
  ignored = subprocess.run(['git', 'check-ignore', '-q', os.path.join(args.out, 'monitoring.json')],
                           cwd=str(conftest.REPO), check=False)
  assert ignored.returncode == 0, 'the default output is not git-ignored'
  monkeypatch.setenv('TAXI_OUTPUT_ROOT', str(tmp_path))
  monkeypatch.setenv('TAXI_MODEL_NAME', 'taxi_other')
  args = monitoring.parse_args(['--logs', 'x'])
  assert (args.out, args.metadata, args.model_name) == (
      str(tmp_path / 'monitoring'), str(tmp_path / 'metadata.sqlite'), 'taxi_other')


@pytest.mark.slow
def test_a_closed_stdout_is_one_line_on_stderr(good_logs, shipped_statistics, tmp_path):
  process = subprocess.Popen(
      [sys.executable, '-m', 'operations.monitoring', '--logs', good_logs,
       '--training-statistics', shipped_statistics, '--schema', str(SCHEMA),
       '--out', str(tmp_path / 'out')],
      cwd=str(conftest.REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'PYTHONWARNINGS': 'ignore'})
  process.stdout.close()  # The reader went away, as with `| head -0`.
  err = process.stderr.read().decode()
  assert process.wait() == monitoring.EXIT_FAILED
  assert 'Traceback' not in err and err.strip().splitlines()[-1] == \
      'monitoring: stdout was closed before the summary was written', err
  assert (tmp_path / 'out' / 'monitoring.json').exists()


def test_the_report_plots_the_predictions_under_the_name_monitoring_followed():
  """A multi-class or regression run follows 'top_probability' or
  'prediction', not 'probability': the plot must read that one (it drew
  'no statistics' for every task but binary)."""
  import pandas as pd
  import tensorflow_data_validation as tfdv
  from reports import monitoring_report
  name = 'top_probability'
  stats = tfdv.generate_statistics_from_dataframe(pd.DataFrame({name: [0.4, 0.7, 0.9]}))
  result = {'prediction_name': name, 'labels': {}, 'predictions_by_version': {
      '1': dict(monitoring.prediction_summary([0.4, 0.7, 0.9]), compared_to=None, shift=None)}}
  predictions = monitoring_report._predictions(result, {'predictions': {1: stats}})
  assert 'data-empty' not in predictions['plot'] and name in predictions['plot']
  assert predictions['header'][3] == f'mean {name}'
  (row,) = predictions['rows']
  assert row[:8] == ['1', '', '3', '0.6667', '0.2055', '0.4600', '0.7000', '0.8600']


def test_a_prediction_summary_has_mean_spread_and_quantiles():
  summary = monitoring.prediction_summary([1.0, 2.0, 3.0, 4.0, 5.0])
  assert summary['count'] == 5 and summary['mean'] == 3.0
  assert summary['std'] == pytest.approx(2 ** 0.5)
  assert summary['quantiles'] == {'p10': 1.4, 'p50': 3.0, 'p90': pytest.approx(4.6)}
