"""Infra validation: does the candidate really serve? Pushed only if so.

`LocalInfraValidator` has the semantics of TFX's InfraValidator (an
InfraBlessing that Pusher consumes, and with warmup the blessed model copy
that Pusher pushes) but needs no Docker: it serves the candidate with this
project's own TF-Serving-compatible server in a subprocess and sends real
eval examples over REST and gRPC. Where Docker or Kubernetes exists,
`pipeline/configs.py` can select TFX's standard InfraValidator running the
real TF Serving image instead (`infra_validator = 'docker' | 'kubernetes'`).

The blessed copy's warmup file holds requests for every signature a client
may call (`CLIENT_SIGNATURES`): a signature's first run costs seconds (TF
optimizes and instantiates its graph then), so warming only serving_default
made the first predict_raw / Classify requests on each new version stall.
"""

import os

import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow.core.protobuf import saved_model_pb2
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
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import regression_pb2

from models import features

# The properties and marker files TFX's InfraValidator writes, which Pusher reads.
BLESSED_KEY = 'blessed'
HAS_MODEL_KEY = 'has_model'
BLESSED_FILE = 'INFRA_BLESSED'
NOT_BLESSED_FILE = 'INFRA_NOT_BLESSED'
TF_SERVING_IMAGE_TAG = '2.16.1'  # Matches the TensorFlow of the stack.
MODEL_NAME = 'candidate'  # In the requests; TF Serving's warmup ignores it.

# The tf.Example signatures, whose requests TFX's request_builder builds
# (a regression model has no classification signature)...
EXAMPLE_SIGNATURES = (('serving_default', 'regression') if features.TASK == features.REGRESSION
                      else ('serving_default', 'classification', 'regression'))
# ...and the one it cannot (one tensor per raw feature), built here.
RAW_SIGNATURE = 'predict_raw'
CLIENT_SIGNATURES = EXAMPLE_SIGNATURES + (RAW_SIGNATURE,)


def request_spec(num_examples: int) -> infra_validator_pb2.RequestSpec:
  return infra_validator_pb2.RequestSpec(
      tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
          signature_names=list(EXAMPLE_SIGNATURES)),
      split_name='eval', num_examples=num_examples, make_warmup=True)


def _signature_defs(model_dir: str):
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(os.path.join(model_dir, 'saved_model.pb'), 'rb') as f:
    saved_model.ParseFromString(f.read())
  return saved_model.meta_graphs[0].signature_def


def raw_request(serialized_example: bytes, signature_def) -> predict_pb2.PredictRequest:
  """A predict_raw request for one example: a [1] tensor for each input the
  example has a value for (the others are left out, as clients may)."""
  feature = example_pb2.Example.FromString(serialized_example).features.feature
  request = predict_pb2.PredictRequest()
  request.model_spec.name, request.model_spec.signature_name = MODEL_NAME, RAW_SIGNATURE
  for name, tensor_info in signature_def.inputs.items():
    kind = feature[name].WhichOneof('kind') if name in feature else None
    values = getattr(feature[name], kind).value if kind else []
    if values:
      request.inputs[name].CopyFrom(tf.make_tensor_proto(
          [values[0]], tf.as_dtype(tensor_info.dtype), shape=[1]))
  return request


def _prediction_log(request) -> prediction_log_pb2.PredictionLog:
  """A warmup record, as TFX's InfraValidator writes them."""
  if isinstance(request, classification_pb2.ClassificationRequest):
    return prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(request=request))
  if isinstance(request, regression_pb2.RegressionRequest):
    return prediction_log_pb2.PredictionLog(
        regress_log=prediction_log_pb2.RegressLog(request=request))
  return prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))


def _serialized_examples(requests):
  """The eval examples, from the serving_default requests."""
  return [e for r in requests if isinstance(r, predict_pb2.PredictRequest)
          for e in r.inputs['examples'].string_val]


def warmup_records(model_dir: str, requests) -> list:
  """PredictionLogs for every client signature: request_builder's requests
  plus predict_raw ones built from the same examples."""
  signature_defs = _signature_defs(model_dir)
  missing = sorted(set(CLIENT_SIGNATURES) - set(signature_defs))
  if missing:
    raise ValueError(f'The model at {model_dir} has no signatures {missing}, which'
                     f' clients call; export them (models/signatures.py).')
  raw = [raw_request(e, signature_defs[RAW_SIGNATURE]) for e in _serialized_examples(requests)]
  return [_prediction_log(r) for r in list(requests) + raw]


@component
def LocalInfraValidator(
    model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    blessing: OutputArtifact[standard_artifacts.InfraBlessing],
    num_examples: Parameter[int] = 10,
    timeout_seconds: Parameter[int] = 180,
):
  """Blesses the model if the local server loads and answers with it."""
  from pipeline.components import infra_check  # Imported here: only this step needs it.
  requests = request_builder.build_requests(
      model_name=MODEL_NAME, model=model, examples=examples,
      request_spec=request_spec(num_examples))
  # Like InfraValidator's make_warmup: the copy that is checked is the copy
  # Pusher pushes, warmup requests included, so TF Serving's first real
  # requests find the model warm. The check loads it with its warmup, so a
  # record that fails would refuse the model here, not in production.
  stamped = path_utils.stamped_model_path(blessing.uri)
  io_utils.copy_dir(path_utils.serving_model_path(model.uri), stamped)
  io_utils.write_tfrecord_file(path_utils.warmup_file_path(stamped),
                               *warmup_records(stamped, requests))
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
