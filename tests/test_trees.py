"""The gradient-boosted trees family (models/trees.py), selected in config,
through what a user runs: the pipeline (Trainer, Evaluator against the other
family's blessed model, infra check, Pusher), the local server over REST and
gRPC and the clients, every answer checked against the SavedModel called in
this process."""

import base64
import glob
import io
import json
import os
import shutil

import numpy as np
import pytest

from client import predict as serving_client
from models import features
from models import hyperparameters
from pipeline import configs
from pipeline import metadata
from tests.conftest import REPO, SHIPPED_CSV, small_config

TREES = {'run_fn': 'models.trees.run_fn'}
# Few trees: quick, and still clearly better than chance on the sample.
FEW_TREES = {'num_trees': 40, 'max_depth': 4, 'shrinkage': 0.2, 'min_examples': 5,
             'early_stopping_num_trees_look_ahead': 10}
# One shallow tree: far below any trained model, so it must not be blessed.
ONE_STUMP = {'num_trees': 1, 'max_depth': 2, 'shrinkage': 0.1}
MODEL = configs.load(environ={}).model_name  # The selected example's.
SIGNATURE_METHODS = {'serving_default': 'tensorflow/serving/predict',
                     'classification': 'tensorflow/serving/classify',
                     'regression': 'tensorflow/serving/regress',
                     'predict_raw': 'tensorflow/serving/predict',
                     'transform_features': 'tensorflow/serving/predict'}
REQUIRED = [n for n, f in features.RAW_FEATURES.items() if f.required]


# ---- config and hyperparameters (no training) ---------------------------------------

def test_the_trees_are_selected_by_two_variables():
  config = configs.load(environ={
      'TAXI_RUN_FN': 'models.trees.run_fn',
      'TAXI_HYPERPARAMETERS_FILE': 'models/trees_hyperparameters.json'})
  assert config.run_fn == 'models.trees.run_fn'
  with open(config.path(config.hyperparameters_file)) as f:
    assert 'num_trees' in json.load(f)


def test_every_tree_key_is_a_known_hyperparameter():
  from models import trees
  assert set(trees.TREE_KEYS) <= set(hyperparameters.KNOWN_KEYS)
  assert set(trees.default_hparams()) <= set(trees.TREE_KEYS) | {'seed'}


def test_the_default_familys_hyperparameters_are_refused_naming_the_file():
  # TAXI_RUN_FN set, TAXI_HYPERPARAMETERS_FILE forgotten: the trees would
  # otherwise silently grow with TF-DF's defaults.
  from tfx.components.trainer.fn_args_utils import FnArgs
  from models import model, trees
  fn_args = FnArgs(custom_config={'hyperparameters': json.dumps(model.default_hparams())})
  with pytest.raises(ValueError, match='TAXI_HYPERPARAMETERS_FILE=models/trees_hyperparameters'):
    trees.hparams_from(fn_args)


def test_ids_are_categories_and_quantities_are_numbers():
  from models import trees
  import tensorflow_decision_forests as tfdf
  from models import preprocessing
  semantics = {u.name: u.semantic for u in trees.feature_usages()}
  phases = {preprocessing.phase_name(n) for n, f in features.model_features().items() if f.period}
  assert set(semantics) == {features.transformed_name(n) for n in features.model_features()} | phases
  assert all(semantics[p] == tfdf.keras.FeatureSemantic.NUMERICAL for p in phases)
  categorical = tfdf.keras.FeatureSemantic.CATEGORICAL
  for name, spec in features.model_features().items():
    # Vocabulary ids and ints marked categorical are categories; a number,
    # and a bucket index (it keeps the value's order), are numbers.
    is_id = spec.kind in ('vocab', 'categorical')
    assert (semantics[features.transformed_name(name)] == categorical) == is_id, name


# ---- the pipeline: trees, then the default family, then a weak tree ----------------------

