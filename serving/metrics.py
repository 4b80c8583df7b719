"""Prometheus metrics named after TF Serving's (':tensorflow:serving:...').

Under --server_processes > 1 the supervisor sets PROMETHEUS_MULTIPROC_DIR:
prometheus_client then keeps every value in per-process files there, and a
scrape sums them over all the server's processes.
"""

import os

import prometheus_client as prom
from prometheus_client import multiprocess

_LATENCY_BUCKETS_US = (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
                       100000, 250000, 1000000, 5000000)


class Metrics:
  """Request counts and latencies per model, version, API and entrypoint."""

  def __init__(self):
    self.registry = prom.CollectorRegistry()
    self.request_count = prom.Counter(
        ':tensorflow:serving:request_count', 'Requests by outcome.',
        ['model_name', 'version', 'API', 'entrypoint', 'status'], registry=self.registry)
    self.request_latency = prom.Histogram(
        ':tensorflow:serving:request_latency', 'Request latency in microseconds.',
        ['model_name', 'version', 'API', 'entrypoint'],
        buckets=_LATENCY_BUCKETS_US, registry=self.registry)
    self.batch_size = prom.Histogram(
        ':tensorflow:serving:batching_session:processed_batch_size',
        'Sizes of the batches run.', buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        registry=self.registry)
    self._children = {}

  def record(self, model: str, version: str, api: str, entrypoint: str,
             status: str, seconds: float) -> None:
    key = (model, version, api, entrypoint, status)
    children = self._children.get(key)
    if children is None:  # labels() lookups are the costly part: cache them.
      children = self._children[key] = (
          self.request_count.labels(*key),
          self.request_latency.labels(*key[:4]))
    children[0].inc()
    children[1].observe(seconds * 1e6)

  def exposition(self) -> bytes:
    if os.environ.get('PROMETHEUS_MULTIPROC_DIR'):
      registry = prom.CollectorRegistry()
      multiprocess.MultiProcessCollector(registry)
      return prom.generate_latest(registry)
    return prom.generate_latest(self.registry)
