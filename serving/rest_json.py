"""TF Serving's REST JSON formats (tensorflow_serving/util/json_tensor.cc).

Predict: row (`instances`) or columnar (`inputs`) requests, answered with
`predictions` or `outputs`; `{"b64": ...}` for binary strings, and outputs
named `*_bytes` written back as b64. Classify/Regress: `examples` (and an
optional `context`) as JSON feature maps, answered with `results`.
"""

import base64
import binascii
import json
from typing import Dict, Tuple

import numpy as np
import orjson
from google.protobuf import json_format
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, input_pb2

from serving import errors

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def parse_body(body: bytes) -> dict:
  """The request JSON object, or INVALID_ARGUMENT as TF Serving words it."""
  if not body:
    raise errors.invalid_argument('JSON Parse error: The document is empty')
  try:
    doc = orjson.loads(body)
  except orjson.JSONDecodeError as e:
    raise errors.invalid_argument(f'JSON Parse error: {e}') from None
  if not isinstance(doc, dict):
    raise errors.invalid_argument(f'JSON Value: {_short(doc)} Is not object')
  return doc


def signature_name(doc: dict) -> str:
  name = doc.get('signature_name', '')
  if not isinstance(name, str):
    raise errors.invalid_argument(
        f'JSON Value: {_short(doc)} Expecting \'signature_name\' to be a string')
  return name


def _short(value) -> str:
  text = orjson.dumps(value).decode()
  return text if len(text) < 200 else text[:200] + '...'


# ---- Predict request ------------------------------------------------------------

def _is_b64(value) -> bool:
  return isinstance(value, dict) and len(value) == 1 and 'b64' in value


def _b64(value) -> bytes:
  if not isinstance(value['b64'], str):
    raise errors.invalid_argument('JSON Value: b64 value must be a string')
  try:
    return base64.b64decode(value['b64'], validate=True)
  except (binascii.Error, ValueError):
    raise errors.invalid_argument(
        f'Unable to base64 decode: {value["b64"][:100]}') from None


def _string_leaves(value):
  if isinstance(value, list):
    return [_string_leaves(v) for v in value]
  if isinstance(value, str):
    return value.encode('utf-8')
  if _is_b64(value):
    return _b64(value)
  raise errors.invalid_argument(f'JSON Value: {_short(value)} is not of expected type: string')


def to_array(value, dtype, name: str) -> np.ndarray:
  """A JSON value (scalar or nested lists) as a tensor of the signature's
  dtype; mismatched types, lossy numbers and ragged lists are rejected."""
  if dtype == object:
    array = np.array(_string_leaves(value), dtype=object)
    if any(isinstance(v, list) for v in array.flat):
      raise errors.invalid_argument(f'Input {name}: lists of unequal lengths')
    return array
  if _is_b64(value) or (isinstance(value, list) and any(_is_b64(v) for v in value)):
    raise errors.invalid_argument(f'Input {name}: b64 values are only valid for string tensors')
  try:
    array = np.array(value)
  except (ValueError, OverflowError):
    raise errors.invalid_argument(f'Input {name}: lists of unequal lengths') from None
  kind, target = array.dtype.kind, np.dtype(dtype).kind
  allowed = {'f': 'iuf', 'c': 'iuf', 'i': 'iu', 'u': 'iu', 'b': 'b'}.get(target, '')
  if kind not in allowed or array.dtype == object:
    raise errors.invalid_argument(
        f'Input {name}: JSON Value: {_short(value)} is not of expected type:'
        f' {np.dtype(dtype).name}')
  cast = array.astype(dtype)
  if target in 'iu' and not np.array_equal(cast, array):
    raise errors.invalid_argument(f'Input {name}: value out of range for {np.dtype(dtype).name}')
  if target == 'f' and not np.all(np.isfinite(cast) | ~np.isfinite(array)):
    raise errors.invalid_argument(
        f'Input {name}: cannot be losslessly converted to {np.dtype(dtype).name}')
  return cast


