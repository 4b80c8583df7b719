"""The serving APIs on top of the model manager, shared by REST and gRPC.

Predict takes and returns numpy arrays (each front end converts its own wire
format); Classify, Regress, MultiInference, GetModelMetadata and
GetModelStatus take and return the tensorflow-serving-api protos.
"""

import asyncio
import logging
import time
from typing import Callable, Dict, NamedTuple, Optional, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2,
                                     model_pb2, predict_pb2, prediction_log_pb2,
                                     regression_pb2)

from serving import errors, tensors
from serving.servable import CLASSIFY_METHOD, REGRESS_METHOD, Servable

log = logging.getLogger(__name__)
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit.


class ModelSpec(NamedTuple):
  name: str
  version: Optional[int] = None
  label: str = ''
  signature_name: str = ''

  @classmethod
  def from_proto(cls, spec: model_pb2.ModelSpec) -> 'ModelSpec':
    choice = spec.WhichOneof('version_choice')
    return cls(spec.name, spec.version.value if choice == 'version' else None,
               spec.version_label if choice == 'version_label' else '',
               spec.signature_name)


def _spec_proto(servable: Servable, signature_name: str) -> model_pb2.ModelSpec:
  spec = model_pb2.ModelSpec(name=servable.name, signature_name=signature_name)
  spec.version.value = servable.version
  return spec


class _Serving:
  """`with`: holds the servable for one request, then counts and times it.
  A class: @contextlib.contextmanager costs several us more per request."""
  __slots__ = ('_core', '_spec', '_api', '_entrypoint', '_start', '_record')

  def __init__(self, core: 'ServerCore', spec: ModelSpec, api: str, entrypoint: str):
    self._core, self._spec, self._api, self._entrypoint = core, spec, api, entrypoint
    self._record = None

  def __enter__(self) -> Servable:
    self._start = time.perf_counter()
    spec = self._spec
    try:
      if not spec.name:
        raise errors.invalid_argument('ModelSpec has no name specified.')  # TF Serving's words.
      self._record = self._core.manager.hold(spec.name, spec.version, spec.label)
    except errors.ServingError as e:
      self._count(e)
      raise
    return self._record.servable

  def __exit__(self, exc_type, exc, traceback) -> None:
    self._core.manager.release(self._record)
    self._count(exc)

  def _count(self, exc) -> None:
    metrics = self._core.metrics
    if metrics is not None:
      version = str(self._record.version) if self._record is not None else ''
      metrics.record(self._spec.name, version, self._api, self._entrypoint, _status(exc),
                     time.perf_counter() - self._start)


def _status(exc) -> str:
  if isinstance(exc, errors.ServingError):
    return exc.code.name
  if isinstance(exc, asyncio.CancelledError):
    return 'CANCELLED'
  return 'OK'


class DirectRunner:
  """Runs each request's signature call on its own (no batching)."""

  def __init__(self, pool=None):
    self._pool = pool

  async def run(self, signature, feed):
    if self._pool is None:  # Warmup: already on a loader thread.
      return signature.call(feed)
    return await asyncio.get_running_loop().run_in_executor(self._pool, signature.call, feed)


