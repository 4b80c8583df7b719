"""REST input handling as TF Serving does it (json_tensor.cc, its HTTP
server): non-finite numbers, compressed bodies, deep nesting, long names,
and every kind of bad input answered with a 4xx, never a 5xx."""

import gzip
import json
import math
import zlib

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import errors, rest_json

PREDICT = '/v1/models/tiny:predict'


def post(server, path, body, headers=None):
  data = body if isinstance(body, bytes) else json.dumps(body).encode()
  return requests.post(server.rest + path, data=data, headers=headers or {}, timeout=60)


# ---- NaN and Infinity (TF Serving's parser takes them; its writer writes them) ----------

def test_nan_and_infinity_are_accepted_and_written_back(server):
  response = post(server, PREDICT, b'{"instances": [NaN, Infinity, -Infinity, 1.5]}')
  assert response.status_code == 200, response.text
  assert 'NaN' in response.text and '-Infinity' in response.text
  y = [row['y'] for row in json.loads(response.text)['predictions']]
  assert math.isnan(y[0]) and y[1:] == [math.inf, -math.inf, 3.0]


def test_nan_in_columnar_request_and_response(server):
  response = post(server, PREDICT, b'{"inputs": {"x": [NaN, 2.0]}}')
  assert response.status_code == 200, response.text
  outputs = json.loads(response.text)['outputs']
  assert math.isnan(outputs['y'][0]) and outputs['y'][1] == 4.0
  assert outputs['version'] == [2, 2]


def test_regress_writes_nan_results(server):
  body = b'{"signature_name": "regression", "examples": [{"x": NaN}, {"x": 1.0}]}'
  response = post(server, '/v1/models/tiny:regress', body)
  assert response.status_code == 200, response.text
  results = json.loads(response.text)['results']
  assert math.isnan(results[0]) and results[1] == 2.0


# ---- Deep nesting and long names: 400 with a short message, never a 500 -------------------

@pytest.mark.parametrize('depth', [100, 300, 1000, 5000])
def test_deeply_nested_bodies_are_400(server, depth):
  body = b'{"instances": ' + b'[' * depth + b'1.0' + b']' * depth + b'}'
  response = post(server, PREDICT, body)
  assert response.status_code == 400, response.text[:300]
  assert len(response.json()['error']) < 1000


@pytest.mark.parametrize('depth', [600, 1500])
def test_deeply_nested_string_input_is_400(server, depth):
  body = (b'{"signature_name": "raw", "inputs": {"s": ' + b'[' * depth + b'"a"' + b']' * depth
          + b'}}')
  response = post(server, PREDICT, body)
  assert response.status_code == 400, response.text[:300]


@pytest.mark.parametrize('depth', [300, 1000])
def test_deeply_nested_non_object_body_is_400(server, depth):
  response = post(server, PREDICT, b'[' * depth + b']' * depth)
  assert response.status_code == 400, response.text[:300]
  assert 'Is not object' in response.json()['error']


def test_deep_nesting_in_an_example_is_400(server):
  body = b'{"examples": [{"x": ' + b'[' * 600 + b']' * 600 + b'}]}'
  response = post(server, '/v1/models/tiny:classify', body)
  assert response.status_code == 400, response.text[:300]


def test_long_signature_name_is_echoed_shortened_over_rest(server):
  response = post(server, PREDICT, {'signature_name': 's' * 10000, 'instances': [1.0]})
  assert response.status_code == 400
  error = response.json()['error']
  assert 'sss' in error and len(error) <= errors.MAX_MESSAGE_CHARS + 100


def test_long_signature_name_is_a_clean_grpc_error(server):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
  request = predict_pb2.PredictRequest()
  request.model_spec.name, request.model_spec.signature_name = 'tiny', 's' * 10000
  request.inputs['x'].dtype = 1
  with pytest.raises(grpc.RpcError) as failure:
    stub.Predict(request, timeout=30)
  assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
  assert len(failure.value.details()) <= errors.MAX_MESSAGE_CHARS + 100


# ---- Content-Encoding (TF Serving's HTTP server gunzips; nothing else) ---------------------

