"""The REST API (TF Serving's paths, bodies and status codes) on aiohttp.

Large requests are decompressed, parsed, decoded and answered on a small
thread pool, so that the event loop keeps answering everyone else (status,
metrics, small requests) meanwhile; small ones stay on the loop, where they
cost less than a thread hop.
"""

import asyncio
import concurrent.futures
import logging
import mmap
import re
import threading
import zlib

from aiohttp import web
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, predict_pb2, regression_pb2)

from serving import errors, json_worker, rest_json
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
# Bodies above this (once uncompressed) are parsed and decoded in a worker
# process: parsing one in this process would hold the GIL, and so stall the
# event loop, for more than ~10-20 ms.
WORKER_BYTES = 1024 * 1024
# A response larger than this is written a piece at a time, each write one
# step of the event loop: writing 10 MB at once holds it ~15-20 ms.
_RESPONSE_PIECE_BYTES = 256 * 1024


class RestApi:
  def __init__(self, core, metrics_path: str = '', max_body_bytes: int = 0,
               max_request_values: int = DEFAULT_MAX_REQUEST_VALUES, decode_threads: int = 2):
    self.core = core
    self.metrics_path = metrics_path
    self.max_body_bytes = max_body_bytes
    self.max_request_values = max_request_values
    # Few threads: they bound how many large requests are expanded in memory at once.
    # At a lower OS priority: large requests' Python work (decoding, JSON
    # writing) must not take the CPU from the event loop on a busy machine.
    self._pool = concurrent.futures.ThreadPoolExecutor(
        decode_threads, thread_name_prefix='rest_decode', initializer=json_worker.lower_priority)
    self._worker = json_worker.JsonWorker(max_request_values)
    self._trim_timer = None
    self._parse_lock = threading.Lock()

  def server(self) -> web.Server:
    """aiohttp's low-level server: every request comes to handle(). (An
    Application's router and middleware chain cost ~25 us of CPU per request
    here, measured: a tenth of a small REST predict.) Bodies are
    decompressed by us (bounded), not by aiohttp; _read_body checks the limit."""
    return web.Server(self.handle, access_log=None, auto_decompress=False)

  async def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)
    self._worker.close()

  async def handle(self, request: web.BaseRequest) -> web.Response:
    path = request.path
    if request.headers.get('Expect', '').lower() == '100-continue':
      await _continue(request)
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
    if len(body) <= _RESPONSE_PIECE_BYTES:
      return web.Response(body=body, content_type=_JSON)
    return await _respond_in_pieces(request, body)

  async def _dispatch(self, request: web.BaseRequest, path: str, large: list) -> bytes:
    method = request.method
    match = _PREDICTION.fullmatch(path) if method == 'POST' else None
    if match:
      spec, api = _spec(match), match['method'].lower()
      raw = await self._read_body(request)
      encoding = request.headers.get('Content-Encoding', '').strip().lower()
      off_loop = len(raw) > _INLINE_BYTES or encoding not in ('', 'identity')
      large[0] = off_loop
      if not off_loop:
        return await self._in_process(api, spec, rest_json.parse_body(raw), False)
      body = await self._call(True, _decompressed, raw, encoding, self.max_body_bytes)
      del raw
      if len(body) > WORKER_BYTES:
        return await self._in_worker(api, spec, body)
      holder = [await self._call(True, self._parse, body)]
      del body
      try:
        return await self._in_process(api, spec, holder[0], True)
      finally:  # Freeing millions of JSON objects at once holds the GIL for seconds.
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

  async def _read_body(self, request: web.BaseRequest):
    """The body, chunk by chunk into a buffer of its Content-Length. Not
    request.read(), which copies the whole body once more at the end (~80 ms
    of event loop on 50 MB), nor a bytearray of that size, zero-filled first
    (~35 ms), nor a growing one (resizing copies it). A body the worker
    process decodes goes into an anonymous mmap, which the kernel zeroes a
    page at a time as chunks land; the event loop only copies chunks."""
    limit, size = self.max_body_bytes, request.content_length
    if size is None:
      return await _read_chunked(request, limit)
    if limit and size > limit:
      raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
    if size <= _INLINE_BYTES:
      return await request.read()
    body = mmap.mmap(-1, size) if size > WORKER_BYTES else bytearray(size)
    filled = 0
    async for chunk in request.content.iter_any():
      if filled + len(chunk) > size:
        raise errors.invalid_argument('The request body is longer than its Content-Length')
      body[filled:filled + len(chunk)] = chunk
      filled += len(chunk)
    if filled != size:
      raise errors.invalid_argument('The request body is shorter than its Content-Length')
    return body

  async def _call(self, off_loop: bool, function, *args):
    """function(*args): on the decode threads for large requests."""
    if not off_loop:
      return function(*args)
    return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

  def _parse(self, body: bytes) -> dict:
    # One parse at a time: orjson holds the GIL throughout (~10-20 ms per
    # MB), and two back to back would keep the event loop waiting twice as long.
    with self._parse_lock:
      return rest_json.parse_body(body)

  async def _in_process(self, api: str, spec: ModelSpec, doc: dict, off_loop: bool) -> bytes:
    """A parsed request, decoded here (on the decode threads when off_loop)."""
    spec = spec._replace(signature_name=rest_json.signature_name(doc))
    if api == 'predict':
      def decode(signature):
        rest_json.check_request(doc, signature)  # Before any tensor is built.
        return rest_json.predict_inputs(doc, signature, self._budget())
      peeked = self._peek_signature(spec)
      decoded = None if peeked is None else await self._call(off_loop, decode, peeked)
      return await self._predict(spec, decode, off_loop, peeked, decoded)
    request = self._examples_request(api, spec)
    signature = self._peek_signature(spec)
    if signature is not None and len(signature.input_dtypes) == 1:
      await self._call(off_loop, rest_json.fill_examples_input, request.input, doc,
                       self._budget())
    return await self._run_examples(api, request, None, off_loop)

  async def _in_worker(self, api: str, spec: ModelSpec, body: bytes) -> bytes:
    """A large body, parsed and decoded by the worker process (for the
    signatures of the version it will most likely run on): its JSON never
    enters this process."""
    record = self._hold(spec)
    signatures = record.servable.signatures if record is not None else {}
    try:
      if api == 'predict':
        dtypes = {k: s.input_dtypes for k, s in signatures.items()}
        name, decoded = await self._call(True, self._worker.predict, body, dtypes)
      else:  # Only signatures that take examples: core words the others' errors.
        names = [k for k, s in signatures.items() if len(s.input_dtypes) == 1]
        name, examples = await self._call(True, self._worker.examples, body, names)
    finally:
      self._release(record)
    spec = spec._replace(signature_name=name)
    if api != 'predict':
      return await self._run_examples(api, self._examples_request(api, spec), examples, True)
    key = name or DEFAULT_SIGNATURE

    def decode(signature):
      return self._worker.predict(body, {key: signature.input_dtypes})[1]
    return await self._predict(spec, decode, True, signatures.get(key), decoded)

  def _budget(self) -> rest_json.Budget:
    return rest_json.Budget(self.max_request_values)

  def _hold(self, spec: ModelSpec):
    """The version the request will most likely run on (core holds it again
    to run it), or None (core words the error): with it, the JSON is checked
    and decoded before the model is held, off the event loop."""
    try:
      return self.core.manager.hold(spec.name, spec.version, spec.label)
    except errors.ServingError:
      return None

  def _release(self, record) -> None:
    if record is not None:
      self.core.manager.release(record)

  def _peek_signature(self, spec: ModelSpec):
    try:
      servable = self.core.manager.peek(spec.name, spec.version, spec.label)
    except errors.ServingError:
      return None  # Core words the error.
    return servable.signatures.get(spec.signature_name or DEFAULT_SIGNATURE)

  async def _predict(self, spec: ModelSpec, decode, off_loop: bool, peeked, decoded) -> bytes:
    """decoded: (inputs, is_row_format) for the peeked signature (or None);
    decode(signature) decodes them again, only for a signature with other
    inputs (a new version came in meanwhile)."""
    state = [decoded]

    async def inputs(signature):
      if state[0] is None or signature.input_dtypes != peeked.input_dtypes:
        state[0] = await self._call(off_loop, decode, signature)
      return state[0][0]

    def request_proto():  # Only built for requests sampled by logging.
      proto = predict_pb2.PredictRequest()
      proto.model_spec.name, proto.model_spec.signature_name = spec.name, spec.signature_name
      fill_protos(proto.inputs, state[0][0])
      return proto

    _, _, outputs = await self.core.predict(spec, inputs, entrypoint='REST',
                                            request_proto=request_proto)
    return await self._call(off_loop, rest_json.predict_response, outputs, state[0][1])

  def _examples_request(self, api: str, spec: ModelSpec):
    """An empty Classification/RegressionRequest for spec."""
    request = (classification_pb2.ClassificationRequest() if api == 'classify'
               else regression_pb2.RegressionRequest())
    _fill_spec(request.model_spec, spec)
    return request

  async def _run_examples(self, api: str, request, examples, off_loop: bool) -> bytes:
    """Classify or Regress; examples: the input, serialized (else in request.input)."""
    if api == 'classify':
      result = await self.core.classify_arrays(request, entrypoint='REST', examples=examples)
      return await self._call(off_loop, rest_json.classify_response, result.classes,
                              result.scores, result.count)
    result = await self.core.regress_arrays(request, entrypoint='REST', examples=examples)
    return await self._call(off_loop, rest_json.regress_response, result.values)

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
    if self._trim_timer is None:
      self._trim_timer = asyncio.get_running_loop().call_later(0.5, self._submit_trim)

  def _submit_trim(self) -> None:
    self._trim_timer = None
    try:
      self._pool.submit(json_worker.trim_heap)
    except RuntimeError:  # The pool is shut down: the server is stopping.
      pass


