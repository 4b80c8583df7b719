"""Signatures run on TF's single-threaded executor when their graph allows
it, and on the default executor otherwise (v1 control flow here)."""

import numpy as np
import tensorflow as tf

from serving.servable import Servable


class SwitchMergeModel(tf.Module):
  """y = 2 * x through v1 control flow (Switch/Merge), which the
  single-threaded executor rejects."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def predict(self, x):
    when_false, when_true = tf.raw_ops.Switch(data=x, pred=tf.reduce_all(x > 0))
    merged = tf.raw_ops.Merge(inputs=[when_false * 3.0, when_true * 2.0])
    return {'y': merged.output}


def test_single_threaded_executor_when_supported(model_dirs):
  signature = Servable('tiny', 1, model_dirs[1]).signature('')
  outputs = signature.call({'x': np.array([1.5, 2.0], np.float32)})
  np.testing.assert_allclose(outputs['y'], [1.5, 2.0])  # Version 1: y = x.
  assert signature._single_threaded


def test_default_executor_for_v1_control_flow(tmp_path):
  model = SwitchMergeModel()
  tf.saved_model.save(model, str(tmp_path), signatures={'serving_default': model.predict})
  signature = Servable('switch', 1, str(tmp_path)).signature('')
  for _ in range(2):
    outputs = signature.call({'x': np.array([1.5, 2.0], np.float32)})
    np.testing.assert_allclose(outputs['y'], [3.0, 4.0])
  assert not signature._single_threaded