def test_gzip_body_is_accepted(server):
  body = gzip.compress(b'{"instances": [1.0, 2.5]}')
  response = post(server, PREDICT, body, {'Content-Encoding': 'gzip'})
  assert response.status_code == 200, response.text
  assert [r['y'] for r in response.json()['predictions']] == [2.0, 5.0]


def test_gzip_classify_body_is_accepted(server):
  body = gzip.compress(b'{"signature_name": "regression", "examples": [{"x": 2.0}]}')
  response = post(server, '/v1/models/tiny:regress', body, {'Content-Encoding': 'gzip'})
  assert response.status_code == 200, response.text
  assert response.json() == {'results': [4.0]}


@pytest.mark.parametrize('encoding, body, message', [
    ('deflate', zlib.compress(b'{"instances": [1.0]}'), 'Unsupported Content-Encoding'),
    ('br', b'\x0b\x02\x80', 'Unsupported Content-Encoding'),
    ('gzip', b'not gzip at all', 'Failed to uncompress'),
    ('gzip', gzip.compress(b'{"instances": [1.0]}')[:-12], 'Failed to uncompress'),
])
def test_undecodable_encodings_are_400(server, encoding, body, message):
  response = post(server, PREDICT, body, {'Content-Encoding': encoding})
  assert response.status_code == 400, response.text
  assert message in response.json()['error']


def test_gzip_bomb_is_413(server):
  """The server fixture allows 100,000-byte bodies; 10 MB of zeros
  compresses to 10 kB and must be refused once uncompressed."""
  body = gzip.compress(b'{"instances": [' + b'0,' * 5_000_000 + b'0]}')
  assert len(body) < 100_000
  response = post(server, PREDICT, body, {'Content-Encoding': 'gzip'})
  assert response.status_code == 413, response.text
  assert 'uncompressed' in response.json()['error']
  assert post(server, PREDICT, {'instances': [1.0]}).status_code == 200


# ---- Bad input of every kind: a 400 ---------------------------------------------------------

