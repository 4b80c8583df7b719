"""Batch scoring: a data drop of unlabelled rows scored by the latest blessed
model, with TFX's BulkInferrer.

    python local_runner.py --score DATA_ROOT_OR_SPAN [--id-column trip_id]

A pipeline of its own (<pipeline_name>-scoring, beside the training one in
the same output root and MLMD), built from the training pipeline's parts,
config and Beam arguments (so beam_profile=dataflow runs it on Dataflow):

  CsvExampleGen (the project's) -> StatisticsGen -> ExampleValidator against
  the curated schema's SERVING environment -> AnomaliesGate (bad rows stop
  the run, the anomaly named) -> BulkInferrer (serving_default: serialized
  tf.Examples, so the preprocessing is the served one) -> PredictionsWriter
  (a CSV or JSONL file a person can open).

The model: the newest Model the training pipeline's Evaluator blessed (TFX's
LatestBlessedModelStrategy rule), found in MLMD when the pipeline is built
and brought in by Importers, which reuse its MLMD artifact (lineage kept).

The id column: named by --id-column, carried from the CSV through the
tf.Examples to each output row. It is left out of the statistics, so the
schema gate neither requires it nor calls it a new column (nor counts
millions of unique ids). Without one, each output row carries every input
column instead, so that it can still be matched to its input: BulkInferrer
writes rows in no fixed order. Ids are carried as ExampleGen types them: a
column of digits only becomes integers (leading zeros are lost).
"""

import csv
import io
import json
import os
import re
from typing import Dict, List, NamedTuple, Optional

from ml_metadata.proto import metadata_store_pb2
import numpy as np
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tfx import types
from tfx.components import BulkInferrer, StatisticsGen
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.components.common.importer import Importer
from tfx.dsl.io import fileio
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import bulk_inferrer_pb2, example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from models import features, signatures
from pipeline import metadata
from pipeline import pipeline as pipeline_definition
from pipeline.components import csv_example_gen
from pipeline.components.anomalies_gate import ANOMALIES_FILE, AnomaliesGate
from pipeline.components.schema_importer import SCHEMA_FILE_NAME, CuratedSchemaGen
from pipeline.configs import PipelineConfig

SPLIT = 'score'  # The drop's one split: no train/eval hashing.
# Serialized tf.Examples, through the served preprocessing. A multi-class
# model is scored with its Classify signature: tfx_bsl's Predict logging
# cannot split serving_default's string 'class' output per example ('bytes'
# object has no attribute 'dtype').
SIGNATURE = 'classification' if features.TASK == features.MULTICLASS else 'serving_default'
FORMATS = ('csv', 'jsonl')
PREDICTIONS_FILE = 'predictions'  # <artifact uri>/predictions.csv or .jsonl


class ScoringError(Exception):
  """The drop cannot be scored; the message names the cause and the fix."""


class DropError(ScoringError):
  """The drop or the flags naming it are wrong (a usage error)."""


def scoring_pipeline_name(config: PipelineConfig) -> str:
  """Its own MLMD contexts: training's resolvers never see scoring data."""
  return f'{config.pipeline_name}-scoring'


# ---- the drop ----------------------------------------------------------------------------


class Drop(NamedTuple):
  input_base: str  # ExampleGen's input_base.
  pattern: str  # Its split pattern under input_base.
  csv_files: List[str]  # The files the run reads (the latest span's).
  header: List[str]


def _span_folders(root: str, input_pattern: str) -> Dict[int, str]:
  """{span number: folder} of root's span-<N>/ folders (config.input_pattern)."""
  folder = input_pattern.split('/')[0]
  if '{SPAN}' not in folder:
    return {}
  regex = re.compile(re.escape(folder).replace(re.escape('{SPAN}'), r'(\d+)'))
  spans = {}
  for name in fileio.listdir(root):
    match = regex.fullmatch(name.rstrip('/'))
    if match and fileio.isdir(os.path.join(root, name.rstrip('/'))):
      spans[int(match.group(1))] = os.path.join(root, name.rstrip('/'))
  return spans


