"""A wide-and-deep tf-keras classifier whose head follows the example's task
(models/features.py), and the Trainer and Tuner entry points (`run_fn`,
`tuner_fn`) that TFX calls."""

import datetime
import json
import os
from typing import Dict, List

import keras_tuner
import numpy as np
import tensorflow as tf
import tf_keras as keras
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
from tfx.components.tuner.component import TunerFnResult
from tfx_bsl.public import tfxio

from models import features
from models import hyperparameters
from models import preprocessing
from models import signatures
from models import task

# The selected example's checked-in hyperparameters (models/hyperparameters.json
# for taxi). The pipeline passes the content of the file in use (this one, or
# what `local_runner.py --tune` saved under the output root) to the Trainer,
# so an edit re-trains.
HPARAMS_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    features.EXAMPLE.CONFIG_DEFAULTS.get('hyperparameters_file', 'models/hyperparameters.json'))
SEED = 42  # Same data, same code: same model.


def default_hparams() -> Dict:
  with open(HPARAMS_FILE) as f:
    return json.load(f)


def _input_fn(file_pattern: List[str], data_accessor: DataAccessor,
              tf_transform_output: tft.TFTransformOutput, batch_size: int,
              shuffle: bool = True, seed: int = SEED) -> tf.data.Dataset:
  """Batches of (transformed features, label) read from Transform's output."""
  return data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(
          batch_size=batch_size, label_key=features.LABEL_KEY, shuffle=shuffle,
          shuffle_seed=seed, num_epochs=None if shuffle else 1),
      tf_transform_output.transformed_metadata.schema).prefetch(tf.data.AUTOTUNE)


def _num_ids(spec: features.Feature) -> int:
  if spec.kind == 'vocab':
    return features.VOCAB_SIZE + features.OOV_BUCKETS
  return spec.num_buckets


def _model_inputs(hparams: Dict) -> Dict[str, keras.Input]:
  """The transformed features the model reads: each feature's, and its
  second form (models/preprocessing.py) where the hyperparameters use it."""
  inputs = {}

  def add(xf, dtype):
    inputs[xf] = keras.Input(shape=(), name=xf, dtype=dtype)

  for name, spec in features.model_features().items():
    numeric = spec.kind in preprocessing.NUMERIC_KINDS
    add(features.transformed_name(name), tf.float32 if numeric else tf.int64)
    if numeric and _quantile_wide(hparams):
      add(preprocessing.quantile_name(name), tf.int64)
    if spec.kind == 'bucket' and hparams.get('bucket_values'):
      add(preprocessing.value_name(name), tf.float32)
    if spec.period:
      add(preprocessing.phase_name(name), tf.float32)
  return inputs


def _quantile_wide(hparams: Dict) -> bool:
  return hparams.get('numeric_bins', 'even') == 'quantile'


def _bucketize_standardized(x, num_buckets: int):
  """Cuts a z-scored value into equal bins over [-2.5, 2.5] standard deviations."""
  return keras.layers.Discretization(
      bin_boundaries=list(np.linspace(-2.5, 2.5, num_buckets - 1)))(x)


PHASE_BINS = 10


def _phase_parts(phase):
  """(wide, deep) of a phase in [0, 1): a step the label takes inside the
  period needs the wide part's bins; the deep part combines it with the rest."""
  bins = keras.layers.Discretization(
      bin_boundaries=list(np.linspace(0., 1., PHASE_BINS + 1)[1:-1]))(phase)
  return (keras.layers.CategoryEncoding(PHASE_BINS, output_mode='one_hot')(bins),
          keras.layers.Reshape((1,))(phase))


def _crosses(hparams) -> List[List[str]]:
  return hyperparameters.parse_crosses(hparams.get('crosses'))


