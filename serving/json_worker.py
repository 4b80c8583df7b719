"""Large REST bodies parsed and decoded in a worker process.

orjson.loads holds Python's GIL for the whole parse (~10-20 ms per MB), and
so does turning the parsed JSON into arrays or tf.Examples: in the server's
own process a 50 MB body stops the event loop (status, metrics, every other
request) for a second or more, whatever thread does it. A worker process does
it instead, and sends back only what the request runs with: numpy arrays for
Predict, serialized tf.Examples for Classify/Regress. Object arrays and
example lists come back in pickled slices, so that taking them in holds the
server's GIL about a millisecond at a time; the slices and numeric arrays
travel out of band (pickle protocol 5), each its own frame read into its own
buffer, so that no single copy of the whole reply holds the GIL (one of
30 MB held the event loop ~25 ms). Errors are the same ServingErrors (same
texts) that the in-process path raises.

The worker is `python -m serving.json_worker`, started at the first large
body (it imports TensorFlow's protos: a few seconds and a few hundred MB,
once) and spoken to over its stdin/stdout: length-prefixed frames, the body
sent as it is. Not multiprocessing: its spawn re-runs the embedding
program's main module, and fork is unsafe in a process with threads.
"""

import ctypes
import ctypes.util
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from serving import errors, rest_json
from serving.tensors import SerializedExamples

log = logging.getLogger(__name__)

_SLICE = 8192  # Python objects per pickled slice (~1 ms to unpickle).
_DEFAULT_SIGNATURE = 'serving_default'
_HEADER = struct.Struct('<Q')  # A frame: its length, then its bytes.
_READ_BYTES = 1 << 20  # Most bytes asked of the pipe at a time.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class InputSpec(NamedTuple):
  """What rest_json needs of a signature to decode a request for it."""
  input_dtypes: Dict[str, np.dtype]


class JsonWorker:
  """One lazily started worker process, one request at a time; its calls
  block (call them on a thread)."""

  def __init__(self, max_request_values: int):
    self.max_request_values = max_request_values
    self._lock = threading.Lock()
    self._process: Optional[subprocess.Popen] = None

  def predict(self, body: bytes, signatures: Dict[str, Dict[str, np.dtype]]):
    """(signature name, (inputs, is_row_format) or None when the named
    signature is not among `signatures`: input dtypes by signature name)."""
    name, packed = self._run('predict', body, signatures)
    if packed is None:
      return name, None
    arrays, row_format = packed
    return name, ({k: _unpack_array(v) for k, v in arrays.items()}, row_format)

  def examples(self, body: bytes, signature_names) -> Tuple[str, Optional[SerializedExamples]]:
    """(signature name, its examples, or None when the named signature is
    not among `signature_names`: those that take examples)."""
    name, packed = self._run('examples', body, set(signature_names))
    if packed is None:
      return name, None
    context, slices = packed
    return name, SerializedExamples(context, _unpack_list(slices))

  def close(self) -> None:
    with self._lock:
      process, self._process = self._process, None
    if process is not None:
      _stop(process)

  def _run(self, function: str, body: bytes, *args):
    with self._lock:
      process = self._started()
      try:
        _write_frame(process.stdin, pickle.dumps((function, args, self.max_request_values)))
        _write_frame(process.stdin, body)
        ok, value = _read_message(process.stdout)
      except (OSError, EOFError, pickle.UnpicklingError):
        self._process = None  # The next request starts a new one.
        _stop(process)
        log.error('The JSON decoding worker process died (exit code %s) on a %d-byte body',
                  process.returncode, len(body))
        raise errors.unavailable(
            'The process decoding the request JSON died (out of memory?); send smaller'
            ' requests or lower --max_request_values.') from None
    if not ok:
      raise value
    return value

  def _started(self) -> subprocess.Popen:
    if self._process is None:
      env = dict(os.environ)
      env['PYTHONPATH'] = os.pathsep.join(filter(None, [_ROOT, env.get('PYTHONPATH')]))
      self._process = subprocess.Popen(
          [sys.executable, '-m', 'serving.json_worker'], stdin=subprocess.PIPE,
          stdout=subprocess.PIPE, bufsize=0, env=env)
      log.info('Started the JSON decoding worker process (pid %d)', self._process.pid)
    return self._process


def _stop(process: subprocess.Popen) -> None:
  try:
    process.stdin.close()  # The worker exits at the end of its input.
    process.wait(5)
  except (OSError, subprocess.TimeoutExpired):
    process.kill()
    process.wait()
  process.stdout.close()


def _write_frame(stream, data) -> None:
  view = memoryview(data)
  stream.write(_HEADER.pack(len(view)))
  while view:  # A raw pipe may take part of it at a time (the GIL is free meanwhile).
    view = view[stream.write(view):]


def _read_frame(stream) -> bytearray:
  size, = _HEADER.unpack(_read_exactly(stream, _HEADER.size))
  return _read_exactly(stream, size)


