"""Memoizations for Apache Beam 2.59's in-memory runner, where a small
pipeline spends its time setting stages up rather than processing data:
the project's only replacements of Beam and dill internals.

Beam's set-up repeats three things thousands of times a run (profile and
figures: bench/README.md, "Figures behind choices in the code"):

- It looks for state and timer parameters in every method of every DoFn,
  again for each stage it builds or runs (userstate.get_dofn_specs). A function's
  signature never changes, so each is inspected once here, and a DoFn class's
  specs are looked up once (unless an instance adds or shadows methods).
- PipelineOptions.view_as builds an argparse parser for the view's class and
  parses the flags again on every call.
  A view keeps no state of its own (all views read and write one shared
  option dict), so one view per options object and class serves every call.
- Its dill pickler resets dill's trace level after every pickle and unpickle
  (thousands per run), and each Logger.setLevel clears the level cache of
  every logger in the process. Here the level is only set when it changes.

Each replaces a Beam/dill function by one that returns what the original
would (tests/test_beam_speedups.py compares them); nothing else about Beam
changes. Applied by the local runner only: Dataflow workers run Beam as
shipped. They are speed-ups only, so on a Beam or dill version other than
the one they were written for, they are not applied (one logged warning)
and the run uses Beam as shipped.
"""

import logging

BEAM_WRITTEN_FOR = '2.59'  # Beam major.minor whose internals this replaces.
DILL_WRITTEN_FOR = '0.3.1.1'  # dill as pinned in requirements.lock (Beam's pin).

_logger = logging.getLogger(__name__)
_applied = False


def installed_versions() -> dict:
  import apache_beam
  import dill
  return {'Apache Beam': apache_beam.__version__, 'dill': dill.__version__}


def supported(library: str, written_for: str) -> bool:
  """Whether the installed `library` is the version written_for; if not,
  logs that its memoizations are left out."""
  installed = installed_versions()[library]
  if installed == written_for or installed.startswith(written_for + '.'):
    return True
  _logger.warning('%s %s is not the %s that compat/beam.py was written for: its set-up '
                  'memoizations are not applied (runs are slower, results the same); '
                  're-read compat/beam.py against %s %s and update its version.',
                  library, installed, written_for, library, installed)
  return False


def apply() -> None:
  """Applies what the installed versions allow, once per process."""
  global _applied
  if _applied:
    return
  _applied = True
  if supported('Apache Beam', BEAM_WRITTEN_FOR):
    _cache_function_arguments()
    _cache_dofn_specs()
    _cache_option_views()
  if supported('dill', DILL_WRITTEN_FOR):
    _set_dill_trace_level_only_on_change()


def _cache_function_arguments() -> None:
  from apache_beam.transforms import core
  inspect_arguments = core.get_function_args_defaults
  cache = {}

  def cached_function_args_defaults(f):
    # A bound method's signature drops its first argument: a different entry.
    key = (getattr(f, '__func__', f), hasattr(f, '__self__'))
    try:
      args, defaults = cache[key]
    except KeyError:
      args, defaults = cache[key] = inspect_arguments(f)
    except TypeError:  # An unhashable callable: inspected every time.
      return inspect_arguments(f)
    return list(args), list(defaults)  # Callers may extend their lists.

  core.get_function_args_defaults = cached_function_args_defaults


def _cache_dofn_specs() -> None:
  """get_dofn_specs(dofn) reads the parameters of each attribute of dofn that
  is a bound method: the class's methods, unless the instance shadows them
  (beam.Map's wrapper sets `process` to the mapped function) or adds its
  own. The key is the class plus those instance-level differences."""
  import types
  from apache_beam.transforms import core, userstate
  find_specs = userstate.get_dofn_specs
  cache = {}

  def key(dofn):
    cls = type(dofn)
    if cls is not core.CallableWrapperDoFn and any(
        name.startswith('_inspect_') for name in dir(cls)):
      return None  # Its _inspect_ methods read parameters off the instance.
    methods, shadowed = [], []
    for name, value in getattr(dofn, '__dict__', {}).items():
      if isinstance(value, types.MethodType):
        methods.append((name, value))
      elif callable(getattr(cls, name, None)):
        shadowed.append(name)
    return cls, frozenset(methods), frozenset(shadowed)

  def cached_dofn_specs(dofn):
    try:
      dofn_key = key(dofn)
      if dofn_key is None:
        return find_specs(dofn)
      if dofn_key not in cache:
        cache[dofn_key] = find_specs(dofn)
    except TypeError:  # An unhashable method owner: looked up every time.
      return find_specs(dofn)
    state_specs, timer_specs = cache[dofn_key]
    return set(state_specs), set(timer_specs)

  userstate.get_dofn_specs = cached_dofn_specs


def _cache_option_views() -> None:
  import weakref
  from apache_beam.options import pipeline_options
  make_view = pipeline_options.PipelineOptions.view_as
  views = weakref.WeakKeyDictionary()  # options object -> {class: view}

  def view_as(self, cls):
    by_class = views.setdefault(self, {})
    view = by_class.get(cls)
    if view is None:
      view = by_class[cls] = make_view(self, cls)
    return view

  pipeline_options.PipelineOptions.view_as = view_as


def _set_dill_trace_level_only_on_change() -> None:
  from dill import _dill
  set_trace = _dill._trace  # pylint: disable=protected-access

  def trace(boolean):
    if _dill.log.level != (logging.INFO if boolean else logging.WARN):
      set_trace(boolean)

  _dill._trace = trace  # pylint: disable=protected-access
