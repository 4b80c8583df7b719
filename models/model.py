"""A wide-and-deep tf-keras classifier whose head follows the example's task
(models/features.py), and the Trainer and Tuner entry points (`run_fn`,
`tuner_fn`) that TFX calls."""

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
from models import signatures
from models import task

# The checked-in hyperparameters. The pipeline passes the content of the file
# in use (this one, or what `local_runner.py --tune` saved under the output
# root) to the Trainer, so an edit re-trains.
HPARAMS_FILE = os.path.join(os.path.dirname(__file__), 'hyperparameters.json')
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


def _model_inputs() -> Dict[str, keras.Input]:
  inputs = {}
  for name, spec in features.model_features().items():
    dtype = tf.float32 if spec.kind in ('numeric', 'log_numeric') else tf.int64
    xf = features.transformed_name(name)
    inputs[xf] = keras.Input(shape=(), name=xf, dtype=dtype)
  return inputs


def _bucketize_standardized(x, num_buckets: int):
  """Cuts a z-scored value into equal bins over [-2.5, 2.5] standard deviations."""
  return keras.layers.Discretization(
      bin_boundaries=list(np.linspace(-2.5, 2.5, num_buckets - 1)))(x)


def _crosses(hparams) -> List[List[str]]:
  return hyperparameters.parse_crosses(hparams.get('crosses'))


def build_model(hparams: Dict) -> keras.Model:
  """Wide (one-hot linear) plus deep (embeddings and MLP) classifier.

  The wide part sees every category, binned numerics and the configured
  feature crosses (e.g. payment_type x fare: how much a fare is tipped
  depends on how it is paid); the deep part learns the rest.
  """
  inputs = _model_inputs()
  num_buckets = int(hparams.get('numeric_buckets') or 0)
  wide_parts, deep_parts, ids = [], [], {}
  for name, spec in features.model_features().items():
    x = inputs[features.transformed_name(name)]
    if spec.kind in ('numeric', 'log_numeric'):
      column = keras.layers.Reshape((1,))(x)
      wide_parts.append(column)
      deep_parts.append(column)
      ids[name] = _bucketize_standardized(x, num_buckets or 10)
      if num_buckets:
        wide_parts.append(keras.layers.CategoryEncoding(
            num_buckets, output_mode='one_hot')(ids[name]))
    else:
      ids[name] = x
      wide_parts.append(
          keras.layers.CategoryEncoding(_num_ids(spec), output_mode='one_hot')(x))
      deep_parts.append(
          keras.layers.Embedding(_num_ids(spec), int(hparams['embedding_dim']))(x))
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


def train(model: keras.Model, dataset: tf.data.Dataset, steps: int) -> float:
  """Runs `steps` optimizer steps; returns the last batch's loss.

  A plain loop rather than model.fit(): fit() first has AutoGraph convert
  Keras' training internals, which takes many times longer than compiling
  this step, which has no Python control flow (bench/README.md).
  """
  loss_fn = task.loss()

  @tf.function(autograph=False, reduce_retracing=True)
  def step(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(task.label_for_loss(y), model(x, training=True))
    gradients = tape.gradient(loss, model.trainable_variables)
    model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return loss

  loss = float('nan')
  for x, y in dataset.take(steps):
    loss = step(x, y)
  return float(loss)


def run_fn(fn_args: FnArgs):
  """Trainer entry point: trains, then exports the serving SavedModel."""
  hparams = hparams_from(fn_args)
  seed = int(hparams.get('seed', SEED))
  keras.utils.set_random_seed(seed)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  dataset = _input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                      int(hparams['batch_size']), seed=seed)
  model = build_model(hparams)
  train(model, dataset, fn_args.train_steps)
  # Quality is measured by the Evaluator on the eval split, not here.
  signatures.export(model, tf_transform_output, fn_args.serving_model_dir)


def search_space(hp: keras_tuner.HyperParameters, base: Dict) -> Dict:
  """The tuned knobs; the others keep the pipeline's values (base)."""
  hparams = dict(base)
  hparams.update({
      'learning_rate': hp.Choice('learning_rate', [0.001, 0.003, 0.01]),
      'hidden_units': hp.Choice('hidden_units', ['64,32', '128,64', '256,128']),
      'embedding_dim': hp.Choice('embedding_dim', [4, 8, 16]),
      'dropout': hp.Choice('dropout', [0.1, 0.3, 0.5]),
      'numeric_buckets': hp.Choice('numeric_buckets', [0, 10, 20]),
  })
  return hparams


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
  """Tuner entry point: a small random search over the model's knobs."""
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
  base = base_hparams(fn_args)
  batch_size = int(base['batch_size'])
  tuner = keras_tuner.RandomSearch(
      lambda hp: build_model(search_space(hp, base)),
      objective=keras_tuner.Objective(*task.TUNER_OBJECTIVE[features.TASK]),
      max_trials=int((fn_args.custom_config or {}).get('max_trials', 6)),
      directory=fn_args.working_dir, project_name=features.EXAMPLE_NAME, seed=42)
  fit_kwargs = {
      'x': _input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                     batch_size),
      'validation_data': _input_fn(fn_args.eval_files, fn_args.data_accessor,
                                   tf_transform_output, batch_size, shuffle=False),
      'steps_per_epoch': fn_args.train_steps,
      'epochs': 1,
      'verbose': 0,
  }
  return TunerFnResult(tuner=tuner, fit_kwargs=fit_kwargs)
