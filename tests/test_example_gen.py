"""Our CsvExampleGen makes TFX's examples, split the same way: three
disjoint splits by hash, the same on every run, in the configured proportions."""

import pathlib

import pytest
from tfx import v1 as tfx
from tfx.components.example_gen.csv_example_gen import executor as csv_executor

from models import features
from pipeline import configs
from pipeline.components import csv_example_gen
from tests.conftest import sample_rows, write_csv

SPLITS = configs.SPLITS
BUCKETS = configs.load(environ={}).split_buckets


def _run_example_gen(tmp: pathlib.Path, data_root: pathlib.Path, ours: bool,
                     run_name: str = ''):
  """Runs one ExampleGen alone on the local profile; returns its output dir."""
  kwargs = dict(
      input_base=str(data_root),
      input_config=tfx.proto.Input(splits=[
          tfx.proto.Input.Split(name='all', pattern='span-{SPAN}/*.csv')]),
      output_config=csv_example_gen.hash_split_config(BUCKETS))
  node = (csv_example_gen.csv_example_gen(code_fingerprint='test', **kwargs) if ours
          else tfx.components.CsvExampleGen(**kwargs))
  root = tmp / ((('ours' if ours else 'tfx')) + run_name)
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name='example-gen', pipeline_root=str(root), components=[node],
      enable_cache=False,
      metadata_connection_config=tfx.orchestration.metadata
      .sqlite_metadata_connection_config(str(root / 'metadata.sqlite')),
      beam_pipeline_args=configs.load(environ={}).beam_pipeline_args()))
  [examples_dir] = (root / 'CsvExampleGen' / 'examples').iterdir()
  return examples_dir


def _examples(examples_dir: pathlib.Path, split: str):
  """The split's examples, deterministically serialized (map order aside)."""
  import tensorflow as tf
  files = sorted(str(p) for p in (examples_dir / f'Split-{split}').glob('*.gz'))
  return sorted(tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
                for r in tf.data.TFRecordDataset(files, compression_type='GZIP'))


def _sample_csv(root: pathlib.Path, corrupt=None):
  header, rows = sample_rows()
  rows = rows[::4]  # ~600 taxi rows, ~40 iris rows.
  if corrupt:
    corrupt(header, rows)
  write_csv(root / 'span-1' / 'data.csv', header, rows)
  return root


def _string_in_numeric_column(header, rows):
  numeric = next(n for n, f in features.RAW_FEATURES.items() if f.dtype != 'string')
  rows[5][header.index(numeric)] = 'twelve'  # TFX then types the column as text.


@pytest.mark.parametrize('corrupt', [None, _string_in_numeric_column],
                         ids=['sample', 'string in a numeric column'])
def test_same_examples_and_splits_as_tfx(tmp_path, corrupt):
  data_root = _sample_csv(tmp_path / 'data', corrupt)
  theirs = _run_example_gen(tmp_path, data_root, ours=False)
  ours = _run_example_gen(tmp_path, data_root, ours=True)
  for split in SPLITS:
    expected = _examples(theirs, split)
    assert expected and _examples(ours, split) == expected, split
  assert sorted(p.name for p in ours.iterdir()) == ['Split-eval', 'Split-test', 'Split-train']


@pytest.mark.slow
def test_splits_are_disjoint_deterministic_and_as_configured(tmp_path, sample_data_root):
  first_dir = _run_example_gen(tmp_path, sample_data_root, True, '1')
  again_dir = _run_example_gen(tmp_path, sample_data_root, True, '2')
  first = {s: _examples(first_dir, s) for s in SPLITS}
  again = {s: _examples(again_dir, s) for s in SPLITS}
  # Rerun on the same data: every example lands in the same split.
  assert again == first
  # Disjoint, and together every row of the CSV (whose rows are distinct).
  rows = len(sample_rows()[1])
  distinct = set().union(*first.values())
  assert len(distinct) == sum(len(e) for e in first.values()) == rows
  # Each split's share is its share of the buckets, within 3.5 standard
  # errors of a hash assignment (about 0.03 on ~2,500 rows).
  total = sum(BUCKETS.values())
  for split, examples in first.items():
    share = BUCKETS[split] / total
    tolerance = 3.5 * (share * (1 - share) / rows) ** 0.5
    assert abs(len(examples) / rows - share) < tolerance, (split, len(examples), rows)


def test_a_split_of_no_buckets_is_refused():
  with pytest.raises(configs.ConfigError, match='test_buckets 0 is below 1'):
    configs.load({'test_buckets': 0}, environ={})


def test_row_with_too_few_cells_fails_clearly(tmp_path):
  columns = len(features.csv_columns())
  cells = columns - 2

  def too_few_cells(header, rows):
    rows[7] = rows[7][:cells]
  data_root = _sample_csv(tmp_path / 'data', too_few_cells)
  # The header is line 1, so rows[7] is line 9; the number is where its cells end.
  with pytest.raises(Exception, match=rf"data\.csv:9:\d+: {cells} cells for the header's "
                                      rf"{columns} columns"):
    _run_example_gen(tmp_path, data_root, ours=True)


def test_streams_only_on_the_in_memory_runner():
  local = configs.load(environ={})
  dataflow = configs.load({'beam_profile': 'dataflow', 'gcs_bucket': 'b'}, environ={})
  assert csv_example_gen.runs_in_memory(local.beam_pipeline_args())
  assert not csv_example_gen.runs_in_memory(dataflow.beam_pipeline_args())
  assert not csv_example_gen.runs_in_memory(['--direct_running_mode=multi_processing'])
  on_dataflow = csv_example_gen.Executor(csv_example_gen.Executor.Context(
      beam_pipeline_args=dataflow.beam_pipeline_args()))
  assert on_dataflow.GetInputSourceToExamplePTransform() is csv_executor._CsvToExample  # pylint: disable=protected-access