def resolve_drop(path: str, input_pattern: str) -> Drop:
  """A data root (its latest span-<N>/, as training reads it) or one folder
  of CSV files."""
  if not fileio.isdir(path):
    raise DropError(f'--score {path} is not a folder: give a data root holding '
                    f'span-<N>/*.csv or one folder of CSV files')
  spans = _span_folders(path, input_pattern)
  if spans:
    input_base, pattern = path, input_pattern
    folder = spans[max(spans)]
    files = sorted(fileio.glob(os.path.join(folder, input_pattern.split('/', 1)[1])))
  else:
    input_base, pattern = path, '*.csv'
    files = sorted(fileio.glob(os.path.join(path, pattern)))
  if not files:
    raise DropError(f'--score {path} holds no CSV files: put the rows to score in '
                    f'{path}/*.csv (or {path}/span-<N>/*.csv)')
  return Drop(input_base, pattern, files, io_utils.load_csv_column_names(files[0]))


def _has_a_row(path: str) -> bool:
  with fileio.open(path, 'r') as f:
    next(f, None)  # The header.
    return any(line.strip() for line in f)


def check_drop(drop: Drop, id_column: str) -> None:
  """Errors before anything runs: an id column the files lack, no rows."""
  if id_column and id_column not in drop.header:
    raise DropError(f'--id-column {id_column} is not a column of {drop.csv_files[0]} '
                    f'(its columns: {", ".join(drop.header)}): name one of them')
  if not any(_has_a_row(path) for path in drop.csv_files):
    raise ScoringError(f'no rows to score: {", ".join(drop.csv_files)} '
                       f'{"has" if len(drop.csv_files) == 1 else "have"} only a header; '
                       f'add the rows to score below it')


# ---- the model ---------------------------------------------------------------------------


class BlessedModel(NamedTuple):
  model: object  # MLMD Artifact
  blessing: object  # MLMD Artifact
  version: Optional[str]  # Its serving version, when pushed.


def latest_blessed_model(config: PipelineConfig) -> BlessedModel:
  """The newest Model the training pipeline's Evaluator blessed."""
  root = config.path(config.output_root)
  no_model = ScoringError(f'no blessed model under {root}: run `python local_runner.py` '
                          f'until the Evaluator blesses one, then score')
  try:
    store = metadata.open_run_store(config)
  except metadata.NoRunFound:
    raise no_model from None
  executions = metadata.finished_executions(store, config, 'Evaluator')
  produced = metadata.artifacts_of(store, executions, metadata_store_pb2.Event.OUTPUT)
  blessing_type = store.get_artifact_type(standard_artifacts.ModelBlessing.TYPE_NAME).id \
      if executions else None
  blessed = [a for a in store.get_artifacts_by_id(list(produced))
             if a.type_id == blessing_type and metadata.custom_property(a, 'blessed', 0) == 1]
  if not blessed:
    raise no_model
  # TFX's rule: the blessed model with the highest id, its latest blessing.
  blessing = max(blessed, key=lambda a: (metadata.custom_property(a, 'current_model_id'), a.id))
  model, = store.get_artifacts_by_id([metadata.custom_property(blessing, 'current_model_id')])
  return BlessedModel(model, blessing, _pushed_version(config, model))


def _pushed_version(config: PipelineConfig, model) -> Optional[str]:
  """The serving version a push of this model made, newest push first."""
  lineage = metadata.Lineage(config.metadata_path)
  for pushed in reversed(lineage.pushed_models()):
    if any(a.id == model.id for a in lineage.ancestors(pushed)):
      return str(metadata.custom_property(pushed, 'pushed_version'))
  return None


# ---- the components ----------------------------------------------------------------------


@component
def ServingExampleValidator(  # pylint: disable=invalid-name
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    schema: InputArtifact[standard_artifacts.Schema],
    anomalies: OutputArtifact[standard_artifacts.ExampleAnomalies]):
  """TFX's ExampleValidator for serving data, which TFX's cannot be told:
  the schema's SERVING environment (no label), any number of rows (the
  schema's min_examples_count is for training spans; zero rows is refused
  before the run). Same output layout, so AnomaliesGate reads it."""
  curated = io_utils.SchemaReader().read(os.path.join(schema.uri, SCHEMA_FILE_NAME))
  curated.ClearField('dataset_constraints')
  splits = artifact_utils.decode_split_names(statistics.split_names)
  anomalies.split_names = artifact_utils.encode_split_names(splits)
  for split in splits:
    split_statistics = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        io_utils.read_bytes_file(os.path.join(statistics.uri, f'Split-{split}',
                                              'FeatureStats.pb')))
    found = tfdv.validate_statistics(statistics=split_statistics, schema=curated,
                                     environment=signatures.SERVING_ENVIRONMENT)
    io_utils.write_bytes_file(
        os.path.join(anomalies.uri, f'Split-{split}', ANOMALIES_FILE), found.SerializeToString())


