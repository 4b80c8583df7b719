"""SavedModels written the ways TF Serving's own test models are
(tensorflow_serving/servables/tensorflow/testdata): a TF1 graph-mode
half_plus_two with Predict/Classify/Regress signatures (SavedModelBuilder, as
saved_model_half_plus_two.py builds it), an unshaped TF1 half_plus_three, a
TF2 `tf.saved_model.save` model with two signatures and a Keras Sequential
`model.save`. Each is written under `<base>/<version dir>`, the version dir
zero-padded (`00000123`) as in TF Serving's testdata, or plain."""

import os

import tensorflow as tf

HALF_PLUS_TWO_VERSION_DIR = '00000123'


def _builder_session(export_dir):
  return tf.compat.v1.saved_model.Builder(export_dir), tf.compat.v1.Session(graph=tf.Graph())


def save_half_plus_two(base_path: str, version_dir: str = HALF_PLUS_TWO_VERSION_DIR) -> str:
  """y = 0.5 x + 2 (y2 = 0.5 x + 3) over tf.Examples, with the signatures of
  TF Serving's saved_model_half_plus_two: serving_default (Predict, x -> y,
  x the parsed [-1, 1] feature), regress_x_to_y, regress_x_to_y2 and
  classify_x_to_y (serialized tf.Examples in)."""
  export_dir = os.path.join(base_path, version_dir)
  builder, session = _builder_session(export_dir)
  v1 = tf.compat.v1
  with session.graph.as_default(), session:
    a = v1.Variable(0.5, name='a')
    b = v1.Variable(2.0, name='b')
    c = v1.Variable(3.0, name='c')
    serialized = v1.placeholder(tf.string, name='tf_example')
    parsed = v1.parse_example(serialized, {'x': v1.FixedLenFeature([1], tf.float32)})
    x = tf.identity(parsed['x'], name='x')
    y = tf.add(tf.multiply(a, x), b, name='y')
    y2 = tf.add(tf.multiply(a, x), c, name='y2')
    session.run(v1.global_variables_initializer())
    info = v1.saved_model.utils.build_tensor_info
    signatures = v1.saved_model.signature_def_utils
    builder.add_meta_graph_and_variables(
        session, [v1.saved_model.tag_constants.SERVING],
        signature_def_map={
            'serving_default': signatures.build_signature_def(
                {'x': info(x)}, {'y': info(y)}, v1.saved_model.PREDICT_METHOD_NAME),
            'regress_x_to_y': signatures.regression_signature_def(serialized, y),
            'regress_x_to_y2': signatures.regression_signature_def(serialized, y2),
            'classify_x_to_y': signatures.classification_signature_def(serialized, None, y),
        })
  builder.save()
  return export_dir


def save_half_plus_three(base_path: str, version_dir: str = HALF_PLUS_TWO_VERSION_DIR) -> str:
  """y = 0.5 x + 3 with an unshaped signature, as TF Serving's
  saved_model_half_plus_three: its TensorInfos carry no tensor_shape (written
  before SignatureDefs recorded shapes), though x is a [-1] placeholder."""
  export_dir = os.path.join(base_path, version_dir)
  builder, session = _builder_session(export_dir)
  v1 = tf.compat.v1
  with session.graph.as_default(), session:
    a = v1.Variable(0.5, name='a')
    c = v1.Variable(3.0, name='c')
    x = v1.placeholder(tf.float32, shape=[None], name='x')
    y = tf.add(tf.multiply(a, x), c, name='y')
    session.run(v1.global_variables_initializer())

    def info(tensor):
      tensor_info = v1.saved_model.utils.build_tensor_info(tensor)
      tensor_info.ClearField('tensor_shape')
      return tensor_info

    builder.add_meta_graph_and_variables(
        session, [v1.saved_model.tag_constants.SERVING],
        signature_def_map={'serving_default': v1.saved_model.signature_def_utils.build_signature_def(
            {'x': info(x)}, {'y': info(y)}, v1.saved_model.PREDICT_METHOD_NAME)})
  builder.save()
  return export_dir


class HalfPlusTwoTF2(tf.Module):
  """The TF2 half_plus_two: y = 0.5 x + 2 (serving_default), y = 0.5 x + 3 (plus_three)."""

  def __init__(self):
    super().__init__()
    self.a = tf.Variable(0.5)
    self.b = tf.Variable(2.0)
    self.c = tf.Variable(3.0)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='x')])
  def half_plus_two(self, x):
    return {'y': self.a * x + self.b}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='x')])
  def half_plus_three(self, x):
    return {'y': self.a * x + self.c}


def save_tf2_half_plus_two(base_path: str, version_dir: str = '123') -> str:
  export_dir = os.path.join(base_path, version_dir)
  model = HalfPlusTwoTF2()
  tf.saved_model.save(model, export_dir, signatures={
      'serving_default': model.half_plus_two, 'plus_three': model.half_plus_three})
  return export_dir


def save_keras_half_plus_two(base_path: str, version_dir: str = '1') -> str:
  """A Keras Sequential Dense(1) with kernel 0.5 and bias 2, `model.save`d
  (tf-keras writes a SavedModel: serving_default, input `dense_input` [-1, 1],
  output `dense` [-1, 1])."""
  import tf_keras as keras
  export_dir = os.path.join(base_path, version_dir)
  model = keras.Sequential([keras.layers.Dense(
      1, input_shape=(1,), name='dense',
      kernel_initializer=keras.initializers.Constant(0.5),
      bias_initializer=keras.initializers.Constant(2.0))])
  model.save(export_dir)
  return export_dir


class SwitchMergeModel(tf.Module):
  """y = 2 x through v1 control flow (Switch/Merge) in a TF2 function."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='x')])
  def predict(self, x):
    when_false, when_true = tf.raw_ops.Switch(data=x, pred=tf.reduce_all(x > 0))
    merged = tf.raw_ops.Merge(inputs=[when_false * 3.0, when_true * 2.0])
    return {'y': merged.output}


def save_switch_merge(base_path: str, version_dir: str = '1') -> str:
  export_dir = os.path.join(base_path, version_dir)
  model = SwitchMergeModel()
  tf.saved_model.save(model, export_dir, signatures={'serving_default': model.predict})
  return export_dir
