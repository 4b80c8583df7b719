"""Conversions between TensorProto / tf.Example protos and numpy arrays.

The common cases (numeric tensors in tensor_content or the repeated value
fields, string tensors) are converted with numpy directly: tf.make_ndarray /
tf.make_tensor_proto cost 20-40 us each, a large part of a small gRPC
request. Anything else (half floats, complex, resources, broadcast values)
goes through TensorFlow's own conversion.
"""

from typing import Dict

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import errors

# DataType -> (numpy dtype, repeated value field of TensorProto).
_NUMERIC = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), 'float_val'),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), 'double_val'),
    types_pb2.DT_INT32: (np.dtype(np.int32), 'int_val'),
    types_pb2.DT_INT64: (np.dtype(np.int64), 'int64_val'),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), 'bool_val'),
}
_ENUM_OF = {dtype: enum for enum, (dtype, _) in _NUMERIC.items()}


def _fast_numpy(tensor_proto):
  """The array, or None when the proto needs TensorFlow's conversion."""
  shape_proto = tensor_proto.tensor_shape
  if shape_proto.unknown_rank:
    return None
  shape = [d.size for d in shape_proto.dim]
  count = 1
  for size in shape:
    if size < 0:
      return None
    count *= size
  dtype_enum = tensor_proto.dtype
  if dtype_enum == types_pb2.DT_STRING:
    values = tensor_proto.string_val
    if len(values) != count:
      return None
    return np.array(list(values), dtype=object).reshape(shape)
  numeric = _NUMERIC.get(dtype_enum)
  if numeric is None:
    return None
  dtype, field = numeric
  content = tensor_proto.tensor_content
  if content:
    if len(content) != count * dtype.itemsize:
      return None
    return np.frombuffer(content, dtype).reshape(shape)
  values = getattr(tensor_proto, field)
  if len(values) != count:
    return None
  # From a list: numpy reads a repeated field as a generic sequence, slower.
  return np.array(list(values), dtype).reshape(shape)


def to_numpy(tensor_proto) -> np.ndarray:
  """A request's TensorProto as an array; malformed protos are the client's
  fault (INVALID_ARGUMENT), as in TF Serving."""
  array = _fast_numpy(tensor_proto)
  if array is not None:
    return array
  try:
    return tf.make_ndarray(tensor_proto)
  except (TypeError, ValueError) as e:
    raise errors.invalid_argument(f'Invalid tensor proto: {e}') from None


def _fill(proto, array) -> None:
  """Writes array into an empty TensorProto in place: building a separate
  proto and copying it into the response costs 3x as much per request."""
  array = np.asarray(array)
  enum = _ENUM_OF.get(array.dtype)
  if enum is not None and array.dtype.isnative:
    proto.dtype = enum
    _fill_shape(proto, array.shape)
    proto.tensor_content = array.tobytes()  # C order, whatever the array's layout.
    return
  if array.dtype == object:
    values = array.ravel().tolist()
    if all(type(v) is bytes for v in values):
      proto.dtype = types_pb2.DT_STRING
      _fill_shape(proto, array.shape)
      proto.string_val.extend(values)
      return
  proto.CopyFrom(tf.make_tensor_proto(array))


def _fill_shape(proto, shape) -> None:
  proto.tensor_shape.SetInParent()  # Present even for a scalar, as TF writes it.
  for size in shape:
    proto.tensor_shape.dim.add().size = size


def to_proto(array: np.ndarray):
  proto = tensor_pb2.TensorProto()
  _fill(proto, array)
  return proto


def protos_to_numpy(tensor_map) -> Dict[str, np.ndarray]:
  # By key: a protobuf map's items() is Python's generic ItemsView, slower.
  return {name: to_numpy(tensor_map[name]) for name in tensor_map}


def fill_protos(tensor_map, arrays: Dict[str, np.ndarray]) -> None:
  for name, array in arrays.items():
    _fill(tensor_map[name], array)


def serialized_examples(input_proto) -> np.ndarray:
  """tensorflow.serving.Input as serialized tf.Examples. With a context, the
  context's bytes come first so that an example's own features win (proto
  merge semantics), as TF Serving does."""
  kind = input_proto.WhichOneof('kind')
  if kind == 'example_list':
    examples, prefix = input_proto.example_list.examples, b''
  elif kind == 'example_list_with_context':
    examples = input_proto.example_list_with_context.examples
    prefix = input_proto.example_list_with_context.context.SerializeToString()
  else:
    raise errors.invalid_argument('Input is empty')
  if not examples:
    raise errors.invalid_argument('Input is empty')
  return np.array([prefix + e.SerializeToString() for e in examples], dtype=object)