class ServerCore:
  """What PredictionService / ModelService and the REST API call."""

  def __init__(self, manager, runner, metrics=None,
               enable_signature_method_name_check: bool = False,
               serialize_as_tensor_content: bool = False):
    self.manager = manager
    self.runner = runner
    self.metrics = metrics
    self.request_loggers: Dict[str, object] = {}
    self.method_name_check = enable_signature_method_name_check
    # --enable_serialization_as_tensor_content: Predict outputs packed in
    # tensor_content instead of TF Serving's default typed value fields.
    self.tensor_content = serialize_as_tensor_content

  def _serving(self, spec: ModelSpec, api: str, entrypoint: str) -> '_Serving':
    return _Serving(self, spec, api, entrypoint)

  def _logger(self, model_name: str):
    logger = self.request_loggers.get(model_name)
    return logger if logger is not None and logger.sampled() else None

  # ---- Predict ---------------------------------------------------------------

  async def predict(self, spec: ModelSpec, inputs,
                    output_filter: Sequence[str] = (), entrypoint: str = 'GRPC',
                    request_proto: Callable[[], predict_pb2.PredictRequest] = None):
    """Returns (servable, signature name, outputs). inputs: arrays by alias,
    or a function of the Signature returning them."""
    with self._serving(spec, 'predict', entrypoint) as servable:
      outputs = await predict_on(servable, spec.signature_name, inputs,
                                 output_filter, self.runner)
      logger = self._logger(spec.name)
      if logger is not None and request_proto is not None:
        response = predict_pb2.PredictResponse(
            model_spec=_spec_proto(servable, spec.signature_name or 'serving_default'))
        tensors.fill_protos(response.outputs, outputs, self.tensor_content)
        logger.log(_prediction_log(servable, request_proto(), response, 'predict_log'))
      return servable, spec.signature_name or 'serving_default', outputs

  # ---- Classify / Regress / MultiInference -------------------------------------

  async def classify(self, request: classification_pb2.ClassificationRequest,
                     entrypoint: str = 'GRPC', examples: tensors.SerializedExamples = None
                     ) -> classification_pb2.ClassificationResponse:
    """examples: the request's input already serialized (request.input is then empty)."""
    return await classification_response(await self.classify_arrays(request, entrypoint, examples))

  async def classify_arrays(self, request: classification_pb2.ClassificationRequest,
                            entrypoint: str = 'GRPC', examples: tensors.SerializedExamples = None
                            ) -> 'Classifications':
    """Classify, the result as arrays: REST writes them as JSON, and the
    response proto (a Python loop over every class of every example) is
    built only for a request the request log samples."""
    return await self._example_api(request, 'classify', classification_arrays,
                                   classification_response, entrypoint, examples)

  async def regress(self, request: regression_pb2.RegressionRequest,
                    entrypoint: str = 'GRPC', examples: tensors.SerializedExamples = None
                    ) -> regression_pb2.RegressionResponse:
    return await regression_response(await self.regress_arrays(request, entrypoint, examples))

  async def regress_arrays(self, request: regression_pb2.RegressionRequest,
                           entrypoint: str = 'GRPC', examples: tensors.SerializedExamples = None
                           ) -> 'Regressions':
    return await self._example_api(request, 'regress', regression_arrays, regression_response,
                                   entrypoint, examples)

  async def _example_api(self, request, api: str, run_on, to_response, entrypoint: str,
                         examples):
    """Classify or Regress: run on the addressed servable, then log the pair."""
    spec = ModelSpec.from_proto(request.model_spec)
    with self._serving(spec, api, entrypoint) as servable:
      result = await run_on(servable, request, self.runner, self.method_name_check, examples)
      logger = self._logger(spec.name)
      if logger is not None:
        if examples is not None:
          await _off_loop(len(examples.examples), examples.fill_input, request.input)
        response = await to_response(result)
        logger.log(_prediction_log(servable, request, response, f'{api}_log'))
      return result

  async def multi_inference(self, request: inference_pb2.MultiInferenceRequest,
                            entrypoint: str = 'GRPC') -> inference_pb2.MultiInferenceResponse:
    if not request.tasks:
      raise errors.invalid_argument('Expected at least one task')
    names = {t.model_spec.name for t in request.tasks}
    if len(names) != 1:
      raise errors.invalid_argument(
          'All ModelSpecs in a MultiInferenceRequest must access the same model name')
    spec = ModelSpec.from_proto(request.tasks[0].model_spec)._replace(signature_name='')
    with self._serving(spec, 'multi_inference', entrypoint) as servable:
      response = await multi_inference_on(servable, request, self.runner,
                                          self.method_name_check)
      logger = self._logger(spec.name)
      if logger is not None:
        logger.log(_prediction_log(servable, request, response, 'multi_inference_log'))
      return response

  # ---- Metadata / Status -------------------------------------------------------

  def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
               entrypoint: str = 'GRPC') -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not request.metadata_field:
      raise errors.invalid_argument(
          'GetModelMetadataRequest must specify at least one metadata_field')
    for field in request.metadata_field:
      if field != 'signature_def':
        raise errors.invalid_argument(f'Metadata field {field} is not supported')
    spec = ModelSpec.from_proto(request.model_spec)
    with self._serving(spec, 'metadata', entrypoint) as servable:
      response = get_model_metadata_pb2.GetModelMetadataResponse(
          model_spec=_spec_proto(servable, ''))
      signature_map = get_model_metadata_pb2.SignatureDefMap()
      for key, signature_def in servable.meta_graph.signature_def.items():
        signature_map.signature_def[key].CopyFrom(signature_def)
      response.metadata['signature_def'].Pack(signature_map)
      return response

  def status(self, request: get_model_status_pb2.GetModelStatusRequest
             ) -> get_model_status_pb2.GetModelStatusResponse:
    if not request.HasField('model_spec'):
      raise errors.invalid_argument('Missing ModelSpec')  # TF Serving's words.
    spec = ModelSpec.from_proto(request.model_spec)
    response = get_model_status_pb2.GetModelStatusResponse()
    for record in self.manager.version_records(spec.name, spec.version, spec.label):
      status = response.model_version_status.add(version=record.version, state=record.state)
      status.status.error_code = 0  # Set, so JSON shows "error_code": "OK".
      if record.error is not None:
        status.status.error_code = record.error.code.value[0]
        status.status.error_message = record.error.message
    return response

  # ---- Loading -------------------------------------------------------------------

  def load(self, name: str, version: int, path: str, tags=('serve',),
           warmup_iterations: int = 1, enable_warmup: bool = True) -> Servable:
    """Loads a version and replays its warmup requests before it is served."""
    servable = Servable(name, version, path, tags)
    if enable_warmup and tf.io.gfile.exists(servable.warmup_file):
      count = asyncio.run(warmup(servable, warmup_iterations, self.method_name_check))
      log.info('Finished reading warmup data for model at %s. Number of warmup'
               ' records read: %d.', servable.warmup_file, count)
    return servable


