"""The Beam memoizations answer exactly what Beam's own functions answer."""

import functools
import logging

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions,
                                                  StandardOptions, TypeOptions)
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import core, userstate
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from dill import _dill
import pytest

from compat import beam as beam_speedups

ORIGINAL_ARGS_DEFAULTS = core.get_function_args_defaults
ORIGINAL_DOFN_SPECS = userstate.get_dofn_specs
ORIGINAL_TRACE = _dill._trace  # pylint: disable=protected-access
ORIGINAL_VIEW_AS = PipelineOptions.view_as


@pytest.fixture(scope='module', autouse=True)
def speedups():
  beam_speedups.apply()
  yield
  # Other test modules see Beam as shipped.
  core.get_function_args_defaults = ORIGINAL_ARGS_DEFAULTS
  userstate.get_dofn_specs = ORIGINAL_DOFN_SPECS
  _dill._trace = ORIGINAL_TRACE  # pylint: disable=protected-access
  PipelineOptions.view_as = ORIGINAL_VIEW_AS
  beam_speedups._applied = False  # pylint: disable=protected-access


class BufferDoFn(beam.DoFn):
  BUFFER = BagStateSpec('buffer', VarIntCoder())
  FLUSH = TimerSpec('flush', beam.TimeDomain.WATERMARK)

  def process(self, element, buffer=beam.DoFn.StateParam(BUFFER),
              flush=beam.DoFn.TimerParam(FLUSH)):
    buffer.add(element[1])
    flush.set(0)

  @on_timer(FLUSH)
  def on_flush(self, buffer=beam.DoFn.StateParam(BUFFER)):
    yield sorted(buffer.read())


class PlainDoFn(beam.DoFn):

  def process(self, element, scale=2):
    yield element * scale


class HelperOwner:

  def double(self, x, factor=2):
    return x * factor


def add(x, y=1, *rest, z=3):
  return x + y + z + sum(rest)


CALLABLES = [
    add, PlainDoFn().process, PlainDoFn.process, HelperOwner().double, HelperOwner.double,
    lambda a, b=4: a, functools.partial(add, y=5), len, BufferDoFn().on_flush,
]


@pytest.mark.parametrize('fn', CALLABLES, ids=repr)
def test_cached_arguments_are_what_beam_inspects(fn):
  expected = ORIGINAL_ARGS_DEFAULTS(fn)
  assert core.get_function_args_defaults(fn) == expected
  again = core.get_function_args_defaults(fn)  # From the cache now.
  assert again == expected
  again[0].append('mutated')  # A caller's edit must not reach the cache.
  assert core.get_function_args_defaults(fn) == expected


def _dofns():
  owner = HelperOwner()
  with_bound_method = PlainDoFn()
  with_bound_method.extra = owner.double
  shadowing = PlainDoFn()
  shadowing.process = None
  return [BufferDoFn(), PlainDoFn(), with_bound_method, shadowing,
          core.CallableWrapperDoFn(add), core.CallableWrapperDoFn(owner.double),
          core.CallableWrapperDoFn(lambda x: x)]


@pytest.mark.parametrize('dofn', _dofns(), ids=lambda d: type(d).__name__)
def test_cached_dofn_specs_are_what_beam_finds(dofn):
  expected = ORIGINAL_DOFN_SPECS(dofn)
  for _ in range(2):  # Computed, then cached.
    assert userstate.get_dofn_specs(dofn) == expected


def test_a_class_cache_entry_does_not_leak_to_a_shadowing_instance():
  plain = PlainDoFn()
  userstate.get_dofn_specs(plain)
  stateful_process = BufferDoFn()
  shadowing = PlainDoFn()
  shadowing.process = stateful_process.process  # Now it has state and a timer.
  assert userstate.get_dofn_specs(shadowing) == ORIGINAL_DOFN_SPECS(shadowing)
  assert userstate.get_dofn_specs(shadowing)[0]


def test_a_stateful_pipeline_runs_the_same():
  with beam.Pipeline() as pipeline:
    result = (pipeline | beam.Create([('k', 3), ('k', 1), ('j', 2)])
              | beam.ParDo(BufferDoFn()) | beam.Map(len))
    assert_that(result, equal_to([2, 1]))


def test_dill_trace_level_still_follows_the_switch():
  _dill._trace(True)  # pylint: disable=protected-access
  assert _dill.log.level == logging.INFO
  _dill._trace(False)  # pylint: disable=protected-access
  assert _dill.log.level == logging.WARN


def test_cached_option_views_read_and_write_the_shared_options():
  options = PipelineOptions(['--runner=DirectRunner', '--direct_num_workers=3'])
  view = options.view_as(StandardOptions)
  assert options.view_as(StandardOptions) is view  # Built once.
  assert view.runner == ORIGINAL_VIEW_AS(options, StandardOptions).runner == 'DirectRunner'
  assert options.view_as(DirectOptions).direct_num_workers == 3
  view.streaming = True  # Written through one view, seen through the others.
  assert ORIGINAL_VIEW_AS(options, StandardOptions).streaming
  assert options.view_as(TypeOptions).pipeline_type_check  # Defaults filled in.
  other = PipelineOptions(['--runner=Other'])
  assert other.view_as(StandardOptions).runner == 'Other'  # Per options object.
  assert options.get_all_options()['streaming']
