"""The few pieces the standard TFX components leave to the pipeline author:

- CuratedSchemaGen: ImportSchemaGen whose cache key includes the schema's
  content, so editing schema/ re-runs validation and everything after it.
- AnomaliesGate: stops the run before Transform when ExampleValidator found
  anomalies, naming each one.
- PreviousBlessedModelStrategy: the Evaluator's baseline, never the
  candidate itself, so a rerun with nothing changed stays cached.
- AtomicPusher: the standard Pusher, but a version directory appears in the
  serving directory only once it is complete (written aside, then renamed),
  always as the new highest version (the one TF Serving serves), and not
  at all when the highest version already holds the model.
"""

import os
import shutil
import time
from typing import Dict, List, Optional

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import component_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils
from tfx.components import Pusher
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen

ANOMALIES_FILE = 'SchemaDiff.pb'  # What ExampleValidator writes per split.


class DataValidationError(RuntimeError):
  """The data does not match the curated schema; the run must stop."""


# ---------------------------------------------------------------- schema ----

class _CuratedSchemaGenSpec(standard_component_specs.ImportSchemaGenSpec):
  PARAMETERS = {
      **standard_component_specs.ImportSchemaGenSpec.PARAMETERS,
      # Unused by the executor; part of the cache key.
      'content_fingerprint': component_spec.ExecutionParameter(type=str),
  }


class CuratedSchemaGen(ImportSchemaGen):
  """ImportSchemaGen that re-runs when the schema file's content changes."""

  SPEC_CLASS = _CuratedSchemaGenSpec

  def __init__(self, schema_file: str, content_fingerprint: str):
    spec = _CuratedSchemaGenSpec(
        schema_file=schema_file,
        content_fingerprint=content_fingerprint,
        schema=types.Channel(type=standard_artifacts.Schema))
    # Skip ImportSchemaGen.__init__, which builds the plain spec.
    super(ImportSchemaGen, self).__init__(spec=spec)


# ------------------------------------------------------------- anomalies ----

def describe_anomalies(anomalies: anomalies_pb2.Anomalies,
                       blank_shares: Optional[Dict[str, float]] = None) -> List[str]:
  """One line per anomalous feature: 'fare: Unexpected data type ...'.

  blank_shares (feature -> share of rows with no value) turns TFDV's words
  for blank cells ('fewer values than expected') into how many rows are
  blank, which is what the user has to go and look for.
  """
  blank_shares = blank_shares or {}
  lines = []
  if anomalies.data_missing:
    lines.append('dataset: no examples (is the input empty?)')
  for feature, info in sorted(anomalies.anomaly_info.items()):
    if any(r.type in _BLANK_CELL_REASONS for r in info.reason) and blank_shares.get(feature):
      lines.append(f'{feature}: {100 * blank_shares[feature]:.0f} % of rows have no value'
                   ' (schema/schema.pbtxt requires one in every row)')
      continue
    reasons = '; '.join(r.description or r.short_description for r in info.reason)
    lines.append(f'{feature}: {reasons or info.description}')
  if anomalies.HasField('dataset_anomaly_info'):
    info = anomalies.dataset_anomaly_info
    lines.append('dataset: ' + '; '.join(r.description for r in info.reason))
  return lines


# A blank CSV cell becomes a feature with no value (or no feature at all).
_BLANK_CELL_REASONS = (anomalies_pb2.AnomalyInfo.FEATURE_TYPE_LOW_NUMBER_VALUES,
                       anomalies_pb2.AnomalyInfo.FEATURE_TYPE_LOW_FRACTION_PRESENT)


def blank_shares(statistics_uri: str, split: str) -> Dict[str, float]:
  """Share of rows without a value, for each feature of at most one value a row.

  TFDV counts a blank cell as present with zero values, so the blanks are
  the rows that the feature's total number of values does not cover.
  """
  import tensorflow_data_validation as tfdv  # Only a failing gate needs it.
  path = os.path.join(statistics_uri, f'Split-{split}', 'FeatureStats.pb')
  if not os.path.exists(path):
    return {}
  dataset = tfdv.load_stats_binary(path).datasets[0]
  shares = {}
  for feature in dataset.features:
    kind = feature.WhichOneof('stats')
    common = getattr(feature, kind).common_stats if kind else None
    if common is None or common.max_num_values > 1 or not dataset.num_examples:
      continue
    name = '.'.join(feature.path.step) or feature.name
    shares[name] = 1 - common.tot_num_values / dataset.num_examples
  return shares


def read_anomalies(artifact: types.Artifact,
                   statistics: Optional[types.Artifact] = None) -> List[str]:
  """Anomaly lines of every split of an ExampleAnomalies artifact."""
  lines = []
  for split in artifact_utils.decode_split_names(artifact.split_names):
    path = os.path.join(artifact.uri, f'Split-{split}', ANOMALIES_FILE)
    anomalies = anomalies_pb2.Anomalies()
    anomalies.ParseFromString(io_utils.read_bytes_file(path))
    shares = blank_shares(statistics.uri, split) if statistics and anomalies.anomaly_info else {}
    lines += [f'[{split}] {line}' for line in describe_anomalies(anomalies, shares)]
  return lines