def build_model(hparams: Dict) -> keras.Model:
  """Wide (one-hot linear) plus deep (embeddings and MLP) classifier.

  The wide part sees every category, binned numerics and the configured
  feature crosses (e.g. payment_type x fare: how much a fare is tipped
  depends on how it is paid); the deep part learns the rest.
  """
  inputs = _model_inputs(hparams)
  num_buckets = int(hparams.get('numeric_buckets') or 0)
  wide_parts, deep_parts, ids = [], [], {}
  for name, spec in features.model_features().items():
    x = inputs[features.transformed_name(name)]
    if spec.kind in preprocessing.NUMERIC_KINDS:
      column = keras.layers.Reshape((1,))(x)
      wide_parts.append(column)
      deep_parts.append(column)
      if _quantile_wide(hparams):
        ids[name], bins = inputs[preprocessing.quantile_name(name)], \
            preprocessing.QUANTILE_BUCKETS
      else:
        ids[name], bins = _bucketize_standardized(x, num_buckets or 10), num_buckets
      if num_buckets:
        wide_parts.append(keras.layers.CategoryEncoding(bins, output_mode='one_hot')(ids[name]))
    else:
      if spec.kind == 'bucket' and hparams.get('bucket_values'):
        deep_parts.append(keras.layers.Reshape((1,))(inputs[preprocessing.value_name(name)]))
      ids[name] = x
      wide_parts.append(
          keras.layers.CategoryEncoding(_num_ids(spec), output_mode='one_hot')(x))
      deep_parts.append(
          keras.layers.Embedding(_num_ids(spec), int(hparams['embedding_dim']))(x))
    if spec.period:
      wide, deep = _phase_parts(inputs[preprocessing.phase_name(name)])
      wide_parts.append(wide)
      deep_parts.append(deep)
  for a, b in _crosses(hparams):
    wide_parts.append(keras.layers.HashedCrossing(
        num_bins=int(hparams.get('cross_bins', 256)), output_mode='one_hot')(
            (ids[a], ids[b])))
  deep = keras.layers.concatenate(deep_parts)
  for units in str(hparams['hidden_units']).split(','):
    deep = keras.layers.Dense(int(units), activation='relu')(deep)
    deep = keras.layers.Dropout(float(hparams['dropout']))(deep)
  both = keras.layers.concatenate([keras.layers.concatenate(wide_parts), deep])
  model = keras.Model(inputs=inputs, outputs=task.head(both))
  model.compile(
      optimizer=keras.optimizers.Adam(float(hparams['learning_rate'])),
      loss=task.loss(), metrics=task.keras_metrics())
  return model


def base_hparams(fn_args) -> Dict:
  """The pipeline's hyperparameters (its hyperparameters_file, with tuned
  values merged), passed in custom_config; else the checked-in ones."""
  custom = fn_args.custom_config or {}
  return json.loads(custom['hyperparameters']) if 'hyperparameters' in custom \
      else default_hparams()


def hparams_from(fn_args) -> Dict:
  """The pipeline's hyperparameters, with the Tuner's best values when wired in."""
  hparams = base_hparams(fn_args)
  if fn_args.hyperparameters:
    tuned = keras_tuner.HyperParameters.from_config(fn_args.hyperparameters)
    hparams.update(tuned.values)
  return hparams


# ---- training: a plain loop, scored on the eval split, best weights kept --------------------

# Early stopping's defaults (bench/README.md, "Training and tuning"): the eval
# split is scored every EVAL_EVERY steps, and training stops after PATIENCE
# scorings without a better Tuner objective; the best-scoring weights are kept.
EVAL_EVERY = 25
PATIENCE = 4
EVAL_BATCH_SIZE = 1024  # Scoring only: large batches, fewer steps.
# What the Trainer writes beside its TensorBoard logs in model_run: which step
# was exported and why (the run report reads it).
TRAINING_RECORD_FILE = 'training_record.json'


def _scores() -> List[keras.metrics.Metric]:
  """The mean loss and the task's metrics, named as Keras logs them."""
  return [keras.metrics.Mean(name='loss')] + task.keras_metrics()


def _update(scores, label, prediction, loss) -> None:
  scores[0].update_state(loss, sample_weight=tf.shape(label)[0])
  for metric in scores[1:]:
    metric.update_state(label, prediction)


def _read_and_reset(scores, prefix: str = '') -> Dict[str, float]:
  logs = {prefix + m.name: float(m.result()) for m in scores}
  for m in scores:
    m.reset_state()
  return logs


def _is_better(value: float, best, direction: str) -> bool:
  if best is None:
    return not np.isnan(value)
  return value > best if direction == 'max' else value < best


