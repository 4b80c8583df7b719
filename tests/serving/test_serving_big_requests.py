"""REST bodies above rest.WORKER_BYTES are parsed and decoded in the JSON
worker process (serving/json_worker.py): the same answers and the same
error texts as the small bodies decoded in the server's process."""

import gzip
import json
import math
import textwrap

import psutil
import pytest
import requests

from conftest import start_server
from serving import rest
from serving.log_reader import read_prediction_logs

pytestmark = pytest.mark.slow  # The worker is a subprocess.

ROWS = 200_000  # ~1.4 MB of JSON: over rest.WORKER_BYTES.


@pytest.fixture(scope='module')
def big_server(tmp_path_factory, tiny_base):
  """Both tiny versions (2 answers by default), every request logged, the
  default body limit."""
  conf = tmp_path_factory.mktemp('big_conf')
  log_prefix = conf / 'logs' / 'requests'
  (conf / 'models.config').write_text(textwrap.dedent(f'''
      model_config_list {{
        config {{
          name: "tiny" base_path: "{tiny_base}" model_platform: "tensorflow"
          logging_config {{
            log_collector_config {{ type: "" filename_prefix: "{log_prefix}" }}
            sampling_config {{ sampling_rate: 1.0 }}
          }}
        }}
      }}'''))
  running = start_server(f'--model_config_file={conf / "models.config"}')
  running.log_prefix = str(log_prefix)
  yield running
  running.close()


def post(server, api, body: bytes, headers=None, model='tiny'):
  return requests.post(f'{server.rest}/v1/models/{model}:{api}', data=body,
                       headers=headers or {}, timeout=120)


def big(doc) -> bytes:
  body = json.dumps(doc).encode()
  assert len(body) > rest.WORKER_BYTES
  return body


def padded(doc, size=rest.WORKER_BYTES + 1) -> bytes:
  """doc's JSON made larger than the worker threshold by whitespace (the
  same request: its small form gets the in-process answer)."""
  body = json.dumps(doc).encode()
  return body[:-1] + b' ' * max(0, size - len(body)) + b'}'


def worker_processes():
  return [p for p in psutil.Process().children(recursive=True)
          if 'serving.json_worker' in ' '.join(p.cmdline())]


def test_a_big_predict_is_decoded_by_the_worker_process(big_server):
  xs = [float(i % 1000) for i in range(ROWS)]
  response = post(big_server, 'predict', big({'instances': xs}))
  assert response.status_code == 200, response.text[:300]
  predictions = response.json()['predictions']
  assert [p['y'] for p in predictions] == [2 * x for x in xs]
  assert len(worker_processes()) == 1


def test_a_big_response_is_sent_whole_with_its_content_length(big_server):
  # Written in pieces (rest._RESPONSE_PIECE_BYTES), but one body as TF
  # Serving sends it: a Content-Length, not chunked.
  response = post(big_server, 'predict', big({'instances': [1.25] * ROWS}))
  assert response.status_code == 200, response.text[:300]
  assert len(response.content) > 4 * rest._RESPONSE_PIECE_BYTES  # pylint: disable=protected-access
  assert int(response.headers['Content-Length']) == len(response.content)
  assert 'Transfer-Encoding' not in response.headers
  assert response.headers['Content-Type'] == 'application/json'
  assert len(response.json()['predictions']) == ROWS