@pytest.mark.parametrize('body, message', [
    ({'instances': [1.0, True]}, 'is not of expected type: float'),
    ({'instances': [True]}, 'is not of expected type: float'),
    ({'inputs': {'x': [1.0, '2']}}, 'is not of expected type: float'),
    ({'inputs': {'x': [None]}}, 'is not of expected type: float'),
    ({'inputs': {'x': [{'b64': 'AA=='}]}}, 'is not of expected type: float'),
    ({'inputs': {'x': [[1.0], [1.0, 2.0]]}}, 'unexpected size'),
    ({'inputs': {'x': [[1.0], 2.0]}}, 'incorrect level'),
    ({'inputs': {'x': [1.0, [2.0]]}}, 'level'),
    ({'signature_name': 'raw', 'inputs': {'n': [1.5]}}, 'is not of expected type: int64'),
    ({'signature_name': 'raw', 'inputs': {'n': [True]}}, 'is not of expected type: int64'),
    ({'signature_name': 'raw', 'inputs': {'n': [2**63]}}, 'out of range'),
    ({'signature_name': 'raw', 'inputs': {'s': [1]}}, 'is not of expected type: string'),
    ({'signature_name': 'raw', 'inputs': {'s': [{'b64': 5}]}}, 'base64'),
    ({'signature_name': 'raw', 'inputs': {'s': [{'b64': '!!!'}]}}, 'base64 decode'),
    ({'signature_name': 'raw', 'inputs': {'s': [{'b64': 'AA==', 'x': 1}]}}, 'base64'),
    ({'signature_name': 'raw', 'instances': [{'a': 1.0, 'zz': 1}]}, 'alias not found'),
    ({'signature_name': 'raw', 'instances': [{'a': 1.0}, [1.0]]}, 'Expecting object'),
    ({'signature_name': 'raw', 'instances': [1.0]}, 'plain list'),
    ({'signature_name': 'raw', 'inputs': [1.0]}, 'plain value/list'),
    ({'signature_name': 7, 'instances': [1.0]}, "'signature_name' key must be a string"),
    ({'instances': {'x': [1.0]}}, "'instances' to be an list/array"),
    ({'instances': [1.0], 'inputs': [1.0]}, "only one of 'inputs' or 'instances'"),
    ({'inputs': [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1.0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, 'deeper'),
    ('"just a string"', 'Is not object'),
    (b'\xff\xfe', 'JSON Parse error'),
    (b'{"instances": [1.0]} trailing', 'JSON Parse error'),
])
def test_bad_predict_input_is_400(server, body, message):
  data = body.encode() if isinstance(body, str) else body
  response = post(server, PREDICT, data)
  assert response.status_code == 400, response.text
  assert message in response.json()['error'], response.json()['error']


@pytest.mark.parametrize('body, message', [
    ({'examples': [[1.0]]}, 'Example must be JSON object'),
    ({'examples': [{'x': None}]}, 'unexpected JSON type: Null'),
    ({'examples': [{'x': [1.0, 'a']}]}, 'Unexpected element type'),
    ({'examples': [{'x': [[1.0]]}]}, 'unexpected JSON type: Array'),
    ({'examples': [{'x': 2**63}]}, 'uint64'),
    ({'examples': [{'x': {'b64': '%%'}}]}, 'base64 decode'),
    ({'examples': 'x'}, "'examples' value to be an list/array"),
    ({'context': [1], 'examples': [{}]}, 'Example must be JSON object'),
])
def test_bad_classify_input_is_400(server, body, message):
  body = {'signature_name': 'regression', **body}
  response = post(server, '/v1/models/tiny:regress', body)
  assert response.status_code == 400, response.text
  assert message in response.json()['error'], response.json()['error']


def test_bad_input_to_a_missing_model_is_its_404(server):
  """The model is looked up before the JSON is decoded: its error wins."""
  response = post(server, '/v1/models/nope:predict', {'instances': [[1], [1, 2]]})
  assert response.status_code == 404


# ---- How tensors are built (rest_json, as json_tensor.cc) -----------------------------------

def test_scalar_instances_keep_their_json_shape():
  """TF Serving does not reshape [2.0, 3.0, 4.0] to a [-1, 1] signature:
  the tensor is [3], and the graph decides."""
  array = rest_json.to_array([2.0, 3.0, 4.0], np.float32, 'x')
  assert array.shape == (3,) and array.dtype == np.float32


def test_large_inputs_are_converted_slice_by_slice_to_the_same_tensor():
  rows = [[float(i), float(-i)] for i in range(200_000)]
  array = rest_json.to_array(rows, np.float32, 'x')
  assert array.shape == (200_000, 2)
  assert array[123_456].tolist() == [123456.0, -123456.0]
  strings = rest_json.to_array([f's{i}' for i in range(100_000)], object, 's')
  assert strings[99_999] == b's99999'


def test_a_ragged_list_late_in_a_large_input_is_found():
  rows = [[1.0, 2.0]] * 150_000 + [[1.0]]
  with pytest.raises(errors.ServingError, match='unexpected size: 1 at level: 1'):
    rest_json.to_array(rows, np.float32, 'x')


def test_floats_beyond_float32_become_infinity_as_in_tf_serving():
  assert rest_json.to_array([1e300], np.float32, 'x').tolist() == [math.inf]


def test_values_bound_is_checked_before_expanding():
  budget = rest_json.Budget(1000)
  with pytest.raises(errors.ServingError, match='more than 1000 values') as failure:
    rest_json.to_array([[0.0] * 100] * 11, np.float32, 'x', budget)
  assert failure.value.http_status == 413


def test_values_bound_counts_the_context_once_per_example():
  doc = {'context': {'a': [1.0] * 10}, 'examples': [{}] * 200}
  with pytest.raises(errors.ServingError, match='more than 1000 values'):
    rest_json.examples_input(doc, rest_json.Budget(1000))
  assert rest_json.examples_input(doc, rest_json.Budget(3000)).example_list_with_context


def test_error_messages_never_reserialise_the_whole_request():
  with pytest.raises(errors.ServingError, match='Is not object') as failure:
    rest_json.parse_body(b'[' * 1000 + b']' * 1000)
  assert len(failure.value.message) < 400
  deep = []
  for _ in range(5000):
    deep = [deep]
  assert len(rest_json._debug(deep)) < 300
  assert len(rest_json._debug({'k' * 100000: 'v' * 100000})) < 300
