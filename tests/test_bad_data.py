"""Bad data stops the run with a clear message, and pushes nothing."""

import hashlib
import io
import pathlib

import pytest

import local_runner
from tests.conftest import sample_rows, small_config, write_csv


def _tree_digest(root: pathlib.Path) -> str:
  digest = hashlib.sha256()
  for path in sorted(root.rglob('*')):
    digest.update(str(path.relative_to(root)).encode())
    if path.is_file():
      digest.update(path.read_bytes())
  return digest.hexdigest()


def _string_in_numeric_column(header, rows):
  rows[5][header.index('fare')] = 'twelve'
  return header, rows


def _missing_required_column(header, rows):
  drop = header.index('fare')
  return ([c for i, c in enumerate(header) if i != drop],
          [[c for i, c in enumerate(r) if i != drop] for r in rows])


def _row_with_too_few_cells(header, rows):
  rows[7] = rows[7][:5]
  return header, rows


CASES = {
    'string in a numeric column': (_string_in_numeric_column, 'fare: Expected data of type: FLOAT'),
    'missing required column': (_missing_required_column, 'fare: Column is completely missing'),
    'row with too few cells': (_row_with_too_few_cells, 'Columns do not match'),
}


@pytest.fixture
def existing_push(tmp_path, pushed_version_dir):
  """A serving dir that already holds a model, which must survive."""
  import shutil
  serving = tmp_path / 'serving_model'
  shutil.copytree(pushed_version_dir, serving / 'taxi_big_tipper' / '1')
  return serving


def _run_on(tmp_path, serving, header, rows):
  data_root = tmp_path / 'data'
  if header is None:
    (data_root / 'span-1').mkdir(parents=True)
    (data_root / 'span-1' / 'data.csv').write_text('')
  else:
    write_csv(data_root / 'span-1' / 'data.csv', header, rows)
  config = small_config(tmp_path, data_root, serving_dir=str(serving))
  return local_runner.run(config, stream=io.StringIO())


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_csv_stops_the_run_and_keeps_the_served_model(tmp_path, existing_push, case):
  corrupt, message = CASES[case]
  before = _tree_digest(existing_push)
  summary = _run_on(tmp_path, existing_push, *corrupt(*sample_rows()))
  assert not summary['succeeded']
  assert message in summary['error']
  assert not summary['pushed']
  assert local_runner.exit_code(summary) == local_runner.EXIT_FAILED
  assert _tree_digest(existing_push) == before
  ran = {c['component'] for c in summary['components']}
  assert 'Transform' not in ran and 'Pusher' not in ran


def test_empty_csv_is_an_anomaly(tmp_path, existing_push):
  before = _tree_digest(existing_push)
  summary = _run_on(tmp_path, existing_push, None, None)
  assert not summary['succeeded']
  assert 'no examples' in summary['error']
  assert _tree_digest(existing_push) == before
