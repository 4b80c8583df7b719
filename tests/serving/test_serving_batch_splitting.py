"""TF Serving's large-batch splitting (enable_large_batch_splitting): a
request bigger than an execution batch runs in pieces of at most
max_execution_batch_size rows, and its caller gets the unsplit answer."""

import concurrent.futures
import re

import pytest
import requests
import tensorflow as tf

from conftest import start_server

EXECUTION_BATCH = 8
SPLITTING = ('max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }\n'
             'num_batch_threads { value: 2 }\nenable_large_batch_splitting { value: true }\n'
             f'max_execution_batch_size {{ value: {EXECUTION_BATCH} }}\n')


def _serve(tmp_path_factory, base_path, model_name='tiny'):
  conf = tmp_path_factory.mktemp('splitting_conf')
  (conf / 'batching.config').write_text(SPLITTING)
  (conf / 'monitoring.config').write_text(
      'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }')
  return start_server('--enable_batching', f'--batching_parameters_file={conf / "batching.config"}',
                      f'--monitoring_config_file={conf / "monitoring.config"}',
                      base_path=base_path, model_name=model_name)


@pytest.fixture(scope='module')
def splitting_server(tmp_path_factory, tiny_base):
  running = _serve(tmp_path_factory, tiny_base)
  yield running
  running.close()


def _batches(server):
  """(count, sum, count of batches of at most EXECUTION_BATCH rows) of the
  processed_batch_size histogram."""
  text = requests.get(server.rest + '/monitoring/prometheus/metrics', timeout=10).text
  value = lambda pattern: float(re.search(pattern + r' (\S+)', text).group(1))
  at_most = max((float(le), float(n)) for le, n in re.findall(
      r'processed_batch_size_bucket\{.*?le="([0-9.e+]+)".*?\} (\S+)', text)
      if float(le) <= EXECUTION_BATCH)[1]
  return value('processed_batch_size_count'), value('processed_batch_size_sum'), at_most


def _predict(server, xs, version):
  response = requests.post(f'{server.rest}/v1/models/tiny/versions/{version}:predict',
                           json={'instances': xs}, timeout=30)
  assert response.status_code == 200, response.text
  return response.json()['predictions']


def test_a_request_larger_than_an_execution_batch_runs_in_pieces_with_its_whole_answer(
    splitting_server):
  xs = [x / 4 for x in range(100)]  # Beyond max_batch_size too: split, not refused.
  count, rows, small = _batches(splitting_server)
  answers = _predict(splitting_server, xs, version=2)
  assert [a['y'] for a in answers] == [2 * x for x in xs]
  assert {a['version'] for a in answers} == {2}
  count_after, rows_after, small_after = _batches(splitting_server)
  assert rows_after - rows == len(xs)
  assert count_after - count >= -(-len(xs) // EXECUTION_BATCH)  # 13 runs at least
  assert small_after - small == count_after - count  # None bigger than an execution batch.


def test_concurrent_big_requests_each_get_their_own_rows_back(splitting_server):
  requests_xs = [[float(i * 1000 + j) for j in range(20 + i)] for i in range(8)]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    answers = list(pool.map(lambda xs: _predict(splitting_server, xs, version=2), requests_xs))
  assert [[a['y'] for a in answer] for answer in answers] == [[2 * x for x in xs]
                                                                for xs in requests_xs]


def test_classify_in_pieces_answers_as_the_unsplit_server(splitting_server, server):
  body = {'signature_name': 'classification', 'examples': [{'x': x / 10} for x in range(-25, 25)]}
  path = '/v1/models/tiny/versions/2:classify'
  answers = [requests.post(s.rest + path, json=body, timeout=30)
             for s in (splitting_server, server)]
  assert [a.status_code for a in answers] == [200, 200], answers[0].text
  assert answers[0].json() == answers[1].json()
  assert len(answers[0].json()['results']) == len(body['examples'])


class _BatchTotal(tf.Module):
  """One number for the whole batch: splitting it would change the answer."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='x')])
  def total(self, x):
    return {'total': tf.reduce_sum(x)}


def test_a_model_whose_output_is_not_per_row_runs_the_request_whole(tmp_path_factory):
  base = tmp_path_factory.mktemp('batch_total')
  module = _BatchTotal()
  tf.saved_model.save(module, str(base / '1'), signatures={'serving_default': module.total})
  running = _serve(tmp_path_factory, str(base), model_name='total')
  try:
    xs = [float(x) for x in range(20)]
    response = requests.post(running.rest + '/v1/models/total:predict',
                             json={'inputs': xs}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {'outputs': sum(xs)}
  finally:
    running.close()
