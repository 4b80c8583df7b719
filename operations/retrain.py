"""Continuous training: decide whether the pipeline should run again.

It should when a data span of its data root newer than any a model was
trained on has arrived, or when monitoring of served traffic found skew or
drift beyond the schema's thresholds. `python local_runner.py
--retrain-if-needed` asks this module, says what it decided and why, and
runs the pipeline only if needed.

A decision to retrain is recorded in the audit trail (pipeline/audit.py,
<serving dir>/audit/) with what justified it: the new span, or the
monitoring result (its findings, file and sha256). A decision not to
retrain changes nothing served and is not recorded.
"""

import glob
import json
import os
import re
from typing import NamedTuple, Optional

from pipeline import audit
from pipeline.configs import PipelineConfig

_SPAN_DIR = re.compile(r'span-(\d+)$')
EXAMPLE_GEN_ID = 'CsvExampleGen'
EVALUATOR_ID = 'Evaluator'


class Decision(NamedTuple):
  run: bool
  reason: str
  # Only monitoring asked: with nothing new, the run may rebuild nothing.
  monitoring_only: bool = False


def latest_span_on_disk(config: PipelineConfig) -> Optional[int]:
  """The highest N of the data root's span-N folders."""
  spans = [int(m.group(1)) for path in glob.glob(os.path.join(config.path(config.data_root), 'span-*'))
           if (m := _SPAN_DIR.search(path))]
  return max(spans, default=None)


def latest_span_trained_on(config: PipelineConfig) -> Optional[int]:
  """The highest span of this data root that a model was trained on.

  A span counts once this pipeline's Evaluator has judged a model on it
  (the Evaluator runs after the Trainer, so a run that failed on the span's
  data does not count), and only if this pipeline's ExampleGen read it from
  this data root: another data root's spans (which may also start at 1)
  say nothing about this one's.
  """
  if not os.path.exists(config.metadata_path):
    raise FileNotFoundError(
        f'no pipeline metadata at {config.metadata_path}: --retrain-if-needed '
        'compares with earlier runs, so run `python local_runner.py` once first '
        '(or pass the --output-root those runs used)')
  # Imported here: a user error above is reported before TensorFlow loads.
  from ml_metadata.proto import metadata_store_pb2
  from pipeline import metadata
  store = metadata.open_store(config.metadata_path, read_only=True)
  data_root = os.path.normpath(config.path(config.data_root))
  from_this_root = metadata.artifacts_of(store, metadata.finished_executions(
      store, config, EXAMPLE_GEN_ID,
      lambda e: os.path.normpath(str(metadata.custom_property(e, 'input_base', ''))) == data_root),
      metadata_store_pb2.Event.OUTPUT)
  evaluated = metadata.artifacts_of(store, metadata.finished_executions(store, config, EVALUATOR_ID),
                            metadata_store_pb2.Event.INPUT)
  spans = [metadata.custom_property(a, 'span')
           for a in store.get_artifacts_by_id(sorted(from_this_root & evaluated))]
  return max((s for s in spans if s is not None), default=None)


def _read_monitoring(result_path: Optional[str]) -> Optional[dict]:
  if not result_path:
    return None
  if not os.path.isfile(result_path):
    raise FileNotFoundError(
        f'no monitoring result at {result_path}: pass the monitoring.json that '
        'operations.monitoring wrote')
  with open(result_path) as f:
    return json.load(f)


def monitoring_found_problems(result_path: Optional[str]) -> Optional[str]:
  """What a monitoring result reports as skew/drift, or None if nothing."""
  result = _read_monitoring(result_path)
  if result is None:
    return None
  from operations import monitoring  # The monitoring job owns its format.
  if not monitoring.drift_or_skew_found(result):
    return None
  return 'monitoring found skew or drift beyond the schema thresholds'


def decide(config: PipelineConfig, monitoring_result: Optional[str] = None) -> Decision:
  """Whether to run the pipeline again, and why; a decision to run is recorded."""
  decision = _decide(config, monitoring_result)
  if decision.run:
    _record(config, decision, monitoring_result)
  return decision


def _record(config: PipelineConfig, decision: Decision, monitoring_result: Optional[str]) -> None:
  details = {'reason': decision.reason, 'monitoring_only': decision.monitoring_only,
             'data_root': config.path(config.data_root),
             'latest_span_on_disk': latest_span_on_disk(config)}
  result = _read_monitoring(monitoring_result)
  if result is not None:
    details['monitoring'] = audit.monitoring_summary(result, os.path.abspath(monitoring_result))
  audit.write(audit.audit_dir(config.path(config.serving_dir)), config.model_name, 'retrain',
              audit.DECIDED, f'retraining: {decision.reason}', **details)


def _decide(config: PipelineConfig, monitoring_result: Optional[str]) -> Decision:
  problem = monitoring_found_problems(monitoring_result)
  on_disk, ingested = latest_span_on_disk(config), latest_span_trained_on(config)
  if on_disk is None:
    return Decision(False, f'no span-N folder under {config.path(config.data_root)}')
  if ingested is None:
    return Decision(True, f'span {on_disk} of {config.path(config.data_root)} '
                          'has never been trained on')
  if on_disk > ingested:
    return Decision(True, f'new span {on_disk} (last trained on span {ingested})')
  if problem:
    return Decision(True, problem, monitoring_only=True)
  return Decision(False, f'no new span (latest {on_disk} already trained on) '
                         'and no skew or drift reported')
