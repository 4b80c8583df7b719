"""A starting schema for a new CSV: python -m pipeline.schema_bootstrap.

The pipeline's data gate validates every span against a curated schema
(schema/schema.pbtxt), so a first run on new data needs one. This command
runs TFX's own CsvExampleGen, StatisticsGen and SchemaGen on the data (a
small pipeline on TFX's LocalDagRunner, in-memory Beam, its own output root
under <output_root>/schema_bootstrap/) and writes what SchemaGen inferred,
plus what inference cannot know:

- the TRAINING and SERVING environments, with the label and the
  training-only columns absent in SERVING (defaults: models/features.py);
- skew and drift comparators on every feature, with the thresholds of the
  curated taxi schema;
- a header comment saying what to review and how the file was made.

    python -m pipeline.schema_bootstrap --data-root data/mine
    python -m pipeline.schema_bootstrap --data-root data/mine --label churned \\
        --training-only refund --out schema/schema.pbtxt [--force]

Exit codes: 0 written, 2 a usage or data error (one line on stderr).
"""

import os
import sys

# Before anything imports TensorFlow: TFX 1.16 needs Keras 2 (tf-keras); TF's
# C++ logging reads its level only at start-up.
import compat.keras  # noqa: E402,F401  Before anything imports TensorFlow.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import argparse  # pylint: disable=g-import-not-at-top
import collections
import csv
import dataclasses
import datetime
import glob
import re
import shlex
import shutil
from typing import Dict, List, Optional, Sequence

from models import features
from pipeline import configs, quiet

EXIT_USAGE = 2
BOOTSTRAP_DIR = 'schema_bootstrap'  # Under the output root (git-ignored).
SCHEMA_FILE = 'schema.pbtxt'
# Thresholds of the curated taxi schema (its header says how they were
# measured); a starting point to measure again on the new data.
INFINITY_NORM_THRESHOLD = 0.1  # Categorical: the largest change of one value's share.
JSD_THRESHOLD = 0.015  # Numeric: Jensen-Shannon divergence on decile buckets.


class BootstrapError(Exception):
  """A usage or data error; the message names the cause and the fix."""


@dataclasses.dataclass
class CsvData:
  """The CSV files the pipeline would read, as ExampleGen's input."""
  input_base: str
  pattern: str  # Relative to input_base, as in configs.input_pattern.
  files: List[str]  # Of the latest span: the ones ExampleGen reads.
  columns: List[str]
  rows: int


def _latest_span_folder(root: str, pattern: str) -> Optional[str]:
  """The folder of the newest span-N/ under root, as ExampleGen picks it."""
  span_folder = pattern.split('/')[0]
  regex = re.compile(re.escape(span_folder).replace(re.escape('{SPAN}'), r'(\d+)'))
  spans = [(int(m.group(1)), name) for name in os.listdir(root)
           if (m := regex.fullmatch(name)) and os.path.isdir(os.path.join(root, name))]
  return os.path.join(root, max(spans)[1]) if spans else None


def _count_rows(path: str) -> int:
  """Data rows of a checked CSV file (blank lines skipped, as TFX does)."""
  with open(path, newline='', encoding='utf-8') as f:
    return sum(1 for cells in csv.reader(f) if cells) - 1


def find_csv_data(data_root: str) -> CsvData:
  """The latest span-N/*.csv under data_root, else data_root/*.csv."""
  from pipeline.components import csv_example_gen  # Loads TFX: after the CLI checks.
  if not os.path.isdir(data_root):
    raise BootstrapError(f'--data-root {data_root} is not a folder: point it at the folder '
                         f'holding span-1/*.csv (or the CSV files themselves)')
  span_pattern = configs.PipelineConfig.input_pattern
  span = _latest_span_folder(data_root, span_pattern)
  folder, pattern = (span, span_pattern) if span else (data_root, '*.csv')
  files = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith('.csv'))
  if not files:
    raise BootstrapError(f'{folder} holds no .csv file: put your CSV files (with a header '
                         f'line) in {os.path.join(data_root, "span-1")}/')
  columns = None
  rows = 0
  for path in files:
    if os.path.getsize(path) == 0:
      raise BootstrapError(f'{path} is empty: write a header line and data rows, '
                           f'or remove the file')
    try:
      csv_example_gen.check_csv_file(path)
    except csv_example_gen.CsvFormatError as e:
      raise BootstrapError(str(e)) from None
    with open(path, newline='', encoding='utf-8') as f:
      header = next(csv.reader(f))
    if columns is not None and header != columns:
      raise BootstrapError(f'{path} has another header than {files[0]}: give every CSV '
                           f'file of a span the same columns in the same order')
    columns = header
    rows += _count_rows(path)
  if rows == 0:
    raise BootstrapError(f'the CSV files in {folder} have a header but no data rows: '
                         f'add the data (the schema is inferred from it)')
  return CsvData(data_root, pattern, files, columns, rows)


