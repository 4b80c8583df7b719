"""Canary rollout: labels in the serving config, and the local server (a
subprocess) routing stable/canary clients to the labelled versions."""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import shutil
import sys
import time

import pytest

from pipeline import monitoring, rollout
from tests import conftest
from tests.test_monitoring import MODEL, Server, model_server_config, sample_rows

sys.path.insert(0, str(conftest.REPO / 'tests' / 'serving'))
import tiny_models  # noqa: E402  A taxi-signature model that predicts differently.


def test_labels_move_as_canary_promote_and_rollback_say(tmp_path):
  path = str(tmp_path / 'models.config')
  rollout.write_config(model_server_config('/models/taxi', tmp_path / 'logs'), path)
  assert rollout.canary(path, MODEL, 100) == {'stable': 100, 'canary': 100}
  assert rollout.canary(path, MODEL, 200) == {'stable': 100, 'canary': 200}
  config = rollout.read_config(path)
  assert list(rollout.model_config(config, MODEL).model_version_policy.specific.versions) == \
      [100, 200]  # Both stay loaded, whatever else is pushed.
  assert rollout.rollback(path, MODEL) == {'stable': 100, 'canary': 100}
  rollout.canary(path, MODEL, 300)
  passed = {'labels': {'stable': 100, 'canary': 300}, 'predictions_by_version': {
      '300': {'shift': {'anomalous': False, 'value': 0.01, 'threshold': 0.1}}}}
  assert rollout.promote(path, MODEL, passed) == {'stable': 300, 'canary': 300}
  # The logging config survives every rewrite.
  assert rollout.model_config(rollout.read_config(path), MODEL).logging_config \
      .sampling_config.sampling_rate == 1.0


def test_promote_refuses_without_a_passing_comparison(tmp_path):
  path = str(tmp_path / 'models.config')
  rollout.write_config(model_server_config('/models/taxi', tmp_path / 'logs'), path)
  rollout.canary(path, MODEL, 1)
  rollout.canary(path, MODEL, 2)
  shifted = {'labels': {'stable': 1, 'canary': 2}, 'predictions_by_version': {
      '2': {'shift': {'anomalous': True, 'value': 0.4, 'threshold': 0.1}}}}
  for result in (None, shifted, {'labels': {}, 'predictions_by_version': {}}):
    with pytest.raises(rollout.RolloutError):
      rollout.promote(path, MODEL, result)
  assert rollout.labels(rollout.read_config(path), MODEL) == {'stable': 1, 'canary': 2}
  assert rollout.main(['--config', path, 'promote', MODEL, '--force']) == 0
  assert rollout.labels(rollout.read_config(path), MODEL) == {'stable': 2, 'canary': 2}


def _served_version(server, label):
  """The version a client addressing label reaches (model status by label)."""
  from serving.client import RestClient
  client = RestClient(server.rest, MODEL, label=label)
  try:
    return int(client.status()['model_version_status'][0]['version'])
  finally:
    client.close()


def _predictions(server, rows, **address):
  from serving.client import RestClient
  client = RestClient(server.rest, MODEL, **address)
  try:
    return [p['probability'] for p in client.predict(rows)]
  finally:
    client.close()


def _split_traffic(server, rows, requests=12, batch=50):
  from serving.client import RestClient
  split = rollout.TrafficSplit(lambda label: RestClient(server.rest, MODEL, label=label),
                               {'stable': 0.5, 'canary': 0.5}, seed=7)
  try:
    for i in range(requests):
      split.predict(rows[i * batch:(i + 1) * batch])
  finally:
    split.close()
  return split.sent


def test_canary_rollout_on_a_served_model(pipeline_run, pushed_version_dir, tmp_path):
  config, _ = pipeline_run
  stable = int(os.path.basename(pushed_version_dir))
  base = tmp_path / 'models'
  shutil.copytree(pushed_version_dir, base / str(stable))
  tiny_models.save_taxi_like_model(str(base / str(stable + 1)))  # Predicts differently.
  shutil.copytree(pushed_version_dir, base / str(stable + 2))  # Predicts the same.
  path = str(tmp_path / 'models.config')
  log_prefix = tmp_path / 'logs' / 'requests'
  rollout.write_config(model_server_config(base, log_prefix, versions=[stable]), path)
  server = Server(path, tmp_path)
  rows = sample_rows()[:600]

  def loaded(version):
    rollout.reload(server.grpc, path)
    server.wait_serving(version)

  def monitor():
    result, _ = monitoring.run(monitoring.MonitoringInputs(
        logs=str(log_prefix), metadata_path=config.metadata_path, model_name=MODEL,
        serving_config=path, min_window_examples=50))
    return result

  try:
    server.wait_serving(stable)
    rollout.canary(path, MODEL, stable, loaded)
    rollout.reload(server.grpc, path)
    assert _served_version(server, 'stable') == _served_version(server, 'canary') == stable

    # A canary that predicts differently: clients reach it, monitoring sees the shift.
    assert rollout.canary(path, MODEL, stable + 1, loaded) == {
        'stable': stable, 'canary': stable + 1}
    rollout.reload(server.grpc, path)
    assert _served_version(server, 'stable') == stable
    assert _served_version(server, 'canary') == stable + 1
    assert _predictions(server, rows[:50], label='canary') == \
        _predictions(server, rows[:50], version=stable + 1)
    assert _predictions(server, rows[:50], label='stable') != \
        _predictions(server, rows[:50], label='canary')
    sent = _split_traffic(server, rows)
    assert sent['stable'] > 0 and sent['canary'] > 0
    result = monitor()
    canary_entry = result['predictions_by_version'][str(stable + 1)]
    assert canary_entry['compared_to'] == stable and canary_entry['shift']['anomalous']
    assert result['findings']['prediction_shift'] == [str(stable + 1)]
    with pytest.raises(rollout.RolloutError):
      rollout.promote(path, MODEL, result)

    # Rollback, picked up by the server's own config file polling.
    assert rollout.rollback(path, MODEL) == {'stable': stable, 'canary': stable}
    for _ in range(120):
      if _served_version(server, 'canary') == stable:
        break
      time.sleep(0.5)
    assert _served_version(server, 'canary') == stable

    # A canary that predicts like stable passes the comparison and is promoted.
    rollout.canary(path, MODEL, stable + 2, loaded)
    rollout.reload(server.grpc, path)
    _split_traffic(server, rows)
    result = monitor()
    assert not result['predictions_by_version'][str(stable + 2)]['shift']['anomalous']
    assert rollout.canary_passed(result)
    assert rollout.promote(path, MODEL, result) == {'stable': stable + 2, 'canary': stable + 2}
    rollout.reload(server.grpc, path)
    assert _served_version(server, 'stable') == stable + 2
  finally:
    server.close()
