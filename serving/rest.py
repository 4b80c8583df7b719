"""The REST API (TF Serving's paths, bodies and status codes) on aiohttp.

Large requests are decompressed, parsed, decoded and answered on a small
thread pool, so that the event loop keeps answering everyone else (status,
metrics, small requests) meanwhile; small ones stay on the loop, where they
cost less than a thread hop.
"""

import asyncio
import concurrent.futures
import ctypes
import ctypes.util
import logging
import re
import threading
import zlib

from aiohttp import web
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, predict_pb2, regression_pb2)

from serving import errors, rest_json
from serving.tensors import fill_protos
from serving.core import ModelSpec
from serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger(__name__)

# TF Serving's routes (http_rest_api_handler.cc), plus labels and metadata.
_VERSION = r'(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?'
_PREDICTION = re.compile(
    r'/v1/models/(?P<name>[^/:]+)' + _VERSION + r':(?P<method>classify|regress|predict)', re.I)
_STATUS = re.compile(
    r'/v1/models(?:/(?P<name>[^/:]+))?' + _VERSION + r'(?P<metadata>/metadata)?', re.I)
_JSON = 'application/json'
# Our own bound (--max_request_values): the values one request may decode into.
DEFAULT_MAX_REQUEST_VALUES = 20_000_000
_INLINE_BYTES = 64 * 1024  # Bodies up to this are handled on the event loop.


