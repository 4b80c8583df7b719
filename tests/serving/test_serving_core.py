"""The serving APIs on a real SavedModel, in-process (no server)."""

import asyncio

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2

from serving import core, errors
from serving.servable import Servable


class _MismatchedClassifier(tf.Module):
  """Two class labels but three scores per example."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='inputs')])
  def classify(self, inputs):
    batch = tf.shape(inputs)[0]
    return {'classes': tf.fill([batch, 2], 'a'), 'scores': tf.zeros([batch, 3])}


def test_classes_and_scores_of_different_widths_are_invalid_argument(tmp_path):
  module = _MismatchedClassifier()
  path = str(tmp_path / '1')
  tf.saved_model.save(module, path, signatures={'serving_default': module.classify})
  servable = Servable('mismatched', 1, path)
  request = classification_pb2.ClassificationRequest()
  request.input.example_list.examples.add()
  try:
    with pytest.raises(errors.ServingError) as raised:
      asyncio.run(core.classify_on(servable, request, core.DirectRunner()))
  finally:
    servable.close()
  assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert 'Tensors class and score should match in dim_size(1). Got 2 vs. 3' in raised.value.message