@dataclasses.dataclass
class ServingAbsent:
  """The columns clients do not send, and why each default did not apply."""
  columns: List[str]
  notes: List[str]


def serving_absent_columns(columns: Sequence[str], label: Optional[str],
                           training_only: Optional[str]) -> ServingAbsent:
  """The label and training-only columns: from the flags, else models/features.py.

  A flag naming no column is an error. A default of models/features.py that
  is no column of this data is left out, with a note: today's taxi label is
  derived from other columns (models/preprocessing.py), not read from one.
  """
  absent, notes = [], []
  wanted = [('--label', label, [label] if label else
             [features.LABEL_COLUMN] if features.LABEL_COLUMN else []),
            ('--training-only', training_only,
             [c for c in (training_only or '').split(',') if c] or features.TRAINING_ONLY)]
  for flag, given, names in wanted:
    for name in names:
      if name in columns:
        absent.append(name)
      elif given:
        raise BootstrapError(f'{flag} {name!r} is not a column of the CSV (columns: '
                             f'{", ".join(columns)}): name one of them')
      else:
        notes.append(f'{name} (the {flag[2:]} default of models/features.py) is not a '
                     f'column of this data, so it is not in the schema')
  return ServingAbsent(list(dict.fromkeys(absent)), notes)


def _stats_options(columns: Sequence[str]):
  """Integer ids that models/features.py calls categorical are counted as
  categories, as the pipeline's StatisticsGen counts them."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  schema = schema_pb2.Schema()
  for name in features.categorical_ints():
    if name in columns:
      feature = schema.feature.add(name=name, type=schema_pb2.INT)
      feature.int_domain.is_categorical = True
  return tfdv.StatsOptions(schema=schema)


def _bootstrap_pipeline(data: CsvData, run_root: str):
  from tfx.components import SchemaGen, StatisticsGen  # pylint: disable=g-import-not-at-top
  from tfx.orchestration import metadata  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.pipeline import Pipeline  # pylint: disable=g-import-not-at-top
  from tfx.proto import example_gen_pb2  # pylint: disable=g-import-not-at-top
  from pipeline.components import csv_example_gen  # Loads TFX: after the CLI checks.
  defaults = configs.PipelineConfig
  # The pipeline's split, so the statistics are of the same train/eval examples.
  example_gen = csv_example_gen.csv_example_gen(
      input_base=data.input_base,
      input_config=example_gen_pb2.Input(splits=[
          example_gen_pb2.Input.Split(name='all', pattern=data.pattern)]),
      output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
          example_gen_pb2.SplitConfig.Split(name='train', hash_buckets=defaults.train_buckets),
          example_gen_pb2.SplitConfig.Split(name='eval', hash_buckets=defaults.eval_buckets),
      ])),
      code_fingerprint='')
  statistics_gen = StatisticsGen(examples=example_gen.outputs['examples'],
                                 stats_options=_stats_options(data.columns))
  # No fixed shapes, as the pipeline's: a blank cell stays a missing value
  # that Transform fills, in training and serving alike.
  schema_gen = SchemaGen(statistics=statistics_gen.outputs['statistics'],
                         infer_feature_shape=False)
  return Pipeline(
      pipeline_name='schema-bootstrap',
      pipeline_root=os.path.join(run_root, 'artifacts'),
      components=[example_gen, statistics_gen, schema_gen],
      enable_cache=False,
      metadata_connection_config=metadata.sqlite_metadata_connection_config(
          os.path.join(run_root, 'metadata.sqlite')))


def _only_artifact(store, type_name: str):
  artifacts = store.get_artifacts_by_type(type_name)
  if len(artifacts) != 1:
    raise RuntimeError(f'the bootstrap run made {len(artifacts)} {type_name} artifacts, not 1')
  return artifacts[0]


def infer_schema(data: CsvData, run_root: str):
  """(SchemaGen's schema, StatisticsGen's datasets, one per split) of a fresh run."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  from ml_metadata.metadata_store import metadata_store  # pylint: disable=g-import-not-at-top
  from tfx.orchestration import metadata  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  from tfx.utils import io_utils  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  # A fresh root each time: one artifact of each kind to read back.
  shutil.rmtree(run_root, ignore_errors=True)
  os.makedirs(run_root)
  LocalDagRunner().run(_bootstrap_pipeline(data, run_root))
  store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(
      os.path.join(run_root, 'metadata.sqlite')))
  schema = io_utils.parse_pbtxt_file(
      os.path.join(_only_artifact(store, 'Schema').uri, SCHEMA_FILE), schema_pb2.Schema())
  statistics_uri = _only_artifact(store, 'ExampleStatistics').uri
  datasets = [  # Split-train/, Split-eval/.
      tfdv.load_stats_binary(path).datasets[0]
      for path in sorted(glob.glob(os.path.join(statistics_uri, 'Split-*', 'FeatureStats.pb')))]
  return schema, datasets


