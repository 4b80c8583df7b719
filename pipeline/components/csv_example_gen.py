"""CsvExampleGen that streams on the local in-memory Beam runner.

TFX's CSV executor makes the same tf.Examples, but two of its steps hold the
whole split in the runner's memory when Beam runs in this process:

- It infers column types with a CombineGlobally that the conversion reads as
  a side input, so the runner keeps every parsed line until inference ends.
  Here the files are read twice instead: once to infer, once to convert.
- It puts a Reshuffle before every write. The in-memory runner groups the
  whole split by random keys, then emits it in input order: it costs memory
  and shuffles nothing. Here it becomes a pass-through.

Inference (TFX's own), conversion and the hash split are TFX's, so the
examples and their split are the same. Other runners (the `dataflow` profile)
run TFX's executor unchanged, as does a TFX version other than the one
compat/tfx.py (which holds the private TFX parts used here) was written for.

Before Beam starts, each file is read once more, streaming, to check what
TFX would only report without a place (a line that is not UTF-8, a line with
more or fewer cells than the header): the error names file:line:column.
"""

import csv
from typing import Any, Dict, Iterator, List

import apache_beam as beam
import tensorflow as tf
from apache_beam.options import pipeline_options
from apache_beam.pipeline import PTransformOverride
from google.protobuf import any_pb2
from google.protobuf import wrappers_pb2
from tfx.proto import example_gen_pb2
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx_bsl.coders import csv_decoder

from compat import tfx as compat_tfx


def runs_in_memory(beam_pipeline_args: List[str]) -> bool:
  """Whether Beam runs in this process: the DirectRunner, in_memory mode."""
  options = pipeline_options.PipelineOptions(beam_pipeline_args)
  runner = options.view_as(pipeline_options.StandardOptions).runner
  mode = options.view_as(pipeline_options.DirectOptions).direct_running_mode
  return runner in (None, 'DirectRunner', 'direct') and mode == 'in_memory'


class CsvFormatError(ValueError):
  """A CSV file TFX cannot read; the message says where and how to fix it."""


def _open_binary(path: str):
  # Python's own file object: iterating lines is several times faster than gfile's.
  return open(path, 'rb') if '://' not in path else fileio.open(path, 'rb')


class _NotUtf8(Exception):
  """Where a line stopped decoding: line, character and cell numbers (from 1)."""


def _utf8_lines(lines) -> Iterator[str]:
  for number, raw in enumerate(lines, 1):
    try:
      yield raw.decode('utf-8')
    except UnicodeDecodeError as e:
      before = raw[:e.start].decode('utf-8', errors='replace')
      cell = len(next(csv.reader([before]))) if before else 1
      raise _NotUtf8(number, len(before) + 1, cell, raw[e.start]) from None


def check_csv_file(path: str) -> None:
  """Every line decodes as UTF-8 and has one cell per header column.

  Streams the file (constant memory at any size). Blank lines are skipped as
  TFX skips them; a quoted cell may span lines, as TFX allows.
  """
  column_names = []
  with _open_binary(path) as f:
    reader = csv.reader(_utf8_lines(f))
    try:
      column_names = next(reader, [])
      for cells in reader:
        if cells and len(cells) != len(column_names):
          raise CsvFormatError(
              _cell_count_message(path, reader.line_num, cells, column_names))
    except _NotUtf8 as e:
      line, char, cell, byte = e.args
      name = f' ({column_names[cell - 1]})' if cell <= len(column_names) else ''
      raise CsvFormatError(
          f'{path}:{line}:{char}: byte 0x{byte:02x} in column {cell}{name} is not UTF-8 '
          f'(Latin-1 or Windows-1252 text?): re-save the file as UTF-8, '
          f'e.g. iconv -f latin1 -t utf-8') from None


def _cell_count_message(path: str, line: int, cells: List[str], column_names: List[str]) -> str:
  got, want = len(cells), len(column_names)
  # The column: one past the last cell's text (the line as csv wrote it, unquoted).
  end = len(','.join(cells)) + 1
  if got < want:
    return (f'{path}:{line}:{end}: {got} cells for the header\'s {want} columns, '
            f'"{column_names[got]}" and after are missing (a truncated line?): '
            f'complete or remove the line')
  return (f'{path}:{line}:{len(",".join(cells[:want])) + 1}: {got} cells for the header\'s '
          f'{want} columns, an extra cell after "{column_names[-1]}" (an unquoted comma?): '
          f'quote the cell or remove the extra one')