def train(model: keras.Model, dataset: tf.data.Dataset, steps: int,
          eval_dataset: tf.data.Dataset, eval_every: int = EVAL_EVERY,
          patience: int = PATIENCE, callbacks=()) -> Dict:
  """Runs at most `steps` optimizer steps, scoring the eval split every
  `eval_every` steps (0: only after the last) and stopping after `patience`
  scorings without a better Tuner objective (0: never early); leaves the
  best-scoring weights in the model. Returns what happened (the training record).

  Each scoring is a Keras "epoch" for the callbacks, numbered by its step
  (TensorBoard's x axis), with the train metrics since the last scoring and
  the eval split's as val_*.

  A plain loop rather than model.fit(): fit() first has AutoGraph convert
  Keras' training internals, which takes many times longer than compiling
  these steps, which have no Python control flow (bench/README.md).
  """
  loss_fn = task.loss()
  train_scores, eval_scores = _scores(), _scores()

  @tf.function(autograph=False, reduce_retracing=True)
  def train_step(x, y):
    label = task.label_for_loss(y)
    with tf.GradientTape() as tape:
      prediction = model(x, training=True)
      loss = loss_fn(label, prediction)
    gradients = tape.gradient(loss, model.trainable_variables)
    model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    _update(train_scores, label, prediction, loss)

  @tf.function(autograph=False, reduce_retracing=True)
  def eval_step(x, y):
    label = task.label_for_loss(y)
    prediction = model(x, training=False)
    _update(eval_scores, label, prediction, loss_fn(label, prediction))

  objective, direction = task.TUNER_OBJECTIVE[features.TASK]
  record = {'objective': objective, 'max_steps': steps, 'eval_every': eval_every,
            'patience': patience, 'steps': 0, 'best_step': None, 'best_value': None,
            'best_logs': None}
  best_weights, waited = None, 0
  callbacks = keras.callbacks.CallbackList(list(callbacks), model=model)
  callbacks.on_train_begin()
  for done, (x, y) in enumerate(dataset.take(steps), start=1):
    train_step(x, y)
    if done != steps and (not eval_every or done % eval_every):
      continue
    for x_eval, y_eval in eval_dataset:
      eval_step(x_eval, y_eval)
    logs = {**_read_and_reset(train_scores), **_read_and_reset(eval_scores, 'val_')}
    callbacks.on_epoch_end(done, logs)
    record['steps'] = done
    if _is_better(logs[objective], record['best_value'], direction):
      record.update(best_step=done, best_value=logs[objective], best_logs=logs)
      best_weights, waited = model.get_weights(), 0
    else:
      waited += 1
      if patience and waited >= patience:
        break
  callbacks.on_train_end()
  if best_weights is not None:
    model.set_weights(best_weights)
  return record


def _count(key: str, value) -> int:
  """A hyperparameter that counts something: an int, 0 or more."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ValueError(f'hyperparameter {key} is {value!r}, not a whole number of 0 or more: '
                     f'fix it in the hyperparameters file')
  return value


def early_stopping(hparams: Dict) -> Dict[str, int]:
  """train()'s eval_every and patience, from the hyperparameters."""
  return {'eval_every': _count('eval_every', hparams.get('eval_every', EVAL_EVERY)),
          'patience': _count('early_stopping_patience',
                             hparams.get('early_stopping_patience', PATIENCE))}


def _eval_input_fn(fn_args: FnArgs, tf_transform_output) -> tf.data.Dataset:
  """The eval split once (its first eval_steps batches when set), read again
  at each scoring rather than held in memory."""
  dataset = _input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output,
                      EVAL_BATCH_SIZE, shuffle=False)
  return dataset.take(fn_args.eval_steps) if fn_args.eval_steps else dataset


def _tensorboard(log_dir: str) -> keras.callbacks.Callback:
  # No graph: our loop has no Keras train function to draw.
  return keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False)


def run_fn(fn_args: FnArgs):
  """Trainer entry point: trains (TensorBoard logs and the training record in
  model_run), then exports the best-scoring weights as the serving SavedModel."""
  hparams = hparams_from(fn_args)
  stopping = early_stopping(hparams)
  seed = int(hparams.get('seed', SEED))
  keras.utils.set_random_seed(seed)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  dataset = _input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                      int(hparams['batch_size']), seed=seed)
  model = build_model(hparams)
  record = train(model, dataset, fn_args.train_steps, _eval_input_fn(fn_args, tf_transform_output),
                 callbacks=[_tensorboard(fn_args.model_run_dir)], **stopping)
  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, TRAINING_RECORD_FILE), 'w') as f:
    f.write(json.dumps(record, indent=1))
  # The eval split chose the steps: quality is measured by the Evaluator on another split.
  signatures.export(model, tf_transform_output, fn_args.serving_model_dir)


# ---- tuning ----------------------------------------------------------------------------------


def search_space(hp: keras_tuner.HyperParameters, base: Dict) -> Dict:
  """The tuned knobs; the others keep the pipeline's values (base). Every
  name is a hyperparameter key: the best values merge into the Trainer's."""
  hparams = dict(base)
  hparams.update({
      'learning_rate': hp.Choice('learning_rate', [0.001, 0.002, 0.003, 0.005, 0.01]),
      'hidden_units': hp.Choice('hidden_units', ['64,32', '128,64', '256,128', '256,128,64']),
      'embedding_dim': hp.Choice('embedding_dim', [4, 8, 16]),
      'dropout': hp.Choice('dropout', [0.1, 0.3, 0.5]),
      'numeric_buckets': hp.Choice('numeric_buckets', [0, 10, 20, 40]),
      'batch_size': hp.Choice('batch_size', [128, 256, 512]),
  })
  if base.get('crosses'):  # On (the pipeline's crosses) or off.
    hparams['crosses'] = hp.Choice('crosses', [str(base['crosses']), ''])
  return hparams


