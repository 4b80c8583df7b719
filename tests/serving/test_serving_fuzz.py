"""A short fuzz of the REST API: random and mutated bodies never get a 5xx
and never take the server down (the long run is bench/serving_soak.py).
Then the classes of bad input one by one, over REST and gRPC: wrong types,
non-finite numbers, deep nesting, long names, encodings, b64, shapes."""

import gzip
import json
import zlib

import grpc
import numpy as np
import requests
from hypothesis import HealthCheck, given, settings, strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

PATHS = ['/v1/models/tiny:predict', '/v1/models/tiny/versions/1:predict',
         '/v1/models/tiny/labels/canary:classify', '/v1/models/tiny:regress',
         '/v1/models/tiny/versions/99:predict', '/v1/models/nope:predict']
VALID = [{'instances': [1.0, 2.0]}, {'inputs': {'x': [1.0]}},
         {'signature_name': 'raw', 'instances': [{'a': 1.0, 's': 'q'}]},
         {'signature_name': 'classification', 'examples': [{'x': 1.0}]},
         {'signature_name': 'regression', 'context': {'x': 2}, 'examples': [{}]}]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(['instances', 'inputs', 'examples', 'signature_name', 'context', 'x',
                         'a', 'n', 's', 'b64']), children, max_size=4),
    max_leaves=20)


def mutated(body: bytes, data) -> bytes:
  position = data.draw(st.integers(0, len(body)))
  kind = data.draw(st.sampled_from(['truncate', 'insert', 'delete']))
  if kind == 'truncate':
    return body[:position]
  if kind == 'insert':
    return body[:position] + data.draw(st.binary(max_size=4)) + body[position:]
  return body[:position] + body[position + 1:]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_bodies_never_get_a_5xx(server, data):
  path = data.draw(st.sampled_from(PATHS))
  if data.draw(st.booleans()):
    body = json.dumps(data.draw(json_values)).encode()
  else:
    body = mutated(json.dumps(data.draw(st.sampled_from(VALID))).encode(), data)
  response = requests.post(server.rest + path, data=body, timeout=30)
  assert response.status_code < 500, (path, body, response.text)
  assert 'error' in response.json() or response.status_code == 200


# ---- The classes of bad input, over REST ----------------------------------------------

def _nested(depth: int, leaf: str) -> str:
  return '[' * depth + leaf + ']' * depth


_LEAVES = ['1.0', '-3', 'true', 'null', '"s"', 'NaN', 'Infinity', '-Infinity', '1e308',
           '18446744073709551615', '{"b64": "AA=="}', '{"b64": "!!"}', '{"b64": 1}', '{}', '[]']
_SIGNATURES = ['', 'raw', 'examples', 'regression', 'classification', 's' * 5000]


@st.composite
def bad_bodies(draw):
  """A body of one class of bad (or odd) input: typed leaves at any depth,
  ragged lists, non-finite tokens, long names, non-object bodies."""
  kind = draw(st.sampled_from(['leaves', 'ragged', 'deep', 'name', 'examples', 'top']))
  signature = draw(st.sampled_from(_SIGNATURES))
  head = f'{{"signature_name": {json.dumps(signature)}, '
  leaf = draw(st.sampled_from(_LEAVES))
  key = draw(st.sampled_from(['instances', 'inputs']))
  if kind == 'leaves':
    leaves = ', '.join(draw(st.lists(st.sampled_from(_LEAVES), min_size=1, max_size=4)))
    name = draw(st.sampled_from(['x', 'a', 'n', 's', 'examples', 'zz']))
    value = draw(st.sampled_from([f'[{leaves}]', f'{{"{name}": [{leaves}]}}',
                                  f'[{{"{name}": {leaf}}}]', leaf]))
    return f'{head}"{key}": {value}}}'.encode()
  if kind == 'ragged':
    rows = draw(st.lists(st.integers(0, 3), min_size=2, max_size=4))
    return f'{head}"{key}": [{", ".join("[" + ", ".join([leaf] * n) + "]" for n in rows)}]}}'.encode()
  if kind == 'deep':
    depth = draw(st.sampled_from([33, 100, 255, 256, 600, 1023, 1025, 3000]))
    where = draw(st.sampled_from(['value', 'body', 'example']))
    if where == 'body':
      return _nested(depth, leaf).encode()
    if where == 'example':
      return f'{head}"examples": [{{"x": {_nested(depth, leaf)}}}]}}'.encode()
    return f'{head}"{key}": {_nested(depth, leaf)}}}'.encode()
  if kind == 'name':
    return f'{head}"{key}": {{"{"n" * 10000}": [{leaf}]}}}}'.encode()
  if kind == 'examples':
    context = draw(st.sampled_from(['', f'"context": {{"x": {leaf}}}, ']))
    example = draw(st.sampled_from([f'{{"x": {leaf}}}', f'{{"x": [{leaf}, 1.0]}}', leaf]))
    return f'{head}{context}"examples": [{example}]}}'.encode()
  return draw(st.sampled_from([b'[]', b'"x"', b'1', b'null', b'{"instances": [1.0]} x',
                               b'\xef\xbb\xbf{"instances": [1.0]}', b'{"instances": [1.0,]}']))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bad_bodies(), path=st.sampled_from(PATHS[:4]),
       encoding=st.sampled_from(['', 'gzip', 'deflate', 'gzip-junk']))