class RestApi:
  def __init__(self, core, metrics_path: str = '', max_body_bytes: int = 0,
               max_request_values: int = DEFAULT_MAX_REQUEST_VALUES, decode_threads: int = 2):
    self.core = core
    self.metrics_path = metrics_path
    self.max_body_bytes = max_body_bytes
    self.max_request_values = max_request_values
    # Few threads: they bound how many large requests are expanded in memory at once.
    self._pool = concurrent.futures.ThreadPoolExecutor(
        decode_threads, thread_name_prefix='rest_decode')
    self._trim_timer = None
    self._parse_lock = threading.Lock()

  def app(self) -> web.Application:
    # The body limit is checked by request.read() so a 413 carries a JSON
    # error; bodies are decompressed here (bounded), not by aiohttp.
    app = web.Application(client_max_size=self.max_body_bytes or 2**63,
                          handler_args={'auto_decompress': False})
    app.router.add_route('*', '/{tail:.*}', self.handle)
    app.on_cleanup.append(self._close)
    return app

  async def _close(self, app) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)

  async def handle(self, request: web.Request) -> web.Response:
    path = request.path
    if self.metrics_path and path == self.metrics_path and request.method == 'GET':
      return web.Response(body=self.core.metrics.exposition(),
                          content_type='text/plain', charset='utf-8')
    if not path.lower().startswith('/v1/'):
      return _error(404, 'Not Found')
    large = [False]  # Set by _dispatch once the body is read.
    try:
      body = await self._dispatch(request, path, large)
    except errors.ServingError as e:
      return _error(e.http_status, e.message)
    except web.HTTPRequestEntityTooLarge:
      return _error(413, f'Request body exceeds the limit of {self.max_body_bytes} bytes')
    except Exception as e:  # A bug must not take the server down: log, 500.
      log.exception('Unhandled error serving %s %s', request.method, path)
      return _error(500, errors.shorten(f'Internal error: {type(e).__name__}: {e}', 500))
    finally:
      if large[0]:
        self._trim_heap()
    return web.Response(body=body, content_type=_JSON)

  async def _dispatch(self, request: web.Request, path: str, large: list) -> bytes:
    method = request.method
    match = _PREDICTION.fullmatch(path) if method == 'POST' else None
    if match:
      spec = _spec(match)
      raw = await request.read()
      encoding = request.headers.get('Content-Encoding', '').strip().lower()
      off_loop = len(raw) > _INLINE_BYTES or encoding not in ('', 'identity')
      large[0] = off_loop
      holder = [await self._call(off_loop, self._parse, raw, encoding)]
      try:
        spec = spec._replace(signature_name=rest_json.signature_name(holder[0]))
        return await getattr(self, '_' + match['method'].lower())(spec, holder[0], off_loop)
      finally:
        if off_loop:  # Freeing millions of JSON objects at once holds the GIL for seconds.
          self._pool.submit(rest_json.release, holder.pop())
    match = _STATUS.fullmatch(path) if method == 'GET' else None
    if match:
      if not match['name']:
        raise errors.invalid_argument('Missing model name in request.')
      spec = _spec(match)
      if match['metadata']:
        return self._metadata(spec)
      return self._status(spec)
    raise errors.invalid_argument(f'Malformed request: {method} {path}')

  async def _call(self, off_loop: bool, function, *args):
    """function(*args): on the decode threads for large requests."""
    if not off_loop:
      return function(*args)
    return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

  def _parse(self, raw: bytes, encoding: str) -> dict:
    body = _decompressed(raw, encoding, self.max_body_bytes)
    if len(body) <= _INLINE_BYTES:
      return rest_json.parse_body(body)
    # One large parse at a time: orjson holds the GIL throughout (~10-20 ms
    # per MB), and two back to back would keep the event loop waiting twice as long.
    with self._parse_lock:
      return rest_json.parse_body(body)

  def _budget(self) -> rest_json.Budget:
    return rest_json.Budget(self.max_request_values)

  def _peek_signature(self, spec: ModelSpec):
    """The signature the request will most likely run on (core holds the
    version again to run it), or None: with it the JSON is checked and
    decoded before the model is held, off the event loop."""
    try:
      record = self.core.manager.hold(spec.name, spec.version, spec.label)
    except errors.ServingError:
      return None  # core.predict words the error.
    try:
      return record.servable.signatures.get(spec.signature_name or DEFAULT_SIGNATURE)
    finally:
      self.core.manager.release(record)

  def _decode_predict(self, doc: dict, signature):
    rest_json.check_request(doc, signature)  # Before any tensor is built.
    return rest_json.predict_inputs(doc, signature, self._budget())

  async def _predict(self, spec: ModelSpec, doc: dict, off_loop: bool) -> bytes:
    decoded = {}
    peeked = self._peek_signature(spec)
    if peeked is not None:
      decoded['inputs'], decoded['row'] = await self._call(
          off_loop, self._decode_predict, doc, peeked)

    def inputs(signature):
      if signature is not peeked:  # Another version came in meanwhile.
        decoded['inputs'], decoded['row'] = self._decode_predict(doc, signature)
      return decoded['inputs']

    def request_proto():  # Only built for requests sampled by logging.
      proto = predict_pb2.PredictRequest()
      proto.model_spec.name, proto.model_spec.signature_name = spec.name, spec.signature_name
      fill_protos(proto.inputs, decoded['inputs'])
      return proto

    _, _, outputs = await self.core.predict(spec, inputs, entrypoint='REST',
                                            request_proto=request_proto)
    return await self._call(off_loop, rest_json.predict_response, outputs, decoded['row'])

  async def _examples_request(self, request_class, spec: ModelSpec, doc: dict,
                              off_loop: bool):
    """A Classification/RegressionRequest; its Input is built only for a
    signature that can take it (otherwise core answers the error without)."""
    request = request_class()
    _fill_spec(request.model_spec, spec)
    signature = self._peek_signature(spec)
    if signature is not None and len(signature.input_dtypes) == 1:
      await self._call(off_loop, rest_json.fill_examples_input, request.input, doc,
                       self._budget())
    return request

  async def _classify(self, spec: ModelSpec, doc: dict, off_loop: bool) -> bytes:
    request = await self._examples_request(
        classification_pb2.ClassificationRequest, spec, doc, off_loop)
    response = await self.core.classify(request, entrypoint='REST')
    return await self._call(off_loop, rest_json.classify_response, response.result)

  async def _regress(self, spec: ModelSpec, doc: dict, off_loop: bool) -> bytes:
    request = await self._examples_request(regression_pb2.RegressionRequest, spec, doc, off_loop)
    response = await self.core.regress(request, entrypoint='REST')
    return await self._call(off_loop, rest_json.regress_response, response.result)

  def _metadata(self, spec: ModelSpec) -> bytes:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
    _fill_spec(request.model_spec, spec)
    return rest_json.metadata_response(self.core.metadata(request, entrypoint='REST'))

  def _status(self, spec: ModelSpec) -> bytes:
    request = get_model_status_pb2.GetModelStatusRequest()
    _fill_spec(request.model_spec, spec)
    return rest_json.proto_json(self.core.status(request)).encode()

  def _trim_heap(self) -> None:
    """Soon after a large request, hands the freed heap back to the OS:
    glibc keeps it (in per-thread arenas) and RSS would stay at the
    request's peak (measured: ~280 MB kept after a 200,000-row predict).
    Later, not now: the response and the request are still alive here; at
    most twice a second (ctypes releases the GIL while it runs)."""
    if _LIBC is not None and self._trim_timer is None:
      self._trim_timer = asyncio.get_running_loop().call_later(0.5, self._submit_trim)

  def _submit_trim(self) -> None:
    self._trim_timer = None
    try:
      self._pool.submit(_LIBC.malloc_trim, 0)
    except RuntimeError:  # The pool is shut down: the server is stopping.
      pass


def _load_libc():
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    return libc if hasattr(libc, 'malloc_trim') else None
  except OSError:  # Not glibc: nothing to trim.
    return None


_LIBC = _load_libc()


def _decompressed(raw: bytes, encoding: str, limit: int) -> bytes:
  """The body as sent before Content-Encoding. Like TF Serving's HTTP server,
  gzip is decoded (bounded: a small body may expand enormously)."""
  if encoding in ('', 'identity'):
    return raw
  if 'gzip' not in encoding:
    raise errors.invalid_argument(
        f'Unsupported Content-Encoding: {errors.shorten(encoding)}; send the body'
        ' uncompressed or gzip-compressed.')
  body, rest = [], raw
  size, limit = 0, limit or 2**62
  try:
    while rest:  # One gzip member after another.
      member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
      chunk = member.decompress(rest, limit - size + 1)
      size += len(chunk)
      if size > limit:
        raise errors.too_large(f'Request body exceeds the limit of {limit} bytes once uncompressed')
      if not member.eof:
        raise errors.invalid_argument('Failed to uncompress the gzip body: it is truncated')
      body.append(chunk)
      rest = member.unused_data
  except zlib.error as e:
    raise errors.invalid_argument(f'Failed to uncompress the gzip body: {e}') from None
  return b''.join(body)


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
