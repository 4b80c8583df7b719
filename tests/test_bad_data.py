"""Bad data stops the run with a clear message, and pushes nothing."""

import csv
import hashlib
import io
import pathlib
import re

import pytest

import local_runner
from models import features
from pipeline import configs
from tests.conftest import a_feature, sample_rows, small_config, write_csv

# A number every row has (taxi's fare, iris's sepal_length, diabetes's bmi),
# and a column whose text a person types (taxi's company; else that number).
REQUIRED_FLOAT = a_feature('float', required=True)
TEXT = next((n for n, f in features.model_features().items() if f.dtype == 'string'),
            REQUIRED_FLOAT)

# Each test runs the real pipeline (it stops at ExampleGen or the validator).
pytestmark = pytest.mark.slow


def _tree_digest(root: pathlib.Path) -> str:
  digest = hashlib.sha256()
  for path in sorted(root.rglob('*')):
    digest.update(str(path.relative_to(root)).encode())
    if path.is_file():
      digest.update(path.read_bytes())
  return digest.hexdigest()


def _string_in_numeric_column(header, rows):
  rows[5][header.index(REQUIRED_FLOAT)] = 'twelve'
  return header, rows


def _missing_required_column(header, rows):
  drop = header.index(REQUIRED_FLOAT)
  return ([c for i, c in enumerate(header) if i != drop],
          [[c for i, c in enumerate(r) if i != drop] for r in rows])


def _row_with_too_few_cells(header, rows):
  rows[7] = rows[7][:len(header) // 2]
  return header, rows


def _blank_in_30_percent_of_rows(header, rows):
  column = header.index(REQUIRED_FLOAT)
  for i, row in enumerate(rows):
    if i % 10 < 3:
      row[column] = ''
  return header, rows


CASES = {
    'blank cells in a required column': (_blank_in_30_percent_of_rows,
                                         rf'{REQUIRED_FLOAT}: (29|30|31) % of rows have no value'),
    'string in a numeric column': (_string_in_numeric_column,
                                   f'{REQUIRED_FLOAT}: Expected data of type: FLOAT'),
    'missing required column': (_missing_required_column,
                                f'{REQUIRED_FLOAT}: Column is completely missing'),
    # The data file's line 9 (the header is line 1): the file, line and column.
    'row with too few cells': (_row_with_too_few_cells,
                               'data.csv:9:'),
}


@pytest.fixture
def existing_push(tmp_path):
  """A serving dir that already holds a model, which must survive."""
  version = tmp_path / 'serving_model' / configs.load(environ={}).model_name / '1'
  (version / 'variables').mkdir(parents=True)
  (version / 'saved_model.pb').write_bytes(b'a model served before this run')
  (version / 'variables' / 'variables.index').write_bytes(b'its weights')
  return tmp_path / 'serving_model'


def _run_on(tmp_path, serving, header, rows, csv_bytes=None):
  data_root = tmp_path / 'data'
  path = data_root / 'span-1' / 'data.csv'
  if header is None:
    path.parent.mkdir(parents=True)
    path.write_bytes(csv_bytes or b'')
  else:
    write_csv(path, header, rows)
  config = small_config(tmp_path, data_root, serving_dir=str(serving))
  return local_runner.run(config, stream=io.StringIO())


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_csv_stops_the_run_and_keeps_the_served_model(tmp_path, existing_push, case):
  corrupt, message = CASES[case]
  before = _tree_digest(existing_push)
  summary = _run_on(tmp_path, existing_push, *corrupt(*sample_rows()))
  assert not summary['succeeded']
  assert re.search(message, summary['error']), summary['error']
  assert not summary['pushed']
  assert local_runner.exit_code(summary) == local_runner.EXIT_FAILED
  assert _tree_digest(existing_push) == before
  ran = {c['component'] for c in summary['components']}
  assert 'Transform' not in ran and 'Pusher' not in ran


def _csv_bytes(rows=40) -> bytes:
  header, all_rows = sample_rows()
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator='\n').writerows([header] + all_rows[:rows])
  return buffer.getvalue().encode()


def _assert_stopped_at_example_gen(summary, existing_push, before):
  assert not summary['succeeded'] and not summary['pushed']
  assert local_runner.exit_code(summary) == local_runner.EXIT_FAILED
  assert _tree_digest(existing_push) == before
  assert {c['component'] for c in summary['components']}.isdisjoint({'Transform', 'Pusher'})


def test_a_truncated_last_line_names_file_line_and_column(tmp_path, existing_push):
  # Before: 'Columns do not match specified csv headers: [...] -> [b'8', ...]'.
  before = _tree_digest(existing_push)
  data = _csv_bytes()
  start = data.rstrip(b'\n').rindex(b'\n') + 1
  # Line 41 cut after 59 characters, or before its last cell if shorter (iris).
  cut = min(59, data.rstrip(b'\n').rindex(b',') - start)
  data = data[:start + cut]
  summary = _run_on(tmp_path, existing_push, None, None, csv_bytes=data)
  _assert_stopped_at_example_gen(summary, existing_push, before)
  path = tmp_path / 'data' / 'span-1' / 'data.csv'
  assert f'{path}:41:{cut + 1}: ' in summary['error']
  assert 'are missing (a truncated line?)' in summary['error']


def test_a_latin1_byte_names_file_line_and_column(tmp_path, existing_push):
  # Before: "'utf-8 [while running 'InputToRecord/InferReadFromText']' codec can't decode".
  before = _tree_digest(existing_push)
  lines = _csv_bytes().split(b'\n')
  header = lines[0].decode().split(',')
  cells = lines[12].decode().split(',')
  cells[header.index(TEXT)] = 'Taxi Affili\xe9'
  lines[12] = ','.join(cells).encode('latin-1')
  summary = _run_on(tmp_path, existing_push, None, None, csv_bytes=b'\n'.join(lines))
  _assert_stopped_at_example_gen(summary, existing_push, before)
  column = len(','.join(cells[:header.index(TEXT)] + [''])) + len('Taxi Affili') + 1
  path = tmp_path / 'data' / 'span-1' / 'data.csv'
  assert f'{path}:13:{column}: byte 0xe9 in column {header.index(TEXT) + 1} ' \
         f'({TEXT}) is not UTF-8' in summary['error']


def test_empty_csv_is_an_anomaly(tmp_path, existing_push):
  before = _tree_digest(existing_push)
  summary = _run_on(tmp_path, existing_push, None, None)
  assert not summary['succeeded']
  assert 'no examples' in summary['error']
  assert _tree_digest(existing_push) == before