class BatchPredictions(types.Artifact):
  """A file of predictions, one row per scored row (predictions.csv/.jsonl)."""
  # namespace.Name: the form Kubeflow V2 compiles a custom artifact type in.
  TYPE_NAME = 'scoring.BatchPredictions'


def prediction_columns() -> List[str]:
  """The model's answer as columns, named as the client names them."""
  if features.TASK == features.MULTICLASS:
    return ['class'] + [f'probability_{name}' for name in features.CLASS_NAMES]
  if features.TASK == features.REGRESSION:
    return ['prediction']
  return ['probability', 'class']


def _float32(value: float) -> float:
  """A float32 as its shortest decimal: 12.45, not 12.449999809265137."""
  return float(str(np.float32(value)))


def _prediction(outputs) -> Dict[str, object]:
  """serving_default's outputs for one row (TensorProtos) as column values."""
  if features.TASK == features.MULTICLASS:
    row = {'class': outputs[features.OUTPUT_CLASS].string_val[0].decode()}
    for name, p in zip(features.CLASS_NAMES, outputs[features.OUTPUT_PROBABILITIES].float_val):
      row[f'probability_{name}'] = _float32(p)
    return row
  if features.TASK == features.REGRESSION:
    return {'prediction': _float32(outputs[features.OUTPUT_PREDICTION].float_val[0])}
  return {'probability': _float32(outputs[features.OUTPUT_PROBABILITY].float_val[0]),
          'class': int(outputs[features.OUTPUT_CLASS].int64_val[0])}


def _cell(feature: tf.train.Feature):
  """A tf.Example value as it was in the CSV; None for a blank cell."""
  kind = feature.WhichOneof('kind')
  values = getattr(feature, kind).value if kind else []
  if not values:
    return None
  value = values[0]
  if kind == 'bytes_list':
    return value.decode('utf-8')
  if kind == 'float_list':
    return _float32(value)
  return int(value)


def _classified(log) -> Dict[str, object]:
  """A ClassifyLog's classes and scores as column values."""
  classes = log.response.result.classifications[0].classes
  scores = {c.label: c.score for c in classes}
  row = {'class': max(scores, key=scores.get)}
  for name in features.CLASS_NAMES:
    row[f'probability_{name}'] = _float32(scores[name])
  return row


def _logged(record: bytes):
  """(the scored tf.Example, its prediction) of one PredictionLog record."""
  log = prediction_log_pb2.PredictionLog.FromString(record)
  if log.HasField('classify_log'):
    example = log.classify_log.request.input.example_list.examples[0]
    return example, _classified(log.classify_log)
  request, = log.predict_log.request.inputs.values()  # serving_default has one input.
  return (tf.train.Example.FromString(request.string_val[0]),
          _prediction(log.predict_log.response.outputs))


def scored_rows(log_files: List[str], carried: List[str]):
  """(carried values + prediction) dicts, one per PredictionLog record."""
  for record in _records(log_files):
    example, prediction = _logged(record)
    cells = example.features.feature
    row = {name: _cell(cells[name]) if name in cells else None for name in carried}
    row.update(prediction)
    yield row


def _records(paths: List[str]):
  """The records of gzipped TFRecord files. TF's record iterator: ~5 us a
  record where tf.data's eager iteration took ~350 us (bench/README.md)."""
  options = tf.io.TFRecordOptions(compression_type='GZIP')
  for path in paths:
    yield from tf.compat.v1.io.tf_record_iterator(path, options)


def write_predictions(log_files: List[str], carried: List[str], output_format: str,
                      path: str) -> int:
  """Streams the PredictionLogs into one CSV or JSONL file; returns the row count."""
  count = 0
  with fileio.open(path, 'w') as f:
    if output_format == 'csv':
      buffer = io.StringIO()
      writer = csv.writer(buffer, lineterminator='\n')
      writer.writerow(carried + prediction_columns())
      columns = carried + prediction_columns()
      for row in scored_rows(log_files, carried):
        writer.writerow(['' if row[c] is None else row[c] for c in columns])
        count += 1
        if count % 10_000 == 0:
          f.write(buffer.getvalue())
          buffer.seek(0)
          buffer.truncate()
      f.write(buffer.getvalue())
    else:
      for row in scored_rows(log_files, carried):
        f.write(json.dumps(row) + '\n')
        count += 1
  return count