def _csv_files(pattern: str) -> List[str]:
  """The split's files, checked as TFX's executor checks them, and line by line."""
  csv_files = fileio.glob(pattern)
  if not csv_files:
    raise RuntimeError(f'Split pattern {pattern} does not match any files.')
  for path in csv_files:
    check_csv_file(path)
  header = io_utils.load_csv_column_names(csv_files[0])
  if any(io_utils.load_csv_column_names(f) != header for f in csv_files[1:]):
    raise RuntimeError(f'Files in same split {pattern} have different header.')
  return csv_files


def _parsed_lines(pipeline: beam.Pipeline, csv_files: List[str], label: str):
  """One read of the files: parsed CSV lines, header skipped."""
  return (pipeline
          | f'{label}CreateFilenames' >> beam.Create(csv_files)
          | f'{label}ReadFromText' >> beam.ParDo(compat_tfx.read_csv_records())
          | f'{label}ParseCSVLine' >> beam.ParDo(csv_decoder.ParseCSVLine(delimiter=','))
          | f'{label}ExtractParsedCSVLines' >> beam.Keys())


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _StreamingCsvToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                           split_pattern: str):
  """TFX's CSV to tf.Example, with inference and conversion on separate reads.

  Neither read is consumed twice, so the runner buffers only the inferred
  column types (the side input), not the lines.
  """
  pattern = f'{exec_properties[standard_component_specs.INPUT_BASE_KEY]}/{split_pattern}'
  csv_files = _csv_files(pattern)
  column_names = io_utils.load_csv_column_names(csv_files[0])
  column_infos = beam.pvalue.AsSingleton(
      _parsed_lines(pipeline, csv_files, 'Infer')
      | 'InferColumnTypes' >> beam.CombineGlobally(
          csv_decoder.ColumnTypeInferrer(column_names, skip_blank_lines=True)))
  return (_parsed_lines(pipeline, csv_files, '')
          | 'ToTFExample' >> beam.ParDo(compat_tfx.parsed_csv_to_example(), column_infos))


class _ReshuffleAsIdentity(PTransformOverride):
  """Replaces each Reshuffle with a pass-through (elements and order kept)."""

  def matches(self, applied_ptransform):
    return isinstance(applied_ptransform.transform, beam.transforms.Reshuffle)

  def get_replacement_transform_for_applied_ptransform(self, applied_ptransform):
    return beam.Map(lambda element: element)


class _InMemoryPipeline(beam.Pipeline):
  """A Beam pipeline whose Reshuffles do not buffer the data."""

  def run(self, test_runner_api='AUTO'):
    self.replace_all([_ReshuffleAsIdentity()])
    return super().run(test_runner_api)


class Executor(compat_tfx.PipelineChoosingBeamExecutor, csv_executor.Executor):
  """TFX's CsvExampleGen executor; streaming on the in-memory runner (and a
  TFX version compat/tfx.py knows)."""

  def _streams(self) -> bool:
    return (not compat_tfx.has_own_beam_pipeline(self) and
            runs_in_memory(compat_tfx.beam_pipeline_args(self)) and
            compat_tfx.streaming_csv_supported())

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    if self._streams():
      return _StreamingCsvToExample
    return super().GetInputSourceToExamplePTransform()

  def make_beam_pipeline(self):
    if self._streams():
      return _InMemoryPipeline(argv=compat_tfx.beam_pipeline_args(self))
    return super().make_beam_pipeline()


def hash_split_config(split_buckets: Dict[str, int]) -> example_gen_pb2.Output:
  """ExampleGen's output: one split per name, by hash of the example.

  TFX assigns each example to a bucket by a fingerprint of its serialized
  form, so the assignment depends only on the example and the bucket counts:
  the same data splits the same way on every run and every runner.
  """
  return example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
      example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=buckets)
      for name, buckets in split_buckets.items()]))


def csv_example_gen(input_base: str, input_config, output_config,
                    code_fingerprint: str) -> FileBasedExampleGen:
  """TFX's file-based ExampleGen with Executor, as node 'CsvExampleGen'.

  (tfx.components.CsvExampleGen takes no custom executor.) The executor
  ignores `code_fingerprint`; as part of the cache key it makes an edit of
  this module re-run the step.
  """
  fingerprint = any_pb2.Any()
  fingerprint.Pack(wrappers_pb2.StringValue(value=code_fingerprint))
  return FileBasedExampleGen(
      input_base=input_base, input_config=input_config, output_config=output_config,
      custom_config=example_gen_pb2.CustomConfig(custom_config=fingerprint),
      custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
  ).with_id('CsvExampleGen')
