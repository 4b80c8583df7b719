"""Infra validation: does the candidate really serve? Pushed only if so.

`LocalInfraValidator` has the semantics of TFX's InfraValidator (an
InfraBlessing that Pusher consumes, and with warmup the blessed model copy
that Pusher pushes) but needs no Docker: it serves the candidate with this
project's own TF-Serving-compatible server in a subprocess and sends real
eval examples over REST and gRPC. Where Docker or Kubernetes exists,
`pipeline/configs.py` can select TFX's standard InfraValidator running the
real TF Serving image instead (`infra_validator = 'docker' | 'kubernetes'`).
"""

import os

from tfx.components import InfraValidator
from tfx.components.infra_validator import request_builder
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.annotations import OutputArtifact
from tfx.dsl.component.experimental.annotations import Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.proto import infra_validator_pb2
from tfx.types import standard_artifacts
from tfx.utils import io_utils
from tfx.utils import path_utils
from tensorflow_serving.apis import prediction_log_pb2

# The properties and marker files TFX's InfraValidator writes, which Pusher reads.
BLESSED_KEY = 'blessed'
HAS_MODEL_KEY = 'has_model'
BLESSED_FILE = 'INFRA_BLESSED'
NOT_BLESSED_FILE = 'INFRA_NOT_BLESSED'
TF_SERVING_IMAGE_TAG = '2.16.1'  # Matches the TensorFlow of the stack.


def request_spec(num_examples: int) -> infra_validator_pb2.RequestSpec:
  return infra_validator_pb2.RequestSpec(
      tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
          signature_names=['serving_default']),
      split_name='eval', num_examples=num_examples, make_warmup=True)


def _warmup_records(requests):
  return [prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=r)) for r in requests]


def _serialized_examples(requests):
  return [e for r in requests for e in r.inputs['examples'].string_val]


@component
def LocalInfraValidator(
    model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    blessing: OutputArtifact[standard_artifacts.InfraBlessing],
    num_examples: Parameter[int] = 10,
    timeout_seconds: Parameter[int] = 180,
):
  """Blesses the model if the local server loads and answers with it."""
  from serving import infra_check  # Imported here: only this step needs it.
  requests = request_builder.build_requests(
      model_name='candidate', model=model, examples=examples,
      request_spec=request_spec(num_examples))
  # Like InfraValidator's make_warmup: the copy that is checked is the copy
  # Pusher pushes, warmup requests included, so TF Serving's first real
  # requests find the model warm.
  stamped = path_utils.stamped_model_path(blessing.uri)
  io_utils.copy_dir(path_utils.serving_model_path(model.uri), stamped)
  io_utils.write_tfrecord_file(path_utils.warmup_file_path(stamped),
                               *_warmup_records(requests))
  result = infra_check.check_model(stamped, _serialized_examples(requests),
                                   timeout_s=timeout_seconds)
  marker = BLESSED_FILE if result.ok else NOT_BLESSED_FILE
  io_utils.write_string_file(os.path.join(blessing.uri, marker), result.details)
  blessing.set_int_custom_property(BLESSED_KEY, int(result.ok))
  blessing.set_int_custom_property(HAS_MODEL_KEY, int(result.ok))
  blessing.set_string_custom_property('details', result.details[:2000])


def tf_serving_infra_validator(model, examples, where: str):
  """TFX's standard InfraValidator with the official TF Serving image."""
  if where == 'docker':
    platform = {'local_docker': infra_validator_pb2.LocalDockerConfig()}
  else:
    platform = {'kubernetes': infra_validator_pb2.KubernetesConfig()}
  return InfraValidator(
      model=model, examples=examples,
      serving_spec=infra_validator_pb2.ServingSpec(
          tensorflow_serving=infra_validator_pb2.TensorFlowServing(
              tags=[TF_SERVING_IMAGE_TAG]), **platform),
      request_spec=request_spec(10))


def infra_validator(config, model, examples):
  """The infra validation step configured in pipeline/configs.py."""
  if config.infra_validator == 'local':
    node = LocalInfraValidator(model=model, examples=examples,
                               num_examples=config.infra_num_examples)
  else:
    node = tf_serving_infra_validator(model, examples, config.infra_validator)
  return node.with_id('InfraValidator')