@component
def PredictionsWriter(  # pylint: disable=invalid-name
    inference_result: InputArtifact[standard_artifacts.InferenceResult],
    carried_columns: Parameter[str], output_format: Parameter[str],
    predictions: OutputArtifact[BatchPredictions]):
  """BulkInferrer's PredictionLogs as a file a person opens: the carried
  columns (comma-separated) and the model's answer, one line per row."""
  log_files = sorted(fileio.glob(os.path.join(inference_result.uri, '*.gz')))
  if not log_files:
    raise ScoringError(f'BulkInferrer wrote no prediction logs in {inference_result.uri}')
  path = os.path.join(predictions.uri, f'{PREDICTIONS_FILE}.{output_format}')
  rows = write_predictions(log_files, carried_columns.split(','), output_format, path)
  predictions.set_string_custom_property('file', path)
  predictions.set_int_custom_property('rows', rows)


# ---- the pipeline ------------------------------------------------------------------------


def _statistics_options(drop: Drop, id_column: str):
  """The training StatisticsGen's options, over every column but the id (an
  unknown column still shows as a new column, as in training)."""
  options = pipeline_definition.categorical_stats_options()
  options.feature_allowlist = [c for c in drop.header if c != id_column]
  return options


def create_scoring_pipeline(config: PipelineConfig, drop: Drop, model: BlessedModel,
                            id_column: str = '', output_format: str = 'csv',
                            enable_cache: bool = True,
                            metadata_connection_config=None) -> Pipeline:
  """The scoring pipeline for one drop and one blessed model."""
  if output_format not in FORMATS:
    raise DropError(f'output format {output_format!r} is not one of {", ".join(FORMATS)}')
  example_gen = csv_example_gen.csv_example_gen(
      code_fingerprint=pipeline_definition.code_fingerprint('pipeline.components.csv_example_gen'),
      input_base=drop.input_base,
      input_config=example_gen_pb2.Input(splits=[
          example_gen_pb2.Input.Split(name='all', pattern=drop.pattern)]),
      output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
          example_gen_pb2.SplitConfig.Split(name=SPLIT, hash_buckets=1)])))
  statistics_gen = StatisticsGen(examples=example_gen.outputs['examples'],
                                 stats_options=_statistics_options(drop, id_column))
  schema_gen = CuratedSchemaGen(
      schema_file=pipeline_definition.configs.code_path(config, config.schema_file),
      content_fingerprint=pipeline_definition.source_fingerprint(
          files=[config.path(config.schema_file)]),
  ).with_id('CuratedSchemaGen')
  example_validator = ServingExampleValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_gen.outputs['schema']).with_id('ExampleValidator')
  anomalies_gate = AnomaliesGate(
      anomalies=example_validator.outputs['anomalies'],
      statistics=statistics_gen.outputs['statistics'])
  model_importer = Importer(source_uri=model.model.uri,
                            artifact_type=standard_artifacts.Model).with_id('BlessedModel')
  blessing_importer = Importer(source_uri=model.blessing.uri,
                               artifact_type=standard_artifacts.ModelBlessing
                               ).with_id('ModelBlessing')
  bulk_inferrer = BulkInferrer(
      examples=example_gen.outputs['examples'],
      model=model_importer.outputs['result'],
      model_blessing=blessing_importer.outputs['result'],
      data_spec=bulk_inferrer_pb2.DataSpec(example_splits=[SPLIT]),
      model_spec=bulk_inferrer_pb2.ModelSpec(model_signature_name=[SIGNATURE]))
  bulk_inferrer.add_upstream_node(anomalies_gate)  # Bad rows are never scored.
  writer = PredictionsWriter(
      inference_result=bulk_inferrer.outputs['inference_result'],
      carried_columns=id_column or ','.join(drop.header),
      output_format=output_format)
  name = scoring_pipeline_name(config)
  return Pipeline(
      pipeline_name=name,
      pipeline_root=os.path.join(config.path(config.output_root), name),
      components=[example_gen, statistics_gen, schema_gen, example_validator,
                  anomalies_gate, model_importer, blessing_importer, bulk_inferrer, writer],
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=config.beam_pipeline_args())