def _hparams_file(tmp, name, values):
  path = tmp / f'{name}.json'
  path.write_text(json.dumps(values))
  return str(path)


def _evaluator_line(summary):
  (line,) = [c['result'] for c in summary['components'] if c['component'] == 'Evaluator']
  return line


def _latest(config, node, key):
  store = metadata.open_store(config.metadata_path)
  return metadata.LatestRun(store, config.pipeline_name, node).one(key)


def _failed_thresholds(config):
  """(metric, what its threshold said) for each threshold the last Evaluator failed."""
  import tensorflow_model_analysis as tfma
  result = tfma.load_validation_result(_latest(config, 'Evaluator', 'evaluation').uri)
  return [(failure.metric_key.name,
           'change_threshold' if failure.metric_threshold.HasField('change_threshold')
           else 'value_threshold')
          for per_slice in result.metric_validations_per_slice
          for failure in per_slice.failures]


def _run(config):
  import local_runner
  summary = local_runner.run(config, stream=io.StringIO())
  assert summary['succeeded'], summary['error']
  summary['model_dir'] = os.path.join(_latest(config, 'Trainer', 'model').uri, 'Format-Serving')
  summary['failed_thresholds'] = _failed_thresholds(config)
  return summary


@pytest.fixture(scope='module')
def family_configs(tmp_path_factory, sample_data_root):
  """One output root for all, as a user switching families would have."""
  tmp = tmp_path_factory.mktemp('trees')
  return {
      'trees': small_config(tmp, sample_data_root, **TREES,
                            hyperparameters_file=_hparams_file(tmp, 'few', FEW_TREES)),
      'default': small_config(tmp, sample_data_root),
      'stump': small_config(tmp, sample_data_root, **TREES,
                            hyperparameters_file=_hparams_file(tmp, 'stump', ONE_STUMP)),
  }


# Three runs in this order: the trees (no baseline yet), the default family
# (baseline: the trees), one shallow tree (baseline: the better of the two).
@pytest.fixture(scope='module')
def trees_run(family_configs):
  return _run(family_configs['trees'])


@pytest.fixture(scope='module')
def default_run(family_configs, trees_run):
  return _run(family_configs['default'])


@pytest.fixture(scope='module')
def stump_run(family_configs, default_run):
  return _run(family_configs['stump'])


@pytest.mark.slow
def test_the_trees_are_trained_blessed_checked_and_pushed(trees_run):
  trees = trees_run
  assert trees['blessed'] and trees['pushed'], trees
  assert 'no baseline yet' in _evaluator_line(trees)
  assert trees['metrics']['auc'] > 0.8 and trees['metrics']['accuracy'] > 0.8
  by_name = {c['component']: c['result'] for c in trees['components']}
  assert by_name['InfraValidator'] == 'serves over REST and gRPC'
  assert trees['serving_version'] == int(os.path.basename(trees['pushed_path']))
  # The pushed model is the trees' model: TF-DF's tree files are in its assets.
  assert glob.glob(os.path.join(trees['pushed_path'], 'assets', '*header.pb'))


@pytest.mark.slow
def test_the_default_family_is_pushed_only_if_not_worse_than_the_blessed_trees(
    family_configs, trees_run, default_run):
  trees, default, config = trees_run, default_run, family_configs['default']
  assert 'vs baseline model #' in _evaluator_line(default)
  not_worse = default['metrics']['auc'] >= trees['metrics']['auc'] - config.max_auc_drop
  assert default['blessed'] == not_worse, (default['metrics'], trees['metrics'])
  assert default['pushed'] == not_worse
  if not not_worse:
    assert ('auc', 'change_threshold') in default['failed_thresholds']
    assert default['serving_version'] == trees['serving_version']  # The trees still serve.


