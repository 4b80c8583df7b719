"""models/features.py is the single source of the feature definitions."""

import re

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

import examples
from models import features
from pipeline import configs
from tests.conftest import REPO, read_shipped_rows

SCHEMA_TYPES = {'float': schema_pb2.FLOAT, 'int': schema_pb2.INT,
                'string': schema_pb2.BYTES}


@pytest.fixture(scope='module')
def schema():
  """The selected example's curated schema."""
  return _example_schema(examples.selected_name())


def test_csv_header_is_the_feature_list():
  header, _ = read_shipped_rows()
  assert header == features.csv_columns()


def _example_schema(name):
  schema_file = examples.EXAMPLES[name].CONFIG_DEFAULTS.get(
      'schema_file', configs.PipelineConfig.schema_file)
  return tfdv.load_schema_text(str(REPO / schema_file))


@pytest.mark.parametrize('name', list(examples.EXAMPLES))
def test_each_examples_schema_follows_its_description(name):
  """Every example's features with their types and presence, and its
  label/training-only columns absent only when serving."""
  example, schema = examples.EXAMPLES[name], _example_schema(name)
  declared = {f.name: f for f in schema.feature}
  label_columns = examples.label_columns(example)
  assert set(declared) == set(example.RAW_FEATURES) | set(label_columns)
  for column, spec in example.RAW_FEATURES.items():
    assert declared[column].type == SCHEMA_TYPES[spec.dtype], column
    assert (declared[column].presence.min_fraction == 1.0) == spec.required, column
    assert not declared[column].not_in_environment, column
  for column in label_columns:
    assert list(declared[column].not_in_environment) == ['SERVING'], column
  assert set(schema.default_environment) == {'TRAINING', 'SERVING'}


@pytest.mark.parametrize('name', list(examples.EXAMPLES))
def test_each_examples_schema_accepts_its_shipped_data(name):
  data_root = examples.EXAMPLES[name].CONFIG_DEFAULTS.get(
      'data_root', configs.PipelineConfig.data_root)
  stats = tfdv.generate_statistics_from_csv(str(REPO / data_root / 'span-1' / 'data.csv'))
  anomalies = tfdv.validate_statistics(stats, _example_schema(name), environment='TRAINING')
  assert not anomalies.anomaly_info, anomalies


def test_schema_marks_exactly_the_categorical_ints(schema):
  marked = {f.name for f in schema.feature if f.int_domain.is_categorical}
  assert marked == set(features.categorical_ints())


@pytest.mark.parametrize('module', ['preprocessing.py', 'model.py', 'signatures.py'])
def test_no_other_model_module_names_a_raw_column(module):
  # A column named outside features.py would be a second definition.
  source = (REPO / 'models' / module).read_text()
  quoted = set(re.findall(r"'([a-z_]+)'", source))
  assert not quoted & set(features.csv_columns()), module


def test_parse_value_types_cells_by_feature():
  cells = {'float': ('12.5', 12.5), 'int': ('7', 7), 'string': ('Cash', 'Cash')}
  first_of = {}
  for name, spec in features.RAW_FEATURES.items():
    first_of.setdefault(spec.dtype, name)
  for dtype, name in first_of.items():
    cell, value = cells[dtype]
    parsed = features.parse_value(name, cell)
    assert parsed == value and type(parsed) is type(value), name
  assert all(features.parse_value(name, '') is None for name in features.RAW_FEATURES)
