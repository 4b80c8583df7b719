"""The REST API (TF Serving's paths, bodies and status codes) on aiohttp."""

import logging
import re

from aiohttp import web
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, predict_pb2, regression_pb2)

from serving import errors, rest_json
from serving.tensors import fill_protos
from serving.core import ModelSpec

log = logging.getLogger(__name__)

# TF Serving's routes (http_rest_api_handler.cc), plus labels and metadata.
_VERSION = r'(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?'
_PREDICTION = re.compile(
    r'/v1/models/(?P<name>[^/:]+)' + _VERSION + r':(?P<method>classify|regress|predict)', re.I)
_STATUS = re.compile(
    r'/v1/models(?:/(?P<name>[^/:]+))?' + _VERSION + r'(?P<metadata>/metadata)?', re.I)
_JSON = 'application/json'


class RestApi:
  def __init__(self, core, metrics_path: str = '', max_body_bytes: int = 0):
    self.core = core
    self.metrics_path = metrics_path
    self.max_body_bytes = max_body_bytes

  def app(self) -> web.Application:
    # The body limit is checked in read_body() so a 413 carries a JSON error.
    app = web.Application(client_max_size=self.max_body_bytes or 2**63)
    app.router.add_route('*', '/{tail:.*}', self.handle)
    return app

  async def handle(self, request: web.Request) -> web.Response:
    path = request.path
    if self.metrics_path and path == self.metrics_path and request.method == 'GET':
      return web.Response(body=self.core.metrics.exposition(),
                          content_type='text/plain', charset='utf-8')
    if not path.lower().startswith('/v1/'):
      return _error(404, 'Not Found')
    try:
      body = await self._dispatch(request, path)
    except errors.ServingError as e:
      return _error(e.http_status, e.message)
    except web.HTTPRequestEntityTooLarge:
      return _error(413, f'Request body exceeds the limit of {self.max_body_bytes} bytes')
    except Exception as e:  # A bug must not take the server down: log, 500.
      log.exception('Unhandled error serving %s %s', request.method, path)
      return _error(500, f'Internal error: {type(e).__name__}: {e}')
    return web.Response(body=body, content_type=_JSON)

  async def _dispatch(self, request: web.Request, path: str) -> bytes:
    method = request.method
    match = _PREDICTION.fullmatch(path) if method == 'POST' else None
    if match:
      spec = _spec(match)
      doc = rest_json.parse_body(await request.read())
      spec = spec._replace(signature_name=rest_json.signature_name(doc))
      return await getattr(self, '_' + match['method'].lower())(spec, doc)
    match = _STATUS.fullmatch(path) if method == 'GET' else None
    if match:
      if not match['name']:
        raise errors.invalid_argument('Missing model name in request.')
      spec = _spec(match)
      if match['metadata']:
        return self._metadata(spec)
      return self._status(spec)
    raise errors.invalid_argument(f'Malformed request: {method} {path}')

  async def _predict(self, spec: ModelSpec, doc: dict) -> bytes:
    decoded = {}

    def inputs(signature):
      decoded['inputs'], decoded['row'] = rest_json.predict_inputs(doc, signature)
      return decoded['inputs']

    def request_proto():  # Only built for requests sampled by logging.
      proto = predict_pb2.PredictRequest()
      proto.model_spec.name, proto.model_spec.signature_name = spec.name, spec.signature_name
      fill_protos(proto.inputs, decoded['inputs'])
      return proto

    _, _, outputs = await self.core.predict(spec, inputs, entrypoint='REST',
                                            request_proto=request_proto)
    return rest_json.predict_response(outputs, decoded['row'])

  async def _classify(self, spec: ModelSpec, doc: dict) -> bytes:
    request = classification_pb2.ClassificationRequest(input=rest_json.examples_input(doc))
    _fill_spec(request.model_spec, spec)
    response = await self.core.classify(request, entrypoint='REST')
    return rest_json.classify_response(response.result)

  async def _regress(self, spec: ModelSpec, doc: dict) -> bytes:
    request = regression_pb2.RegressionRequest(input=rest_json.examples_input(doc))
    _fill_spec(request.model_spec, spec)
    response = await self.core.regress(request, entrypoint='REST')
    return rest_json.regress_response(response.result)

  def _metadata(self, spec: ModelSpec) -> bytes:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
    _fill_spec(request.model_spec, spec)
    return rest_json.metadata_response(self.core.metadata(request, entrypoint='REST'))

  def _status(self, spec: ModelSpec) -> bytes:
    request = get_model_status_pb2.GetModelStatusRequest()
    _fill_spec(request.model_spec, spec)
    return rest_json.proto_json(self.core.status(request)).encode()


def _spec(match) -> ModelSpec:
  version = match['version']
  if version and int(version) >= 2**63:
    raise errors.invalid_argument(f'Failed to convert version: {version} to numeric.')
  return ModelSpec(match['name'], int(version) if version else None, match['label'] or '')


def _fill_spec(proto, spec: ModelSpec) -> None:
  proto.name, proto.signature_name = spec.name, spec.signature_name
  if spec.version is not None:
    proto.version.value = spec.version
  elif spec.label:
    proto.version_label = spec.label


def _error(status: int, message: str) -> web.Response:
  return web.Response(status=status, body=rest_json.error_body(message), content_type=_JSON)