def _read_exactly(stream, size: int) -> bytearray:
  """size bytes, appended a pipe's worth at a time: a zero-filled buffer of
  the whole size would hold the GIL while it is zeroed (~1 ms per 2 MB)."""
  data = bytearray()
  while len(data) < size:
    chunk = stream.read(min(size - len(data), _READ_BYTES))
    if not chunk:
      raise EOFError('the worker process closed its pipe')
    data += chunk
  return data


def _write_message(stream, value) -> None:
  """value pickled, its out-of-band buffers (numpy arrays, PickleBuffers)
  each sent as a frame of its own after the pickle."""
  buffers = []
  pickled = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
  _write_frame(stream, _HEADER.pack(len(buffers)))
  _write_frame(stream, pickled)
  for buffer in buffers:
    _write_frame(stream, buffer.raw())


def _read_message(stream):
  count, = _HEADER.unpack(_read_frame(stream))
  pickled = _read_frame(stream)
  return pickle.loads(pickled, buffers=[_read_frame(stream) for _ in range(count)])


# ---- In the worker process -----------------------------------------------------------

# Large requests' work runs at a lower OS priority than the event loop, so
# that on a busy machine the status, metrics and small requests are
# scheduled first (nice 10, the most an unprivileged process may take back).
BULK_NICENESS = 10


def lower_priority() -> None:
  """This thread (Linux: setpriority applies to the calling thread only) or,
  elsewhere, this process, at BULK_NICENESS."""
  try:
    os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), BULK_NICENESS))
  except (AttributeError, OSError):  # No setpriority here: serve at the same priority.
    pass


def main() -> None:
  """The worker: answers frames on stdin until it closes."""
  lower_priority()
  stdin = open(sys.stdin.fileno(), 'rb', buffering=0, closefd=False)
  stdout = open(sys.stdout.fileno(), 'wb', buffering=0, closefd=False)
  sys.stdout = sys.stderr  # Nothing else may write into the replies.
  functions = {'predict': _decode_predict, 'examples': _decode_examples}
  while True:
    try:
      function, args, max_values = pickle.loads(_read_frame(stdin))
      body = _read_frame(stdin)
    except EOFError:
      return
    try:
      reply = (True, functions[function](body, *args, max_values))
    except errors.ServingError as e:
      reply = (False, e)
    except Exception as e:  # pylint: disable=broad-except  A bug: the server answers 500.
      reply = (False, RuntimeError(f'{type(e).__name__} in the JSON worker: {e}'))
    del body
    _write_message(stdout, reply)


def _decode_predict(body: bytes, signatures, max_values: int):
  try:
    return _predict_inputs(body, signatures, max_values)
  finally:
    trim_heap()  # The parsed request is freed by now.


def _predict_inputs(body: bytes, signatures, max_values: int):
  doc = rest_json.parse_body(body)
  name = rest_json.signature_name(doc)
  dtypes = signatures.get(name or _DEFAULT_SIGNATURE)
  if dtypes is None:
    return name, None  # The server words the error (unknown signature).
  spec = InputSpec(dtypes)
  rest_json.check_request(doc, spec)
  inputs, row_format = rest_json.predict_inputs(doc, spec, rest_json.Budget(max_values))
  return name, ({k: _pack_array(v) for k, v in inputs.items()}, row_format)


def _decode_examples(body: bytes, signature_names, max_values: int):
  try:
    return _examples(body, signature_names, max_values)
  finally:
    trim_heap()


def _examples(body: bytes, signature_names, max_values: int):
  doc = rest_json.parse_body(body)
  name = rest_json.signature_name(doc)
  if (name or _DEFAULT_SIGNATURE) not in signature_names:
    return name, None
  examples = SerializedExamples.from_input(
      rest_json.examples_input(doc, rest_json.Budget(max_values)))
  return name, (examples.context, _pack_list(examples.examples))


def _pack_array(array: np.ndarray):
  """Numeric arrays as they are (one out-of-band buffer); object arrays in slices."""
  if array.dtype != object:
    return array
  return ('slices', array.shape, _pack_list(array.ravel().tolist()))


def _unpack_array(packed) -> np.ndarray:
  if isinstance(packed, np.ndarray):
    return packed
  _, shape, slices = packed
  values = _unpack_list(slices)
  array = np.empty(len(values), object)
  array[:] = values
  return array.reshape(shape)


def _pack_list(values: list) -> List[pickle.PickleBuffer]:
  """values pickled _SLICE at a time, each slice an out-of-band buffer."""
  return [pickle.PickleBuffer(pickle.dumps(values[i:i + _SLICE], protocol=pickle.HIGHEST_PROTOCOL))
          for i in range(0, len(values), _SLICE)]


def _unpack_list(slices: List[bytearray]) -> list:
  values = []
  for piece in slices:  # One slice per call: the GIL is free in between.
    values.extend(pickle.loads(piece))
  return values


def _load_libc():
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    return libc if hasattr(libc, 'malloc_trim') else None
  except OSError:
    return None


_LIBC = _load_libc()


def trim_heap() -> None:
  """Hands freed heap back to the OS: glibc keeps it (in per-thread arenas),
  and RSS would stay at a large request's peak. ctypes releases the GIL."""
  if _LIBC is not None:
    _LIBC.malloc_trim(0)


if __name__ == '__main__':
  main()
