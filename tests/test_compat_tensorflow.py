"""compat/tensorflow.py: the private Session entry point is used only on the
TensorFlow versions it was written for; on others, the public path and one
logged line."""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import logging

import numpy as np
import pytest
import tensorflow as tf

from compat import tensorflow as compat_tf


@pytest.fixture
def session():
  """A [-1, 1] placeholder doubled, in its own graph and session."""
  graph = tf.Graph()
  with graph.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None, 1], name='x')
    tf.identity(x * 2, name='y')
  with tf.compat.v1.Session(graph=graph) as sess:
    yield sess


@pytest.fixture
def fresh_warnings(monkeypatch):
  monkeypatch.setattr(compat_tf, '_warned', set())


def test_the_installed_tensorflow_is_one_the_module_was_written_for():
  """Fails when the pinned TensorFlow changes: revisit compat/tensorflow.py
  (does Session._make_callable_from_options still behave the same?), then
  add the version to TESTED_VERSIONS."""
  assert compat_tf.is_tested_version(), (
      f'TensorFlow {tf.__version__}: check compat/tensorflow.py against it and add it to'
      ' TESTED_VERSIONS')
  assert hasattr(tf.compat.v1.Session, '_make_callable_from_options')


def test_on_a_tested_version_feeds_go_to_the_graph_as_given(session, fresh_warnings, caplog):
  run = compat_tf.make_session_callable(session, ['x:0'], ['y:0'])
  y, = run(np.array([1.5], np.float32))  # [1] for a [-1, 1] placeholder, as TF Serving takes it.
  assert y.tolist() == [3.0]
  assert not [r for r in caplog.records if r.name == compat_tf.__name__]


def test_an_unknown_version_takes_the_public_path_and_says_so_once(
    session, fresh_warnings, monkeypatch, caplog):
  monkeypatch.setattr(tf, '__version__', '2.99.0')
  with caplog.at_level(logging.WARNING, logger=compat_tf.__name__):
    run = compat_tf.make_session_callable(session, ['x:0'], ['y:0'])
    compat_tf.make_session_callable(session, ['x:0'], ['y:0'])
  lines = [r.getMessage() for r in caplog.records if r.name == compat_tf.__name__]
  assert len(lines) == 1
  assert 'TensorFlow 2.99.0 is not one compat/tensorflow.py was written for (2.16.x)' in lines[0]
  y, = run(np.array([[1.5]], np.float32))
  assert y.tolist() == [[3.0]]
  with pytest.raises(ValueError):  # The public path's own shape check.
    run(np.array([1.5], np.float32))
