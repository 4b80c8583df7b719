"""The deployment files parse as the protos TF Serving reads."""

import os

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import flags, protos

DEPLOY = os.path.join(os.path.dirname(__file__), '..', '..', 'serving', 'deploy')


def read(name):
  with open(os.path.join(DEPLOY, name)) as f:
    return f.read()


def test_config_files_parse():
  config = text_format.Parse(read('models.config'), model_server_config_pb2.ModelServerConfig())
  assert config.model_config_list.config[0].name == 'taxi_big_tipper'
  batching = text_format.Parse(read('batching.config'), protos.BatchingParameters())
  assert batching.enable_large_batch_splitting.value
  # Every piece of the largest request taken fits the queue.
  pieces = -(-batching.max_batch_size.value // batching.max_execution_batch_size.value)
  assert pieces <= batching.max_enqueued_batches.value
  # The ConfigMap carries the two files as they are (pipeline/deploy_files.py).
  configmap = yaml.safe_load(read('k8s/configmap.yaml'))['data']
  assert text_format.Parse(configmap['batching.config'], protos.BatchingParameters()) == batching
  for name in ('batching.config', 'monitoring.config'):
    assert configmap[name].strip() == read(name).strip(), name
  monitoring = text_format.Parse(read('monitoring.config'), protos.MonitoringConfig())
  assert monitoring.prometheus_config.path == '/monitoring/prometheus/metrics'


def test_manifests_use_the_pinned_image_and_known_flags():
  compose = yaml.safe_load(read('docker-compose.yml'))['services']['tf-serving']
  deployment = yaml.safe_load(read('k8s/deployment.yaml'))
  container = deployment['spec']['template']['spec']['containers'][0]
  assert compose['image'] == container['image'] == 'tensorflow/serving:2.16.1'
  assert container['readinessProbe']['httpGet']['path'] == '/v1/models/taxi_big_tipper'
  service = yaml.safe_load(read('k8s/service.yaml'))
  assert sorted(p['port'] for p in service['spec']['ports']) == [8500, 8501]
  # A command line for tensorflow_model_server works with serving.server too.
  args = flags.parser().parse_args([a for a in container['args']])
  assert args.enable_batching and args.rest_api_port == 8501


def test_config_protos_have_tf_serving_2_16_field_numbers():
  """The same wire format as TF Serving's session_bundle_config.proto and
  monitoring_config.proto (2.16.1), not only the same text format."""
  numbers = {f.name: f.number for f in protos.BatchingParameters.DESCRIPTOR.fields}
  assert numbers == {
      'max_batch_size': 1, 'batch_timeout_micros': 2, 'max_enqueued_batches': 3,
      'num_batch_threads': 4, 'thread_pool_name': 5, 'allowed_batch_sizes': 6,
      'pad_variable_length_inputs': 7, 'enable_large_batch_splitting': 8,
      'max_execution_batch_size': 9}
  assert protos.BatchingParameters.DESCRIPTOR.full_name == 'tensorflow.serving.BatchingParameters'
  monitoring = protos.MonitoringConfig.DESCRIPTOR
  assert monitoring.full_name == 'tensorflow.serving.MonitoringConfig'
  assert monitoring.fields_by_name['prometheus_config'].number == 1
  prometheus = monitoring.fields_by_name['prometheus_config'].message_type
  assert {f.name: f.number for f in prometheus.fields} == {'enable': 1, 'path': 2}
