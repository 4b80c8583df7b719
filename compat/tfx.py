"""Every use of a private TFX API in the project, for TFX 1.16.x only.

Each use is a speed-up or a memory saving over TFX as shipped, so on another
TFX version each falls back to TFX's public behaviour with one logged
warning, and the pipeline still runs (slower): see each function. A version
bump is the moment to re-read the TFX code named below and move WRITTEN_FOR.
"""

import logging
from typing import Callable, ContextManager, Type

WRITTEN_FOR = '1.16'  # TFX major.minor whose internals this module uses.

_logger = logging.getLogger(__name__)
_warned = set()


def installed_version() -> str:
  from tfx import version
  return version.__version__


def supported(feature: str) -> bool:
  """Whether the installed TFX is the one `feature` was written for; if not,
  logs once that the feature falls back to TFX as shipped."""
  installed = installed_version()
  if installed == WRITTEN_FOR or installed.startswith(WRITTEN_FOR + '.'):
    return True
  if feature not in _warned:
    _warned.add(feature)
    _logger.warning('TFX %s is not the %s.x that compat/tfx.py was written for: %s falls '
                    'back to TFX as shipped; re-read compat/tfx.py against TFX %s and '
                    'update WRITTEN_FOR.', installed, WRITTEN_FOR, feature, installed)
  return False


# ---- the portable Launcher -------------------------------------------------

def launcher_class(executor_context: Callable[[str], ContextManager]) -> Type:
  """TFX's Launcher, whose executor runs inside `executor_context(node_id)`.

  TFX's Launcher has no hook between its MLMD work (input resolution,
  caching, publishing) and running the executor; Launcher._run_executor is
  that point. The parallel runner releases its MLMD lock there. On another
  TFX version: TFX's Launcher unchanged, so executor_context is never entered
  (the caller's lock is then held for a whole launch: one component at a
  time). orchestration/runner.py's loop is LocalDagRunner.run_with_ir's of
  TFX 1.16 with this launcher; the same warning says to re-read both.
  """
  from tfx.orchestration.portable import launcher
  if not supported('running components side by side (Launcher._run_executor; re-read '
                   'LocalDagRunner.run_with_ir against orchestration/runner.py too)'):
    return launcher.Launcher

  class ExecutorContextLauncher(launcher.Launcher):

    def _run_executor(self, execution_info):
      with executor_context(execution_info.pipeline_node.node_info.id):
        return super()._run_executor(execution_info)

  return ExecutorContextLauncher


# ---- the CsvExampleGen executor ---------------------------------------------

def streaming_csv_supported() -> bool:
  """Whether csv_example_gen.py may use the CSV executor's private DoFns and
  BaseBeamExecutor's private pipeline factory. If not, it runs TFX's CSV
  executor unchanged (the same examples, with the whole split in memory)."""
  return supported('streaming CsvExampleGen (the CSV executor\'s private transforms)')


def read_csv_records():
  """TFX's DoFn: a CSV file name -> its records (lines), header skipped."""
  from tfx.components.example_gen.csv_example_gen import executor
  return executor._ReadCsvRecordsFromTextFile()  # pylint: disable=protected-access


def parsed_csv_to_example():
  """TFX's DoFn: a parsed CSV line and the column infos -> a tf.Example."""
  from tfx.components.example_gen.csv_example_gen import executor
  return executor._ParsedCsvToTfExample()  # pylint: disable=protected-access


def beam_pipeline_args(beam_executor) -> list:
  """The Beam flags a BaseBeamExecutor was given (TFX keeps them private)."""
  return beam_executor._beam_pipeline_args or []  # pylint: disable=protected-access


def has_own_beam_pipeline(beam_executor) -> bool:
  """Whether the executor's context supplies its own Beam pipeline factory."""
  return beam_executor._make_beam_pipeline_fn is not None  # pylint: disable=protected-access


class PipelineChoosingBeamExecutor:
  """Mixin before a BaseBeamExecutor subclass: its `make_beam_pipeline()`
  (default: TFX's) builds the executor's Beam pipeline. TFX offers no public
  hook; BaseBeamExecutor._make_beam_pipeline is the one its Do() calls."""

  def make_beam_pipeline(self):
    return super()._make_beam_pipeline()  # pylint: disable=protected-access

  def _make_beam_pipeline(self):
    return self.make_beam_pipeline()