@pytest.mark.slow
def test_a_worse_tree_is_not_blessed_and_the_better_model_keeps_serving(stump_run,
                                                                      default_run):
  stump, before = stump_run, default_run
  assert 'vs baseline model #' in _evaluator_line(stump)
  assert 'NOT blessed' in _evaluator_line(stump)
  assert not stump['blessed'] and not stump['pushed']
  # The reason: AUC below the blessed baseline's by more than max_auc_drop.
  assert ('auc', 'change_threshold') in stump['failed_thresholds'], stump['failed_thresholds']
  assert stump['serving_version'] == before['serving_version']


@pytest.mark.slow
def test_the_trees_export_the_default_familys_signatures(trees_run, default_run):
  import tensorflow as tf

  def signature_defs(path):
    loaded = tf.saved_model.load(path)
    return {name: (sorted(f.structured_input_signature[1]), sorted(f.structured_outputs))
            for name, f in loaded.signatures.items()}

  assert signature_defs(trees_run['model_dir']) == signature_defs(default_run['model_dir'])
  from tensorflow.core.protobuf import saved_model_pb2
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(trees_run['model_dir'], 'saved_model.pb'), 'rb') as f:
    saved_model.ParseFromString(f.read())
  methods = {k: v.method_name for k, v in saved_model.meta_graphs[0].signature_def.items()
             if not k.startswith('__')}
  assert methods == SIGNATURE_METHODS


@pytest.mark.slow
def test_the_same_data_and_seed_grow_the_same_trees(family_configs, trees_run, tmp_path):
  """run_fn again, in this process, on the trees run's Transform output:
  the same answers as the model the pipeline pushed."""
  import tensorflow as tf
  from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
  from tfx.components.util import tfxio_utils
  from tfx.types import standard_artifacts
  from models import trees
  config = family_configs['trees']
  store = metadata.open_store(config.metadata_path)
  transform = metadata.LatestRun(store, config.pipeline_name, 'Transform')
  examples = standard_artifacts.Examples()
  examples.set_mlmd_artifact(transform.one('transformed_examples'))
  fn_args = FnArgs(
      train_files=[os.path.join(examples.uri, 'Split-train', '*')],
      eval_files=[os.path.join(examples.uri, 'Split-eval', '*')],
      transform_output=transform.one('transform_graph').uri,
      serving_model_dir=str(tmp_path / 'again'),
      custom_config={'hyperparameters': json.dumps(FEW_TREES)},
      data_accessor=DataAccessor(tfxio_utils.get_tf_dataset_factory_from_artifact(
          [examples], []), None, None))
  trees.run_fn(fn_args)
  rows = _csv_rows()
  serialized = tf.constant([serving_client.to_example(r) for r in rows])
  again = tf.saved_model.load(fn_args.serving_model_dir).signatures['serving_default']
  pushed = tf.saved_model.load(trees_run['pushed_path']).signatures['serving_default']
  np.testing.assert_array_equal(again(examples=serialized)['probability'].numpy(),
                                pushed(examples=serialized)['probability'].numpy())


# ---- served by the local server ---------------------------------------------------------

def _csv_rows(count=30):
  with open(SHIPPED_CSV) as f:
    rows = serving_client.rows_from_csv(f)
    return [next(rows) for _ in range(count)]


@pytest.fixture(scope='module')
def trees_server(trees_run, tmp_path_factory):
  """The pushed trees model alone in a base path, served by a server subprocess."""
  from serving.server_process import ServerProcess
  version_dir = trees_run['pushed_path']
  base = tmp_path_factory.mktemp('trees_serving') / MODEL
  shutil.copytree(version_dir, base / os.path.basename(version_dir))
  with ServerProcess(f'--model_name={MODEL}', f'--model_base_path={base}') as server:
    server.wait_until_available(MODEL)
    yield server