def predict_inputs(doc: dict, signature) -> Tuple[Dict[str, np.ndarray], bool]:
  """(inputs, is_row_format) of a predict request for this signature."""
  has_instances, has_inputs = 'instances' in doc, 'inputs' in doc
  if has_instances and has_inputs:
    raise errors.invalid_argument(
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
  if has_instances:
    return _from_instances(doc['instances'], signature), True
  if has_inputs:
    return _from_columns(doc['inputs'], signature), False
  raise errors.invalid_argument("Missing 'inputs' or 'instances' key")


def _from_instances(instances, signature) -> Dict[str, np.ndarray]:
  dtypes = signature.input_dtypes
  if not isinstance(instances, list):
    raise errors.invalid_argument("Excepting 'instances' to be an list/array")
  if not instances:
    raise errors.invalid_argument("No values in 'instances' array")
  if not (isinstance(instances[0], dict) and not _is_b64(instances[0])):
    return _sole_input(instances, dtypes, (
        'instances is a plain list, but expecting list of objects as multiple'
        ' input tensors required as per tensorinfo_map'))
  keys = set(instances[0])
  for i, row in enumerate(instances):
    if not isinstance(row, dict) or _is_b64(row):
      raise errors.invalid_argument(f'Expecting object but got list at item {i} of input list')
    if set(row) != keys:
      raise errors.invalid_argument(
          f"Failed to process element: {i} of 'instances' list. JSON object:"
          f' {_short(row)} keys must be equal to: {",".join(sorted(keys))}')
  _check_aliases(keys, dtypes)
  return {k: to_array([row[k] for row in instances], dtypes[k], k) for k in keys}


def _from_columns(inputs, signature) -> Dict[str, np.ndarray]:
  dtypes = signature.input_dtypes
  if not isinstance(inputs, dict) or _is_b64(inputs):
    return _sole_input(inputs, dtypes, (
        'inputs is a plain value/list, but expecting an object as multiple input'
        ' tensors required as per tensorinfo_map'))
  _check_aliases(inputs, dtypes)
  return {k: to_array(v, dtypes[k], k) for k, v in inputs.items()}


def _sole_input(values, dtypes, many_inputs_error: str) -> Dict[str, np.ndarray]:
  """Values given without a name: the signature's only input, if it has one."""
  if len(dtypes) > 1:
    raise errors.invalid_argument(many_inputs_error)
  (name, dtype), = dtypes.items()
  return {name: to_array(values, dtype, name)}


def _check_aliases(names, dtypes) -> None:
  unknown = sorted(set(names) - set(dtypes))
  if unknown:
    raise errors.invalid_argument(
        f'input tensor alias not found in signature: {unknown[0]}. Inputs expected'
        f' to be in the set {{{",".join(sorted(dtypes))}}}.')


# ---- Predict response --------------------------------------------------------------

def _jsonable(name: str, array: np.ndarray):
  """What orjson can write: numeric arrays as they are, strings decoded
  (or b64 for `*_bytes` outputs), non-finite floats as NaN/Infinity."""
  if array.dtype == object or array.dtype.kind == 'S':
    as_b64 = name.endswith('_bytes')
    convert = ((lambda b: {'b64': base64.b64encode(b).decode()}) if as_b64
               else (lambda b: b.decode('utf-8', 'replace') if isinstance(b, bytes) else str(b)))
    return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else array.tolist()
  if array.dtype == np.float16:
    array = array.astype(np.float32)
  if array.dtype.kind == 'f' and not np.all(np.isfinite(array)):
    return _NonFinite(array)
  return array


class _NonFinite:
  """Marks floats orjson would write as null; TF Serving writes NaN/Infinity."""

  def __init__(self, array):
    self.array = array


def _dumps(doc) -> bytes:
  try:
    return orjson.dumps(doc, option=_NUMPY)
  except TypeError:  # Contains _NonFinite: the standard library writes NaN.
    return json.dumps(doc, default=lambda o: o.array.tolist() if isinstance(o, _NonFinite)
                      else o.tolist()).encode()


def predict_response(outputs: Dict[str, np.ndarray], row_format: bool) -> bytes:
  if not outputs:
    raise errors.invalid_argument('Cannot convert empty tensor map to JSON')
  names = sorted(outputs)
  if not row_format:
    if len(names) == 1:
      return _dumps({'outputs': _jsonable(names[0], outputs[names[0]])})
    return _dumps({'outputs': {n: _jsonable(n, outputs[n]) for n in names}})
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
    return _dumps({'predictions': _jsonable(names[0], outputs[names[0]])})
  columns = {n: _jsonable(n, outputs[n]) for n in names}
  rows = [{n: columns[n][i] for n in names} for i in range(batch)]
  return _dumps({'predictions': rows})


# ---- Classify / Regress ----------------------------------------------------------

def _add_value(feature, name: str, value) -> None:
  if isinstance(value, int):  # bool too: TF Serving writes true/false as 1/0.
    kind, value = 'int64_list', int(value)
    if not -2**63 <= value < 2**63:
      raise errors.invalid_argument(f'Feature: {name} has uint64 element. Only int64 is supported.')
  elif isinstance(value, float):
    kind = 'float_list'
  elif isinstance(value, str):
    kind, value = 'bytes_list', value.encode('utf-8')
  elif _is_b64(value):
    kind, value = 'bytes_list', _b64(value)
  else:
    raise errors.invalid_argument(
        f'Feature: {name} has element with unexpected JSON type: {type(value).__name__}')
  current = feature.WhichOneof('kind')
  if current not in (None, kind):
    raise errors.invalid_argument(
        f'Unexpected element type in feature: {name} expecting type: {current.split("_")[0]}')
  getattr(feature, kind).value.append(value)


def _example(value) -> example_pb2.Example:
  if not isinstance(value, dict):
    raise errors.invalid_argument(
        f'Example must be JSON object but got JSON {type(value).__name__}')
  example = example_pb2.Example()
  for name, content in value.items():
    feature = example.features.feature[name]
    for item in content if isinstance(content, list) else [content]:
      _add_value(feature, name, item)
  return example


def examples_input(doc: dict) -> input_pb2.Input:
  """The `examples` (and `context`) of a classify/regress request."""
  examples = doc.get('examples')
  if examples is None:
    raise errors.invalid_argument("When method is classify, key 'examples' is expected and was not found")
  if not isinstance(examples, list):
    raise errors.invalid_argument("Expecting 'examples' value to be an list/array")
  if not examples:
    raise errors.invalid_argument("'examples' value is an empty array")
  result = input_pb2.Input()
  if 'context' in doc:
    target = result.example_list_with_context
    target.context.CopyFrom(_example(doc['context']))
  else:
    target = result.example_list
  for value in examples:
    target.examples.add().CopyFrom(_example(value))
  return result


def classify_response(result) -> bytes:
  if not result.classifications:
    raise errors.invalid_argument('Cannot convert empty ClassificationResults to JSON')
  # Scores are float32: np.float32 prints them as TF Serving does (0.3, not 0.30000001).
  return _dumps({'results': [[[c.label, np.float32(c.score)] for c in row.classes]
                             for row in result.classifications]})


def regress_response(result) -> bytes:
  if not result.regressions:
    raise errors.invalid_argument('Cannot convert empty RegressionResults to JSON')
  return _dumps({'results': np.array([r.value for r in result.regressions], np.float32)})


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
