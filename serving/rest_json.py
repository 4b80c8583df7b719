"""TF Serving's REST JSON formats (tensorflow_serving/util/json_tensor.cc).

Predict: row (`instances`) or columnar (`inputs`) requests, answered with
`predictions` or `outputs`; `{"b64": ...}` for binary strings, and outputs
named `*_bytes` written back as b64. Classify/Regress: `examples` (and an
optional `context`) as JSON feature maps, answered with `results`.

Tensors are built as TF Serving builds them: the shape is the JSON's own
(the lengths of the first elements, level by level), never reshaped to the
signature's; leaves must have the JSON type of the signature's dtype. Large
values are converted a slice at a time: each numpy call holds the GIL, and
the event loop (status, metrics, other requests) must get it back often.
"""

import base64
import binascii
import json
import math
import re
from typing import Dict, Tuple

import numpy as np
import orjson
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, input_pb2

from serving import errors

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
MAX_RANK = 32  # numpy's limit (TF's is 254).
_SLICE_VALUES = 1 << 16  # Values converted per numpy call.
_SLICE_ROWS = 4096  # Rows of a response list written per orjson call.
_RELEASE_SLICE = 1024  # Elements freed at a time by release().
_DEBUG_CHARS = 256  # TF Serving's kMaxJsonDebugStringBytes.
_NON_FINITE = re.compile(rb'NaN|Infinity')
_BASE64 = re.compile(rb'[A-Za-z0-9+/]*={0,2}')


class Budget:
  """The values one request may decode into (our own bound, 0: none):
  counted before each tensor or example list is built."""

  def __init__(self, limit: int = 0):
    self.limit = limit
    self.used = 0

  def take(self, count: int) -> None:
    self.used += count
    if self.limit and self.used > self.limit:
      raise errors.too_large(
          f'The request holds more than {self.limit} values (tensor elements or feature'
          f' values); send fewer rows per request or raise --max_request_values.')


def parse_body(body: bytes) -> dict:
  """The request JSON object, or INVALID_ARGUMENT as TF Serving words it.
  NaN, Infinity and -Infinity are accepted, as TF Serving's parser does."""
  if not body:
    raise errors.invalid_argument('JSON Parse error: The document is empty')
  try:
    doc = orjson.loads(body)
  except orjson.JSONDecodeError as e:
    doc = _parse_with_non_finite(body, e)
  if not isinstance(doc, dict):
    raise errors.invalid_argument(f'JSON Value: {_debug(doc)} Is not object')
  return doc


def _parse_with_non_finite(body: bytes, orjson_error):
  """orjson rejects NaN/Infinity; the standard library reads them (slower,
  so only for the bodies that have them)."""
  if _NON_FINITE.search(body):
    try:
      return json.loads(body)
    except (ValueError, RecursionError):
      pass
  raise errors.invalid_argument(f'JSON Parse error: {orjson_error}') from None


def release(doc: dict) -> None:
  """Empties a parsed request a slice at a time (on a decode thread): freed
  at once, a large one holds the GIL for seconds, and the event loop waits."""
  lists = [v for v in doc.values() if isinstance(v, list)]
  for value in doc.values():
    if isinstance(value, dict):
      lists.extend(v for v in value.values() if isinstance(v, list))
  for values in lists:
    while values:
      del values[-_RELEASE_SLICE:]
  doc.clear()


def signature_name(doc: dict) -> str:
  name = doc.get('signature_name', '')
  if not isinstance(name, str):
    raise errors.invalid_argument(
        f"JSON Value: {_debug(doc)} not formatted correctly. 'signature_name' key must be"
        ' a string value.')
  return name


def _tokens(value):
  """value as JSON text, token by token (for _debug: lazily, so a huge or
  deeply nested value costs only what is written)."""
  if isinstance(value, list):
    yield '['
    for i, item in enumerate(value):
      if i:
        yield ','
      yield from _tokens(item)
    yield ']'
  elif isinstance(value, dict):
    yield '{'
    for i, (key, item) in enumerate(value.items()):
      yield (',' if i else '') + _scalar_text(key) + ':'
      yield from _tokens(item)
    yield '}'
  else:
    yield _scalar_text(value)


def _scalar_text(value) -> str:
  if isinstance(value, str):
    value = value[:_DEBUG_CHARS]
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  if isinstance(value, int) and not isinstance(value, bool):
    return str(value)  # orjson refuses integers beyond 64 bits, which JSON allows.
  return orjson.dumps(value, default=str).decode()


