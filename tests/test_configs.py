"""Config values that cannot work are refused at load, naming cause and fix."""

import json
import pathlib
import re

import pytest

import examples
from models import features, hyperparameters
from pipeline import configs
from tests.conftest import a_cross, example_hyperparameters, ignored_feature

REPO = pathlib.Path(configs.REPO_ROOT)
MODEL_FEATURES = list(features.model_features())


def _load_error(overrides=None, environ=None) -> str:
  with pytest.raises(configs.ConfigError) as raised:
    configs.load(overrides, environ=environ or {})
  return str(raised.value)


def test_the_defaults_load():
  config = configs.load(environ={})
  assert config.infra_validator == 'local' and config.example == examples.selected_name()
  # The example's own defaults replace the pipeline's.
  for field, value in examples.selected().CONFIG_DEFAULTS.items():
    assert getattr(config, field) == value, field


@pytest.mark.parametrize('field, value', [('infra_validator', 'kubernets'),
                                          ('beam_profile', 'flink')])
def test_an_unknown_choice_is_refused(field, value):
  # Before: any infra_validator but local/none/docker meant Kubernetes.
  message = _load_error(environ={f'TAXI_{field.upper()}': value})
  assert repr(value) in message and f'TAXI_{field.upper()}' in message
  for allowed in configs.CHOICES[field]:
    assert allowed in message


@pytest.mark.parametrize('field', sorted(configs.CHOICES))
def test_an_unknown_choice_is_refused_as_an_override_too(field):
  assert field in _load_error({field: 'nonsense'})


def test_a_misspelt_boolean_is_refused():
  # Before: TAXI_TUNE=flase silently meant False.
  message = _load_error(environ={'TAXI_TUNE': 'flase'})
  assert "TAXI_TUNE='flase' is not a boolean" in message


@pytest.mark.parametrize('text, expected', [('true', True), ('ON', True), ('1', True),
                                            ('false', False), ('no', False), ('0', False)])
def test_booleans_read_as_words(text, expected):
  assert configs.load(environ={'TAXI_TUNE': text}).tune is expected


def test_a_number_that_is_not_one_names_the_variable():
  assert "TAXI_TRAIN_STEPS='3oo' is not an integer" in _load_error(
      environ={'TAXI_TRAIN_STEPS': '3oo'})


def test_an_unknown_environment_variable_names_the_closest_field():
  message = _load_error(environ={'TAXI_TRAIN_STEP': '500'})
  assert 'TAXI_TRAIN_STEP' in message and 'did you mean TAXI_TRAIN_STEPS?' in message


def test_an_unknown_override_names_the_closest_field():
  assert 'did you mean train_steps?' in _load_error({'train_step': 5})


def test_a_slice_on_no_model_feature_is_refused():
  # Before: TFMA silently computed no slice for it.
  not_read = ignored_feature() or 'no_such_column'
  message = _load_error({'slice_features': f'{MODEL_FEATURES[0]},{not_read}'})
  assert not_read in message and 'models/features.py' in message
  assert MODEL_FEATURES[0] not in message.split(', not a model feature')[0]


def test_a_missing_data_root_says_so(tmp_path):
  # Before: 'Cannot find matching for split all based on span-{SPAN}/*.csv', in the run.
  message = _load_error({'data_root': str(tmp_path / 'nowhere')})
  assert f'data_root {tmp_path / "nowhere"} does not exist' in message


def test_a_data_root_without_spans_says_so(tmp_path):
  (tmp_path / 'data.csv').write_text('a,b\n1,2\n')
  (tmp_path / 'span-x').mkdir()
  message = _load_error({'data_root': str(tmp_path)})
  assert f'data_root {tmp_path} has no span-<N>/ folder' in message
  (tmp_path / 'span-3').mkdir()
  assert configs.load({'data_root': str(tmp_path)}, environ={}).data_root == str(tmp_path)


def test_a_bucket_data_root_is_not_checked_here():
  assert configs.load({'data_root': 'gs://bucket/none'}, environ={}).data_root


