"""python -m pipeline.schema_bootstrap: a starting schema for a new CSV that
the pipeline's data gate accepts, and one clear line for what cannot work."""

import csv
import io
import os
import pathlib
import subprocess
import sys

import pytest

from pipeline import schema_bootstrap
from tests.conftest import REPO, small_config

SKLEARN_IRIS = (pathlib.Path(sys.prefix) / 'lib' / 'python3.10' / 'site-packages' /
                'sklearn' / 'datasets' / 'data' / 'iris.csv')
IRIS_COLUMNS = ['sepal_length', 'sepal_width', 'petal_length', 'petal_width', 'species']


def _run_cli(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_USE_LEGACY_KERAS='1',
             TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, '-m', 'pipeline.schema_bootstrap', *args],
                        cwd=REPO, env=env, capture_output=True, text=True, check=False)


def _load_schema(path):
  import tensorflow_data_validation as tfdv
  return tfdv.load_schema_text(str(path))


def _error_line(capsys, *args) -> str:
  """main()'s exit 2 and its single stderr line."""
  assert schema_bootstrap.main(list(args)) == schema_bootstrap.EXIT_USAGE
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and 'Traceback' not in err, err
  return err


def test_a_data_root_without_csv_names_where_to_put_it(tmp_path, capsys):
  (tmp_path / 'span-1').mkdir()
  err = _error_line(capsys, '--data-root', str(tmp_path), '--output-root', str(tmp_path))
  assert 'holds no .csv file' in err and str(tmp_path / 'span-1') in err


def test_a_missing_data_root_is_one_line(tmp_path, capsys):
  err = _error_line(capsys, '--data-root', str(tmp_path / 'nowhere'))
  assert 'is not a folder' in err


@pytest.mark.parametrize('text, says', [('', 'is empty'),
                                        ('a,b,label\n', 'no data rows'),
                                        ('a,b,label\n1,2\n', '2 cells for the header')])
def test_an_empty_or_broken_csv_is_refused(tmp_path, capsys, text, says):
  (tmp_path / 'span-1').mkdir()
  (tmp_path / 'span-1' / 'data.csv').write_text(text)
  assert says in _error_line(capsys, '--data-root', str(tmp_path),
                             '--output-root', str(tmp_path / 'out'))


def test_an_unknown_label_names_the_columns(tmp_path, capsys):
  (tmp_path / 'data.csv').write_text('a,b,label\n1,2,0\n')
  err = _error_line(capsys, '--data-root', str(tmp_path), '--label', 'lable',
                    '--output-root', str(tmp_path / 'out'))
  assert "--label 'lable' is not a column" in err and 'a, b, label' in err


def test_an_unknown_training_only_column_is_refused(tmp_path, capsys):
  (tmp_path / 'data.csv').write_text('a,b,label\n1,2,0\n')
  err = _error_line(capsys, '--data-root', str(tmp_path), '--label', 'label',
                    '--training-only', 'b,refund', '--output-root', str(tmp_path / 'out'))
  assert "--training-only 'refund' is not a column" in err


def test_an_existing_out_file_is_kept_without_force(tmp_path, capsys):
  out = tmp_path / 'schema.pbtxt'
  out.write_text('# reviewed by hand\n')
  (tmp_path / 'data.csv').write_text('a,b,label\n1,2,0\n')
  err = _error_line(capsys, '--data-root', str(tmp_path), '--out', str(out))
  assert '--force' in err
  assert out.read_text() == '# reviewed by hand\n'


@pytest.mark.slow
def test_a_cli_error_is_one_line_on_stderr(tmp_path):
  # As a user runs it: a fresh process, whose TensorFlow and Google client
  # libraries would print their warnings first.
  (tmp_path / 'data.csv').write_text('a,b,label\n1,2,0\n')
  result = _run_cli('--data-root', str(tmp_path), '--label', 'lable')
  assert result.returncode == schema_bootstrap.EXIT_USAGE
  assert result.stderr.splitlines() == [
      "schema_bootstrap: error: --label 'lable' is not a column of the CSV (columns: a, b, "
      "label): name one of them"]