def value_shares(datasets) -> Dict[str, float]:
  """Feature -> share of rows with a value, over all splits.

  CsvExampleGen writes a blank cell as an empty value list, which TFDV counts
  as present: SchemaGen infers presence 1.0 for every column. Here a row
  counts when it has a value; CSV rows have at most one per column.
  """
  rows = sum(d.num_examples for d in datasets)
  with_value = collections.Counter()
  for dataset in datasets:
    for feature in dataset.features:
      common = getattr(feature, feature.WhichOneof('stats')).common_stats
      with_value[feature.path.step[0]] += common.tot_num_values
  return {name: count / rows for name, count in with_value.items()}


def _set_presence(feature, share: float) -> None:
  """Required (a value in every row) or optional, with one value at most.

  Required means the data gate refuses a blank cell and serving requests
  must send the feature (models/signatures.py reads presence 1.0 so).
  """
  feature.ClearField('presence')
  feature.ClearField('value_count')
  feature.value_count.max = 1
  if share >= 1.0:
    feature.value_count.min = 1
    feature.presence.min_fraction = 1.0
  feature.presence.min_count = 1 if share > 0 else 0


def _is_categorical(feature) -> bool:
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  return feature.type == schema_pb2.BYTES or (
      feature.type == schema_pb2.INT and feature.int_domain.is_categorical)


def _add_comparator(comparator, categorical: bool) -> None:
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  if categorical:
    comparator.infinity_norm.threshold = INFINITY_NORM_THRESHOLD
  else:
    # On the training statistics' quantiles: equal-width histograms let one
    # outlier stretch the buckets until the divergence means nothing.
    comparator.jensen_shannon_divergence.threshold = JSD_THRESHOLD
    comparator.jensen_shannon_divergence.source.type = schema_pb2.HistogramSelection.QUANTILES


def _type_of_blank_column(feature, share: float) -> None:
  """A column blank in every row gives TFDV no type evidence (it says BYTES):
  models/features.py's dtype then, as Transform and serving read it."""
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  if share == 0 and feature.name in features.RAW_FEATURES:
    dtype = features.RAW_FEATURES[feature.name].dtype
    feature.type = {'float': schema_pb2.FLOAT, 'int': schema_pb2.INT,
                    'string': schema_pb2.BYTES}[dtype]


def starting_schema(inferred, shares: Dict[str, float], serving_absent: Sequence[str]):
  """SchemaGen's schema with presence from `shares` (value_shares), and
  environments and comparators added."""
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  schema = type(inferred)()
  schema.CopyFrom(inferred)
  del schema.default_environment[:]
  schema.default_environment.extend(['TRAINING', 'SERVING'])
  for feature in schema.feature:
    # SchemaGen does not carry StatisticsGen's categorical marker over.
    if feature.type == schema_pb2.INT and feature.name in features.categorical_ints():
      feature.int_domain.is_categorical = True
    _set_presence(feature, shares[feature.name])
    _type_of_blank_column(feature, shares[feature.name])
    categorical = _is_categorical(feature)
    if feature.name in serving_absent:
      feature.not_in_environment.append('SERVING')
    else:  # Skew compares with served values, which these never have.
      _add_comparator(feature.skew_comparator, categorical)
    _add_comparator(feature.drift_comparator, categorical)
  # TFDV also lists the values of categorical ints as string domains that no
  # feature uses (an INT feature cannot): they would only mislead a reviewer.
  used = {feature.domain for feature in schema.feature if feature.HasField('domain')}
  kept = [d for d in schema.string_domain if d.name in used]
  del schema.string_domain[:]
  schema.string_domain.extend(kept)
  return schema


