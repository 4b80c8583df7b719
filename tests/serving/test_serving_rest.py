"""The REST API: TF Serving's paths, body shapes and status codes."""

import base64
import json

import pytest
import requests

import tiny_models


def post(server, path, body):
  data = body if isinstance(body, (bytes, str)) else json.dumps(body)
  return requests.post(server.rest + path, data=data, timeout=30)


def test_status_lists_versions(server):
  response = requests.get(server.rest + '/v1/models/tiny', timeout=10)
  assert response.status_code == 200
  assert response.json() == {'model_version_status': [
      {'version': '2', 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}},
      {'version': '1', 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}},
  ]}


@pytest.mark.parametrize('suffix, version', [
    ('/versions/1', '1'), ('/labels/stable', '1'), ('/labels/canary', '2')])
def test_status_of_one_version(server, suffix, version):
  body = requests.get(server.rest + '/v1/models/tiny' + suffix, timeout=10).json()
  assert [s['version'] for s in body['model_version_status']] == [version]


def test_predict_row_format_single_input(server):
  response = post(server, '/v1/models/tiny:predict', {'instances': [1.0, 2.5]})
  assert response.status_code == 200
  assert response.json() == {'predictions': [{'version': 2, 'y': 2.0}, {'version': 2, 'y': 5.0}]}


def test_predict_columnar_format(server):
  response = post(server, '/v1/models/tiny/versions/1:predict', {'inputs': [1.0, 2.5]})
  assert response.json() == {'outputs': {'version': [1, 1], 'y': [1.0, 2.5]}}


@pytest.mark.parametrize('path, version', [
    ('/v1/models/tiny/labels/stable:predict', 1), ('/v1/models/tiny/labels/canary:predict', 2),
    ('/v1/models/tiny/versions/2:predict', 2), ('/v1/models/tiny:predict', 2)])
def test_predict_routes_versions_and_labels(server, path, version):
  assert post(server, path, {'instances': [1.0]}).json()['predictions'][0]['version'] == version


def test_predict_b64_examples(server):
  examples = [{'b64': base64.b64encode(tiny_models.example(x)).decode()} for x in (1.0, 3.0)]
  body = {'signature_name': 'examples', 'instances': examples}
  assert post(server, '/v1/models/tiny:predict', body).json() == {
      'predictions': [{'version': 2, 'y': 2.0}, {'version': 2, 'y': 6.0}]}


def test_predict_omits_inputs_with_defaults(server):
  rows = post(server, '/v1/models/tiny:predict',
              {'signature_name': 'raw', 'instances': [{'a': 1.5, 's': 'hi'}]}).json()
  # `*_bytes` outputs come back as b64, other strings as text.
  assert rows == {'predictions': [{'echo_bytes': {'b64': base64.b64encode(b'hi').decode()},
                                   'label': 'hi!', 'total': 3.0}]}
  columns = post(server, '/v1/models/tiny:predict',
                 {'signature_name': 'raw', 'inputs': {'n': [3, 4]}}).json()
  assert columns['outputs']['total'] == [6.0, 8.0]


def test_classify_and_regress(server):
  body = {'signature_name': 'classification', 'examples': [{'x': 0.0}, {'x': 1.0}]}
  results = post(server, '/v1/models/tiny/versions/1:classify', body).json()['results']
  assert results[0] == [['0', 0.5], ['1', 0.5]]
  assert [label for label, _ in results[1]] == ['0', '1']
  assert results[1][1][1] == pytest.approx(0.7310586)
  body = {'signature_name': 'regression', 'context': {'x': 9.0}, 'examples': [{'x': 2.0}, {}]}
  # Example features win over context features; an empty example gets the context's.
  assert post(server, '/v1/models/tiny:regress', body).json() == {'results': [4.0, 18.0]}


def test_metadata(server):
  body = requests.get(server.rest + '/v1/models/tiny/labels/stable/metadata', timeout=10).json()
  assert body['model_spec'] == {'name': 'tiny', 'version': '1', 'signature_name': ''}
  signatures = body['metadata']['signature_def']['signature_def']
  assert signatures['classification']['method_name'] == 'tensorflow/serving/classify'
  assert signatures['serving_default']['inputs']['x']['dtype'] == 'DT_FLOAT'


