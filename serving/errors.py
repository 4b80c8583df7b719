"""Errors as TF Serving reports them: a canonical status code and a message.

The same error becomes a gRPC status or an HTTP status + {"error": ...} body.
"""

import grpc

# Messages echo names and values from requests: a 10 kB signature name must
# not make a gRPC status too big to send (metadata is limited to 8 kB).
MAX_MESSAGE_CHARS = 2000
MAX_NAME_CHARS = 200

# tensorflow_serving/model_servers/http_server.cc ToHTTPStatusCode.
_HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
  """A request failed with a canonical status code."""

  def __init__(self, code: grpc.StatusCode, message: str, http_status: int = 0):
    message = shorten(message, MAX_MESSAGE_CHARS)
    super().__init__(message)
    self.code = code
    self.message = message
    self._http_status = http_status

  @property
  def http_status(self) -> int:
    return self._http_status or _HTTP_STATUS.get(self.code, 500)

  def __reduce__(self):  # Raised in the JSON worker process, re-raised here.
    return _rebuilt, (self.code, self.message, self._http_status)


def _rebuilt(code, message: str, http_status: int) -> ServingError:
  error = ServingError(code, '', http_status)
  error.message = message
  error.args = (message,)
  return error


def shorten(text: str, limit: int = MAX_NAME_CHARS) -> str:
  """text, cut to limit characters (a name or value echoed in a message)."""
  return text if len(text) <= limit else text[:limit] + f'... ({len(text)} characters)'


def invalid_argument(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def too_large(message: str) -> ServingError:
  """A request over one of our own size bounds: RESOURCE_EXHAUSTED, and
  413 Payload Too Large over REST."""
  return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, http_status=413)


def not_found(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
  return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def from_tf_error(error) -> ServingError:
  """Maps a tf.errors.OpError (a failed model run) to its canonical code."""
  code = getattr(grpc.StatusCode, _TF_CODE_NAMES.get(error.error_code, 'UNKNOWN'))
  return ServingError(code, error.message)


# tf.errors codes are the canonical codes; grpc names them the same way.
_TF_CODE_NAMES = {
    1: 'CANCELLED', 2: 'UNKNOWN', 3: 'INVALID_ARGUMENT', 4: 'DEADLINE_EXCEEDED',
    5: 'NOT_FOUND', 6: 'ALREADY_EXISTS', 7: 'PERMISSION_DENIED',
    8: 'RESOURCE_EXHAUSTED', 9: 'FAILED_PRECONDITION', 10: 'ABORTED',
    11: 'OUT_OF_RANGE', 12: 'UNIMPLEMENTED', 13: 'INTERNAL', 14: 'UNAVAILABLE',
    15: 'DATA_LOSS', 16: 'UNAUTHENTICATED',
}