# ---- The APIs on one servable (also used for warmup) -------------------------------

async def predict_on(servable, signature_name, inputs, output_filter, runner):
  signature = servable.signature(signature_name)
  if callable(inputs):  # Decoded only once the signature is known (REST: maybe async).
    inputs = inputs(signature)
    if asyncio.iscoroutine(inputs):
      inputs = await inputs
  for name in output_filter:
    if name not in signature.output_names:
      raise errors.invalid_argument(
          f'output tensor alias not found in signature: {name} Outputs expected to'
          f' be in the set {{{",".join(signature.output_names)}}}.')
  feed = signature.prepare(inputs, servable.name)
  outputs = await runner.run(signature, feed)
  if output_filter:
    outputs = {k: v for k, v in outputs.items() if k in set(output_filter)}
  return outputs


def _example_signature(servable, signature_name, method, check_method):
  key = signature_name or 'serving_default'
  signature = servable.signatures.get(key)
  if signature is None:
    raise errors.invalid_argument(f'No signature was found with the name: {key}')
  if check_method and signature.method_name != method:
    raise errors.invalid_argument(
        f'Expected {method} signature method_name. Was: {signature.method_name}')
  if len(signature.input_dtypes) != 1:
    raise errors.invalid_argument('Expected one input Tensor.')
  return signature


_OFF_LOOP_EXAMPLES = 1000  # More examples than this are serialised off the event loop.


async def _off_loop(count: int, function, *args):
  """function(*args), on a thread when count says it is large: it holds the
  GIL for seconds at 100,000 examples, and the loop serves everyone else."""
  if count <= _OFF_LOOP_EXAMPLES:
    return function(*args)
  return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def _example_count(input_proto) -> int:
  kind = input_proto.WhichOneof('kind')
  return len(getattr(input_proto, kind).examples) if kind else 0


async def _run_examples(servable, signature, input_proto, runner, serialized=None):
  if serialized is None:
    examples = await _off_loop(_example_count(input_proto), tensors.serialized_examples,
                               input_proto)
  else:
    examples = await _off_loop(len(serialized.examples), serialized.feed)
  input_name = next(iter(signature.input_dtypes))
  outputs = await runner.run(signature, signature.prepare({input_name: examples}, servable.name))
  return len(examples), outputs


class Classifications(NamedTuple):
  """A Classify result as arrays: classes and scores [n, k] (either may be
  None). REST writes them as JSON without building the response proto."""
  model_spec: model_pb2.ModelSpec
  count: int
  classes: Optional[np.ndarray]
  scores: Optional[np.ndarray]


class Regressions(NamedTuple):
  model_spec: model_pb2.ModelSpec
  values: np.ndarray  # [n]


async def classification_arrays(servable, request, runner, check_method=False, examples=None
                                ) -> Classifications:
  signature = _example_signature(servable, request.model_spec.signature_name,
                                 CLASSIFY_METHOD, check_method)
  if not {'classes', 'scores'} & set(signature.output_names):
    raise errors.invalid_argument(
        'Expected classification signature outputs to contain classes or scores.')
  n, outputs = await _run_examples(servable, signature, request.input, runner, examples)
  classes = _per_example(outputs.get('classes'), n, 'classes')
  scores = _per_example(outputs.get('scores'), n, 'scores')
  if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
    raise errors.invalid_argument(  # TF Serving's words.
        f'Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs.'
        f' {scores.shape[1]}')
  return Classifications(_spec_proto(servable, signature.name), n, classes, scores)


async def classification_response(result: Classifications
                                  ) -> classification_pb2.ClassificationResponse:
  response = classification_pb2.ClassificationResponse(model_spec=result.model_spec)
  await _off_loop(result.count, _fill_classifications, response, result.count,
                  result.classes, result.scores)
  return response


async def classify_on(servable, request, runner, check_method=False, examples=None):
  return await classification_response(
      await classification_arrays(servable, request, runner, check_method, examples))


