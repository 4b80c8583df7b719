"""A short fuzz of the REST API: random and mutated bodies never get a 5xx
and never take the server down (the long run is bench/serving_soak.py)."""

import json

import requests
from hypothesis import HealthCheck, given, settings, strategies as st

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


def test_server_still_serves_after_the_fuzz(server):
  response = requests.post(server.rest + '/v1/models/tiny:predict', json={'instances': [1.0]},
                           timeout=10)
  assert response.status_code == 200


# ---- The real model's predict_raw (one raw input per feature, all optional) -----------

from models import features  # noqa: E402  (the repo root is on sys.path: conftest)

RAW_URL = '/v1/models/taxi_big_tipper:predict'
_RAW_VALUES = {
    'float': st.floats(-1e6, 1e6, allow_nan=False, width=32) | st.integers(-1000, 10**6),
    'int': st.integers(-2**40, 2**40),
    'string': st.text(max_size=12),
}
well_typed_rows = st.fixed_dictionaries(
    {}, optional={name: _RAW_VALUES[spec.dtype] for name, spec in features.RAW_FEATURES.items()})
any_rows = st.dictionaries(
    st.sampled_from(list(features.RAW_FEATURES) + ['tips', 'x']), json_values, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(keys=st.sets(st.sampled_from(list(features.RAW_FEATURES)), min_size=1),
       data=st.data())
def test_real_predict_raw_well_typed_rows_are_answered(real_server, keys, data):
  """Any subset of the raw features with values of the right type (any
  value: unseen categories, negative fares, empty strings) gets one finite
  probability per row."""
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
  probabilities = ([p['probability'] for p in answer] if key == 'predictions'
                   else answer['probability'])
  assert len(probabilities) == len(rows)
  assert all(0.0 <= p <= 1.0 for p in probabilities), (body, probabilities)


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