def test_a_workers_reply_travels_as_a_small_pickle_and_a_frame_per_buffer():
  # A reply copied whole while unpickled holds the server's GIL, and with it
  # the event loop (~25 ms for 30 MB): its arrays and slices come out of band.
  import io
  import numpy as np
  from serving import json_worker
  values = [b'x' * 40] * 20_000
  reply = (True, ('sig', ({'a': np.arange(250_000, dtype=np.float32),
                           's': json_worker._pack_array(np.array(values, object))}, False)))
  stream = io.BytesIO()
  json_worker._write_message(stream, reply)
  stream.seek(0)
  frames = []
  while stream.tell() < len(stream.getvalue()):
    frames.append(json_worker._read_frame(stream))
  pickled, buffers = frames[1], frames[2:]
  assert len(pickled) < 4096
  assert len(buffers) == 1 + -(-len(values) // json_worker._SLICE)
  assert max(len(b) for b in buffers) == 250_000 * 4
  stream.seek(0)
  ok, (name, (arrays, row_format)) = json_worker._read_message(stream)
  assert (ok, name, row_format) == (True, 'sig', False)
  np.testing.assert_array_equal(arrays['a'], np.arange(250_000, dtype=np.float32))
  assert json_worker._unpack_array(arrays['s']).tolist() == values


def test_a_big_columnar_predict_with_strings_and_defaults(big_server):
  words = ['w%d' % (i % 7) for i in range(ROWS)]
  body = big({'signature_name': 'raw', 'inputs': {'s': words}})
  response = post(big_server, 'predict', body)
  assert response.status_code == 200, response.text[:300]
  outputs = response.json()['outputs']
  assert outputs['label'] == [w + '!' for w in words]
  assert outputs['total'] == [0.0] * ROWS


@pytest.mark.parametrize('doc', [
    {'instances': ['a', 1.0]},                       # a wrong JSON type
    {'instances': [[1.0], 2.0]},                     # not dense
    {'inputs': {'nope': [1.0]}},                     # an unknown alias
    {'signature_name': 'missing', 'instances': [1.0]},
    {'signature_name': 7, 'instances': [1.0]},
    {'instances': [1.0], 'inputs': [1.0]},
])
def test_a_big_bad_predict_gets_the_small_ones_error(big_server, doc):
  small = post(big_server, 'predict', json.dumps(doc).encode())
  large = post(big_server, 'predict', padded(doc))
  assert small.status_code >= 400
  assert (large.status_code, large.json()) == (small.status_code, small.json())


def test_a_big_body_that_is_not_json_is_400(big_server):
  response = post(big_server, 'predict', b'{"instances": [1.0, ' + b' ' * rest.WORKER_BYTES + b'oops]}')
  assert response.status_code == 400
  assert response.json()['error'].startswith('JSON Parse error')


def test_a_big_body_with_nan_and_infinity(big_server):
  body = b'{"instances": [NaN, Infinity, -Infinity, ' + b'1.0, ' * 300_000 + b'1.0]}'
  response = post(big_server, 'predict', body)
  assert response.status_code == 200, response.text[:300]
  ys = [p['y'] for p in json.loads(response.text)['predictions'][:4]]  # Python reads NaN.
  assert math.isnan(ys[0]) and ys[1:] == [math.inf, -math.inf, 2.0]


def test_a_big_gzip_body(big_server):
  xs = [1.25] * ROWS
  response = post(big_server, 'predict', gzip.compress(big({'instances': xs})),
                  {'Content-Encoding': 'gzip'})
  assert response.status_code == 200, response.text[:300]
  assert {p['y'] for p in response.json()['predictions']} == {2.5}


def test_a_big_classify_and_regress_with_context_is_logged(big_server):
  examples = [{'x': float(i % 3)} for i in range(100_000)]
  regress = post(big_server, 'regress', big({'signature_name': 'regression', 'examples': examples}))
  assert regress.status_code == 200, regress.text[:300]
  assert regress.json()['results'] == [2.0 * e['x'] for e in examples]
  doc = {'signature_name': 'classification', 'context': {'x': 9.0}, 'examples': [{'y': 10} for _ in range(100_000)]}
  classify = post(big_server, 'classify', big(doc))
  assert classify.status_code == 200, classify.text[:300]
  results = classify.json()['results']
  assert len(results) == 100_000 and results[0][1][0] == '1' and results[0][1][1] > 0.99
  logged = [log.classify_log.request for log in read_prediction_logs(big_server.log_prefix)
            if log.WhichOneof('log_type') == 'classify_log']
  assert logged, 'the classify request was not logged'
  request = logged[-1].input.example_list_with_context
  assert request.context.features.feature['x'].float_list.value == [9.0]
  assert len(request.examples) == 100_000
  assert request.examples[0].features.feature['y'].int64_list.value == [10]


def test_a_big_classify_error_is_the_small_ones(big_server):
  doc = {'examples': [{'x': [1.0, 'a']}]}
  small = post(big_server, 'classify', json.dumps(doc).encode())
  large = post(big_server, 'classify', padded(doc))
  assert small.status_code == 400
  assert (large.status_code, large.json()) == (small.status_code, small.json())


def test_the_values_bound_holds_in_the_worker(tiny_base):
  running = start_server('--max_request_values=1000', base_path=tiny_base)
  try:
    response = post(running, 'predict', big({'instances': [0.25] * ROWS}))
    assert response.status_code == 413
    assert 'more than 1000 values' in response.json()['error']
  finally:
    running.close()


def test_a_dead_worker_is_503_then_replaced(big_server):
  post(big_server, 'predict', big({'instances': [0.25] * ROWS}))
  for process in worker_processes():
    process.kill()
    process.wait(10)
  body = big({'instances': [0.25] * ROWS})
  first = post(big_server, 'predict', body)
  assert first.status_code == 503
  assert 'died' in first.json()['error']
  assert post(big_server, 'predict', body).status_code == 200
