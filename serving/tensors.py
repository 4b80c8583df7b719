"""Conversions between TensorProto / tf.Example protos and numpy arrays.

The common cases (numeric tensors in tensor_content or the repeated value
fields, string tensors) are converted with numpy directly: tf.make_ndarray /
tf.make_tensor_proto cost 20-40 us each, a large part of a small gRPC
request. Anything else (half floats, complex numbers) goes through
TensorFlow's own conversion. Request tensors are validated first as TF
Serving's Tensor::FromProto does, so a bad one is INVALID_ARGUMENT (or
RESOURCE_EXHAUSTED when larger than memory), never an error of ours.
"""

import os
from typing import Dict, NamedTuple, Optional

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import errors

# DataType -> (numpy dtype, repeated value field of TensorProto), as
# Tensor::AsProtoField writes them.
_NUMERIC = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), 'float_val'),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), 'double_val'),
    types_pb2.DT_INT32: (np.dtype(np.int32), 'int_val'),
    types_pb2.DT_INT64: (np.dtype(np.int64), 'int64_val'),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), 'bool_val'),
    types_pb2.DT_INT8: (np.dtype(np.int8), 'int_val'),
    types_pb2.DT_INT16: (np.dtype(np.int16), 'int_val'),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), 'int_val'),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), 'int_val'),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), 'uint32_val'),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), 'uint64_val'),
}
_ENUM_OF = {dtype: enum for enum, (dtype, _) in _NUMERIC.items()}


def numpy_dtype(dtype_enum: int):
  """The numpy dtype a DataType enum maps to (object for DT_STRING)."""
  numeric = _NUMERIC.get(dtype_enum)
  if numeric is not None:
    return numeric[0]
  return tf.dtypes.as_dtype(dtype_enum).as_numpy_dtype

_MAX_RANK = 32  # TensorShape::MaxDimensions().
# Types a request cannot carry as values (handles to server-side state).
_NOT_FEEDABLE = {types_pb2.DT_INVALID, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT}


def _parse_error(name: str, reason: str) -> errors.ServingError:
  return errors.invalid_argument(f'tensor parsing error: {name}: {reason}')


def _checked_shape(tensor_proto, name: str):
  """(shape, element count) of a request tensor, validated as
  TensorShape::IsValid does: rank <= 32, no negative dims, no overflow."""
  shape_proto = tensor_proto.tensor_shape
  if shape_proto.unknown_rank and shape_proto.dim:
    raise _parse_error(name, 'a shape of unknown rank cannot have dimensions')
  if len(shape_proto.dim) > _MAX_RANK:
    raise _parse_error(name, f'rank {len(shape_proto.dim)} exceeds the maximum of {_MAX_RANK}')
  shape = [d.size for d in shape_proto.dim]
  count = 1
  for size in shape:
    if size < 0:
      raise _parse_error(name, f'dimension {size} of shape {shape} is negative')
    count *= size
  if count >= 2**63:
    raise _parse_error(name, f'shape {shape} has more than 2^63 elements')
  return shape, count


def _check_memory(count: int, itemsize: int, name: str) -> None:
  """A tensor larger than this machine's memory is refused up front
  (numpy would fail part-way, or overcommit and be killed later)."""
  needed = count * itemsize
  physical = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  if needed > physical:
    raise errors.ServingError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f'tensor parsing error: {name}: {needed} bytes exceed the {physical} bytes'
        f' of memory of this server')


def _from_values(values, count: int, dtype) -> np.ndarray:
  """Tensor::FromProto's rule for repeated value fields: no values means
  zeros, fewer values than elements repeat the last one, extra ones are
  ignored."""
  n = len(values)
  if n == count:
    return np.array(list(values), dtype)  # From a list: faster than the field.
  if n == 0:
    return (np.zeros(count, dtype) if dtype != object else np.full(count, b'', object))
  head = np.array(list(values[:min(n, count)]), dtype)
  if n > count:
    return head
  return np.concatenate([head, np.full(count - n, head[-1], dtype)])


def to_numpy(tensor_proto, name: str = 'tensor') -> np.ndarray:
  """A request's TensorProto as an array; malformed protos are the client's
  fault (INVALID_ARGUMENT, "tensor parsing error" as in TF Serving)."""
  dtype_enum = tensor_proto.dtype
  if (dtype_enum in _NOT_FEEDABLE or dtype_enum not in types_pb2.DataType.values()
      or dtype_enum > 100):  # > 100: the *_REF types, never values.
    raise _parse_error(name, f'dtype {_dtype_name(dtype_enum)} cannot be sent as a value')
  shape, count = _checked_shape(tensor_proto, name)
  if dtype_enum == types_pb2.DT_STRING:
    _check_memory(count, 8, name)
    return _from_values(tensor_proto.string_val, count, object).reshape(shape)
  numeric = _NUMERIC.get(dtype_enum)
  if numeric is None:
    return _tf_to_numpy(tensor_proto, count, name)
  dtype, field = numeric
  _check_memory(count, dtype.itemsize, name)
  content = tensor_proto.tensor_content
  if content:
    if len(content) != count * dtype.itemsize:
      raise _parse_error(name, f'{len(content)} bytes of tensor_content for shape {shape}'
                               f' of {dtype.name}')
    return np.frombuffer(content, dtype).reshape(shape)
  values = getattr(tensor_proto, field)
  if dtype_enum in (types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_UINT8,
                    types_pb2.DT_UINT16):
    values = [int(v) for v in values]  # Written as int32: narrow them to the dtype.
    return _from_values(values, count, np.int64).astype(dtype).reshape(shape)
  return _from_values(values, count, dtype).reshape(shape)


