"""Batching, request logging and Prometheus metrics of the local server."""

import concurrent.futures
import re
import time

import numpy as np
import requests
import tensorflow as tf

from serving.log_reader import read_prediction_logs


def predict(server, xs, path='/v1/models/tiny/versions/1:predict'):
  response = requests.post(server.rest + path, json={'instances': xs}, timeout=30)
  assert response.status_code == 200, response.text
  return response.json()['predictions']


def batch_size_counts(server):
  text = requests.get(server.rest + '/monitoring/prometheus/metrics', timeout=10).text
  match = re.search(r'processed_batch_size_count (\S+)', text)
  sum_match = re.search(r'processed_batch_size_sum (\S+)', text)
  return float(match.group(1)), float(sum_match.group(1))


def test_concurrent_requests_are_batched_with_unbatched_results(server):
  xs = [float(x) / 7 for x in range(96)]
  expected = [predict(server, [x])[0] for x in xs]  # One at a time.
  batches_before, examples_before = batch_size_counts(server)
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    batched = list(pool.map(lambda x: predict(server, [x])[0], xs))
  batches, examples = batch_size_counts(server)
  assert batched == expected
  assert examples - examples_before == len(xs)
  assert batches - batches_before < len(xs)  # Some requests shared a TF call.


def test_requests_are_logged_as_prediction_logs(server):
  predict(server, [4.0], '/v1/models/tiny/labels/stable:predict')
  logs = []
  for _ in range(50):  # The logger writes on its own thread.
    logs = [log for log in read_prediction_logs(server.log_prefix)
            if log.WhichOneof('log_type') == 'predict_log' and
            tf.make_ndarray(log.predict_log.request.inputs['x']).tolist() == [4.0]]
    if logs:
      break
    time.sleep(0.1)
  assert logs, 'no PredictionLog for the request'
  record = logs[0]
  assert record.log_metadata.model_spec.name == 'tiny'
  assert record.log_metadata.model_spec.version.value == 1
  assert record.log_metadata.sampling_config.sampling_rate == 1.0
  assert np.allclose(tf.make_ndarray(record.predict_log.response.outputs['y']), [4.0])


def test_prometheus_metrics_per_model_version_and_api(server):
  predict(server, [1.0])
  requests.post(server.rest + '/v1/models/tiny/versions/9:predict', json={'instances': [1.0]},
                timeout=10)
  text = requests.get(server.rest + '/monitoring/prometheus/metrics', timeout=10).text
  assert re.search(r':tensorflow:serving:request_count\{API="predict",entrypoint="REST",'
                   r'model_name="tiny",status="OK",version="1"\} \d+', text)
  assert 'status="NOT_FOUND"' in text
  assert re.search(r':tensorflow:serving:request_latency_bucket\{API="predict",'
                   r'entrypoint="REST",le="[^"]+",model_name="tiny",version="1"\}', text)
