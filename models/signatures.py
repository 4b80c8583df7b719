"""The serving signatures of the exported SavedModel.

- `serving_default`: serialized tf.Examples in `examples`; what gRPC Predict
  clients and the Evaluator send.
- `classification` / `regression`: the same examples under TF Serving's
  Classify/Regress conventions (`inputs` -> `classes`+`scores` / `outputs`);
  `classification` lists every class name of the task with its score, and
  `regression` gives one number per example: the prediction for a
  regression task, P(class 1) for binary, the most probable class's score
  for multi-class. A regression model has no `classification` signature:
  it has no classes to score (the infra validator and TF Serving warmup
  call every signature the model has).
- `predict_raw`: one named tensor per raw feature, so a REST client can POST
  plain JSON rows. Every input has a default (TF Serving feeds it for an
  omitted input), but only optional features may really be left out.
- `transform_features`: raw examples to transformed features, for TFMA.

Every signature runs the Transform graph inside the model, so clients send
raw values and never re-implement preprocessing. A request that leaves out a
feature the schema requires (presence min_fraction 1.0 in the SERVING
environment) fails with InvalidArgumentError naming it, which servers report
as INVALID_ARGUMENT: answering from defaults would be a confident guess.
"""

import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from models import features

OUTPUT_PROBABILITY = features.OUTPUT_PROBABILITY
OUTPUT_PROBABILITIES = features.OUTPUT_PROBABILITIES
OUTPUT_CLASS = features.OUTPUT_CLASS
OUTPUT_PREDICTION = features.OUTPUT_PREDICTION
CLASSIFY_METHOD = 'tensorflow/serving/classify'
REGRESS_METHOD = 'tensorflow/serving/regress'
_TF_DTYPES = {'float': tf.float32, 'int': tf.int64, 'string': tf.string}
SERVING_ENVIRONMENT = 'SERVING'


def _in_environment(feature, schema, environment: str) -> bool:
  """TFDV's rule: in_environment wins, then not_in_environment, then the
  schema's default environments."""
  if environment in feature.in_environment:
    return True
  if environment in feature.not_in_environment:
    return False
  return environment in schema.default_environment


def required_features(schema) -> list:
  """Names of the features every serving request must carry: presence
  min_fraction 1.0 in the SERVING environment, in schema order."""
  required = [f.name for f in schema.feature
              if f.presence.min_fraction == 1.0 and
              _in_environment(f, schema, SERVING_ENVIRONMENT)]
  unknown = sorted(set(required) - set(features.RAW_FEATURES))
  if unknown:
    raise ValueError(f'The schema requires features {unknown} that models/features.py'
                     f' does not define; add them there or relax their presence.')
  return required


def _serving_feature_spec(tf_transform_output):
  """The raw features a request may carry: no label, no training-only column."""
  spec = tf_transform_output.raw_feature_spec()
  for name in features.label_columns():
    spec.pop(name, None)
  return spec


def _raw_to_sparse(value, batch_size):
  """A [n] tensor as the [batch, 1] sparse column tf.Transform expects.

  n is the batch size, or 0 when the client left the feature out.
  """
  n = tf.size(value, out_type=tf.int64)
  # A plain Assert op: assert_equal would wrap it in a v1 cond (Switch/Merge).
  tf.debugging.Assert((n == 0) | (n == batch_size),
                      ['every raw input must have one value per example, or none'])
  rows = tf.range(n, dtype=tf.int64)
  indices = tf.stack([rows, tf.zeros_like(rows)], axis=1)
  return tf.SparseTensor(indices, value, tf.stack([batch_size, 1]))


def _assert_all_sent(sent, names, what: str):
  """Fails the call, naming every required feature whose `sent` is False."""
  missing = tf.strings.reduce_join(tf.boolean_mask(tf.constant(names), ~sent),
                                   separator=', ')
  message = tf.strings.join([f'Missing required features ({what}): ', missing,
                             '. Send a value for each of them.'])
  return tf.debugging.Assert(tf.reduce_all(sent), [message])


def _check_required_columns(raw, required):
  """predict_raw: an empty tensor is an input the request left out."""
  sent = tf.stack([tf.size(raw[name]) > 0 for name in required])
  return _assert_all_sent(sent, required, 'left out of the request')


def _check_required_in_examples(parsed, required, batch_size):
  """tf.Examples: every example must have a value for each required feature."""
  sent = []
  for name in required:
    rows = tf.cast(parsed[name].indices[:, 0], tf.int32)
    counts = tf.math.bincount(rows, minlength=batch_size, maxlength=batch_size)
    sent.append(tf.reduce_all(counts > 0))
  return _assert_all_sent(tf.stack(sent), required, 'absent from some examples')


