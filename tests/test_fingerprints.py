"""The code fingerprints in the cache keys follow what each step's code
imports from the project: a new helper module invalidates the steps that use
it, and only those. (A real rerun after an edit: test_pipeline.py.)"""

import json
import pathlib

from pipeline import configs
from pipeline import pipeline as pipeline_definition
from tests.conftest import SHIPPED_CSV

REPO = pathlib.Path(configs.REPO_ROOT)
# What models/features.py imports: every example, and the project's names.
EXAMPLES_CODE = {'examples/__init__.py', 'examples/description.py', 'examples/diabetes.py',
                 'examples/iris.py', 'examples/taxi.py', 'pipeline/__init__.py',
                 'pipeline/project.py'}


def _config():
  """The selected example's config, reading the repository copy's files."""
  return configs.load({'data_root': str(SHIPPED_CSV.parent.parent)}, environ={})


def _fingerprints(repo: pathlib.Path):
  """{node id: its code (or schema content) fingerprint} of the pipeline."""
  pipeline = pipeline_definition.create_pipeline(_config())
  nodes = {node.id: node.exec_properties for node in pipeline.components}
  found = {node_id: json.loads(nodes[node_id]['custom_config'])['code_fingerprint']
           for node_id in ('Transform', 'Trainer')}
  found['CuratedSchemaGen'] = nodes['CuratedSchemaGen']['content_fingerprint']
  assert (repo / 'schema').is_dir()  # Built from the copy.
  return found


def _add_helper(repo: pathlib.Path):
  """models/utils.py, imported by models/model.py (a user's refactoring)."""
  (repo / 'models' / 'utils.py').write_text('def scale(x):\n  return 2 * x\n')
  model = repo / 'models' / 'model.py'
  model.write_text(model.read_text().replace(
      'from models import features\n', 'from models import features\nfrom models import utils\n', 1))


def test_editing_a_new_helper_module_changes_only_the_trainers_fingerprint(repo_copy):
  _add_helper(repo_copy)
  before = _fingerprints(repo_copy)
  (repo_copy / 'models' / 'utils.py').write_text('def scale(x):\n  return 3 * x\n')
  after = _fingerprints(repo_copy)
  assert after['Trainer'] != before['Trainer']  # A real run re-runs the Trainer.
  assert after['Transform'] == before['Transform']  # preprocessing.py does not import it.
  assert after['CuratedSchemaGen'] == before['CuratedSchemaGen']


def test_a_schema_edit_changes_no_code_fingerprint(repo_copy):
  before = _fingerprints(repo_copy)
  schema = repo_copy / _config().schema_file
  schema.write_text(schema.read_text() + '\n# edited\n')
  after = _fingerprints(repo_copy)
  assert after['CuratedSchemaGen'] != before['CuratedSchemaGen']
  assert (after['Trainer'], after['Transform']) == (before['Trainer'], before['Transform'])


def test_imports_inside_functions_and_relative_ones_count(repo_copy):
  models = repo_copy / 'models'
  (models / 'late.py').write_text('from . import later\n')
  (models / 'later.py').write_text('VALUE = 1\n')
  with open(models / 'preprocessing.py', 'a') as f:
    f.write('\n\ndef _helper():\n  from models import late\n  return late\n')
  files = {pathlib.Path(p).relative_to(repo_copy).as_posix()
           for p in pipeline_definition.project_module_files('models.preprocessing')}
  assert files == {'models/__init__.py', 'models/preprocessing.py', 'models/features.py',
                   'models/late.py', 'models/later.py'} | EXAMPLES_CODE


def test_the_trainers_code_is_the_model_and_what_it_imports_from_the_project():
  files = {pathlib.Path(p).relative_to(REPO).as_posix()
           for p in pipeline_definition.project_module_files('models.model')}
  assert files == {'models/__init__.py', 'models/model.py', 'models/features.py',
                   'models/hyperparameters.py', 'models/preprocessing.py',
                   'models/signatures.py', 'models/task.py'} | EXAMPLES_CODE
