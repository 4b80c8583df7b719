"""TF Serving's config files: parsed as tensorflow_model_server parses them.

BatchingParameters and MonitoringConfig are not in the tensorflow-serving-api
wheel: they come from serving/config_protos/ (TF Serving 2.16.1's messages,
generated _pb2 modules; `make protos` regenerates them).
"""

import logging

from google.protobuf import text_format

from serving import errors
from serving.config_protos.monitoring_config_pb2 import MonitoringConfig  # noqa: F401
from serving.config_protos.session_bundle_config_pb2 import BatchingParameters  # noqa: F401

log = logging.getLogger(__name__)


def parse_text_file(path: str, message_class):
  """Reads an ascii protobuf file, as tensorflow_model_server does: a file
  that does not parse is INVALID_ARGUMENT "Invalid protobuf file", after the
  parser's own error is logged (it says where and why)."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError as e:
    raise errors.not_found(f'{path}; {e.strerror}') from None
  try:
    return text_format.Parse(text, message_class())
  except text_format.ParseError as e:
    log.error('Error parsing text-format %s: %s', message_class.DESCRIPTOR.full_name, e)
    raise errors.invalid_argument(f"Invalid protobuf file: '{path}'") from None
