"""PredictionService and ModelService over gRPC with the serving-api protos."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

import tiny_models


@pytest.fixture(scope='module')
def stub(server):
  return prediction_service_pb2_grpc.PredictionServiceStub(server.channel)


@pytest.fixture(scope='module')
def model_stub(server):
  return model_service_pb2_grpc.ModelServiceStub(server.channel)


def spec(version=None, label=None, signature='', name='tiny'):
  model_spec = model_pb2.ModelSpec(name=name, signature_name=signature)
  if version is not None:
    model_spec.version.value = version
  if label is not None:
    model_spec.version_label = label
  return model_spec


def predict_request(xs, **spec_args):
  request = predict_pb2.PredictRequest(model_spec=spec(**spec_args))
  request.inputs['x'].CopyFrom(tf.make_tensor_proto(np.array(xs, np.float32)))
  return request


def raw_request(a, n):
  request = predict_pb2.PredictRequest(model_spec=spec(signature='raw'))
  request.inputs['a'].CopyFrom(tf.make_tensor_proto(np.array(a, np.float32)))
  request.inputs['n'].CopyFrom(tf.make_tensor_proto(np.array(n, np.int64)))
  return request


def examples_input(xs):
  request = classification_pb2.ClassificationRequest()
  for x in xs:
    request.input.example_list.examples.add().ParseFromString(tiny_models.example(x))
  return request.input


@pytest.mark.parametrize('spec_args, version', [
    ({}, 2), ({'version': 1}, 1), ({'label': 'stable'}, 1), ({'label': 'canary'}, 2)])
def test_predict_by_version_and_label(stub, spec_args, version):
  response = stub.Predict(predict_request([1.0, 2.0], **spec_args), timeout=10)
  assert tf.make_ndarray(response.outputs['y']).tolist() == [version * 1.0, version * 2.0]
  assert response.model_spec.version.value == version
  assert response.model_spec.signature_name == 'serving_default'


def test_predict_feeds_shapes_as_given(stub):
  """As TF Serving: a [2, 1] tensor for a [-1] signature input goes to the
  graph, which computes it (y = 2x for version 2)."""
  response = stub.Predict(predict_request([[1.0], [2.0]]), timeout=10)
  assert tf.make_ndarray(response.outputs['y']).tolist() == [[2.0], [4.0]]


def test_predict_outputs_in_typed_fields(stub):
  response = stub.Predict(predict_request([1.0, 2.0]), timeout=10)
  assert response.outputs['y'].float_val == [2.0, 4.0]
  assert response.outputs['version'].int64_val == [2, 2]
  assert not response.outputs['y'].tensor_content
  assert [d.size for d in response.outputs['y'].tensor_shape.dim] == [2]


def test_predict_output_filter(stub):
  request = predict_request([1.0])
  request.output_filter.append('y')
  assert list(stub.Predict(request, timeout=10).outputs) == ['y']


def test_classify(stub):
  request = classification_pb2.ClassificationRequest(
      model_spec=spec(version=1, signature='classification'), input=examples_input([0.0, 2.0]))
  result = stub.Classify(request, timeout=10).result
  assert [c.label for c in result.classifications[0].classes] == ['0', '1']
  assert result.classifications[0].classes[1].score == pytest.approx(0.5)
  assert result.classifications[1].classes[1].score == pytest.approx(0.8807971)


def test_regress(stub):
  request = regression_pb2.RegressionRequest(
      model_spec=spec(signature='regression'), input=examples_input([1.5, -1.0]))
  response = stub.Regress(request, timeout=10)
  assert [r.value for r in response.result.regressions] == [3.0, -2.0]
  assert response.model_spec.version.value == 2


def test_multi_inference(stub):
  request = inference_pb2.MultiInferenceRequest(input=examples_input([1.0]))
  request.tasks.add(model_spec=spec(signature='classification'),
                    method_name='tensorflow/serving/classify')
  request.tasks.add(model_spec=spec(signature='regression'),
                    method_name='tensorflow/serving/regress')
  results = stub.MultiInference(request, timeout=10).results
  assert len(results[0].classification_result.classifications) == 1
  assert results[1].regression_result.regressions[0].value == 2.0


def test_metadata(stub):
  request = get_model_metadata_pb2.GetModelMetadataRequest(
      model_spec=spec(label='stable'), metadata_field=['signature_def'])
  response = stub.GetModelMetadata(request, timeout=10)
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata['signature_def'].Unpack(signature_map)
  assert response.model_spec.version.value == 1
  assert signature_map.signature_def['regression'].method_name == 'tensorflow/serving/regress'


def test_model_status(model_stub):
  response = model_stub.GetModelStatus(
      get_model_status_pb2.GetModelStatusRequest(model_spec=spec(version=1)), timeout=10)
  assert [(s.version, s.state) for s in response.model_version_status] == [
      (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


@pytest.mark.parametrize('call, request_, code', [
    ('Predict', predict_request([1.0], version=9), grpc.StatusCode.NOT_FOUND),
    ('Predict', predict_request([1.0], label='gold'), grpc.StatusCode.INVALID_ARGUMENT),
    ('Predict', raw_request(a=[1.0, 2.0], n=[1, 2, 3]), grpc.StatusCode.INVALID_ARGUMENT),
    ('Predict', predict_request([1.0], name=''), grpc.StatusCode.INVALID_ARGUMENT),
    ('Predict', predict_request([1.0], signature='nope'), grpc.StatusCode.FAILED_PRECONDITION),
    ('Predict', predict_pb2.PredictRequest(model_spec=spec()), grpc.StatusCode.INVALID_ARGUMENT),
    ('Classify', classification_pb2.ClassificationRequest(model_spec=spec(signature='regression')),
     grpc.StatusCode.INVALID_ARGUMENT),
    ('GetModelMetadata', get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec()),
     grpc.StatusCode.INVALID_ARGUMENT),
])
def test_errors_have_tf_serving_codes(stub, call, request_, code):
  with pytest.raises(grpc.RpcError) as error:
    getattr(stub, call)(request_, timeout=10)
  assert error.value.code() == code


def test_unknown_model_status_is_not_found(model_stub):
  request = get_model_status_pb2.GetModelStatusRequest(
      model_spec=model_pb2.ModelSpec(name='nope'))
  with pytest.raises(grpc.RpcError) as error:
    model_stub.GetModelStatus(request, timeout=10)
  assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_wrong_dtype_tensor_is_invalid_argument(stub):
  request = predict_pb2.PredictRequest(model_spec=spec())
  request.inputs['x'].CopyFrom(tf.make_tensor_proto(['a']))
  with pytest.raises(grpc.RpcError) as error:
    stub.Predict(request, timeout=10)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_status_without_model_spec_is_invalid_argument(model_stub):
  with pytest.raises(grpc.RpcError) as error:
    model_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=10)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert error.value.details() == 'Missing ModelSpec'


def test_v1_control_flow_model_runs(tmp_path):
  """Switch/Merge inside a TF2 function: the session runs it like any graph."""
  from serving.servable import Servable
  import tfs_models
  signature = Servable('switch', 1, tfs_models.save_switch_merge(str(tmp_path))).signature('')
  for _ in range(2):
    outputs = signature.call({'x': np.array([1.5, 2.0], np.float32)})
    np.testing.assert_allclose(outputs['y'], [3.0, 4.0])


@pytest.mark.parametrize('array', [
    np.array([[1.5, -0.0], [np.inf, 1e-30]], np.float32), np.array([np.nan, 2.5], np.float64),
    np.array([-2**31, 7], np.int32), np.array([-2**63, 2**63 - 1], np.int64),
    np.array([True, False]), np.array([b'a', b''], object), np.zeros([0, 3], np.float32)])
@pytest.mark.parametrize('as_content', [False, True])
def test_output_encodings_round_trip(array, as_content):
  from serving import tensors
  proto = tensors.to_proto(array, as_content)
  assert bool(proto.tensor_content) == (as_content and array.size > 0 and array.dtype != object)
  decoded = tf.make_ndarray(proto)
  assert decoded.shape == array.shape
  assert np.array_equal(decoded, array, equal_nan=array.dtype.kind == 'f')