def header_comment(command: str, data: CsvData, examples: int,
                   absent: ServingAbsent) -> str:
  """What to review, and how the file was made, as text-format comments."""
  lines = [
      'Starting schema inferred from the data: REVIEW IT before the pipeline relies on it.',
      '',
      f'Made by: {command}',
      f'From {examples} rows of {", ".join(data.files)}',
      f'on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, with TFX '
      'CsvExampleGen, StatisticsGen and SchemaGen (then environments and comparators).',
      '',
      'Review, feature by feature:',
      '- type: inferred from the values seen; integer ids (codes, hours) are',
      '  categories: mark them in models/features.py (kind categorical), rerun this,',
      '  and they get int_domain { is_categorical: true }.',
      '- domains: a string_domain lists only the values seen here, so a new value',
      '  in a later span is an anomaly that stops the pipeline: drop the domain of',
      '  open-ended columns (names, free text). Numeric ranges are not inferred:',
      '  add int_domain / float_domain { min max } a real value can never leave.',
      '- presence: min_fraction 1.0 and value_count { min: 1 } mark the columns every',
      '  row here had a value in: the data gate then refuses a blank cell, and serving',
      '  requests must send them. The others had blank cells: optional. Check both.',
      '- environments: TRAINING and SERVING. Absent in SERVING (not sent by clients): '
      + (', '.join(absent.columns) or 'none') + '.',
  ]
  lines += [f'  Note: {note}.' for note in absent.notes]
  lines += [
      '  Any other column clients will not send needs not_in_environment: "SERVING".',
      '- thresholds: drift (span vs previous span) and skew (training vs serving)',
      f'  comparators: L-infinity {INFINITY_NORM_THRESHOLD} on categorical features,',
      f'  Jensen-Shannon {JSD_THRESHOLD} on the deciles of numeric ones, as the curated',
      '  taxi schema measured them (git show HEAD:schema/schema.pbtxt, its header);',
      '  measure your data\'s (bench/monitoring_jsd.py) and adjust or remove.',
      '- dataset_constraints { min_examples_count: N } makes an empty or truncated',
      '  span an anomaly; add it with the smallest span you expect.',
      f'Then put it at schema/schema.pbtxt (or set {configs.ENV_PREFIX}SCHEMA_FILE) and run the pipeline.',
  ]
  return ''.join(f'# {line}'.rstrip() + '\n' for line in lines) + '\n'


def _parse_args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m pipeline.schema_bootstrap',
      description='Infer a starting schema for a new CSV with TFX (ExampleGen, '
                  'StatisticsGen, SchemaGen) and write it for review.')
  parser.add_argument('--data-root', required=True,
                      help='folder of span-<N>/*.csv (the latest span is read), or of *.csv')
  parser.add_argument('--out', help='where to write the schema (default '
                      '<output-root>/schema_bootstrap/schema.pbtxt); an existing file '
                      'is kept unless --force')
  parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
  parser.add_argument('--output-root', default=configs.PipelineConfig.output_root,
                      help='where the bootstrap run keeps its artifacts (default %(default)s)')
  parser.add_argument('--label', help='the label column, absent in SERVING '
                      '(default: LABEL_KEY of models/features.py, when a column)')
  parser.add_argument('--training-only', help='comma-separated columns that only training '
                      'data has, absent in SERVING (default: TRAINING_ONLY of the selected example, '
                      'when a column)')
  return parser.parse_args(argv)


def bootstrap(args, command: str, stream=sys.stdout) -> str:
  """Runs the bootstrap; returns the path written. Raises BootstrapError."""
  output_root = configs.PipelineConfig().path(args.output_root)
  default_out = os.path.join(output_root, BOOTSTRAP_DIR, SCHEMA_FILE)
  out = os.path.abspath(args.out) if args.out else default_out
  if args.out and os.path.exists(out) and not args.force:
    raise BootstrapError(f'--out {args.out} exists: review it against a new bootstrap in '
                         f'the default place (drop --out), or pass --force to overwrite it')
  data = find_csv_data(os.path.abspath(args.data_root))
  absent = serving_absent_columns(data.columns, args.label, args.training_only)
  print(f'Inferring a schema from {data.rows} rows of {", ".join(data.files)} '
        f'(TFX CsvExampleGen, StatisticsGen, SchemaGen)...', file=stream, flush=True)
  inferred, datasets = infer_schema(data, os.path.join(output_root, BOOTSTRAP_DIR, 'run'))
  schema = starting_schema(inferred, value_shares(datasets), absent.columns)
  examples = sum(d.num_examples for d in datasets)
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    f.write(header_comment(command, data, examples, absent))
    f.write(text_format.MessageToString(schema))
  schema_file = configs.PipelineConfig().path(configs.PipelineConfig.schema_file)
  then = '' if out == schema_file else f', then put it at {configs.PipelineConfig.schema_file}'
  print(f'Wrote {out}: review it (its header says what){then}.', file=stream)
  return out


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  args = _parse_args(argv)
  command = shlex.join(['python', '-m', 'pipeline.schema_bootstrap', *argv])
  quiet.quiet_libraries()  # Before TFX loads: an error stays the one line below.
  try:
    bootstrap(args, command)
  except BootstrapError as e:
    print(f'schema_bootstrap: error: {e}', file=sys.stderr)
    return EXIT_USAGE
  return 0


if __name__ == '__main__':
  sys.exit(main())
