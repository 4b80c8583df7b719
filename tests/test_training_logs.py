"""Training is visible and chooses its steps on the eval split: the Trainer
writes TensorBoard event files into model_run (read back with TensorBoard's
own loader), stops after `early_stopping_patience` scorings without progress
and exports the best-scoring weights, the same seed gives the same model, and
each keras-tuner algorithm runs a search whose trials log too."""

import glob
import json
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import numpy as np
import pytest

from models import features, hyperparameters, model, task
from pipeline import configs, metadata

# What TensorBoard shows of the selected example's task: the loss and its metrics.
TRAIN_TAGS = {'epoch_loss'} | {'epoch_' + m.name for m in task.keras_metrics()}
OBJECTIVE, DIRECTION = task.TUNER_OBJECTIVE[features.TASK]
OBJECTIVE_TAG = 'epoch_' + OBJECTIVE[len('val_'):]  # Its tag in the validation logs.
BEST = max if DIRECTION == 'max' else min


def scalars(log_dir):
  """{tag: [(step, value)]}, read with TensorBoard's event-file loader."""
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util
  accumulator = event_accumulator.EventAccumulator(
      log_dir, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                for e in accumulator.Tensors(tag)] for tag in accumulator.Tags()['tensors']}


def _artifact(store, config, node, key, artifact_class):
  found = metadata.LatestRun(store, config.pipeline_name, node).one(key)
  artifact = artifact_class()
  artifact.set_mlmd_artifact(found)
  return artifact


def transform_outputs(config):
  """The pipeline run's Transform artifacts, as TFX hands them to a Trainer."""
  from tfx.types import standard_artifacts
  store = metadata.open_store(config.metadata_path, read_only=True)
  return (_artifact(store, config, 'Transform', 'transformed_examples', standard_artifacts.Examples),
          _artifact(store, config, 'Transform', 'transform_graph',
                    standard_artifacts.TransformGraph))


def trainer_fn_args(config, out_dir, hparams, train_steps):
  """What TFX's Trainer executor gives run_fn, for these hyperparameters."""
  from tfx.components.trainer import fn_args_utils
  examples, graph = transform_outputs(config)
  fn_args = fn_args_utils.get_common_fn_args(
      {'examples': [examples], 'transform_graph': [graph]},
      {'train_args': json.dumps({'num_steps': train_steps}), 'eval_args': '{}',
       'custom_config': json.dumps({'hyperparameters': json.dumps(hparams)})})
  fn_args.transform_output = graph.uri
  fn_args.serving_model_dir = os.path.join(out_dir, 'serving')
  fn_args.model_run_dir = os.path.join(out_dir, 'model_run')
  return fn_args


def record_of(model_run_dir):
  with open(os.path.join(model_run_dir, model.TRAINING_RECORD_FILE)) as f:
    return json.load(f)


# ---- the pipeline's Trainer ------------------------------------------------------------------


@pytest.mark.slow
def test_the_trainer_writes_tensorboard_logs_into_model_run(pipeline_run):
  config, _ = pipeline_run
  store = metadata.open_store(config.metadata_path, read_only=True)
  model_run = metadata.LatestRun(store, config.pipeline_name, 'Trainer').one('model_run').uri
  assert glob.glob(os.path.join(model_run, 'train', 'events.out.tfevents.*'))
  train, evaluated = scalars(os.path.join(model_run, 'train')), \
      scalars(os.path.join(model_run, 'validation'))
  assert TRAIN_TAGS <= set(train) and TRAIN_TAGS <= set(evaluated)
  record = record_of(model_run)
  every = model.EVAL_EVERY
  steps = [s for s, _ in evaluated[OBJECTIVE_TAG]]
  # A point per scoring, numbered by its training step, the last where training ended.
  assert steps == sorted(set(list(range(every, record['steps'] + 1, every)) + [record['steps']]))
  assert [s for s, _ in train['epoch_loss']] == steps
  best = BEST(v for _, v in evaluated[OBJECTIVE_TAG])
  assert record['objective'] == OBJECTIVE
  assert record['best_value'] == pytest.approx(best)
  assert dict(evaluated[OBJECTIVE_TAG])[record['best_step']] == pytest.approx(best)
  assert all(v > 0 for _, v in evaluated['epoch_loss'])