@pytest.mark.slow
@pytest.mark.example('taxi')  # The taxi sample's own columns, kinds and blanks.
def test_the_bootstrapped_schema_lets_the_pipeline_run_on_the_taxi_sample(
    tmp_path, sample_data_root):
  import local_runner
  result = _run_cli('--data-root', str(sample_data_root),
                    '--output-root', str(tmp_path / 'tfx_output'))
  assert result.returncode == 0, result.stderr
  path = tmp_path / 'tfx_output' / 'schema_bootstrap' / 'schema.pbtxt'
  assert str(path) in result.stdout
  text = path.read_text()
  assert text.startswith('# Starting schema inferred from the data: REVIEW IT')
  assert f'--data-root {sample_data_root}' in text and 'rows of' in text
  schema = _load_schema(path)
  assert list(schema.default_environment) == ['TRAINING', 'SERVING']
  by_name = {f.name: f for f in schema.feature}
  # With no flag, models/features.py's training-only column.
  assert [n for n, f in by_name.items() if 'SERVING' in f.not_in_environment] == ['tips']
  assert by_name['payment_type'].skew_comparator.infinity_norm.threshold == 0.1
  assert by_name['trip_start_hour'].int_domain.is_categorical
  assert by_name['trip_start_hour'].drift_comparator.infinity_norm.threshold == 0.1
  fare = by_name['fare'].drift_comparator.jensen_shannon_divergence
  assert fare.threshold == 0.015 and fare.source.type == fare.source.QUANTILES
  assert all(f.HasField('drift_comparator') for f in schema.feature)
  # Blank cells are empty value lists, which TFDV counts as present: a column
  # with blanks must not come out required (serving would demand it).
  assert by_name['fare'].presence.min_fraction == 1.0
  assert by_name['pickup_community_area'].presence.min_fraction < 1.0

  # The real pipeline on the same data, its data gate on this schema.
  config = small_config(tmp_path / 'run', sample_data_root, schema_file=str(path),
                        infra_validator='none')
  summary = local_runner.run(config, stream=io.StringIO())
  assert summary['succeeded'], summary['error']


def _write_iris_csv(path: pathlib.Path):
  """sklearn's iris.csv (its first line is counts, not names) with a header."""
  with open(SKLEARN_IRIS, newline='') as f:
    rows = list(csv.reader(f))[1:]
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    csv.writer(f).writerows([IRIS_COLUMNS] + rows)
  return len(rows)


@pytest.mark.slow
@pytest.mark.example('taxi')  # Taxi's training-only column is the default it reports missing.
@pytest.mark.skipif(not SKLEARN_IRIS.exists(), reason='scikit-learn is not installed')
def test_a_csv_that_is_not_the_taxi_data_gets_its_own_schema(tmp_path):
  rows = _write_iris_csv(tmp_path / 'iris' / 'span-1' / 'iris.csv')
  out = tmp_path / 'schema' / 'schema.pbtxt'
  out.parent.mkdir()
  out.write_text('# an older draft\n')
  result = _run_cli('--data-root', str(tmp_path / 'iris'), '--label', 'species',
                    '--out', str(out), '--force', '--output-root', str(tmp_path / 'tfx_output'))
  assert result.returncode == 0, result.stderr
  text = out.read_text()
  assert f'From {rows} rows of' in text
  # The taxi default is not a column here: said, and not in the schema.
  assert 'tips (the training-only default of models/features.py) is not a column' in text
  schema = _load_schema(out)
  by_name = {f.name: f for f in schema.feature}
  assert sorted(by_name) == sorted(IRIS_COLUMNS)
  assert [n for n, f in by_name.items() if 'SERVING' in f.not_in_environment] == ['species']
  assert not by_name['species'].HasField('skew_comparator')
  length = by_name['petal_length'].skew_comparator.jensen_shannon_divergence
  assert length.threshold == 0.015
