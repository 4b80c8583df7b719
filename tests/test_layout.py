"""The data path reads top-down and no package imports one after it.

Order: compat, examples, models, data, serving, pipeline, orchestration, client,
reports, operations. serving is a generic TF Serving drop-in: it imports
nothing of the project but compat (the pipeline's infra check is its client).
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PROJECT = ('compat', 'examples', 'data', 'models', 'pipeline', 'orchestration', 'serving', 'client',
           'operations', 'reports')
# What each package may import from the project (besides itself and compat).
ALLOWED = {
    'compat': set(),
    'examples': {'pipeline'},  # pipeline/project.py only: the switch's variable prefix.
    'models': {'examples'},
    'data': {'examples', 'models'},  # data/generate_taxi.py makes taxi data.
    'serving': set(),
    'pipeline': {'examples', 'models', 'serving'},
    'orchestration': {'models', 'pipeline'},
    'client': {'models', 'pipeline'},
    'reports': {'models', 'pipeline'},
    'operations': {'models', 'pipeline', 'serving', 'client', 'reports'},
}


def _imports(path: pathlib.Path):
  """Top-level project packages a module imports (anywhere in it)."""
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [node.module]
    else:
      continue
    yield from (n.split('.')[0] for n in names if n.split('.')[0] in PROJECT)


@pytest.mark.parametrize('package', PROJECT)
def test_packages_import_only_what_comes_before_them(package):
  wrong = {}
  for path in (REPO / package).rglob('*.py'):
    if path.name.endswith('_pb2.py'):
      continue
    bad = set(_imports(path)) - ALLOWED[package] - {package, 'compat'}
    if bad:
      wrong[str(path.relative_to(REPO))] = sorted(bad)
  assert not wrong, wrong