def test_the_serving_config_must_not_be_a_tracked_file():
  message = _load_error({'serving_config_file': 'serving/deploy/models.config'})
  assert 'python -m operations.rollout init' in message


def test_a_missing_serving_config_names_the_command_creating_it(tmp_path):
  path = tmp_path / 'models.config'
  message = _load_error({'serving_config_file': str(path)})
  assert f'python -m operations.rollout init --config {path}' in message
  path.write_text('')
  assert configs.load({'serving_config_file': str(path)}, environ={}).serving_config_file


@pytest.mark.parametrize('field', ['schema_file', 'hyperparameters_file'])
def test_a_missing_repository_file_is_refused(tmp_path, field):
  message = _load_error({field: str(tmp_path / 'missing')})
  assert f'{field} {tmp_path / "missing"} does not exist' in message


def test_a_tuning_run_may_create_its_hyperparameters_file(tmp_path):
  path = str(tmp_path / 'hyperparameters.json')
  assert configs.load({'hyperparameters_file': path, 'tune': True}, environ={}).tune


@pytest.mark.parametrize('field, value', [('span_window', 0), ('train_steps', -5),
                                          ('min_auc', 1.5), ('max_auc_drop', -0.1)])
def test_a_number_out_of_its_range_is_refused(field, value):
  assert f'{field} {value}' in _load_error({field: value})


def _hyperparameters_file(tmp_path, **changes):
  """The example's hyperparameters with `changes` (None removes a key)."""
  values = example_hyperparameters()
  values.update(changes)
  path = tmp_path / 'hyperparameters.json'
  path.write_text(json.dumps({k: v for k, v in values.items() if v is not None}))
  return str(path)


A, B = a_cross().split('*')
IGNORED = ignored_feature()


@pytest.mark.parametrize('crosses, named', [
    (f'{A}*{B}s', f"'{B}s'"),
    pytest.param(f'{IGNORED}*{A}', "'ignored'", id='an ignored feature',
                 marks=pytest.mark.skipif(not IGNORED, reason='the example ignores no column')),
    (f'{A}*{B}*{A}', 'not of two')])
def test_a_cross_of_no_model_feature_is_refused(tmp_path, crosses, named):
  # Before: the Trainer failed deep inside build_model with KeyError: 'fares'.
  message = _load_error({'hyperparameters_file': _hyperparameters_file(
      tmp_path, crosses=crosses)})
  assert named in message and 'hyperparameters file' in message


def test_an_unknown_hyperparameter_key_is_refused(tmp_path):
  # Before: models/model.py silently trained with its default for the misspelt key.
  path = _hyperparameters_file(tmp_path, learning_rat=0.01, learning_rate=None)
  message = _load_error({'hyperparameters_file': path})
  assert "'learning_rat'" in message and "did you mean 'learning_rate'?" in message


def test_the_tuned_hyperparameters_are_checked_too(tmp_path):
  output_root = tmp_path / 'tfx_output'
  output_root.mkdir()
  (output_root / configs.TUNED_HYPERPARAMETERS_FILE).write_text('{"dropuot": 0.1}')
  message = _load_error({'output_root': str(output_root)})
  assert str(output_root / configs.TUNED_HYPERPARAMETERS_FILE) in message
  assert "'dropuot'" in message


def test_a_hyperparameters_file_that_is_not_json_is_refused(tmp_path):
  path = tmp_path / 'hyperparameters.json'
  path.write_text('{"batch_size": 256,}')
  assert 'is not valid JSON' in _load_error({'hyperparameters_file': str(path)})


def test_the_known_keys_are_the_ones_models_model_reads():
  # One list: a key model.py starts reading must be added to KNOWN_KEYS.
  source = (REPO / 'models' / 'model.py').read_text()
  read = set(re.findall(r"hparams(?:\[|\.get\()'(\w+)'", source))
  read |= set(re.findall(r"hp\.Choice\('(\w+)'", source))
  from models import trees
  read |= set(trees.TREE_KEYS)
  assert read == set(hyperparameters.KNOWN_KEYS)