@pytest.mark.parametrize('path, body, status, message', [
    ('/v1/models/nope:predict', {'instances': [1.0]}, 404, 'Servable not found'),
    ('/v1/models/tiny/versions/7:predict', {'instances': [1.0]}, 404, 'Specific(tiny, 7)'),
    ('/v1/models/tiny/labels/gold:predict', {'instances': [1.0]}, 400, 'label: gold'),
    ('/v1/models/tiny:predict', b'{"instances": [1.0,', 400, 'JSON Parse error'),
    ('/v1/models/tiny:predict', b'', 400, 'document is empty'),
    ('/v1/models/tiny:predict', [1, 2], 400, 'Is not object'),
    ('/v1/models/tiny:predict', {'instances': ['a']}, 400, 'not of expected type'),
    ('/v1/models/tiny:predict', {'instances': []}, 400, "No values in 'instances'"),
    ('/v1/models/tiny:predict', {'inputz': [1.0]}, 400, "Missing 'inputs' or 'instances'"),
    ('/v1/models/tiny:predict', {'signature_name': 'nope', 'inputs': [1]}, 400, 'nope'),
    ('/v1/models/tiny:predict', {'signature_name': 'raw', 'inputs': {'zz': [1]}}, 400,
     'alias not found'),
    ('/v1/models/tiny:predict', {'signature_name': 'raw', 'instances': [{'a': 1.0}, {'n': 1}]},
     400, 'keys must be equal'),
    ('/v1/models/tiny:classify', {'examples': [{'x': [1, 'a']}]}, 400, 'Unexpected element type'),
    ('/v1/models/tiny:regress', {'signature_name': 'regression'}, 400, "'examples'"),
    ('/v1/models/tiny/versions/x:predict', {'instances': [1.0]}, 400, 'Malformed request'),
])
def test_errors_are_json_with_tf_serving_status_codes(server, path, body, status, message):
  response = post(server, path, body)
  assert response.status_code == status, response.text
  assert message in response.json()['error']


def test_missing_required_input_is_named(server):
  response = post(server, '/v1/models/tiny:predict', {'inputs': {}})
  assert response.status_code == 400
  assert 'Missing but required: {x}' in response.json()['error']


def test_oversized_body_is_413_and_server_keeps_serving(server):
  response = post(server, '/v1/models/tiny:predict', b'{"instances": [' + b'1.0,' * 50000 + b'1.0]}')
  assert response.status_code == 413
  assert 'error' in response.json()
  assert post(server, '/v1/models/tiny:predict', {'instances': [1.0]}).status_code == 200


def test_unknown_paths(server):
  assert requests.get(server.rest + '/nothing', timeout=10).status_code == 404
  response = requests.get(server.rest + '/v1/models', timeout=10)
  assert response.status_code == 400 and 'Missing model name' in response.json()['error']


def test_expect_100_continue_is_answered_before_the_body(server):
  """curl sends `Expect: 100-continue` with any body over 1 KB and waits for
  the interim answer before it sends the body."""
  import socket
  from urllib.parse import urlparse
  address = urlparse(server.rest)
  body = json.dumps({'instances': [1.0]}).encode()
  with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
    connection.sendall(b'POST /v1/models/tiny/versions/1:predict HTTP/1.1\r\nHost: x\r\n'
                       b'Content-Type: application/json\r\nExpect: 100-continue\r\n'
                       b'Content-Length: %d\r\n\r\n' % len(body))
    assert connection.recv(1024).startswith(b'HTTP/1.1 100 Continue\r\n\r\n')
    connection.sendall(body)
    answer = b''
    while b'"predictions"' not in answer:
      chunk = connection.recv(4096)
      assert chunk, answer
      answer += chunk
  assert answer.startswith(b'HTTP/1.1 200 OK')
  assert b'{"predictions":[{"version":1,"y":1.0}]}' in answer


def test_chunked_body_over_the_limit_is_413(server):
  """No Content-Length: the limit (--max_request_body_bytes=100000) is
  counted as the body arrives."""
  chunks = (b'{"instances": [' + b'1.0, ' * 10_000 + b'1.0]}' for _ in range(3))
  response = requests.post(server.rest + '/v1/models/tiny:predict', data=chunks, timeout=30)
  assert response.status_code == 413
  assert 'exceeds the limit of 100000 bytes' in response.json()['error']
