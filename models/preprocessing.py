"""Transform's preprocessing_fn: raw taxi features in, model inputs out.

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


def big_tipper(tips, fare):
  """The label: 1 when the tip is more than BIG_TIP_FRACTION of the fare."""
  return tf.cast(tips > features.BIG_TIP_FRACTION * fare, tf.int64)


def preprocessing_fn(inputs):
  """tf.Transform callback: maps raw feature tensors to model inputs."""
  outputs = {}
  for name, spec in features.model_features().items():
    raw = fill_missing(inputs[name], spec.default)
    outputs[features.transformed_name(name)] = _transform_one(name, spec, raw)
  # The label is only computed where the tips are known (training/eval data).
  if features.TIPS_KEY in inputs:
    tips = fill_missing(inputs[features.TIPS_KEY], 0.0)
    fare = fill_missing(inputs[features.FARE_KEY], 0.0)
    outputs[features.LABEL_KEY] = big_tipper(tips, fare)
  return outputs
