"""The one place that reaches into TensorFlow's internals.

Written for (and tested with) TensorFlow 2.16.x. On any other version, or
if the private entry point is gone, each function here takes the public
path instead and logs one line saying so: the server still serves, with the
small behaviour difference named in that line. Not an error: a TF upgrade
must not stop serving, and tests/test_compat_tensorflow.py fails until the
new version is checked and added to TESTED_VERSIONS.
"""

import logging

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

log = logging.getLogger(__name__)

TESTED_VERSIONS = ('2.16',)  # major.minor
_warned = set()


def is_tested_version(version: str = None) -> bool:
  version = tf.__version__ if version is None else version
  return '.'.join(version.split('.')[:2]) in TESTED_VERSIONS


def make_session_callable(session, feeds, fetches):
  """A callable running `fetches` (tensor names) from `feeds` (tensor names,
  fed positionally), as C++ Session::MakeCallable, which TF Serving uses:
  feeds go to the graph as given. The public Session.make_callable also
  checks shapes in Python against the graph's static shapes, rejecting e.g.
  a [1] tensor for a [-1, 1] placeholder that the graph itself runs.
  (tf.keras's v1 backend uses the same private entry point.)"""
  private = getattr(session, '_make_callable_from_options', None)
  if private is not None and is_tested_version():
    return private(config_pb2.CallableOptions(feed=feeds, fetch=fetches))
  _warn_once('make_session_callable',
             f'TensorFlow {tf.__version__} is not one compat/tensorflow.py was written for'
             f' ({", ".join(v + ".x" for v in TESTED_VERSIONS)}): signatures run through the'
             ' public Session.make_callable, which also rejects inputs whose shapes differ'
             ' from the graph\'s static shapes.')
  return session.make_callable(list(fetches), feed_list=list(feeds))


def _warn_once(key: str, message: str) -> None:
  if key not in _warned:
    _warned.add(key)
    log.warning(message)