def _eval_split_auc(serving_dir, config):
  """The exported model's AUC on the raw eval split, through its signatures."""
  import tensorflow as tf
  import tf_keras as keras
  from models import features
  store = metadata.open_store(config.metadata_path, read_only=True)
  examples = metadata.LatestRun(store, config.pipeline_name, 'CsvExampleGen').one('examples')
  files = glob.glob(os.path.join(examples.uri, 'Split-eval', '*'))
  serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type='GZIP')]
  loaded = tf.saved_model.load(serving_dir)
  labels = loaded.signatures['transform_features'](examples=tf.constant(serialized))[
      features.LABEL_KEY]
  scores = loaded.signatures['serving_default'](examples=tf.constant(serialized))[
      features.OUTPUT_PROBABILITY]
  auc = keras.metrics.AUC()
  auc.update_state(tf.reshape(labels, [-1, 1]), scores)
  return float(auc.result())


@pytest.mark.slow
@pytest.mark.example('taxi')  # Scores the exported model's AUC: the binary example.
def test_early_stopping_stops_and_exports_the_best_weights(pipeline_run, tmp_path):
  config, _ = pipeline_run
  # Scored every 5 steps, a small sample overfits long before 600 steps.
  hparams = dict(model.default_hparams(), eval_every=5, early_stopping_patience=3,
                 learning_rate=0.01)
  fn_args = trainer_fn_args(config, str(tmp_path), hparams, train_steps=600)
  model.run_fn(fn_args)
  record = record_of(fn_args.model_run_dir)
  assert record['steps'] < 600
  assert record['steps'] == record['best_step'] + 5 * 3  # Three scorings without progress.
  evaluated = dict(scalars(os.path.join(fn_args.model_run_dir, 'validation'))['epoch_auc'])
  assert max(evaluated.values()) == pytest.approx(record['best_value'])
  last = evaluated[record['steps']]
  exported = _eval_split_auc(fn_args.serving_model_dir, config)
  assert exported == pytest.approx(record['best_value'], abs=1e-4)
  assert abs(exported - record['best_value']) < abs(exported - last)  # Not the last weights.


@pytest.mark.slow
def test_the_same_seed_trains_the_same_model(pipeline_run, tmp_path):
  config, _ = pipeline_run
  hparams = dict(model.default_hparams(), eval_every=10, seed=7)
  model.signatures.export, export = (lambda *a, **k: None), model.signatures.export
  try:
    records = []
    for name in ('first', 'second'):
      fn_args = trainer_fn_args(config, str(tmp_path / name), hparams, train_steps=60)
      model.run_fn(fn_args)
      records.append(record_of(fn_args.model_run_dir))
  finally:
    model.signatures.export = export
  assert records[0] == records[1]
  assert records[0]['best_value'] is not None


# ---- knobs -----------------------------------------------------------------------------------


@pytest.mark.parametrize('value', [-1, 2.5, 'ten', True])
def test_a_bad_early_stopping_knob_is_refused_by_name(value):
  with pytest.raises(ValueError, match='hyperparameter eval_every is'):
    model.early_stopping(dict(model.default_hparams(), eval_every=value))


def test_the_early_stopping_knobs_are_known_hyperparameters():
  assert {'eval_every', 'early_stopping_patience'} <= set(hyperparameters.KNOWN_KEYS)


def test_the_config_offers_the_tuners_algorithms():
  assert configs.CHOICES['tuner_algorithm'] == model.TUNER_ALGORITHMS
  with pytest.raises(configs.ConfigError, match="tuner_algorithm 'grid' is not one of"):
    configs.load({'tuner_algorithm': 'grid'}, environ={})
  assert configs.load(environ={'TAXI_TUNER_ALGORITHM': 'hyperband'}).tuner_algorithm == 'hyperband'


# ---- train() on a synthetic task ---------------------------------------------------------------


def _synthetic(n, seed, noise):
  """A task of the selected example's kind: x[:, 0] plus noise, as the
  number itself (regression), its sign (binary) or its tercile (multi-class)."""
  import tensorflow as tf
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 4)).astype('float32')
  signal = x[:, 0] + noise * rng.normal(size=n)
  if features.TASK == features.REGRESSION:
    y = signal.astype('float32')
  elif features.TASK == features.MULTICLASS:
    y = np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3])).astype('int64')
  else:
    y = (signal > 0).astype('int64')
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


