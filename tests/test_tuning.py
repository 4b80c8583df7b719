"""The Tuner searches around the hyperparameters the Trainer would use."""

import json

import keras_tuner

from models import model
from pipeline import pipeline as pipeline_definition
from tests.conftest import a_cross, example_hyperparameters, small_config, write_csv, sample_rows

CROSS = a_cross()  # Two of the example's model features.


def _config(tmp_path, hyperparameters):
  header, rows = sample_rows()
  write_csv(tmp_path / 'data' / 'span-1' / 'data.csv', header, rows[:50])
  path = tmp_path / 'hyperparameters.json'
  path.write_text(json.dumps(hyperparameters))
  return small_config(tmp_path, tmp_path / 'data', tune=True, hyperparameters_file=str(path))


def test_the_tuner_is_given_the_pipelines_hyperparameters(tmp_path):
  ours = dict(example_hyperparameters(), batch_size=64, crosses=CROSS)
  config = _config(tmp_path, ours)
  nodes = {c.id: c for c in pipeline_definition.create_pipeline(config).components}
  tuner_config = json.loads(nodes['Tuner'].exec_properties['custom_config'])
  trainer_config = json.loads(nodes['Trainer'].exec_properties['custom_config'])
  assert json.loads(tuner_config['hyperparameters']) == ours
  assert tuner_config['hyperparameters'] == trainer_config['hyperparameters']


def test_the_search_space_keeps_the_untuned_values_it_is_given():
  base = dict(example_hyperparameters(), cross_bins=64, seed=7, crosses=CROSS)
  hp = keras_tuner.HyperParameters()
  space = model.search_space(hp, base)
  assert space['cross_bins'] == 64 and space['seed'] == 7
  assert set(space) == set(base) | {'learning_rate', 'hidden_units', 'embedding_dim', 'dropout',
                                    'numeric_buckets', 'batch_size'}
  # Crosses are tuned on (the pipeline's own) or off, never to other crosses.
  assert hp.get('crosses') == CROSS
  assert set(hp._hps['crosses'][0].values) == {CROSS, ''}
  # Every tuned name is a hyperparameter key: the best values merge into the Trainer's.
  from models import hyperparameters
  assert set(hp.values) <= set(hyperparameters.KNOWN_KEYS)


def test_the_tuner_is_given_its_algorithm_and_a_log_dir_under_the_output_root(tmp_path):
  config = _config(tmp_path, example_hyperparameters())
  config = pipeline_definition.configs.load(
      dict(vars(config), tuner_algorithm='bayesian'), environ={})
  nodes = {c.id: c for c in pipeline_definition.create_pipeline(config).components}
  tuner_config = json.loads(nodes['Tuner'].exec_properties['custom_config'])
  assert tuner_config['tuner_algorithm'] == 'bayesian'
  # Kept after the run (the Tuner's working dir is not), where `tensorboard --logdir` looks.
  assert tuner_config['log_dir'].startswith(config.path(config.output_root))