def _debug(value) -> str:
  """value for an error message, cut at 256 characters as TF Serving cuts
  it: never the whole request re-serialised (huge, or nested too deep)."""
  parts, size = [], 0
  for token in _tokens(value):
    parts.append(token)
    size += len(token)
    if size > _DEBUG_CHARS:
      return ''.join(parts)[:_DEBUG_CHARS] + '...'
  return ''.join(parts)


# ---- Predict request ------------------------------------------------------------

def _is_b64(value) -> bool:
  return isinstance(value, dict) and len(value) == 1 and isinstance(value.get('b64'), str)


def _b64(value) -> bytes:
  if not _is_b64(value):
    raise errors.invalid_argument(
        f'JSON Value: {_debug(value)} not formatted correctly for base64 data')
  text = value['b64']
  try:  # Padding may be left out, as absl::Base64Unescape allows.
    data = text.encode('ascii')
    data += b'=' * (-len(data) % 4)
    if _BASE64.fullmatch(data):  # base64.b64decode(validate=True), without its per-call set-up.
      return binascii.a2b_base64(data)
  except (binascii.Error, ValueError):
    pass
  raise errors.invalid_argument(f'Unable to base64 decode: {_debug(text)}')


def dense_shape(value, name: str) -> list:
  """The shape TF Serving gives a JSON value: the lengths of the first
  elements, level by level (GetDenseTensorShape)."""
  shape = []
  while isinstance(value, list):
    if len(shape) == MAX_RANK:
      raise errors.invalid_argument(
          f'Input {_name(name)}: lists nested deeper than {MAX_RANK} levels, the most'
          ' dimensions a tensor may have here.')
    shape.append(len(value))
    if not value:
      break
    value = value[0]
  return shape


def _name(name: str) -> str:
  return errors.shorten(name)


# Leaf types each dtype kind takes, as rapidjson's IsNumber/IsInt/IsBool/IsString.
_LEAF_TYPES = {'f': {float, int}, 'i': {int}, 'u': {int}, 'b': {bool}, 'O': {str, dict}}
_JSON_TYPE = {type(None): 'Null', bool: 'Bool', int: 'Number', float: 'Number',
              str: 'String', dict: 'Object', list: 'Array'}