def _fill_classifications(response, n, classes, scores) -> None:
  for i in range(n):
    row = response.result.classifications.add()
    count = (classes if classes is not None else scores).shape[1]
    for j in range(count):
      entry = row.classes.add()
      if classes is not None:
        entry.label = _text(classes[i, j])
      if scores is not None:
        entry.score = float(scores[i, j])


def _per_example(value, n, name):
  """A classification output as [n, k]."""
  if value is None:
    return None
  if value.ndim == 1:
    value = value.reshape(-1, 1)
  if value.ndim != 2 or value.shape[0] != n:
    raise errors.invalid_argument(
        f'Expected {name} output shape [{n}, num_classes]. Got {list(value.shape)}')
  return value


def _text(value) -> str:
  return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


async def regression_arrays(servable, request, runner, check_method=False, examples=None
                            ) -> Regressions:
  signature = _example_signature(servable, request.model_spec.signature_name,
                                 REGRESS_METHOD, check_method)
  if 'outputs' not in signature.output_names:
    raise errors.invalid_argument('No regression outputs found in signature. Expected "outputs".')
  n, outputs = await _run_examples(servable, signature, request.input, runner, examples)
  values = outputs['outputs']
  if values.size != n:
    raise errors.invalid_argument(
        f'Expected output Tensor shape to be either [{n}] or [{n}, 1] but got'
        f' {list(values.shape)}')
  return Regressions(_spec_proto(servable, signature.name), values.reshape(-1))


async def regression_response(result: Regressions) -> regression_pb2.RegressionResponse:
  response = regression_pb2.RegressionResponse(model_spec=result.model_spec)
  await _off_loop(len(result.values), _fill_regressions, response, result.values)
  return response


def _fill_regressions(response, values) -> None:
  add = response.result.regressions.add
  for value in values.tolist():
    add(value=value)


async def regress_on(servable, request, runner, check_method=False, examples=None):
  return await regression_response(
      await regression_arrays(servable, request, runner, check_method, examples))


async def multi_inference_on(servable, request, runner, check_method=False):
  response = inference_pb2.MultiInferenceResponse()
  seen = set()
  for task in request.tasks:
    signature_name = task.model_spec.signature_name or 'serving_default'
    if signature_name in seen:
      raise errors.invalid_argument(f'Duplicate evaluation of signature: {signature_name}')
    seen.add(signature_name)
    result = response.results.add()
    if task.method_name == CLASSIFY_METHOD:
      sub = classification_pb2.ClassificationRequest(model_spec=task.model_spec, input=request.input)
      answer = await classify_on(servable, sub, runner, check_method)
      result.classification_result.CopyFrom(answer.result)
    elif task.method_name == REGRESS_METHOD:
      sub = regression_pb2.RegressionRequest(model_spec=task.model_spec, input=request.input)
      answer = await regress_on(servable, sub, runner, check_method)
      result.regression_result.CopyFrom(answer.result)
    else:
      raise errors.invalid_argument(f'Unsupported signature method_name: {task.method_name}')
    result.model_spec.CopyFrom(answer.model_spec)
  return response


def _prediction_log(servable, request, response, field):
  prediction_log = prediction_log_pb2.PredictionLog()
  getattr(prediction_log, field).request.CopyFrom(request)
  getattr(prediction_log, field).response.CopyFrom(response)
  metadata = prediction_log.log_metadata
  metadata.model_spec.CopyFrom(_spec_proto(servable, ''))
  metadata.saved_model_tags.extend(servable.tags)
  return prediction_log


async def warmup(servable, iterations: int, check_method: bool) -> int:
  """Replays assets.extra/tf_serving_warmup_requests; any failure fails the
  load, as in TF Serving."""
  records = list(tf.data.TFRecordDataset(servable.warmup_file).as_numpy_iterator())
  if len(records) > MAX_WARMUP_RECORDS:
    raise errors.invalid_argument(
        f'Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at'
        f' {servable.warmup_file}')
  runner = DirectRunner()
  for record in records:
    prediction_log = prediction_log_pb2.PredictionLog.FromString(record)
    kind = prediction_log.WhichOneof('log_type')
    for _ in range(max(iterations, 1)):
      if kind == 'predict_log':
        request = prediction_log.predict_log.request
        await predict_on(servable, request.model_spec.signature_name,
                         tensors.protos_to_numpy(request.inputs),
                         list(request.output_filter), runner)
      elif kind == 'classify_log':
        await classify_on(servable, prediction_log.classify_log.request, runner, check_method)
      elif kind == 'regress_log':
        await regress_on(servable, prediction_log.regress_log.request, runner, check_method)
      elif kind == 'multi_inference_log':
        await multi_inference_on(servable, prediction_log.multi_inference_log.request,
                                 runner, check_method)
      else:
        raise errors.ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                  f'Unsupported log_type for warmup: {kind}')
  return len(records)
