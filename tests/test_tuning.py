"""The Tuner searches around the hyperparameters the Trainer would use."""

import json

import keras_tuner

from models import model
from pipeline import pipeline as taxi_pipeline
from tests.conftest import small_config, write_csv, sample_rows


def _config(tmp_path, hyperparameters):
  header, rows = sample_rows()
  write_csv(tmp_path / 'data' / 'span-1' / 'data.csv', header, rows[:50])
  path = tmp_path / 'hyperparameters.json'
  path.write_text(json.dumps(hyperparameters))
  return small_config(tmp_path, tmp_path / 'data', tune=True, hyperparameters_file=str(path))


def test_the_tuner_is_given_the_pipelines_hyperparameters(tmp_path):
  ours = dict(model.default_hparams(), batch_size=64, crosses='company*payment_type')
  config = _config(tmp_path, ours)
  nodes = {c.id: c for c in taxi_pipeline.create_pipeline(config).components}
  tuner_config = json.loads(nodes['Tuner'].exec_properties['custom_config'])
  trainer_config = json.loads(nodes['Trainer'].exec_properties['custom_config'])
  assert json.loads(tuner_config['hyperparameters']) == ours
  assert tuner_config['hyperparameters'] == trainer_config['hyperparameters']


def test_the_search_space_keeps_the_untuned_values_it_is_given():
  base = dict(model.default_hparams(), batch_size=64, crosses='company*payment_type')
  space = model.search_space(keras_tuner.HyperParameters(), base)
  assert space['batch_size'] == 64 and space['crosses'] == 'company*payment_type'
  assert set(space) == set(base)