@pytest.fixture(scope='module')
def in_process(trees_run):
  """The pushed trees model's signatures called in this process."""
  import tensorflow as tf
  loaded = tf.saved_model.load(trees_run['pushed_path'])

  def examples(rows):
    return tf.constant([serving_client.to_example(r) for r in rows])

  def serving_default(rows):
    return loaded.signatures['serving_default'](examples=examples(rows))['probability'].numpy()

  def predict_raw(rows):
    columns = {}
    for name, spec in features.RAW_FEATURES.items():
      values = [r[name] for r in _complete(rows)]
      columns[name] = tf.constant(values, {'float': tf.float32, 'int': tf.int64,
                                           'string': tf.string}[spec.dtype])
    return loaded.signatures['predict_raw'](**columns)['probability'].numpy()

  def classification(rows):
    return loaded.signatures['classification'](inputs=examples(rows))['scores'].numpy()

  return {'serving_default': serving_default, 'predict_raw': predict_raw,
          'classification': classification}


def _float32(values):
  """JSON numbers as the float32 the model computed: the server prints each
  float32 in its shortest exact form, so the cast gives back the very value."""
  return np.asarray(values, np.float64).astype(np.float32)


def _post(server, body, method='predict'):
  import requests
  response = requests.post(f'{server.rest}/v1/models/{MODEL}:{method}', json=body, timeout=60)
  assert response.status_code == 200, response.text
  return response.json()


def _complete(rows):
  """Typed rows with every raw feature, a missing one at its default (what
  Transform fills in): every row of a request then has the same inputs."""
  return [{n: r.get(n, f.default) for n, f in features.RAW_FEATURES.items()} for r in rows]


@pytest.mark.slow
def test_rest_answers_are_the_in_process_answers(trees_server, in_process):
  rows = _complete(_csv_rows())
  expected = in_process['serving_default'](rows)
  assert len(set(np.round(expected, 4))) > 1  # The rows really differ.
  b64 = [{'b64': base64.b64encode(serving_client.to_example(r)).decode()} for r in rows]
  body = _post(trees_server, {'instances': b64})
  np.testing.assert_array_equal(_float32([p['probability'] for p in body['predictions']]),
                                expected)
  body = _post(trees_server, {'signature_name': 'predict_raw', 'instances': rows})
  np.testing.assert_array_equal(_float32([p['probability'] for p in body['predictions']]),
                                in_process['predict_raw'](rows))
  np.testing.assert_array_equal(in_process['predict_raw'](rows), expected)
  examples = [serving_client.typed_row(r) for r in rows]
  results = _post(trees_server, {'signature_name': 'classification', 'examples': examples},
                  'classify')['results']
  np.testing.assert_array_equal(_float32([[score for _, score in r] for r in results]),
                                in_process['classification'](rows))
  results = _post(trees_server, {'signature_name': 'regression', 'examples': examples},
                  'regress')['results']
  np.testing.assert_array_equal(_float32(results), expected)


@pytest.mark.slow
def test_grpc_answers_are_the_in_process_answers(trees_server, in_process):
  import grpc
  import tensorflow as tf
  from tensorflow_serving.apis import (classification_pb2, predict_pb2,
                                       prediction_service_pb2_grpc)
  rows = _complete(_csv_rows())
  with grpc.insecure_channel(trees_server.grpc_target) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs['examples'].CopyFrom(tf.make_tensor_proto(
        [serving_client.to_example(r) for r in rows], tf.string))
    response = stub.Predict(request, timeout=60)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs['probability']),
                                  in_process['serving_default'](rows))
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, 'classification'
    for row in rows:
      request.input.example_list.examples.add().ParseFromString(serving_client.to_example(row))
    response = stub.Classify(request, timeout=60)
    np.testing.assert_array_equal(
        [[c.score for c in r.classes] for r in response.result.classifications],
        in_process['classification'](rows))


