"""Tiny SavedModels with TF Serving's predict, classify and regress
signatures, built for the serving tests (the version is in every output so
tests can see which version answered)."""

import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

CLASSIFY_METHOD = 'tensorflow/serving/classify'
REGRESS_METHOD = 'tensorflow/serving/regress'


class TinyModel(tf.Module):
  """y = scale * x; scale is the version number, so outputs tell versions apart."""

  def __init__(self, scale: float):
    super().__init__()
    self.scale = tf.Variable(float(scale))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='x')])
  def predict(self, x):
    return {'y': x * self.scale, 'version': tf.fill(tf.shape(x), tf.cast(self.scale, tf.int64))}

  def _parse(self, serialized):
    return tf.io.parse_example(serialized, {'x': tf.io.FixedLenFeature([], tf.float32, 0.0)})['x']

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='inputs')])
  def classify(self, inputs):
    p = tf.sigmoid(self._parse(inputs) * self.scale)
    batch = tf.shape(p)[0]
    return {'classes': tf.tile(tf.constant([['0', '1']]), [batch, 1]),
            'scores': tf.stack([1.0 - p, p], axis=1)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='inputs')])
  def regress(self, inputs):
    return {'outputs': self._parse(inputs) * self.scale}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def examples(self, examples):
    x = self._parse(examples)
    return {'y': x * self.scale, 'version': tf.fill(tf.shape(x), tf.cast(self.scale, tf.int64))}

  @tf.function(input_signature=[{
      'a': tf.TensorSpec([None], tf.float32, name='a'),
      'n': tf.TensorSpec([None], tf.int64, name='n'),
      's': tf.TensorSpec([None], tf.string, name='s')}])
  def raw(self, features={'a': tf.constant([], tf.float32), 'n': tf.constant([], tf.int64),
                          's': tf.constant([], tf.string)}):
    """Like the taxi predict_raw: every input has an empty default = missing."""
    a, n, s = features['a'], features['n'], features['s']
    batch = tf.reduce_max(tf.stack([tf.size(a), tf.size(n), tf.size(s)]))
    a = tf.cond(tf.size(a) > 0, lambda: a, lambda: tf.zeros([batch]))
    n = tf.cond(tf.size(n) > 0, lambda: n, lambda: tf.zeros([batch], tf.int64))
    s = tf.cond(tf.size(s) > 0, lambda: s, lambda: tf.fill([batch], 'none'))
    return {'total': (a + tf.cast(n, tf.float32)) * self.scale,
            'echo_bytes': s, 'label': tf.strings.join([s, '!'])}


def example(x: float) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      'x': tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})).SerializeToString()


def _set_method_names(export_dir: str) -> None:
  """TF2 writes every signature as predict; TF Serving's Classify/Regress
  look for these method names (as the taxi export does)."""
  path = os.path.join(export_dir, 'saved_model.pb')
  saved_model = saved_model_pb2.SavedModel()
  with open(path, 'rb') as f:
    saved_model.ParseFromString(f.read())
  signature_defs = saved_model.meta_graphs[0].signature_def
  signature_defs['classification'].method_name = CLASSIFY_METHOD
  signature_defs['regression'].method_name = REGRESS_METHOD
  with open(path, 'wb') as f:
    f.write(saved_model.SerializeToString())


def write_warmup(export_dir: str, xs=(1.0, 2.0), input_name='x', records: int = 1) -> None:
  """assets.extra/tf_serving_warmup_requests, as the model export writes it
  (`records` copies of one Predict request)."""
  request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name='tiny'))
  request.inputs[input_name].CopyFrom(tf.make_tensor_proto(list(xs), tf.float32))
  record = prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))
  os.makedirs(os.path.join(export_dir, 'assets.extra'), exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(export_dir, 'assets.extra',
                                         'tf_serving_warmup_requests')) as writer:
    for _ in range(records):
      writer.write(record.SerializeToString())


def save_tiny_model(export_dir: str, scale: float, warmup: bool = True) -> str:
  model = TinyModel(scale)
  tf.saved_model.save(model, export_dir, signatures={
      'serving_default': model.predict,
      'classification': model.classify,
      'regression': model.regress,
      'examples': model.examples,
      'raw': model.raw,
  })
  _set_method_names(export_dir)
  if warmup:
    write_warmup(export_dir)
  return export_dir


# ---- A stand-in for the taxi model: the pipeline's signatures over the raw
# features of models/features.py, with a simple formula instead of a DNN.

def _taxi_dtypes():
  from models import features
  return {name: {'float': tf.float32, 'int': tf.int64, 'string': tf.string}[spec.dtype]
          for name, spec in features.RAW_FEATURES.items()}


class TaxiLikeModel(tf.Module):
  """probability = sigmoid(0.2 * fare - 0.3 * trip_miles + [credit card])."""

  def __init__(self):
    super().__init__()
    from models import features
    self.defaults = {n: s.default for n, s in features.RAW_FEATURES.items()}
    self.dtypes = _taxi_dtypes()
    self.feature_spec = {n: tf.io.FixedLenFeature([], d, self.defaults[n])
                         for n, d in self.dtypes.items()}

  def _probability(self, f):
    logit = (0.2 * f['fare'] - 0.3 * f['trip_miles'] +
             tf.cast(f['payment_type'] == 'Credit Card', tf.float32))
    return tf.sigmoid(logit)

  def _from_examples(self, serialized):
    return self._probability(tf.io.parse_example(serialized, self.feature_spec))

  @staticmethod
  def _outputs(p):
    return {'probability': p, 'class': tf.cast(p > 0.5, tf.int64)}


def save_taxi_like_model(export_dir: str) -> str:
  model = TaxiLikeModel()

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serving_default(examples):
    return model._outputs(model._from_examples(examples))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='inputs')])
  def classification(inputs):
    p = tf.reshape(model._from_examples(inputs), [-1, 1])
    return {'classes': tf.tile(tf.constant([['0', '1']]), [tf.shape(p)[0], 1]),
            'scores': tf.concat([1.0 - p, p], axis=1)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='inputs')])
  def regression(inputs):
    return {'outputs': model._from_examples(inputs)}

  raw_spec = {n: tf.TensorSpec([None], d, name=n) for n, d in model.dtypes.items()}
  raw_defaults = {n: tf.constant([], d) for n, d in model.dtypes.items()}

  @tf.function(input_signature=[raw_spec])
  def predict_raw(raw=raw_defaults):
    batch = tf.reduce_max(tf.stack([tf.size(v) for v in raw.values()]))
    filled = {n: tf.cond(tf.size(v) > 0, lambda v=v: v,
                         lambda n=n: tf.fill([batch], tf.constant(model.defaults[n], model.dtypes[n])))
              for n, v in raw.items()}
    return model._outputs(model._probability(filled))

  tf.saved_model.save(model, export_dir, signatures={
      'serving_default': serving_default, 'classification': classification,
      'regression': regression, 'predict_raw': predict_raw})
  _set_method_names(export_dir)
  return export_dir
