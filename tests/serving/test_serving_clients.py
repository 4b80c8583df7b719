"""The taxi clients and the infra check against real local servers."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

import tiny_models
from conftest import start_server
from serving import client as serving_client
from serving import infra_check
from serving.infra_check import check_model

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
    out = subprocess.run([sys.executable, '-m', 'serving.client', *target, '--csv', str(csv_file)],
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