@pytest.mark.slow
@pytest.mark.parametrize('transport', ['rest', 'grpc'])
@pytest.mark.parametrize('signature', ['predict_raw', 'serving_default', 'classification'])
def test_the_client_gets_the_in_process_answers(trees_server, in_process, transport, signature):
  rows = _csv_rows()  # As read from a CSV: optional features may be missing.
  if transport == 'rest':
    client = serving_client.RestClient(trees_server.rest, timeout_s=60)
  else:
    client = serving_client.GrpcClient(trees_server.grpc_target, timeout_s=60)
  try:
    call = client.classify if signature == 'classification' else client.predict
    got = call(rows, signature)
  finally:
    client.close()
  expected = in_process['serving_default'](_complete(rows))
  np.testing.assert_array_equal(_float32([p['probability'] for p in got]), expected)
  assert [p['class'] for p in got] == [int(p > 0.5) for p in expected]


# ---- the multi-class example ------------------------------------------------------------

def _iris_env():
  import examples
  env = {k: v for k, v in os.environ.items() if not k.startswith(configs.ENV_PREFIX)}
  env.update({'PYTHONPATH': str(REPO), 'TF_USE_LEGACY_KERAS': '1', 'TF_CPP_MIN_LOG_LEVEL': '3',
              examples.SWITCH: 'iris', 'TAXI_RUN_FN': 'models.trees.run_fn',
              'TAXI_HYPERPARAMETERS_FILE': 'models/trees_hyperparameters.json'})
  return env


def _run_iris(*args):
  import subprocess
  import sys
  result = subprocess.run([sys.executable, *args], cwd=REPO, env=_iris_env(),
                          capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, f'{args} exited {result.returncode}:\n{result.stderr[-3000:]}'
  return result.stdout


@pytest.mark.slow  # The pipeline and a server, as subprocesses of the iris example.
def test_iris_trees_are_pushed_and_the_client_gets_the_in_process_answers(tmp_path):
  import csv
  import tensorflow as tf
  from examples import iris
  from serving.server_process import ServerProcess
  serving_dir, summary_file = tmp_path / 'serving_model', tmp_path / 'summary.json'
  _run_iris('local_runner.py', '--output-root', str(tmp_path / 'tfx_output'),
            '--serving-dir', str(serving_dir), '--summary-json', str(summary_file))
  summary = json.loads(summary_file.read_text())
  assert summary['blessed'] and summary['pushed'], summary

  with open(REPO / iris.CONFIG_DEFAULTS['data_root'] / 'span-1' / 'data.csv', newline='') as f:
    rows = list(csv.DictReader(f))[::15]  # 10 rows, every species.
  sample = tmp_path / 'rows.csv'
  with open(sample, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  with ServerProcess('--model_name=iris', f'--model_base_path={serving_dir / "iris"}',
                     env=_iris_env()) as server:
    server.wait_until_available('iris')
    out = _run_iris('-m', 'client.predict', '--rest', server.rest, '--model_name', 'iris',
                    '--csv', str(sample), '--signature', 'predict_raw')
  answers = [json.loads(line) for line in out.splitlines()]

  import tensorflow_decision_forests  # noqa: F401  Registers the ops the trees load with.
  examples = [tf.train.Example(features=tf.train.Features(feature={
      name: tf.train.Feature(float_list=tf.train.FloatList(value=[float(r[name])]))
      for name in iris.RAW_FEATURES})).SerializeToString() for r in rows]
  predict = tf.saved_model.load(summary['pushed_path']).signatures['serving_default']
  expected = predict(examples=tf.constant(examples))
  np.testing.assert_array_equal(
      _float32([[a['probabilities'][c] for c in iris.CLASS_NAMES] for a in answers]),
      expected['probabilities'].numpy())
  assert [a['class'] for a in answers] == [c.decode() for c in expected['class'].numpy()]
  # Setosa is the species any model separates: trees that learnt nothing fail here.
  assert [a['class'] for a, r in zip(answers, rows) if r[iris.LABEL] == 'setosa'] == \
      ['setosa'] * sum(r[iris.LABEL] == 'setosa' for r in rows)
