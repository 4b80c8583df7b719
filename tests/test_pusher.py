"""The pipeline's Pusher next to version directories written by other tools."""

import json
import os

from tfx.types import standard_artifacts

from pipeline.components.pusher import _AtomicPusherExecutor, version_dirs


def _saved_model(path, fingerprint: bytes):
  os.makedirs(os.path.join(path, 'variables'), exist_ok=True)
  for name, data in (('saved_model.pb', b'graph'), ('fingerprint.pb', fingerprint)):
    with open(os.path.join(path, name), 'wb') as f:
      f.write(data)


def _push(tmp_path, fingerprint: bytes, serving_dir):
  """Runs the Pusher's executor on a blessed model; returns its output."""
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / 'model')
  _saved_model(os.path.join(model.uri, 'Format-Serving'), fingerprint)
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / 'blessing')
  blessing.set_int_custom_property('blessed', 1)
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(tmp_path / 'pushed')
  os.makedirs(pushed.uri, exist_ok=True)
  destination = json.dumps({'filesystem': {'base_directory': str(serving_dir)}})
  _AtomicPusherExecutor().Do({'model': [model], 'model_blessing': [blessing]},
                             {'pushed_model': [pushed]}, {'push_destination': destination})
  return pushed


def test_a_zero_padded_version_holding_the_model_is_reused(tmp_path):
  serving = tmp_path / 'serving'
  _saved_model(str(serving / '00000123'), b'same model')
  pushed = _push(tmp_path, b'same model', serving)
  assert pushed.get_string_custom_property('pushed_version') == '123'
  assert pushed.get_string_custom_property('pushed_destination') == str(serving / '00000123')
  assert pushed.get_int_custom_property('reused_version') == 1
  assert version_dirs(str(serving)) == [123]


def test_a_new_model_goes_above_a_zero_padded_version(tmp_path):
  serving = tmp_path / 'serving'
  _saved_model(str(serving / '99999999999'), b'old model')
  pushed = _push(tmp_path, b'new model', serving)
  assert pushed.get_string_custom_property('pushed_version') == '100000000000'
  assert version_dirs(str(serving)) == [99999999999, 100000000000]
  assert pushed.get_int_custom_property('reused_version') == 0


def test_a_push_to_a_bucket_is_recorded_and_carries_its_model_card(tmp_path):
  """A gs:// serving dir has no rename: saved_model.pb goes last, after the
  card. TensorFlow's in-memory ram:// filesystem stands in for the bucket."""
  from tfx.dsl.io import fileio
  from pipeline import audit
  serving = f'ram://{tmp_path.name}/serving_model/taxi_big_tipper'
  pushed = _push(tmp_path, b'a model', serving)
  version = pushed.get_string_custom_property('pushed_version')
  assert version_dirs(serving) == [int(version)]
  for name in ('saved_model.pb', 'fingerprint.pb', 'assets.extra/model_card.html'):
    assert fileio.exists(f'{serving}/{version}/{name}'), name
  records = audit.history(f'ram://{tmp_path.name}/serving_model/audit')
  assert [r['status'] for r in records] == ['attempted', 'done']
  assert records[-1]['model_card'] == f'{serving}/{version}/assets.extra/model_card.html'
  assert pushed.get_string_custom_property('audit_record') == records[-1]['path']


def test_a_bucket_push_failing_half_way_leaves_no_version_and_a_failed_record(tmp_path,
                                                                             monkeypatch):
  import pytest
  from tfx.dsl.io import fileio
  from pipeline import audit
  from pipeline.components import pusher
  serving = f'ram://{tmp_path.name}/serving_model/taxi_big_tipper'

  def lost_connection(source, target, *args, **kwargs):
    raise OSError(f'connection reset while writing {target}')

  monkeypatch.setattr(pusher.io_utils, 'copy_file', lost_connection)  # saved_model.pb, last.
  with pytest.raises(OSError):
    _push(tmp_path, b'a model', serving)
  monkeypatch.undo()
  assert version_dirs(serving) == []  # TF Serving sees no folder without its model.
  records = audit.history(f'ram://{tmp_path.name}/serving_model/audit')
  assert [r['status'] for r in records] == ['attempted', 'failed']
  assert 'connection reset' in records[-1]['error']
  assert records[-1]['left_behind'] == {'version_dir_exists': False}
  assert not fileio.exists(f'{serving}/{records[0]["version"]}')
