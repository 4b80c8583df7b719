"""One loaded version of a SavedModel: its SignatureDefs and how to run them.

Generic over any SavedModel: inputs and outputs are dicts of numpy arrays
keyed by the SignatureDef's tensor aliases, checked against the SignatureDef
the way TF Serving checks a PredictRequest.
"""

import logging
import os
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from google.protobuf import text_format
from tensorflow.python.eager import context

from serving import errors

DEFAULT_SIGNATURE = 'serving_default'
PREDICT_METHOD = 'tensorflow/serving/predict'
CLASSIFY_METHOD = 'tensorflow/serving/classify'
REGRESS_METHOD = 'tensorflow/serving/regress'
WARMUP_FILE = os.path.join('assets.extra', 'tf_serving_warmup_requests')
# How TF rejects a graph (v1 control flow, reference edges) for that executor.
_SINGLE_THREADED_UNSUPPORTED = 'Single-threaded executor does not support'

log = logging.getLogger(__name__)


def numpy_dtype(dtype_enum: int):
  """The numpy dtype a DataType enum maps to (object for DT_STRING)."""
  return tf.dtypes.as_dtype(dtype_enum).as_numpy_dtype


def shape_of(tensor_info) -> Optional[list]:
  """Dims of a TensorInfo (-1 unknown), or None when the rank is unknown."""
  shape = tensor_info.tensor_shape
  if shape.unknown_rank:
    return None
  return [d.size for d in shape.dim]


def has_saved_model(path: str) -> bool:
  return any(tf.io.gfile.exists(os.path.join(path, name))
             for name in ('saved_model.pb', 'saved_model.pbtxt'))


def read_meta_graph(path: str, tags) -> meta_graph_pb2.MetaGraphDef:
  """The MetaGraphDef whose tags match, read straight from saved_model.pb."""
  saved_model = saved_model_pb2.SavedModel()
  pb_path = os.path.join(path, 'saved_model.pb')
  if tf.io.gfile.exists(pb_path):
    with tf.io.gfile.GFile(pb_path, 'rb') as f:
      saved_model.ParseFromString(f.read())
  else:
    with tf.io.gfile.GFile(os.path.join(path, 'saved_model.pbtxt')) as f:
      text_format.Parse(f.read(), saved_model)
  for meta_graph in saved_model.meta_graphs:
    if set(meta_graph.meta_info_def.tags) == set(tags):
      return meta_graph
  raise errors.not_found(
      f'Could not find meta graph def matching supplied tags: {{ {" ".join(tags)} }}.'
      f' To inspect available tag-sets in the SavedModel, please use the'
      f' SavedModel CLI: `saved_model_cli`')


class Signature:
  """A SignatureDef bound to the loaded function that computes it."""

  def __init__(self, name: str, signature_def, function):
    self.name = name
    self.signature_def = signature_def
    self.method_name = signature_def.method_name
    self.function = function
    self.input_dtypes = {k: numpy_dtype(v.dtype) for k, v in signature_def.inputs.items()}
    self.input_shapes = {k: shape_of(v) for k, v in signature_def.inputs.items()}
    self.output_names = sorted(signature_def.outputs)
    # TF >= 2.12 records tensor defaults of tf.function args; TF Serving 2.16
    # feeds them for inputs the request leaves out.
    self.defaults = {k: tf.make_ndarray(v) for k, v in signature_def.defaults.items()}
    self._single_threaded = True  # Until the graph turns out to need more.

  def prepare(self, inputs: Dict[str, np.ndarray], model_name: str) -> Dict[str, np.ndarray]:
    """Checks inputs against the SignatureDef and fills defaults."""
    expected = set(self.input_dtypes)
    extra = sorted(set(inputs) - expected)
    missing = sorted(expected - set(inputs) - set(self.defaults))
    if extra or missing:
      raise errors.invalid_argument(
          f'Request inputs do not match required inputs for model `{model_name}`.'
          f' Send extra: {{{",".join(extra)}}}. Missing but required:'
          f' {{{",".join(missing)}}}.')
    feed = {}
    for name, dtype in self.input_dtypes.items():
      value = inputs[name] if name in inputs else self.defaults[name]
      feed[name] = self._checked(name, value, dtype)
    return feed

  def _checked(self, name, value, dtype) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype != dtype and not (dtype == object and value.dtype.kind in 'SO'):
      raise errors.invalid_argument(
          f'Expects arg[{name}] to be {np.dtype(dtype).name if dtype != object else "string"}'
          f' but {value.dtype.name} is provided')
    expected = self.input_shapes[name]
    if expected is not None and not _shape_matches(value.shape, expected):
      raise errors.invalid_argument(
          f'input tensor {name}: shape {list(value.shape)} is incompatible with the'
          f' signature shape {expected}')
    return value

  def call(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Runs the signature function; TF errors become canonical errors."""
    try:
      # Tensors, not arrays: the function's own conversion of numpy
      # arguments costs ~50 us more CPU per call (taxi model, batch of 3).
      result = self._run({k: tf.constant(v) for k, v in feed.items()})
    except tf.errors.OpError as e:
      raise errors.from_tf_error(e) from None
    except (TypeError, ValueError) as e:
      raise errors.invalid_argument(str(e)) from None
    return {k: v.numpy() for k, v in result.items()}

  def _run(self, tensors):
    """The function on the calling thread (TF's single-threaded executor)
    when the graph allows it. The default executor hands every op to TF's
    inter-op threads, which spin after each call: called from a batch
    thread every few ms, that doubled the CPU of a call (~0.9 -> 2.2 ms
    for the taxi model; 1.1 -> 0.8 ms per request at concurrency 1)."""
    if self._single_threaded:
      try:
        with context.function_executor_type('SINGLE_THREADED_EXECUTOR'):
          return self.function(**tensors)
      except tf.errors.OpError as e:
        if _SINGLE_THREADED_UNSUPPORTED not in e.message:
          raise
        log.info('Signature %s runs on the default executor: %s', self.name, e.message)
        self._single_threaded = False
    return self.function(**tensors)


def _shape_matches(actual, expected) -> bool:
  return len(actual) == len(expected) and all(
      e < 0 or a == e for a, e in zip(actual, expected))


class Servable:
  """A loaded model version."""

  def __init__(self, name: str, version: int, path: str, tags=('serve',)):
    self.name = name
    self.version = version
    self.path = path
    self.tags = list(tags)
    self.meta_graph = read_meta_graph(path, self.tags)
    self._loaded = tf.saved_model.load(path, tags=self.tags)
    self.signatures = {
        key: Signature(key, signature_def, self._loaded.signatures[key])
        for key, signature_def in self.meta_graph.signature_def.items()
        if key in self._loaded.signatures
    }

  def signature(self, name: str) -> Signature:
    """The named signature; FAILED_PRECONDITION like TF Serving's Predict."""
    key = name or DEFAULT_SIGNATURE
    if key not in self.signatures:
      raise errors.failed_precondition(f'Serving signature key "{key}" not found.')
    return self.signatures[key]

  @property
  def warmup_file(self) -> str:
    return os.path.join(self.path, WARMUP_FILE)