@component
def AnomaliesGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
                  statistics: InputArtifact[standard_artifacts.ExampleStatistics]):
  """Fails the run when the data has anomalies against the curated schema."""
  problems = read_anomalies(anomalies, statistics)
  if problems:
    raise DataValidationError(
        'the data does not match schema/schema.pbtxt:\n  ' + '\n  '.join(problems))


# -------------------------------------------------------------- baseline ----

class PreviousBlessedModelStrategy(
    latest_blessed_model_strategy.LatestBlessedModelStrategy):
  """The latest blessed model other than the candidate.

  With TFX's strategy, the model a run blesses becomes the next run's
  baseline; when the Trainer is cached that is the candidate itself, and the
  Evaluator re-runs to compare a model with itself. Excluding the candidate
  gives the rerun the same inputs as the run before, so it stays cached.
  Inputs: model, model_blessing (all of them) and candidate (the Trainer's).
  """

  def resolve_artifacts(self, store, input_dict):
    candidate = input_dict['candidate']
    candidate_ids = {model.id for model in candidate}
    earlier = {
        'model': [m for m in input_dict['model'] if m.id not in candidate_ids],
        'model_blessing': input_dict['model_blessing'],
    }
    # Empty lists resolve to empty lists: nothing earlier was blessed.
    return {**self._resolve(earlier, 'model', 'model_blessing'), 'candidate': candidate}


# --------------------------------------------------------------- pushing ----

def version_dirs(base_dir: str) -> List[int]:
  """The numeric version directories TF Serving sees in base_dir, ascending."""
  if not os.path.isdir(base_dir):
    return []
  return sorted(int(name) for name in os.listdir(base_dir) if name.isdigit())


def _same_saved_model(model_path: str, version_dir: str) -> bool:
  """Whether two SavedModel dirs hold the same model (fingerprint.pb)."""
  mine = os.path.join(model_path, 'fingerprint.pb')
  theirs = os.path.join(version_dir, 'fingerprint.pb')
  return (os.path.exists(mine) and os.path.exists(theirs) and
          io_utils.read_bytes_file(mine) == io_utils.read_bytes_file(theirs))


class _AtomicPusherExecutor(pusher_executor.Executor):
  """Pushes a blessed model as a NEW HIGHEST version, written aside and renamed in.

  TF Serving serves the highest version of the directory. So a blessed model
  is pushed unless the highest version already holds it; an older version
  holding it does not count: re-running an earlier configuration rolls that
  model forward as the newest version, which is what the user asked for.
  When the highest version already holds it, the output says so
  (pushed_version = that version, custom property `reused_version` = 1).

  TF Serving polls the model directory and tries to load every numeric
  subdirectory it sees; a version copied in place is visible half-written.
  A rename within one filesystem is atomic, and TF Serving ignores the
  non-numeric temporary name.
  """

  def Do(self, input_dict, output_dict, exec_properties):
    self._log_startup(input_dict, output_dict, exec_properties)
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(model_push)
      return
    base_dir = self._base_directory(exec_properties)
    model_path = self.GetModelPath(input_dict)
    versions = version_dirs(base_dir)
    highest = os.path.join(base_dir, str(versions[-1])) if versions else None
    if highest and _same_saved_model(model_path, highest):
      self._MarkPushed(model_push, pushed_destination=highest,
                       pushed_version=str(versions[-1]))
      model_push.set_int_custom_property('reused_version', 1)
      return
    # Above every existing version, even one from a clock set ahead.
    version = str(max(int(time.time()), versions[-1] + 1 if versions else 0))
    final_dir = os.path.join(base_dir, version)
    staging_dir = os.path.join(base_dir, f'.{version}.incomplete')
    os.makedirs(base_dir, exist_ok=True)
    shutil.rmtree(staging_dir, ignore_errors=True)
    shutil.copytree(model_path, staging_dir)
    os.rename(staging_dir, final_dir)
    io_utils.copy_dir(final_dir, model_push.uri)  # TFX keeps an archive copy.
    self._MarkPushed(model_push, pushed_destination=final_dir, pushed_version=version)
    model_push.set_int_custom_property('reused_version', 0)

  @staticmethod
  def _base_directory(exec_properties) -> str:
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
    return destination.filesystem.base_directory


class AtomicPusher(Pusher):
  """Pusher to a local or mounted serving directory, never half-written.

  Its decision depends on the serving directory, which MLMD does not see:
  runners must never take it from the cache (pipeline.NEVER_CACHED)."""
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(_AtomicPusherExecutor)
