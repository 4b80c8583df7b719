"""Continuous training: decide whether the pipeline should run again.

It should when a data span newer than any the pipeline has ingested has
arrived, or when monitoring of served traffic found skew or drift beyond the
schema's thresholds. `python local_runner.py --retrain-if-needed` asks this
module, says what it decided and why, and runs the pipeline only if needed.
"""

import glob
import json
import os
import re
from typing import NamedTuple, Optional

from pipeline import progress
from pipeline.configs import PipelineConfig

_SPAN_DIR = re.compile(r'span-(\d+)$')


class Decision(NamedTuple):
  run: bool
  reason: str


def latest_span_on_disk(config: PipelineConfig) -> Optional[int]:
  """The highest N of the data root's span-N folders."""
  spans = [int(m.group(1)) for path in glob.glob(os.path.join(config.path(config.data_root), 'span-*'))
           if (m := _SPAN_DIR.search(path))]
  return max(spans, default=None)


def latest_span_ingested(config: PipelineConfig) -> Optional[int]:
  """The highest span among the Examples ExampleGen has produced (MLMD)."""
  if not os.path.exists(config.metadata_path):
    return None
  store = progress.open_store(config.metadata_path, read_only=True)
  spans = [a.custom_properties['span'].int_value
           for a in store.get_artifacts_by_type('Examples')
           if 'span' in a.custom_properties]
  return max(spans, default=None)


def monitoring_found_problems(result_path: Optional[str]) -> Optional[str]:
  """What a monitoring result reports as skew/drift, or None if nothing."""
  if not result_path:
    return None
  with open(result_path) as f:
    result = json.load(f)
  from pipeline import monitoring  # The monitoring job owns its format.
  if not monitoring.drift_or_skew_found(result):
    return None
  return 'monitoring found skew or drift beyond the schema thresholds'


def decide(config: PipelineConfig, monitoring_result: Optional[str] = None) -> Decision:
  problem = monitoring_found_problems(monitoring_result)
  if problem:
    return Decision(True, problem)
  on_disk, ingested = latest_span_on_disk(config), latest_span_ingested(config)
  if on_disk is None:
    return Decision(False, f'no span-N folder under {config.data_root}')
  if ingested is None:
    return Decision(True, f'span {on_disk} has never been trained on')
  if on_disk > ingested:
    return Decision(True, f'new span {on_disk} (last trained on span {ingested})')
  return Decision(False, f'no new span (latest {on_disk} already trained on) '
                         'and no skew or drift reported')