async def _respond_in_pieces(request: web.BaseRequest, body: bytes) -> web.StreamResponse:
  """body as one response with its Content-Length (as web.Response sends
  it), written _RESPONSE_PIECE_BYTES at a time; each write waits for the
  socket to drain, so other requests are served in between."""
  response = web.StreamResponse(headers={'Content-Type': _JSON})
  response.content_length = len(body)
  await response.prepare(request)
  view = memoryview(body)
  for start in range(0, len(body), _RESPONSE_PIECE_BYTES):
    await response.write(view[start:start + _RESPONSE_PIECE_BYTES])
  await response.write_eof()
  return response


async def _continue(request: web.BaseRequest) -> None:
  """`Expect: 100-continue` (curl sends it with bodies over 1 KB, then waits
  up to a second for it), answered as aiohttp's router does."""
  if request.version >= (1, 1):
    await request.writer.write(b'HTTP/1.1 100 Continue\r\n\r\n')
    request.writer.output_size = 0


async def _read_chunked(request: web.BaseRequest, limit: int) -> bytes:
  """A body without a Content-Length (chunked), up to limit bytes (0: any)."""
  body = bytearray()
  async for chunk in request.content.iter_any():
    body += chunk
    if limit and len(body) > limit:
      raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
  return bytes(body)


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
