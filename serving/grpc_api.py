"""PredictionService and ModelService (tensorflow-serving-api protos) on
grpc.aio, sharing the event loop with the REST API."""

import asyncio
import functools
import logging

import grpc
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving import errors, tensors
from serving.core import ModelSpec

log = logging.getLogger(__name__)


def _canonical_errors(method):
  """ServingErrors become the gRPC status TF Serving would send."""

  @functools.wraps(method)
  async def wrapper(self, request, context):
    try:
      return await method(self, request, context)
    except errors.ServingError as e:
      await context.abort(e.code, e.message)
    except (asyncio.CancelledError, grpc.aio.AbortError):
      raise
    except Exception as e:  # A bug must not take the server down.
      # One line per failed request, not a traceback each (they can be many).
      log.error('Internal error in %s: %s: %s', method.__name__, type(e).__name__, e)
      await context.abort(grpc.StatusCode.INTERNAL, f'{type(e).__name__}: {e}')
  return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, core):
    self.core = core

  @_canonical_errors
  async def Predict(self, request, context):
    spec = ModelSpec.from_proto(request.model_spec)
    servable, signature_name, outputs = await self.core.predict(
        spec, lambda _: tensors.protos_to_numpy(request.inputs),
        list(request.output_filter), request_proto=lambda: request)
    response = predict_pb2.PredictResponse()
    response.model_spec.name, response.model_spec.signature_name = servable.name, signature_name
    response.model_spec.version.value = servable.version
    tensors.fill_protos(response.outputs, outputs, self.core.tensor_content)
    return response

  @_canonical_errors
  async def Classify(self, request, context):
    return await self.core.classify(request)

  @_canonical_errors
  async def Regress(self, request, context):
    return await self.core.regress(request)

  @_canonical_errors
  async def MultiInference(self, request, context):
    return await self.core.multi_inference(request)

  @_canonical_errors
  async def GetModelMetadata(self, request, context):
    return self.core.metadata(request)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, core, reload_config):
    self.core = core
    self._reload_config = reload_config  # Loads models: run off the loop.

  @_canonical_errors
  async def GetModelStatus(self, request, context):
    return self.core.status(request)

  @_canonical_errors
  async def HandleReloadConfigRequest(self, request, context):
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, self._reload_config, request.config)
    return model_management_pb2.ReloadConfigResponse()


def make_server(core, reload_config, addresses, channel_args=()) -> grpc.aio.Server:
  """One gRPC server listening on each of addresses (an address or a list)."""
  # TF Serving accepts messages of any size (SetMaxMessageSize(INT_MAX)).
  options = [('grpc.max_receive_message_length', -1),
             ('grpc.max_send_message_length', -1)] + list(channel_args)
  server = grpc.aio.server(options=options)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(core), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(
      ModelService(core, reload_config), server)
  for address in [addresses] if isinstance(addresses, str) else addresses:
    if server.add_insecure_port(address) == 0:
      raise OSError(f'Could not bind gRPC to {address}')
  return server
