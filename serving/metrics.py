"""Prometheus metrics named and shaped as TF Serving 2.16's.

As tensorflow_model_server exports them on /monitoring/prometheus/metrics
(tensorflow_serving/servables/tensorflow/util.cc, util/prometheus_exporter.cc):
':tensorflow:serving:request_count' a counter without prometheus_client's
'_total' suffix, latencies in microseconds in TF's exponential buckets and
only for requests that succeeded, gRPC API names capitalized ('Predict'),
REST ones as in the URL ('predict'; '' for GETs); so one dashboard and one set of alert rules serve
both servers. The differences left are in serving/README.md.

Under --server_processes > 1 the supervisor sets PROMETHEUS_MULTIPROC_DIR:
prometheus_client then keeps every value in per-process files there, and a
scrape sums them over all the server's processes.
"""

import os

import prometheus_client as prom
from prometheus_client import multiprocess
from prometheus_client.metrics_core import Metric


def _exponential(scale: float, growth: float, count: int):
  """TF's monitoring::Buckets::Exponential bucket limits (+Inf is added)."""
  return tuple(scale * growth ** i for i in range(count))


# TF Serving: Exponential(10, 1.8, 33), 10 us to ~20 minutes.
_LATENCY_BUCKETS_US = _exponential(10, 1.8, 33)
# TF Serving's batching: Exponential(1, 2, 14), 1 to 8192.
_BATCH_SIZE_BUCKETS = _exponential(1, 2, 14)
# TF Serving's gRPC handlers name the API capitalized, its REST handler as in the URL.
_GRPC_API_NAMES = {'predict': 'Predict', 'classify': 'Classify', 'regress': 'Regress',
                   'multi_inference': 'MultiInference', 'metadata': 'GetModelMetadata'}


class Metrics:
  """Request counts and latencies per model, version, API and entrypoint."""

  def __init__(self):
    self.registry = prom.CollectorRegistry()
    self.request_count = prom.Counter(
        ':tensorflow:serving:request_count', 'The total number of requests.',
        ['model_name', 'version', 'API', 'entrypoint', 'status'], registry=self.registry)
    self.request_latency = prom.Histogram(
        ':tensorflow:serving:request_latency',
        'Distribution of wall time (in microseconds) for Tensorflow Serving request.',
        ['model_name', 'version', 'API', 'entrypoint'],
        buckets=_LATENCY_BUCKETS_US, registry=self.registry)
    self.batch_size = prom.Histogram(
        ':tensorflow:serving:batching_session:processed_batch_size',
        'Tracks the batch size distribution on processing.', buckets=_BATCH_SIZE_BUCKETS,
        registry=self.registry)
    self._children = {}

  def record(self, model: str, version: str, api: str, entrypoint: str,
             status: str, seconds: float) -> None:
    if entrypoint == 'GRPC':
      api = _GRPC_API_NAMES.get(api, api)
    elif api == 'metadata':
      api = ''  # TF Serving's REST handler takes API from the URL's :method; GETs have none.
    key = (model, version, api, entrypoint, status)
    children = self._children.get(key)
    if children is None:  # labels() lookups are the costly part: cache them.
      children = self._children[key] = (
          self.request_count.labels(*key),
          self.request_latency.labels(*key[:4]) if status == 'OK' else None)
    children[0].inc()
    if children[1] is not None:  # TF Serving times only the requests that succeeded.
      children[1].observe(seconds * 1e6)

  def exposition(self) -> bytes:
    if os.environ.get('PROMETHEUS_MULTIPROC_DIR'):
      registry = prom.CollectorRegistry()
      multiprocess.MultiProcessCollector(registry)
    else:
      registry = self.registry
    renamed = _TfServingNames(registry)
    text = prom.generate_latest(renamed).decode()
    # generate_latest names a counter's HELP and TYPE lines '<name>_total' whatever its samples.
    for name in renamed.counters:
      text = text.replace(f'# HELP {name}_total ', f'# HELP {name} ').replace(
          f'# TYPE {name}_total counter', f'# TYPE {name} counter')
    return text.encode()


class _TfServingNames:
  """A registry's metrics as TF Serving names them: counters without the
  '_total' suffix, and no '_created' samples (TF Serving has none)."""

  def __init__(self, registry):
    self._registry = registry
    self.counters = set()

  def collect(self):
    for family in self._registry.collect():
      if family.type == 'counter':
        self.counters.add(family.name)
      renamed = Metric(family.name, family.documentation, family.type, family.unit)
      for sample in family.samples:
        if sample.name.endswith('_created'):
          continue
        name = sample.name
        if family.type == 'counter' and name.endswith('_total'):
          name = name[:-len('_total')]
        renamed.add_sample(name, sample.labels, sample.value, sample.timestamp, sample.exemplar)
      yield renamed