class WideAndDeepHyperModel(keras_tuner.HyperModel):
  """Trials build and train as the Trainer does: the same loop, early
  stopping and best weights, so their scores are what the Trainer would get."""

  def __init__(self, base: Dict):
    super().__init__()
    self.base = base

  def build(self, hp):
    hparams = search_space(hp, self.base)
    keras.utils.set_random_seed(int(hparams.get('seed', SEED)))
    return build_model(hparams)

  def fit(self, hp, model, datasets, steps_per_epoch: int, epochs: int = 1,
          initial_epoch: int = 0, callbacks=(), **_):
    """datasets(batch_size) -> (train, eval); Hyperband's epochs are budgets
    of steps_per_epoch steps."""
    hparams = search_space(hp, self.base)
    train_data, eval_data = datasets(int(hparams['batch_size']))
    record = train(model, train_data, steps_per_epoch * (epochs - initial_epoch), eval_data,
                   callbacks=callbacks, **early_stopping(hparams))
    best = record['best_value']
    return {record['objective']: float('nan') if best is None else best}


class _Hyperband(keras_tuner.Hyperband):
  """Hyperband whose best hyperparameters hold only the model's: its own
  bookkeeping ('tuner/epochs', ...) would land among the Trainer's values
  and in the saved tuned file, which refuses keys model.py does not read."""

  def get_best_hyperparameters(self, num_trials: int = 1):
    return [_without_bookkeeping(hp) for hp in super().get_best_hyperparameters(num_trials)]

  def on_search_end(self):
    # TFX's Tuner executor lists the best oracle.max_trials trials, which
    # Hyperband leaves None (it sizes its own): say how many it ran.
    super().on_search_end()
    self.oracle.max_trials = len(self.oracle.trials)


def _without_bookkeeping(hp: keras_tuner.HyperParameters) -> keras_tuner.HyperParameters:
  config = hp.get_config()
  config['space'] = [h for h in config['space'] if not h['config']['name'].startswith('tuner/')]
  config['values'] = {k: v for k, v in config['values'].items() if not k.startswith('tuner/')}
  return keras_tuner.HyperParameters.from_config(config)


TUNER_ALGORITHMS = ('random', 'bayesian', 'hyperband')
HYPERBAND_MAX_EPOCHS = 3  # Rounds of tuner_steps / 3 steps: trials that score badly stop first.


def make_tuner(algorithm: str, hypermodel, max_trials: int, directory: str) -> keras_tuner.Tuner:
  """keras-tuner's random search, Bayesian optimisation or Hyperband (which
  sizes its own number of trials from HYPERBAND_MAX_EPOCHS, not max_trials)."""
  common = dict(objective=keras_tuner.Objective(*task.TUNER_OBJECTIVE[features.TASK]),
                directory=directory, project_name=features.EXAMPLE_NAME, seed=SEED)
  if algorithm == 'random':
    return keras_tuner.RandomSearch(hypermodel, max_trials=max_trials, **common)
  if algorithm == 'bayesian':
    return keras_tuner.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
  if algorithm == 'hyperband':
    return _Hyperband(hypermodel, max_epochs=HYPERBAND_MAX_EPOCHS, factor=3, **common)
  raise ValueError(f'tuner_algorithm {algorithm!r} is not one of {", ".join(TUNER_ALGORITHMS)}: '
                   f'set it in the pipeline config')


def _tuner_log_dir(custom: Dict, working_dir: str) -> str:
  """Where the trials' TensorBoard logs go: a folder per tuning run under the
  pipeline's log_dir (the Tuner's working dir is deleted after it runs)."""
  root = custom.get('log_dir') or os.path.join(working_dir, 'tensorboard')
  return os.path.join(root, datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S'))


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
  """Tuner entry point: a search over the model's knobs, each trial trained
  like the Trainer, with its TensorBoard logs."""
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
  custom = fn_args.custom_config or {}
  algorithm = custom.get('tuner_algorithm', 'random')
  tuner = make_tuner(algorithm, WideAndDeepHyperModel(base_hparams(fn_args)),
                     int(custom.get('max_trials', 6)), fn_args.working_dir)
  hyperband = algorithm == 'hyperband'

  def datasets(batch_size: int):
    return (_input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, batch_size),
            _eval_input_fn(fn_args, tf_transform_output))

  fit_kwargs = {
      'datasets': datasets,
      # Hyperband's longest trials train tuner_steps steps, like the others'.
      'steps_per_epoch': max(1, fn_args.train_steps // HYPERBAND_MAX_EPOCHS) if hyperband
                         else fn_args.train_steps,
      # keras-tuner gives each trial its own folder under this log_dir.
      'callbacks': [_tensorboard(_tuner_log_dir(custom, fn_args.working_dir))],
  }
  return TunerFnResult(tuner=tuner, fit_kwargs=fit_kwargs)
