"""One loaded version of a SavedModel: its SignatureDefs and how to run them.

Loaded as TF Serving loads every SavedModel, TF1 or TF2: the MetaGraphDef is
imported into a graph, its variables restored and init ops run in a session
(tf.compat.v1's loader, TF Serving's LoadSavedModel), and a signature runs as
session.run with the request tensors fed under the SignatureDef's tensor
names. So, as in TF Serving, only the inputs' aliases and dtypes are checked
here; shapes go to the graph as given and the graph itself rejects what it
cannot take (INVALID_ARGUMENT).
"""

import logging
import os
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from google.protobuf import text_format

from compat import tensorflow as compat_tf
from serving import errors, tensors

DEFAULT_SIGNATURE = 'serving_default'
CLASSIFY_METHOD = 'tensorflow/serving/classify'
REGRESS_METHOD = 'tensorflow/serving/regress'
WARMUP_FILE = os.path.join('assets.extra', 'tf_serving_warmup_requests')

log = logging.getLogger(__name__)


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


def _is_tensor_name(name: str) -> bool:
  """'op:0' names a tensor; a bare op name (the TF2 init op's signature) does not."""
  return ':' in name


class Signature:
  """A SignatureDef bound to a session callable that computes it."""

  def __init__(self, name: str, signature_def, session):
    self.name = name
    self.signature_def = signature_def
    self.method_name = signature_def.method_name
    self.input_dtypes = {k: tensors.numpy_dtype(v.dtype) for k, v in signature_def.inputs.items()}
    self.input_shapes = {k: shape_of(v) for k, v in signature_def.inputs.items()}
    self.output_names = sorted(signature_def.outputs)
    # TF >= 2.12 records tensor defaults of tf.function args; TF Serving 2.16
    # feeds them for inputs the request leaves out.
    self.defaults = {k: tf.make_ndarray(v) for k, v in signature_def.defaults.items()}
    self._feed_order = sorted(self.input_dtypes)
    # Every output is fetched, whatever the output filter: one callable (one
    # set of executors, made and warmed at load) per signature, never a cold
    # one for a new subset of outputs.
    feeds = [signature_def.inputs[k].name for k in self._feed_order]
    fetches = [signature_def.outputs[k].name for k in self.output_names]
    self._callable, self._error = None, None
    try:
      self._callable = compat_tf.make_session_callable(session, feeds, fetches)
    except (tf.errors.OpError, TypeError, ValueError, KeyError) as e:
      # As in TF Serving, a signature the graph cannot run fails its requests only.
      message = e.message if isinstance(e, tf.errors.OpError) else str(e)
      self._error = errors.invalid_argument(f'Signature {name} cannot be run: {message}')
      log.warning('Signature %s cannot be run: %s', name, message)

  def prepare(self, inputs: Dict[str, np.ndarray], model_name: str) -> Dict[str, np.ndarray]:
    """Checks input aliases and dtypes (as the session's feed does) and fills defaults."""
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
      feed[name] = _checked_dtype(name, value, dtype)
    return feed

  def call(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Runs the signature; TF errors become canonical errors."""
    if self._error is not None:
      raise self._error
    try:
      values = self._callable(*[feed[k] for k in self._feed_order])
    except tf.errors.OpError as e:
      raise errors.from_tf_error(e) from None
    except (TypeError, ValueError) as e:
      raise errors.invalid_argument(str(e)) from None
    return dict(zip(self.output_names, values))


def _checked_dtype(name, value, dtype) -> np.ndarray:
  value = np.asarray(value)
  if value.dtype != dtype and not (dtype == object and value.dtype.kind in 'SO'):
    raise errors.invalid_argument(
        f'Expects arg[{name}] to be {np.dtype(dtype).name if dtype != object else "string"}'
        f' but {value.dtype.name} is provided')
  return value


# TF Serving (>= 2.11) has TensorFlow Decision Forests' inference ops built in;
# here they come from the tensorflow-decision-forests package, imported only
# when a model uses them (the import takes seconds).
_DECISION_FOREST_OP_PREFIX = 'SimpleML'


def _uses_decision_forest_ops(meta_graph: meta_graph_pb2.MetaGraphDef) -> bool:
  graph = meta_graph.graph_def
  nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
  return any(node.op.startswith(_DECISION_FOREST_OP_PREFIX) for node in nodes)


def _register_decision_forest_ops() -> None:
  try:
    import tensorflow_decision_forests  # noqa: F401  (registers the ops)
  except ImportError:
    raise ValueError('The model uses TensorFlow Decision Forests ops: install '
                     'tensorflow-decision-forests (1.9.x for TF 2.16) to serve it.') from None


class Servable:
  """A loaded model version: its graph in its own session."""

  def __init__(self, name: str, version: int, path: str, tags=('serve',)):
    self.name = name
    self.version = version
    self.path = path
    self.tags = list(tags)
    self.meta_graph = read_meta_graph(path, self.tags)
    if _uses_decision_forest_ops(self.meta_graph):
      _register_decision_forest_ops()
    self._graph = tf.Graph()
    # config=None: the session takes the process's threading settings
    # (--tensorflow_*_parallelism, set through tf.config at start-up).
    self._session = tf.compat.v1.Session(graph=self._graph)
    try:
      with self._graph.as_default():
        tf.compat.v1.saved_model.loader.load(self._session, self.tags, path)
      self.signatures = {
          key: Signature(key, signature_def, self._session)
          for key, signature_def in self.meta_graph.signature_def.items()
          if all(_is_tensor_name(t.name) for t in signature_def.outputs.values())
      }
    except BaseException:
      self._session.close()
      raise
    self._graph.finalize()  # Serving never adds ops: catch it if anything tries.

  def signature(self, name: str) -> Signature:
    """The named signature; FAILED_PRECONDITION like TF Serving's Predict."""
    key = name or DEFAULT_SIGNATURE
    if key not in self.signatures:
      raise errors.failed_precondition(f'Serving signature key "{key}" not found.')
    return self.signatures[key]

  def close(self) -> None:
    """Frees the session (the manager calls it once no request uses the version)."""
    self._session.close()

  @property
  def warmup_file(self) -> str:
    return os.path.join(self.path, WARMUP_FILE)