def _net(hidden_units):
  """A small net with the task's head and loss, as build_model compiles it."""
  import tf_keras as keras
  inputs = keras.Input(shape=(4,))
  hidden = inputs
  for units in hidden_units:
    hidden = keras.layers.Dense(units, activation='relu')(hidden)
  net = keras.Model(inputs, task.head(hidden))
  net.compile(optimizer=keras.optimizers.Adam(0.05), loss=task.loss())
  return net


def test_train_keeps_the_weights_of_its_best_scoring():
  """The eval split is pure noise: the objective wanders, training stops
  early, and the model holds the weights it had at its best scoring."""
  import tf_keras as keras
  keras.utils.set_random_seed(1)
  net = _net([8])
  seen = {}

  class Weights(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      seen[epoch] = (logs, [w.copy() for w in self.model.get_weights()])

  record = model.train(net, _synthetic(4000, 0, 0.1).repeat(), 400,
                       _synthetic(400, 1, 100.0), eval_every=4, patience=3,
                       callbacks=[Weights()])
  assert record['steps'] < 400 and record['steps'] == record['best_step'] + 4 * 3
  scores = {step: logs[OBJECTIVE] for step, (logs, _) in seen.items()}
  assert record['best_step'] == BEST(scores, key=scores.get)
  best_weights = seen[record['best_step']][1]
  assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(), best_weights))
  assert not all(np.array_equal(a, b) for a, b in zip(net.get_weights(),
                                                      seen[record['steps']][1]))


def test_patience_zero_trains_every_step():
  import tf_keras as keras
  keras.utils.set_random_seed(1)
  net = _net([])
  record = model.train(net, _synthetic(4000, 0, 0.1).repeat(), 50, _synthetic(400, 1, 100.0),
                       eval_every=4, patience=0)
  assert record['steps'] == 50 and record['best_step'] is not None


# ---- the Tuner ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('algorithm', model.TUNER_ALGORITHMS)
def test_each_tuner_algorithm_runs_a_search_whose_trials_log(pipeline_run, tmp_path, algorithm):
  """TFX's Tuner executor's search() with our tuner_fn, as the Tuner component runs it."""
  from tfx.components.tuner import executor
  from tfx.types import standard_artifacts
  config, _ = pipeline_run
  examples, graph = transform_outputs(config)
  hparams = dict(model.default_hparams(), eval_every=5)
  log_dir = tmp_path / 'logs'
  tuner = executor.search(
      {'examples': [examples], 'transform_graph': [graph]},
      {'tuner_fn': 'models.model.tuner_fn', 'train_args': json.dumps({'num_steps': 12}),
       'eval_args': '{}',
       'custom_config': json.dumps({'max_trials': 2, 'tuner_algorithm': algorithm,
                                    'log_dir': str(log_dir),
                                    'hyperparameters': json.dumps(hparams)})},
      str(tmp_path / 'work'), print_tuning_summary=False)
  best = standard_artifacts.HyperParameters()
  best.uri = str(tmp_path / 'best')
  results = standard_artifacts.TunerResults()
  results.uri = str(tmp_path / 'results')
  os.makedirs(best.uri), os.makedirs(results.uri)
  executor.write_best_hyperparameters(tuner, {'best_hyperparameters': [best],
                                              'tuner_results': [results]})
  with open(os.path.join(best.uri, 'best_hyperparameters.txt')) as f:
    values = json.load(f)['values']
  # Only the model's keys: they merge into the Trainer's and the saved tuned file.
  assert set(values) <= set(hyperparameters.KNOWN_KEYS) and 'learning_rate' in values
  trials = [t for t in tuner.oracle.trials.values() if t.score is not None]
  assert len(trials) >= 2
  for trial in trials:
    logs = glob.glob(str(log_dir / '*' / trial.trial_id / 'execution0' / 'validation'))
    assert logs, f'trial {trial.trial_id} wrote no TensorBoard log under {log_dir}'
    assert TRAIN_TAGS <= set(scalars(logs[0]))