def test_bad_input_classes_are_4xx_over_rest(server, body, path, encoding):
  headers = {}
  if encoding == 'gzip':
    body, headers = gzip.compress(body), {'Content-Encoding': 'gzip'}
  elif encoding == 'deflate':
    body, headers = zlib.compress(body), {'Content-Encoding': 'deflate'}
  elif encoding == 'gzip-junk':
    headers = {'Content-Encoding': 'gzip'}
  response = requests.post(server.rest + path, data=body, headers=headers, timeout=60)
  assert response.status_code < 500, (path, body[:200], encoding, response.text[:300])
  error = response.json().get('error')
  assert response.status_code == 200 or (error and len(error) < 3000), response.text[:300]


# ---- The classes of bad input, over gRPC (TensorProtos any client may send) --------------

_DTYPES = [types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT64, types_pb2.DT_STRING,
           types_pb2.DT_HALF, types_pb2.DT_COMPLEX64, types_pb2.DT_RESOURCE,
           types_pb2.DT_VARIANT, types_pb2.DT_INVALID, types_pb2.DT_QINT8, 1000]


@st.composite
def bad_tensors(draw):
  """A TensorProto of one class of bad input: odd dtypes, huge or negative
  dims, ranks past 32, contents that do not match the shape."""
  proto = tensor_pb2.TensorProto()
  proto.dtype = draw(st.sampled_from(_DTYPES))
  kind = draw(st.sampled_from(['huge', 'negative', 'rank', 'mismatch', 'dtype']))
  if kind == 'huge':
    dims = draw(st.lists(st.sampled_from([2**36, 2**40, 2**62, 3, 1]), min_size=1, max_size=3))
  elif kind == 'negative':
    dims = draw(st.lists(st.sampled_from([-1, -2, -2**40, 0, 2]), min_size=1, max_size=3))
  elif kind == 'rank':
    dims = [1] * draw(st.integers(33, 300))
  else:
    dims = draw(st.lists(st.integers(0, 4), max_size=3))
  for size in dims:
    proto.tensor_shape.dim.add().size = size
  if draw(st.booleans()):
    proto.tensor_content = draw(st.binary(max_size=24))
  else:
    proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=4)))
    proto.string_val.extend(draw(st.lists(st.binary(max_size=4), max_size=2)))
  if kind == 'dtype':
    proto.dtype = draw(st.sampled_from([types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, 1000]))
  return kind, proto


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=bad_tensors(), signature=st.sampled_from(['', 'raw']))
def test_bad_tensors_are_invalid_argument_over_grpc(server, case, signature):
  kind, tensor = case
  request = predict_pb2.PredictRequest()
  request.model_spec.name, request.model_spec.signature_name = 'tiny', signature
  request.inputs['x' if not signature else 'a'].CopyFrom(tensor)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
  try:
    stub.Predict(request, timeout=60)
  except grpc.RpcError as e:
    assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), (
        kind, tensor.dtype, list(d.size for d in tensor.tensor_shape.dim)[:5], e.code(),
        e.details()[:200])
  else:  # Only a well-formed float tensor of a batch may be answered.
    assert kind in ('mismatch', 'negative', 'huge') and tensor.dtype == types_pb2.DT_FLOAT


