"""Transform's preprocessing_fn: raw features in, model inputs and the label out.

Runs once over the whole training data in Beam (analyzers such as vocabulary
and quantiles), and the same graph runs inside the served model, so training
and serving see identical features.
"""

import tensorflow as tf
import tensorflow_transform as tft

from models import features


def fill_missing(value, default):
  """Densifies a [batch, 0 or 1] raw feature to [batch], filling gaps."""
  if isinstance(value, tf.SparseTensor):
    dense_shape = tf.stack([value.dense_shape[0], 1])
    value = tf.sparse.to_dense(
        tf.SparseTensor(value.indices, value.values, dense_shape),
        default_value=tf.cast(default, value.dtype))
  return tf.reshape(value, [-1])


def _log_zscore(x):
  # Fares, miles and seconds are long-tailed: log first, then standardise.
  return tft.scale_to_z_score(tf.math.log1p(tf.maximum(tf.cast(x, tf.float32), 0.)))


def _transform_one(name, spec, raw):
  if spec.kind == 'log_numeric':
    return _log_zscore(raw)
  if spec.kind == 'numeric':
    return tft.scale_to_z_score(tf.cast(raw, tf.float32))
  if spec.kind == 'categorical':
    # Integers used as ids; out-of-range values land in bucket 0.
    ids = tf.cast(raw, tf.int64)
    return tf.where((ids >= 0) & (ids < spec.num_buckets), ids, tf.zeros_like(ids))
  if spec.kind == 'vocab':
    return tft.compute_and_apply_vocabulary(
        raw, top_k=features.VOCAB_SIZE, num_oov_buckets=features.OOV_BUCKETS,
        vocab_filename=name)
  if spec.kind == 'bucket':
    return tft.bucketize(tf.cast(raw, tf.float32), spec.num_buckets)
  raise ValueError(f'unknown feature kind {spec.kind!r} for {name}')


# Numbers also reach the model at the resolution the other form lacks: a
# z-scored number also as its quantile bucket (the wide part's one-hot and
# crosses want ids; quantiles put equally many rows in each), a bucketed one
# also as its z-scored value (the deep part then sees it at full resolution).
# The quantiles are of the raw value, not of the z-score (the same order):
# a computed value rounds differently in Beam and in serving, and a fare on a
# boundary then landed in another bucket when served than in training.
QUANTILE_BUCKETS = 20
NUMERIC_KINDS = ('numeric', 'log_numeric')


def quantile_name(name: str) -> str:
  """The transformed name of a number's quantile bucket id."""
  return features.transformed_name(name) + '_quantile'


def value_name(name: str) -> str:
  """The transformed name of a bucketed number's z-scored value."""
  return features.transformed_name(name) + '_value'


def phase_name(name: str) -> str:
  """The transformed name of a periodic number's phase (Feature.period)."""
  return features.transformed_name(name) + '_phase'


def _phase(raw, period: float):
  """Where raw sits in its period, in [0, 1): the same graph in Beam and in
  serving, so a value on a period's edge gets one phase in both."""
  return tf.math.floormod(tf.cast(raw, tf.float32), period) / period


def _standardised_given(raw, default):
  """raw standardised over the values that are not its default; the default,
  which fills a missing value (in training and in a client's request alike),
  becomes the mean (0). A coordinate's default, 0.0, would otherwise be
  hundreds of standard deviations out and saturate the deep part (a served
  row without coordinates got 0 for every answer)."""
  column = tf.reshape(tf.cast(raw, tf.float32), [-1, 1])
  given = tf.not_equal(column, tf.cast(default, tf.float32))
  sparse = tf.SparseTensor(tf.where(given), tf.boolean_mask(column, given),
                           tf.shape(column, out_type=tf.int64))
  return fill_missing(tft.scale_to_z_score(sparse), 0.0)


def _second_form(name, spec, raw):
  """{transformed name: tensor} of a number's other forms (none for ids)."""
  forms = {}
  if spec.kind in NUMERIC_KINDS:
    forms[quantile_name(name)] = tft.bucketize(tf.cast(raw, tf.float32), QUANTILE_BUCKETS)
  if spec.kind == 'bucket':
    forms[value_name(name)] = _standardised_given(raw, spec.default)
  if spec.period:
    forms[phase_name(name)] = _phase(raw, spec.period)
  return forms


def class_ids(names):
  """Class names -> their index in CLASS_NAMES; a name not there fails the
  run, naming the fix (it would otherwise be trained as class 0)."""
  matches = tf.equal(tf.expand_dims(names, 1), tf.constant(features.CLASS_NAMES))
  known = tf.debugging.Assert(
      tf.reduce_all(tf.reduce_any(matches, axis=1)),
      [f'A label value of {features.LABEL_COLUMN!r} is not one of CLASS_NAMES '
       f'{features.CLASS_NAMES}: add it to examples/{features.EXAMPLE_NAME}.py or fix the data'])
  with tf.control_dependencies([known]):
    return tf.argmax(tf.cast(matches, tf.int64), axis=1)


def present(value):
  """A label column densified, failing the run if a row has no value: a
  filled-in label would be trained on as if it were true."""
  if isinstance(value, tf.SparseTensor):
    known = tf.debugging.Assert(
        tf.equal(tf.size(value.values, out_type=tf.int64), value.dense_shape[0]),
        [f'A row has no value of the label {features.LABEL_COLUMN!r}: fill it in the data '
         f'or leave the row out (the schema can require it: presence min_fraction 1)'])
    with tf.control_dependencies([known]):
      return fill_missing(value, 0)
  return fill_missing(value, 0)


def _label_dtype():
  # Regression learns the number itself; classification a class id.
  return tf.float32 if features.TASK == features.REGRESSION else tf.int64


def label(inputs):
  """The label from the raw inputs of training data: a class id (0/1 for
  binary), or for regression the number as it is. A label column is taken as
  it is (class names, 0/1, a number); a label function gets the dense
  feature and training-only columns.

  A regression label is not standardised: the Evaluator's RMSE and MAE and
  the served predictions are then in the label's own units, with no inverse
  transform to keep in step between Transform, the model and the
  signatures. The price is a learning rate fitted to the label's scale
  (examples/diabetes_hyperparameters.json)."""
  if features.LABEL_COLUMN:
    if features.TASK == features.MULTICLASS:
      return class_ids(fill_missing(inputs[features.LABEL_COLUMN], ''))
    return tf.cast(present(inputs[features.LABEL_COLUMN]), _label_dtype())
  columns = {name: fill_missing(inputs[name], features.RAW_FEATURES[name].default
                                if name in features.RAW_FEATURES else 0.0)
             for name in list(features.RAW_FEATURES) + features.TRAINING_ONLY
             if name in inputs}
  return tf.cast(features.LABEL(columns), _label_dtype())


def preprocessing_fn(inputs):
  """tf.Transform callback: maps raw feature tensors to model inputs."""
  outputs = {}
  for name, spec in features.model_features().items():
    raw = fill_missing(inputs[name], spec.default)
    outputs[features.transformed_name(name)] = _transform_one(name, spec, raw)
    outputs.update(_second_form(name, spec, raw))
  # The label is only computed where its columns are known (training/eval
  # data); serving requests carry none of them.
  if all(c in inputs for c in features.label_columns()):
    outputs[features.LABEL_KEY] = label(inputs)
  return outputs
