"""The clients and the infra check against real local servers, on the taxi
example's rows and a stand-in for its model (tests/serving/tiny_models.py):
about the taxi example's columns and model on purpose."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import portpicker
import pytest

import tiny_models
from conftest import start_server
from client import predict as serving_client
from pipeline.components import infra_check
from pipeline.components.infra_check import check_model

pytestmark = pytest.mark.example('taxi')

CSV = """pickup_community_area,fare,trip_start_month,trip_start_hour,trip_start_day,trip_start_timestamp,pickup_latitude,pickup_longitude,dropoff_latitude,dropoff_longitude,trip_miles,pickup_census_tract,dropoff_census_tract,payment_type,company,trip_seconds,dropoff_community_area,tips
,12.45,5,19,6,1400269500,,,,,0.0,,,Credit Card,Chicago Elite Cab Corp.,0,,0.0
8,3.25,3,19,5,1362683700,41.89,-87.63,41.9,-87.62,10.0,,,Cash,,300,8,0
"""
# sigmoid(0.2 * fare - 0.3 * miles + credit card) of the taxi-like model.
EXPECTED = [{'probability': pytest.approx(1 / (1 + math.exp(-(0.2 * 12.45 + 1))), abs=1e-5),
             'class': 1},
            {'probability': pytest.approx(1 / (1 + math.exp(-(0.2 * 3.25 - 3.0))), abs=1e-5),
             'class': 0}]


@pytest.fixture(scope='module')
def taxi_model(tmp_path_factory):
  return tiny_models.save_taxi_like_model(str(tmp_path_factory.mktemp('taxi') / 'export'))


@pytest.fixture(scope='module')
def taxi_server(tmp_path_factory, taxi_model):
  base = tmp_path_factory.mktemp('serving') / 'taxi_big_tipper'
  shutil.copytree(taxi_model, base / '1700000000')
  server = start_server(base_path=str(base), model_name='taxi_big_tipper')
  yield server
  server.close()


def rows():
  return list(serving_client.rows_from_csv(CSV.splitlines()))


def test_rows_are_typed_by_the_feature_definitions():
  first, second = rows()
  assert first['fare'] == 12.45 and first['trip_start_month'] == 5
  assert 'pickup_latitude' not in first and 'tips' not in first
  assert second['payment_type'] == 'Cash' and second['trip_seconds'] == 300


@pytest.mark.parametrize('signature', ['predict_raw', 'serving_default', 'classification'])
def test_rest_client(taxi_server, signature):
  rest = serving_client.RestClient(taxi_server.rest, timeout_s=10)
  call = rest.classify if signature == 'classification' else rest.predict
  assert call(rows(), signature) == EXPECTED


@pytest.mark.parametrize('signature', ['predict_raw', 'serving_default', 'classification'])
def test_grpc_client(taxi_server, signature):
  stub = serving_client.GrpcClient(taxi_server.grpc_target, timeout_s=10)
  call = stub.classify if signature == 'classification' else stub.predict
  assert call(rows(), signature) == EXPECTED
  stub.close()


def test_client_errors_are_clear(taxi_server):
  rest = serving_client.RestClient(taxi_server.rest, model_name='nope', retries=0)
  with pytest.raises(serving_client.ServingClientError, match='HTTP 404'):
    rest.predict(rows())
  unreachable = serving_client.GrpcClient('127.0.0.1:1', retries=1, backoff_s=0.01, timeout_s=1)
  with pytest.raises(serving_client.ServingClientError, match='UNAVAILABLE'):
    unreachable.predict(rows())


def test_cli_prints_json_lines(taxi_server, tmp_path):
  csv_file = tmp_path / 'rows.csv'
  csv_file.write_text(CSV)
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1')
  for target in (['--rest', taxi_server.rest], ['--grpc', taxi_server.grpc_target]):
    out = subprocess.run([sys.executable, '-m', 'client.predict', *target, '--csv', str(csv_file)],
                         capture_output=True, text=True, env=env, check=True, timeout=120).stdout
    assert [json.loads(line) for line in out.splitlines()] == EXPECTED


def test_infra_check_blesses_a_serving_model(taxi_model):
  examples = [serving_client.to_example(r) for r in rows()]
  result = check_model(taxi_model, examples, timeout_s=120)
  assert result.ok, result.details
  assert 'gRPC Classify' in result.details and 'predict_raw' in result.details


def test_infra_check_refuses_a_broken_model(tmp_path, taxi_model):
  broken = tmp_path / 'broken'
  shutil.copytree(taxi_model, broken)
  shutil.rmtree(broken / 'variables')
  (broken / 'saved_model.pb').write_bytes(b'\x08\x01garbage')
  result = check_model(str(broken), [serving_client.to_example(rows()[0])], timeout_s=120)
  assert not result.ok
  assert 'failed' in result.details or 'exited' in result.details


def test_infra_check_uses_the_standby_server_once(taxi_model):
  infra_check.start_standby()
  standby = infra_check._standby  # pylint: disable=protected-access
  result = check_model(taxi_model, [serving_client.to_example(rows()[0])], timeout_s=120)
  assert result.ok, result.details
  # The check served the candidate from the standby, then stopped it for good.
  assert standby.process.returncode is not None
  assert not os.path.exists(standby.workdir)
  assert infra_check._standby is None  # pylint: disable=protected-access


def test_an_unused_standby_server_is_stopped():
  infra_check.start_standby()
  standby = infra_check._standby  # pylint: disable=protected-access
  infra_check.stop_standby()
  assert standby.process.returncode is not None
  assert not os.path.exists(standby.workdir)


def test_infra_check_replaces_a_standby_that_died(taxi_model):
  infra_check.start_standby()
  dead = infra_check._standby.process  # pylint: disable=protected-access
  dead.kill()
  dead.wait()
  result = check_model(taxi_model, [serving_client.to_example(rows()[0])], timeout_s=120)
  assert result.ok, result.details


# ---- No silent fill: required features are never defaulted by the client ---------

def test_a_row_without_a_required_feature_is_refused_before_sending():
  # An unreachable server: a request sent would fail with a ServingClientError.
  rest = serving_client.RestClient('http://127.0.0.1:1', retries=0)
  partial = [rows()[0], {'fare': 3.0, 'trip_miles': 1.0, 'payment_type': 'Cash'}]
  for signature in ('predict_raw', 'serving_default'):
    with pytest.raises(serving_client.RowError,
                       match='^row 1: missing required features trip_start_month,'
                             ' trip_start_hour, trip_start_day, trip_start_timestamp$'):
      rest.predict(partial, signature)
  with pytest.raises(serving_client.RowError, match='^row 1: missing required feature'):
    rest.classify(partial)
  grpc_client = serving_client.GrpcClient('127.0.0.1:1', retries=0)
  with pytest.raises(serving_client.RowError, match='^row 1: missing required feature'):
    grpc_client.predict(partial, 'predict_raw')
  grpc_client.close()


def test_optional_features_are_still_filled_with_their_defaults():
  only_required = {k: v for k, v in rows()[0].items()
                   if serving_client.features.RAW_FEATURES[k].required}
  filled = serving_client._filled(serving_client.typed_row(only_required))
  assert filled['company'] == '' and filled['pickup_latitude'] == 0.0
  assert filled['fare'] == 12.45


def test_csv_and_json_rows_name_the_line_column_and_value_of_a_bad_cell():
  bad = CSV.replace(',3.25,', ',three,')
  with pytest.raises(serving_client.RowError,
                     match=r"^rows\.csv line 3: column fare: 'three' is not a number$"):
    list(serving_client.rows_from_csv(bad.splitlines(), source='rows.csv'))
  good = json.dumps(rows()[0])
  with pytest.raises(serving_client.RowError, match=r'^in line 3: missing required'):
    list(serving_client.rows_from_jsonl([good, '', '{"fare": 1.0}'], source='in'))
  with pytest.raises(serving_client.RowError,
                     match=r'^in line 2: column fare: True is not a number$'):
    list(serving_client.rows_from_jsonl([good, good.replace('12.45', 'true')], source='in'))


# ---- The CLI: user errors are one line on stderr and a non-zero exit -------------

def run_cli(*args, stdin=None):
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1')
  return subprocess.run([sys.executable, '-m', 'client.predict', *args], input=stdin,
                        capture_output=True, text=True, env=env, timeout=120)


def assert_one_error_line(result, code, pattern):
  assert result.returncode == code, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert re.search(pattern, last), result.stderr


@pytest.mark.slow
def test_cli_help_shows_defaults_exit_codes_and_environment():
  result = run_cli('--help')
  assert result.returncode == 0
  assert '(default: 64)' in result.stdout and '(default: taxi_big_tipper)' in result.stdout
  assert 'exit status:' in result.stdout and '141' in result.stdout
  assert 'HTTP_PROXY' in result.stdout and 'grpc_proxy' in result.stdout


@pytest.mark.slow
def test_cli_bad_cell_missing_file_and_missing_feature(tmp_path):
  csv_file = tmp_path / 'rows.csv'
  csv_file.write_text(CSV.replace(',3.25,', ',three,'))
  unused = 'http://127.0.0.1:1'  # Input errors are found before anything is sent.
  assert_one_error_line(run_cli('--rest', unused, '--csv', str(csv_file)), 2,
                        r"^error: .*rows\.csv line 3: column fare: 'three' is not a number$")
  assert_one_error_line(run_cli('--rest', unused, '--csv', str(tmp_path / 'nope.csv')), 2,
                        r'^error: cannot read .*nope\.csv: No such file or directory$')
  assert_one_error_line(run_cli('--rest', unused, '--json', '{"fare": 2.5}'), 2,
                        r'^error: --json: missing required features trip_start_month,')
  assert_one_error_line(run_cli('--rest', unused, '--jsonl', '-', stdin='\n'), 2,
                        r'^error: no rows in stdin$')
  assert_one_error_line(run_cli('--rest', 'localhost:8501', '--json', '{}'), 2,
                        r"error: argument --rest: 'localhost:8501' is not an http")


@pytest.mark.slow
def test_cli_unreachable_server_after_retries():
  port = portpicker.pick_unused_port()
  row = json.dumps(rows()[0])
  assert_one_error_line(
      run_cli('--rest', f'http://127.0.0.1:{port}', '--retries', '1', '--json', row), 1,
      r'^error: rows 1-1: cannot reach http://127\.0\.0\.1:\d+/v1/models/taxi_big_tipper:predict'
      r' \(\[Errno 111\] Connection refused\), in 2 attempts$')
  assert_one_error_line(
      run_cli('--grpc', f'127.0.0.1:{port}', '--retries', '1', '--timeout_s', '2', '--json', row),
      1, r'^error: rows 1-1: UNAVAILABLE: .* \(in 2 attempts\)$')


@pytest.mark.slow
def test_cli_server_refusal_is_one_line(taxi_server):
  result = run_cli('--rest', taxi_server.rest, '--model_name', 'nope', '--retries', '0',
                   '--json', json.dumps(rows()[0]))
  assert_one_error_line(result, 1, r'^error: rows 1-1: HTTP 404: ')


@pytest.mark.slow
def test_cli_into_a_closed_pipe(taxi_server, tmp_path):
  csv_file = tmp_path / 'rows.csv'
  header, *body = CSV.splitlines()
  csv_file.write_text('\n'.join([header] + body * 500) + '\n')
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1')
  process = subprocess.Popen(
      [sys.executable, '-m', 'client.predict', '--rest', taxi_server.rest, '--csv', str(csv_file)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  process.stdout.close()  # Like `| head` exiting: nobody reads the predictions.
  stderr = process.stderr.read()
  process.stderr.close()
  process.wait(timeout=120)
  result = subprocess.CompletedProcess(process.args, process.returncode, '', stderr)
  assert_one_error_line(result, 141, r'^error: standard output closed after \d+ predictions$')