def _outputs(prediction):
  """The model's answer as serving_default and predict_raw return it."""
  if features.TASK == features.REGRESSION:
    return {OUTPUT_PREDICTION: tf.reshape(prediction, [-1])}
  if features.TASK == features.MULTICLASS:
    return {
        OUTPUT_PROBABILITIES: prediction,
        OUTPUT_CLASS: tf.gather(tf.constant(features.CLASS_NAMES),
                                tf.argmax(prediction, axis=1)),
    }
  probability = tf.reshape(prediction, [-1])
  return {
      OUTPUT_PROBABILITY: probability,
      OUTPUT_CLASS: tf.cast(probability > 0.5, tf.int64),
  }


def _class_scores(prediction):
  """One score per class, in CLASS_NAMES order: [batch, classes]."""
  if features.TASK == features.MULTICLASS:
    return prediction
  probability = tf.reshape(prediction, [-1, 1])
  return tf.concat([1.0 - probability, probability], axis=1)


def make_signatures(model, tf_transform_output):
  """The signature functions, keyed by signature name."""
  model.tft_layer = tf_transform_output.transform_features_layer()
  feature_spec = _serving_feature_spec(tf_transform_output)
  # The schema the model was trained with (Transform keeps it), not today's
  # schema file: the model's own contract.
  required = required_features(tf_transform_output.raw_metadata.schema)

  # Traced once and called by the three tf.Example signatures: each trace of
  # the Transform graph and the model costs seconds at export. No Python
  # control flow anywhere here, so AutoGraph has nothing to convert.
  examples_spec = [tf.TensorSpec([None], tf.string)]

  @tf.function(input_signature=examples_spec, autograph=False)
  def predict_examples(serialized):
    parsed = tf.io.parse_example(serialized, feature_spec)
    # tf.function runs every stateful op (an Assert too) in program order,
    # so the check fails the call before the model's answer is returned.
    _check_required_in_examples(parsed, required, tf.size(serialized))
    return model(model.tft_layer(parsed))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')],
               autograph=False)
  def serving_default(examples):
    return _outputs(predict_examples(examples))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='inputs')],
               autograph=False)
  def classification(inputs):
    scores = _class_scores(predict_examples(inputs))
    batch = tf.shape(scores)[0]
    return {
        'classes': tf.tile(tf.constant([features.CLASS_NAMES]), [batch, 1]),
        'scores': scores,
    }

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='inputs')],
               autograph=False)
  def regression(inputs):
    # TF Serving's Regress API: one float per example, as 'outputs'.
    return {'outputs': tf.reduce_max(_class_scores(predict_examples(inputs)), axis=1)
            if features.TASK == features.MULTICLASS
            else tf.reshape(predict_examples(inputs), [-1])}

  raw_spec = {
      name: tf.TensorSpec([None], _TF_DTYPES[spec.dtype], name=name)
      for name, spec in features.RAW_FEATURES.items()
  }
  # An empty default marks "not sent": Transform then fills the feature's
  # default, exactly as for a missing value in a tf.Example.
  raw_defaults = {name: tf.constant([], s.dtype) for name, s in raw_spec.items()}

  @tf.function(input_signature=[raw_spec], autograph=False)
  def predict_raw(raw=raw_defaults):
    sizes = [tf.size(v, out_type=tf.int64) for v in raw.values()]
    batch_size = tf.reduce_max(tf.stack(sizes))
    sparse = {name: _raw_to_sparse(v, batch_size) for name, v in raw.items()}
    # After the ragged-column checks (stateful ops run in program order): a
    # request with a short column is reported as ragged.
    _check_required_columns(raw, required)
    return _outputs(model(model.tft_layer(sparse)))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')],
               autograph=False)
  def transform_features(examples):
    parsed = tf.io.parse_example(examples, tf_transform_output.raw_feature_spec())
    return model.tft_layer(parsed)

  found = {
      'serving_default': serving_default,
      'classification': classification,
      'regression': regression,
      'predict_raw': predict_raw,
      'transform_features': transform_features,
  }
  if features.TASK == features.REGRESSION:
    del found['classification']  # No classes to score.
  return found


# TF Serving's method name of each Classify/Regress signature.
METHOD_NAMES = {'classification': CLASSIFY_METHOD, 'regression': REGRESS_METHOD}


def set_method_names(export_dir):
  """Marks the classify/regress signatures so TF Serving's Classify and
  Regress APIs accept them (TF2 writes every signature as 'predict')."""
  path = os.path.join(export_dir, 'saved_model.pb')
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(path, 'rb') as f:
    saved_model.ParseFromString(f.read())
  signature_defs = saved_model.meta_graphs[0].signature_def
  for name, method in METHOD_NAMES.items():
    if name in signature_defs:
      signature_defs[name].method_name = method
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(saved_model.SerializeToString())


def export(model, tf_transform_output, export_dir):
  """Saves the model with all serving signatures to export_dir."""
  # save_traces=False: the signatures are what serving calls; tracing every
  # layer's call() for Keras-side reloading only costs export time.
  model.save(export_dir, save_format='tf', save_traces=False,
             signatures=make_signatures(model, tf_transform_output))
  set_method_names(export_dir)