def test_server_still_serves_after_the_fuzz(server):
  response = requests.post(server.rest + '/v1/models/tiny:predict', json={'instances': [1.0]},
                           timeout=10)
  assert response.status_code == 200


# ---- The real model's predict_raw (one raw input per feature; required ones must be sent) --

from conftest import REAL_MODEL_NAME  # noqa: E402
from models import features  # noqa: E402  (the repo root is on sys.path: conftest)

RAW_URL = f'/v1/models/{REAL_MODEL_NAME}:predict'
_RAW_VALUES = {
    'float': st.floats(-1e6, 1e6, allow_nan=False, width=32) | st.integers(-1000, 10**6),
    'int': st.integers(-2**40, 2**40),
    'string': st.text(max_size=12),
}
well_typed_rows = st.fixed_dictionaries(
    {}, optional={name: _RAW_VALUES[spec.dtype] for name, spec in features.RAW_FEATURES.items()})
REQUIRED = {name for name, spec in features.RAW_FEATURES.items() if spec.required}
OPTIONAL = sorted(set(features.RAW_FEATURES) - REQUIRED)
any_rows = st.dictionaries(
    st.sampled_from(list(features.RAW_FEATURES) + ['tips', 'x']), json_values, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(keys=(st.sets(st.sampled_from(OPTIONAL)) if OPTIONAL else st.just(set())).map(
    lambda keys: keys | REQUIRED), data=st.data())
def test_real_predict_raw_well_typed_rows_are_answered(real_server, keys, data):
  """The required raw features and any subset of the optional ones, with
  values of the right type (any value: unseen categories, negative numbers,
  empty strings), get one finite prediction per row (probabilities in [0, 1])."""
  row_strategy = st.fixed_dictionaries(
      {name: _RAW_VALUES[features.RAW_FEATURES[name].dtype] for name in sorted(keys)})
  rows = data.draw(st.lists(row_strategy, min_size=1, max_size=5))
  if data.draw(st.booleans()):
    body, key = {'signature_name': 'predict_raw', 'instances': rows}, 'predictions'
  else:
    body = {'signature_name': 'predict_raw',
            'inputs': {k: [r[k] for r in rows] for k in keys}}
    key = 'outputs'
  response = requests.post(real_server.rest + RAW_URL, json=body, timeout=30)
  assert response.status_code == 200, (body, response.text)
  answer = response.json()[key]
  # A signature with a single output is answered without its name (TF Serving).
  output = features.PREDICTION_KEY
  if key == 'predictions':
    predictions = [p[output] if isinstance(p, dict) else p for p in answer]
  else:
    predictions = answer[output] if isinstance(answer, dict) else answer
  assert len(predictions) == len(rows)
  values = np.asarray(predictions, float).ravel()
  assert np.isfinite(values).all(), (body, predictions)
  if features.TASK != features.REGRESSION:
    assert ((0.0 <= values) & (values <= 1.0)).all(), (body, predictions)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_real_predict_raw_fuzzed_bodies_never_get_a_5xx(real_server, data):
  choice = data.draw(st.sampled_from(['rows', 'columns', 'mutated']))
  if choice == 'rows':
    body = json.dumps({'signature_name': 'predict_raw',
                       'instances': data.draw(st.lists(any_rows, min_size=1, max_size=3))})
  elif choice == 'columns':
    body = json.dumps({'signature_name': 'predict_raw', 'inputs': {
        k: data.draw(st.lists(_RAW_VALUES[s.dtype], max_size=3) | json_values)
        for k, s in features.RAW_FEATURES.items() if data.draw(st.booleans())}})
  else:
    valid = {'signature_name': 'predict_raw', 'instances': [data.draw(well_typed_rows)]}
    body = mutated(json.dumps(valid).encode(), data)
  response = requests.post(real_server.rest + RAW_URL, data=body, timeout=30)
  assert response.status_code < 500, (body, response.text)
  assert 'error' in response.json() or response.status_code == 200
