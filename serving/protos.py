"""TF Serving config protos that the tensorflow-serving-api wheel omits.

The wheel ships model_server_config but not BatchingParameters
(session_bundle_config.proto) nor MonitoringConfig. Their text format is what
users already write for tensorflow_model_server, so we declare the same
messages (same names and fields) at run time and parse with text_format.
"""

import logging

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2  # noqa: F401  (registers wrappers.proto)

from serving import errors

log = logging.getLogger(__name__)

_T = descriptor_pb2.FieldDescriptorProto

# (name, number, type, label, type_name) per message, as in TF Serving.
_MESSAGES = {
    'BatchingParameters': [
        ('max_batch_size', 1, _T.TYPE_MESSAGE, _T.LABEL_OPTIONAL, '.google.protobuf.Int64Value'),
        ('batch_timeout_micros', 2, _T.TYPE_MESSAGE, _T.LABEL_OPTIONAL, '.google.protobuf.Int64Value'),
        ('max_enqueued_batches', 3, _T.TYPE_MESSAGE, _T.LABEL_OPTIONAL, '.google.protobuf.Int64Value'),
        ('num_batch_threads', 4, _T.TYPE_MESSAGE, _T.LABEL_OPTIONAL, '.google.protobuf.Int64Value'),
        ('thread_pool_name', 5, _T.TYPE_MESSAGE, _T.LABEL_OPTIONAL, '.google.protobuf.StringValue'),
        ('allowed_batch_sizes', 6, _T.TYPE_INT64, _T.LABEL_REPEATED, None),
        ('pad_variable_length_inputs', 7, _T.TYPE_BOOL, _T.LABEL_OPTIONAL, None),
        ('enable_large_batch_splitting', 9, _T.TYPE_MESSAGE, _T.LABEL_OPTIONAL, '.google.protobuf.BoolValue'),
        ('max_execution_batch_size', 10, _T.TYPE_MESSAGE, _T.LABEL_OPTIONAL, '.google.protobuf.Int64Value'),
    ],
    'PrometheusConfig': [
        ('enable', 1, _T.TYPE_BOOL, _T.LABEL_OPTIONAL, None),
        ('path', 2, _T.TYPE_STRING, _T.LABEL_OPTIONAL, None),
    ],
    'MonitoringConfig': [
        ('prometheus_config', 1, _T.TYPE_MESSAGE, _T.LABEL_OPTIONAL,
         '.tensorflow.serving.PrometheusConfig'),
    ],
}


def _build_classes():
  file_proto = descriptor_pb2.FileDescriptorProto(
      name='serving/tf_serving_local_config.proto',
      package='tensorflow.serving', syntax='proto3',
      dependency=['google/protobuf/wrappers.proto'])
  for message_name, fields in _MESSAGES.items():
    message = file_proto.message_type.add(name=message_name)
    for name, number, field_type, label, type_name in fields:
      field = message.field.add(name=name, number=number, type=field_type, label=label)
      if type_name:
        field.type_name = type_name
  pool = descriptor_pool.Default()
  try:
    pool.Add(file_proto)
  except TypeError:  # Already added (module reloaded).
    pass
  file_descriptor = pool.FindFileByName(file_proto.name)
  factory = message_factory.MessageFactory(pool)
  return {name: factory.GetPrototype(file_descriptor.message_types_by_name[name])
          for name in _MESSAGES}


_CLASSES = _build_classes()
BatchingParameters = _CLASSES['BatchingParameters']
MonitoringConfig = _CLASSES['MonitoringConfig']


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