def to_array(value, dtype, name: str, budget: Budget = None) -> np.ndarray:
  """A JSON value (scalar or nested lists) as a tensor of the signature's
  dtype, shaped as the JSON is."""
  dtype = np.dtype(dtype)
  if dtype.kind not in _LEAF_TYPES:
    raise errors.invalid_argument(
        f'Input {_name(name)}: tensors of type {dtype.name} cannot be given in JSON.')
  shape = dense_shape(value, name)
  count = math.prod(shape)
  if budget is not None:
    budget.take(count)
  rows = value if shape else [value]
  if not count:
    _check_empty(value, shape, name)
    return np.empty(shape, dtype)
  per_row = math.prod(shape[1:])
  step = max(1, _SLICE_VALUES // per_row) if per_row else len(rows)
  if len(rows) <= step:
    parts = [_convert_rows(value, rows, shape, dtype, name)]
  else:
    parts = [_convert_rows(value, rows[i:i + step], shape, dtype, name)
             for i in range(0, len(rows), step)]
  array = parts[0] if len(parts) == 1 else np.concatenate(parts)
  return array.reshape(shape)


def _check_empty(value, shape, name) -> None:
  """An empty tensor: its JSON must still be dense ([[], []], not [[], [1]])."""
  try:
    leaves = np.array(value, dtype=object)
  except ValueError:
    leaves = None
  if leaves is None or list(leaves.shape) != shape:
    raise _shape_error(value, shape, name)


def _convert_rows(value, rows, shape, dtype, name) -> np.ndarray:
  """rows (a slice of value's first dimension) as a flat array of dtype."""
  if len(shape) <= 1:
    flat = rows  # Already the leaves: the common case, and the fastest.
  else:
    try:
      leaves = np.array(rows, dtype=object)
    except ValueError:
      leaves = None
    if leaves is None or leaves.shape != (len(rows),) + tuple(shape[1:]):
      raise _shape_error(value, shape, name)
    flat = leaves.ravel()
  allowed = _LEAF_TYPES[dtype.kind]
  if not set(map(type, flat)) <= allowed:
    bad = next(v for v in flat if type(v) not in allowed)
    if isinstance(bad, list):
      raise _shape_error(value, shape, name)
    raise _type_error(bad, dtype, name)
  if dtype.kind == 'O':
    strings = np.empty(len(flat), object)
    strings[:] = [v.encode('utf-8') if type(v) is str else _b64(v) for v in flat]
    return strings
  return _numbers(flat, dtype, name)


def _numbers(flat, dtype, name) -> np.ndarray:
  """Python numbers (a list or an object array) as dtype; integers must fit
  (TF Serving: IsInt/IsInt64)."""
  if dtype.kind in 'fb':
    with np.errstate(over='ignore'):  # A float beyond float32 is inf, as in TF Serving.
      try:
        return np.array(flat, dtype)
      except OverflowError:  # An integer beyond float64 (only from the NaN parser).
        raise _type_error(max(flat, key=abs), dtype, name) from None
  try:
    wide = np.array(flat, np.int64)
  except OverflowError:
    try:
      wide = np.array(flat, np.uint64)
    except OverflowError:
      raise _type_error(max(flat, key=abs), dtype, name) from None
  if wide.dtype == dtype:  # int64: the conversion has checked the range.
    return wide
  limits = np.iinfo(dtype)
  if wide.min() < limits.min or wide.max() > limits.max:
    bad = wide.min() if wide.min() < limits.min else wide.max()
    raise errors.invalid_argument(
        f'Input {_name(name)}: JSON Value: {bad} is out of range for {dtype.name}')
  return wide.astype(dtype)


def _type_error(value, dtype, name) -> errors.ServingError:
  expected = 'string' if dtype.kind == 'O' else dtype.name
  return errors.invalid_argument(
      f'Input {_name(name)}: JSON Value: {_debug(value)} Type: '
      f'{_JSON_TYPE.get(type(value), "Number")} is not of expected type: {expected}')


def _shape_error(value, shape, name) -> errors.ServingError:
  """The first place value is not dense, worded as TF Serving's FillTensorProto
  (walked only once a slice turned out not to be dense)."""
  rank = len(shape)
  stack = [(value, 0)]
  while stack:
    item, level = stack.pop()
    if not isinstance(item, list):
      if level != rank:
        return errors.invalid_argument(
            f'Input {_name(name)}: JSON Value: {_debug(item)} found at incorrect level:'
            f' {level + 1} in the JSON DOM. Expected at level: {rank}')
      continue
    if level >= rank:
      return errors.invalid_argument(
          f'Input {_name(name)}: Encountered list at unexpected level: {level} expected < {rank}')
    if len(item) != shape[level]:
      return errors.invalid_argument(
          f'Input {_name(name)}: Encountered list at unexpected size: {len(item)} at level:'
          f' {level} expected size: {shape[level]}')
    stack.extend((child, level + 1) for child in reversed(item))
  return errors.invalid_argument(f'Input {_name(name)}: lists of unequal lengths')


def check_request(doc: dict, signature) -> None:
  """What can be checked before any tensor is built: the format keys, the
  input names, and the JSON type of each input's first value. A wrong
  request is then rejected without expanding it."""
  predict_format(doc)
  dtypes = signature.input_dtypes
  values = doc.get('instances', doc.get('inputs'))
  if 'instances' in doc:
    if not isinstance(values, list):
      raise errors.invalid_argument("Excepting 'instances' to be an list/array")
    if not values:
      raise errors.invalid_argument("No values in 'instances' array")
    first = values[0]
  else:
    first = values
  if isinstance(first, dict) and not _is_b64(first):
    _check_aliases(first, dtypes)
    items = first.items()
  elif len(dtypes) == 1:
    items = [(next(iter(dtypes)), first)]
  else:
    return  # predict_inputs words this error.
  for name, item in items:
    while isinstance(item, list) and item:
      item = item[0]
    if not isinstance(item, list) and type(item) not in _LEAF_TYPES.get(np.dtype(dtypes[name]).kind, ()):
      raise _type_error(item, np.dtype(dtypes[name]), name)


def predict_format(doc: dict) -> bool:
  """True for the row format (`instances`), False for columnar (`inputs`)."""
  has_instances, has_inputs = 'instances' in doc, 'inputs' in doc
  if has_instances and has_inputs:
    raise errors.invalid_argument(
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
  if not (has_instances or has_inputs):
    raise errors.invalid_argument("Missing 'inputs' or 'instances' key")
  return has_instances


def predict_inputs(doc: dict, signature, budget: Budget = None
                   ) -> Tuple[Dict[str, np.ndarray], bool]:
  """(inputs, is_row_format) of a predict request for this signature."""
  if predict_format(doc):
    return _from_instances(doc['instances'], signature, budget), True
  return _from_columns(doc['inputs'], signature, budget), False


def _from_instances(instances, signature, budget) -> Dict[str, np.ndarray]:
  dtypes = signature.input_dtypes
  if not isinstance(instances, list):
    raise errors.invalid_argument("Excepting 'instances' to be an list/array")
  if not instances:
    raise errors.invalid_argument("No values in 'instances' array")
  if not (isinstance(instances[0], dict) and not _is_b64(instances[0])):
    return _sole_input(instances, dtypes, budget, (
        'instances is a plain list, but expecting list of objects as multiple'
        ' input tensors required as per tensorinfo_map'))
  keys = instances[0].keys()
  for i, row in enumerate(instances):
    if not isinstance(row, dict) or _is_b64(row):
      raise errors.invalid_argument(f'Expecting object but got list at item {i} of input list')
    if row.keys() != keys:
      raise errors.invalid_argument(
          f"Failed to process element: {i} of 'instances' list. JSON object:"
          f' {_debug(row)} keys must be equal to: {",".join(sorted(keys))}')
  _check_aliases(keys, dtypes)
  return {k: to_array([row[k] for row in instances], dtypes[k], k, budget) for k in keys}


def _from_columns(inputs, signature, budget) -> Dict[str, np.ndarray]:
  dtypes = signature.input_dtypes
  if not isinstance(inputs, dict) or _is_b64(inputs):
    return _sole_input(inputs, dtypes, budget, (
        'inputs is a plain value/list, but expecting an object as multiple input'
        ' tensors required as per tensorinfo_map'))
  _check_aliases(inputs, dtypes)
  return {k: to_array(v, dtypes[k], k, budget) for k, v in inputs.items()}


def _sole_input(values, dtypes, budget, many_inputs_error: str) -> Dict[str, np.ndarray]:
  """Values given without a name: the signature's only input, if it has one."""
  if len(dtypes) > 1:
    raise errors.invalid_argument(many_inputs_error)
  (name, dtype), = dtypes.items()
  return {name: to_array(values, dtype, name, budget)}


def _check_aliases(names, dtypes) -> None:
  unknown = sorted(set(names) - set(dtypes))
  if unknown:
    raise errors.invalid_argument(
        f'input tensor alias not found in signature: {_name(unknown[0])}. Inputs expected'
        f' to be in the set {{{",".join(sorted(dtypes))}}}.')


# ---- Predict response --------------------------------------------------------------

def _jsonable(name: str, array: np.ndarray):
  """What orjson can write: numeric arrays as they are, strings decoded
  (or b64 for `*_bytes` outputs)."""
  if array.dtype == object or array.dtype.kind == 'S':
    as_b64 = name.endswith('_bytes')
    convert = ((lambda b: {'b64': base64.b64encode(b).decode()}) if as_b64
               else (lambda b: b.decode('utf-8', 'replace') if isinstance(b, bytes) else str(b)))
    return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else array.tolist()
  if array.dtype == np.float16:
    return array.astype(np.float32)
  return array


def _has_non_finite(arrays) -> bool:
  return any(a.dtype.kind == 'f' and not np.isfinite(a).all() for a in arrays)


def _plain(value):
  return value.tolist()  # numpy arrays and scalars, for the standard library's writer.


def _dumps(doc, arrays, values: int) -> bytes:
  """doc as JSON; arrays: the numeric arrays in it, values: how many values
  it holds. orjson writes NaN and Infinity as null, where TF Serving writes
  NaN, Infinity and -Infinity: so only when orjson wrote a null (rare; also
  a "null" inside a string) are the arrays checked, and the standard
  library writes a document that has them."""
  text = orjson.dumps(doc, option=_NUMPY) if values <= _SLICE_ROWS else _dumps_sliced(doc)
  if b'null' in text and _has_non_finite(arrays):
    return json.dumps(doc, default=_plain).encode()
  return text


def _dumps_sliced(value) -> bytes:
  """orjson.dumps(value), long lists and arrays a slice at a time: one call
  holds the GIL throughout (~50 ms for 200,000 rows), and the event loop
  must get it back often. The same bytes as one call."""
  if isinstance(value, dict):
    return b'{' + b','.join(orjson.dumps(k) + b':' + _dumps_sliced(v)
                            for k, v in value.items()) + b'}'
  if isinstance(value, np.ndarray) and value.ndim and len(value) > 1:
    step = max(1, _SLICE_VALUES // max(1, value[0].size))
  elif isinstance(value, list):
    step = _SLICE_ROWS
  else:
    step = 0
  if not step or len(value) <= step:
    return orjson.dumps(value, option=_NUMPY)
  return b'[' + b','.join(orjson.dumps(value[i:i + step], option=_NUMPY)[1:-1]
                          for i in range(0, len(value), step)) + b']'


def predict_response(outputs: Dict[str, np.ndarray], row_format: bool) -> bytes:
  if not outputs:
    raise errors.invalid_argument('Cannot convert empty tensor map to JSON')
  names = sorted(outputs)
  arrays = list(outputs.values())
  values = sum(a.size for a in arrays)
  if not row_format:
    if len(names) == 1:
      return _dumps({'outputs': _jsonable(names[0], outputs[names[0]])}, arrays, values)
    return _dumps({'outputs': {n: _jsonable(n, outputs[n]) for n in names}}, arrays, values)
  batch = None
  for name in names:
    array = outputs[name]
    if array.ndim == 0:
      raise errors.invalid_argument(f'Tensor name: {name} has no shape information ')
    if batch is not None and array.shape[0] != batch:
      raise errors.invalid_argument(
          f'Tensor name: {name} has inconsistent batch size: {array.shape[0]}'
          f' expecting: {batch}')
    batch = array.shape[0]
  if len(names) == 1:
    return _dumps({'predictions': _jsonable(names[0], outputs[names[0]])}, arrays, values)
  columns = {n: _jsonable(n, outputs[n]) for n in names}
  rows = [{n: columns[n][i] for n in names} for i in range(batch)]
  return _dumps({'predictions': rows}, arrays, values)


# ---- Classify / Regress ----------------------------------------------------------

def _add_value(feature, name: str, value) -> None:
  if isinstance(value, int):  # bool too: TF Serving writes true/false as 1/0.
    kind, value = 'int64_list', int(value)
    if not -2**63 <= value < 2**63:
      raise errors.invalid_argument(
          f'Feature: {_name(name)} has uint64 element. Only int64 is supported.')
  elif isinstance(value, float):
    kind = 'float_list'
  elif isinstance(value, str):
    kind, value = 'bytes_list', value.encode('utf-8')
  elif _is_b64(value):
    kind, value = 'bytes_list', _b64(value)
  else:
    raise errors.invalid_argument(
        f'Feature: {_name(name)} has element with unexpected JSON type:'
        f' {_JSON_TYPE.get(type(value), type(value).__name__)}')
  current = feature.WhichOneof('kind')
  if current not in (None, kind):
    raise errors.invalid_argument(
        f'Unexpected element type in feature: {_name(name)} expecting type:'
        f' {current.split("_")[0]}')
  getattr(feature, kind).value.append(value)


def _add_values(feature, name: str, values: list) -> None:
  """A feature's list of values; a list of one JSON type in one call."""
  types = set(map(type, values))
  if types == {float}:
    feature.float_list.value.extend(values)
  elif types == {int} and -2**63 <= min(values) and max(values) < 2**63:
    feature.int64_list.value.extend(values)
  elif types == {str}:
    feature.bytes_list.value.extend([v.encode('utf-8') for v in values])
  else:  # Mixed, bools, b64 or wrong: value by value, for TF Serving's errors.
    for value in values:
      _add_value(feature, name, value)


def _fill_example(example, value, budget: Budget = None, copies: int = 1) -> None:
  """An Example from a JSON object of features; its values count `copies`
  times (a context is merged into every example)."""
  if not isinstance(value, dict):
    raise errors.invalid_argument(
        f'Example must be JSON object but got JSON {_JSON_TYPE.get(type(value), "Number")}')
  features = example.features.feature
  count = 0
  for name, content in value.items():
    kind = type(content)  # Single values first: most features are one value.
    if kind is float:
      features[name].float_list.value.append(content)
    elif kind is int and -2**63 <= content < 2**63:
      features[name].int64_list.value.append(content)
    elif kind is str:
      features[name].bytes_list.value.append(content.encode('utf-8'))
    elif kind is list:
      _add_values(features[name], name, content)
      count += len(content) - 1
    else:
      _add_value(features[name], name, content)
    count += 1
  if budget is not None:
    budget.take(count * copies)


def examples_input(doc: dict, budget: Budget = None) -> input_pb2.Input:
  result = input_pb2.Input()
  fill_examples_input(result, doc, budget)
  return result


def fill_examples_input(result: input_pb2.Input, doc: dict, budget: Budget = None) -> None:
  """The `examples` (and `context`) of a classify/regress request, written
  into result (in place: copying a large Input costs seconds)."""
  examples = doc.get('examples')
  if examples is None:
    raise errors.invalid_argument("When method is classify, key 'examples' is expected and was not found")
  if not isinstance(examples, list):
    raise errors.invalid_argument("Expecting 'examples' value to be an list/array")
  if not examples:
    raise errors.invalid_argument("'examples' value is an empty array")
  if 'context' in doc:
    target = result.example_list_with_context
    _fill_example(target.context, doc['context'], budget, copies=len(examples))
    if budget is not None:  # Its bytes are copied into every example, too.
      budget.take(len(examples) * (target.context.ByteSize() // 64))
  else:
    target = result.example_list
  add = target.examples.add
  for value in examples:
    _fill_example(add(), value, budget)


def classify_response(classes, scores, count: int) -> bytes:
  """classes, scores: [count, k] arrays (either may be None) as TF Serving's
  `results`: per example a list of [label, score]; a missing label is "",
  a missing score 0. Written a slice of rows at a time (each slice holds the
  GIL ~1-2 ms), never through a ClassificationResponse proto."""
  if not count:
    raise errors.invalid_argument('Cannot convert empty ClassificationResults to JSON')
  k = (classes if classes is not None else scores).shape[1]
  # Scores are float32 as in the proto: np.float32 prints them as TF Serving
  # does (0.3, not 0.30000001); labels decoded once per distinct value.
  scores = (np.zeros((count, k), np.float32) if scores is None
            else np.asarray(scores, np.float32))
  labels = {}

  def label(value):
    text = labels.get(value)
    if text is None:
      text = labels[value] = value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)
    return text

  def rows(start, end):
    score_rows = scores[start:end]
    if classes is None:
      return [[['', s] for s in row] for row in score_rows]
    label_rows = classes[start:end]
    if classes.dtype == object:  # Python bytes: faster to iterate than numpy's object scalars.
      label_rows = label_rows.tolist()
    return [[[label(c), s] for c, s in zip(label_row, score_row)]
            for label_row, score_row in zip(label_rows, score_rows)]
  if not np.isfinite(scores).all():  # Rare: the standard library writes NaN and Infinity.
    return json.dumps({'results': rows(0, count)}, default=_plain).encode()
  parts = [orjson.dumps(rows(i, i + _SLICE_ROWS), option=_NUMPY)[1:-1]
           for i in range(0, count, _SLICE_ROWS)]
  return b'{"results":[' + b','.join(parts) + b']}'


def regress_response(values: np.ndarray) -> bytes:
  """values: [n], written as float32 (the proto's type), as TF Serving does."""
  if not len(values):
    raise errors.invalid_argument('Cannot convert empty RegressionResults to JSON')
  values = np.asarray(values, np.float32)
  return _dumps({'results': values}, [values], values.size)


# ---- Status / Metadata -------------------------------------------------------------

def proto_json(message) -> str:
  return json_format.MessageToJson(message, including_default_value_fields=True,
                                   preserving_proto_field_name=True)


def metadata_response(response) -> bytes:
  """TF Serving writes the Any unpacked: {"model_spec", "metadata":
  {"signature_def": <SignatureDefMap as JSON>}}."""
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata['signature_def'].Unpack(signature_map)
  return (f'{{\n"model_spec":{proto_json(response.model_spec)},\n"metadata": '
          f'{{"signature_def": {proto_json(signature_map)}}}\n}}').encode()


def error_body(message: str) -> bytes:
  return orjson.dumps({'error': message})