def _dtype_name(dtype_enum: int) -> str:
  try:
    return types_pb2.DataType.Name(dtype_enum)
  except ValueError:
    return str(dtype_enum)


def _tf_to_numpy(tensor_proto, count: int, name: str) -> np.ndarray:
  """Half floats, complex numbers...: TensorFlow's own conversion."""
  try:
    itemsize = tf.dtypes.as_dtype(tensor_proto.dtype).size
    _check_memory(count, itemsize, name)
    return tf.make_ndarray(tensor_proto)
  except (TypeError, ValueError, KeyError) as e:
    raise _parse_error(name, str(e)) from None


def _fill(proto, array, as_content: bool = False) -> None:
  """Writes array into an empty TensorProto in place, in typed value fields
  (Tensor::AsProtoField, TF Serving's default) or packed in tensor_content
  (--enable_serialization_as_tensor_content). In place: building a separate
  proto and copying it into the response costs 3x as much per request."""
  array = np.asarray(array)
  enum = _ENUM_OF.get(array.dtype)
  if enum is not None and array.dtype.isnative:
    proto.dtype = enum
    _fill_shape(proto, array.shape)
    if as_content:
      proto.tensor_content = array.tobytes()  # C order, whatever the array's layout.
    elif enum in _PACKED_FIELD_TAG:
      proto.MergeFromString(_packed_field(enum, array))
    else:
      # tolist(): extending a repeated field from a list is 3x faster than
      # from the numpy array itself.
      getattr(proto, _NUMERIC[enum][1]).extend(array.ravel().tolist())
    return
  if array.dtype == object:
    values = array.ravel().tolist()
    if all(type(v) is bytes for v in values):
      proto.dtype = types_pb2.DT_STRING
      _fill_shape(proto, array.shape)
      proto.string_val.extend(values)
      return
  proto.CopyFrom(tf.make_tensor_proto(array))


def _field_tag(name: str) -> bytes:
  number = tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name[name].number
  return _varint(number << 3 | 2)  # Wire type 2: a packed repeated field.


def _varint(value: int) -> bytes:
  out = bytearray()
  while value > 0x7f:
    out.append(value & 0x7f | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


# float_val / double_val: their packed encoding (proto3's encoding of a
# repeated fixed-size field) is the values' little-endian bytes, so protobuf
# parses a whole array in one C call; extend() converts element by element
# (10,000 floats: ~7 us vs ~350 us).
_PACKED_FIELD_TAG = {types_pb2.DT_FLOAT: (_field_tag('float_val'), '<f4'),
                     types_pb2.DT_DOUBLE: (_field_tag('double_val'), '<f8')}


def _packed_field(enum: int, array: np.ndarray) -> bytes:
  tag, little_endian = _PACKED_FIELD_TAG[enum]
  data = array.astype(little_endian, copy=False).tobytes()
  return tag + _varint(len(data)) + data if data else b''


def _fill_shape(proto, shape) -> None:
  proto.tensor_shape.SetInParent()  # Present even for a scalar, as TF writes it.
  for size in shape:
    proto.tensor_shape.dim.add().size = size


def to_proto(array: np.ndarray, as_content: bool = False):
  proto = tensor_pb2.TensorProto()
  _fill(proto, array, as_content)
  return proto


def protos_to_numpy(tensor_map) -> Dict[str, np.ndarray]:
  # By key: a protobuf map's items() is Python's generic ItemsView, slower.
  return {name: to_numpy(tensor_map[name], name) for name in tensor_map}


def fill_protos(tensor_map, arrays: Dict[str, np.ndarray], as_content: bool = False) -> None:
  for name, array in arrays.items():
    _fill(tensor_map[name], array, as_content)


class SerializedExamples(NamedTuple):
  """A tensorflow.serving.Input as serialized tf.Examples: the context's
  bytes (None without one) and each example's own."""
  context: Optional[bytes]
  examples: list

  @classmethod
  def from_input(cls, input_proto) -> 'SerializedExamples':
    kind = input_proto.WhichOneof('kind')
    if kind == 'example_list':
      examples, context = input_proto.example_list.examples, None
    elif kind == 'example_list_with_context':
      examples = input_proto.example_list_with_context.examples
      context = input_proto.example_list_with_context.context.SerializeToString()
    else:
      raise errors.invalid_argument('Input is empty')
    if not examples:
      raise errors.invalid_argument('Input is empty')
    return cls(context, [e.SerializeToString() for e in examples])

  def feed(self) -> np.ndarray:
    """The model's input. The context's bytes come first so that an
    example's own features win (proto merge semantics), as TF Serving does."""
    array = np.empty(len(self.examples), object)
    if self.context is None:
      array[:] = self.examples
    else:
      array[:] = [self.context + e for e in self.examples]
    return array

  def fill_input(self, input_proto) -> None:
    """Writes these examples back into an empty Input (for request logs)."""
    if self.context is None:
      target = input_proto.example_list
    else:
      target = input_proto.example_list_with_context
      target.context.ParseFromString(self.context)
    add = target.examples.add
    for serialized in self.examples:
      add().ParseFromString(serialized)


def serialized_examples(input_proto) -> np.ndarray:
  """tensorflow.serving.Input as the model's input of serialized tf.Examples."""
  return SerializedExamples.from_input(input_proto).feed()
