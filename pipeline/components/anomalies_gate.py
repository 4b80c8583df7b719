"""AnomaliesGate: stops the run before Transform when ExampleValidator found
anomalies, naming each one (and how many rows a blank-cell anomaly concerns)."""

import os
from typing import Dict, List, Optional

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from pipeline import metadata

ANOMALIES_FILE = 'SchemaDiff.pb'  # What ExampleValidator writes per split.


class DataValidationError(RuntimeError):
  """The data does not match the curated schema; the run must stop."""


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
  if not os.path.exists(os.path.join(statistics_uri, f'Split-{split}', 'FeatureStats.pb')):
    return {}
  dataset = metadata.read_statistics(statistics_uri, split).datasets[0]
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
