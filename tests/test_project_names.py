"""The names a user states once (pipeline/project.py) reach every file that names the project.

Files that read pipeline/project.py are checked by what they produce; the
ones that cannot (the CI workflow, the checked-in deploy files) by agreeing
with it. Renaming is tried as a user does it: edit project.py in a copy and
render the deploy files there.
"""

import fnmatch
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import unittest.mock

import pytest
import yaml

from pipeline import configs, deploy_files, project
from tests.conftest import REPO

OTHER = project.derive(pipeline_name='churn-risk', model_name='churn_risk',
                       env_prefix='CHURN', image_name='churn-risk')


def _child_env(**extra):
  """This environment without the project's variables (they would win)."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(configs.ENV_PREFIX) and not k.startswith('IMAGE')}
  env['PYTHONPATH'] = str(REPO)
  env.update(extra)
  return env


# ---- the deploy files ------------------------------------------------------------


def test_checked_in_deploy_files_are_the_rendering_of_the_project_names():
  for path, text in deploy_files.render().items():
    checked_in = (REPO / 'serving' / 'deploy' / path).read_text()
    assert checked_in == text, (
        f'serving/deploy/{path} differs from its template for the names in pipeline/project.py:'
        ' run python -m pipeline.deploy_files --out serving/deploy (and edit the template, '
        'not the file)')


def test_other_names_leave_no_taxi_in_the_deploy_files():
  files = deploy_files.render(OTHER)
  for path, text in files.items():
    assert 'taxi' not in text.lower(), path
  from google.protobuf import text_format
  from tensorflow_serving.config import model_server_config_pb2
  model = text_format.Parse(files['models.config'],
                            model_server_config_pb2.ModelServerConfig()).model_config_list.config[0]
  assert (model.name, model.base_path) == ('churn_risk', '/models/churn_risk')
  assert model.logging_config.log_collector_config.filename_prefix == '/models/logs/churn_risk'
  compose = yaml.safe_load(files['docker-compose.yml'])['services']['tf-serving']
  assert 'GET /v1/models/churn_risk ' in compose['healthcheck']['test'][1]


def test_other_names_make_kubernetes_objects_that_find_each_other():
  files = deploy_files.render(OTHER)
  deployment = yaml.safe_load(files['k8s/deployment.yaml'])
  service = yaml.safe_load(files['k8s/service.yaml'])
  config_map = yaml.safe_load(files['k8s/configmap.yaml'])
  pod = deployment['spec']['template']
  assert service['spec']['selector'] == deployment['spec']['selector']['matchLabels'] == \
      pod['metadata']['labels'] == {'app': 'churn-serving'}
  volumes = {v['name']: v for v in pod['spec']['volumes']}
  assert volumes['config']['configMap']['name'] == config_map['metadata']['name']
  assert volumes['models']['persistentVolumeClaim']['claimName'] == 'churn-models'
  probe = pod['spec']['containers'][0]['readinessProbe']['httpGet']
  assert probe['path'] == '/v1/models/churn_risk'
  assert 'name: "churn_risk"' in config_map['data']['models.config']


def test_commands_the_deploy_files_name_exist():
  # Before: models.config told users to run `python -m pipeline.rollout init`.
  for path, text in deploy_files.render().items():
    for module in re.findall(r'python -m ([\w.]+)', text):
      assert importlib.util.find_spec(module), f'serving/deploy/{path} names {module}'


def _renamed_copy(tmp_path, names):
  """The files that render the deploy folder, with pipeline/project.py edited to names."""
  copy = tmp_path / 'repo'
  shutil.copytree(REPO / 'serving' / 'deploy', copy / 'serving' / 'deploy')
  (copy / 'pipeline').mkdir()
  for name in ('__init__.py', 'project.py', 'configs.py', 'deploy_files.py'):
    shutil.copy(REPO / 'pipeline' / name, copy / 'pipeline' / name)
  path = copy / 'pipeline' / 'project.py'
  text = path.read_text()
  for constant in ('PIPELINE_NAME', 'MODEL_NAME', 'ENV_PREFIX', 'IMAGE_NAME'):
    value = names[constant.lower()]
    text, count = re.subn(rf"^{constant} = '[^']*'$", f"{constant} = '{value}'", text, flags=re.M)
    assert count == 1, constant
  path.write_text(text)
  return copy


def test_renamed_project_renders_its_own_deploy_folder(tmp_path):
  """A user renames the project in pipeline/project.py and renders the deploy files."""
  copy = _renamed_copy(tmp_path, OTHER)
  env = _child_env(PYTHONPATH=str(copy))
  out = tmp_path / 'deploy'
  result = subprocess.run([sys.executable, '-m', 'pipeline.deploy_files', '--out', str(out)],
                          cwd=copy, env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  written = {str(p.relative_to(out)): p.read_text() for p in out.rglob('*') if p.is_file()}
  assert set(written) == set(deploy_files.RENDERED + deploy_files.COPIED)
  assert not [path for path, text in written.items() if 'taxi' in text.lower()]
  # The pipeline's config follows the same names.
  probe = ('from pipeline import configs; c = configs.PipelineConfig(); '
           'print(configs.ENV_PREFIX, c.pipeline_name, c.model_name, c.pipeline_image, '
           'c.pipeline_spec_file, c.vertex_endpoint_name)')
  printed = subprocess.run([sys.executable, '-c', probe], cwd=copy, env=env,
                           capture_output=True, text=True, check=True).stdout.split()
  assert printed == ['CHURN_', 'churn-risk', 'churn_risk', 'gcr.io/PROJECT/churn-risk:latest',
                     'churn-risk-pipeline.json', 'churn-risk']


def test_generator_writes_a_complete_deploy_folder_under_an_ignored_root():
  assert os.path.relpath(deploy_files.DEFAULT_OUT, REPO) == os.path.join('tfx_output', 'deploy')
  ignored = subprocess.run(['git', 'check-ignore', '-q', deploy_files.DEFAULT_OUT], cwd=REPO)
  assert ignored.returncode == 0, 'the default output must be git-ignored'
  # The generated folder holds every file of serving/deploy (templates aside).
  shipped = {os.path.relpath(os.path.join(d, f), deploy_files.DEPLOY_DIR)
             for d, _, files in os.walk(deploy_files.DEPLOY_DIR) for f in files
             if 'templates' not in os.path.relpath(d, deploy_files.DEPLOY_DIR).split(os.sep)}
  assert set(deploy_files.render()) == shipped


def test_generator_cannot_write_says_so_in_one_line(tmp_path):
  blocker = tmp_path / 'a-file'
  blocker.write_text('')
  result = subprocess.run([sys.executable, '-m', 'pipeline.deploy_files',
                           '--out', str(blocker / 'deploy')],
                          cwd=REPO, env=_child_env(), capture_output=True, text=True)
  assert result.returncode == 1
  assert result.stderr.count('\n') == 1 and 'pass a writable --out' in result.stderr


# ---- the names themselves ----------------------------------------------------------


@pytest.mark.parametrize('key,value', [
    ('pipeline_name', 'Churn_Risk'), ('model_name', 'churn risk'), ('env_prefix', 'churn'),
    ('image_name', 'Churn')])
def test_a_name_that_cannot_work_is_an_error_naming_it(key, value):
  stated = dict(pipeline_name='churn-risk', model_name='churn_risk', env_prefix='CHURN',
                image_name='churn-risk')
  stated[key] = value
  with pytest.raises(project.ProjectNameError, match=f'{key.upper()} {value!r} may hold only'):
    project.derive(**stated)


def test_a_bad_name_in_project_py_stops_commands_with_one_line(tmp_path):
  copy = _renamed_copy(tmp_path, dict(OTHER, model_name='churn risk'))
  for command in (['-m', 'pipeline.deploy_files'], ['pipeline/project.py', 'model_name']):
    result = subprocess.run([sys.executable, *command], cwd=copy,
                            env=_child_env(PYTHONPATH=str(copy)), capture_output=True, text=True)
    assert result.returncode == 1, command
    assert result.stderr == ("pipeline/project.py: MODEL_NAME 'churn risk' may hold only letters, "
                             'digits, _ . - (pattern [A-Za-z][A-Za-z0-9_.-]*): rename it\n')


def test_project_script_prints_one_name_for_make():
  def run(*args):
    return subprocess.run([sys.executable, 'pipeline/project.py', *args], cwd=REPO,
                          capture_output=True, text=True)
  assert run('image_name').stdout == project.IMAGE_NAME + '\n'
  unknown = run('imagename')
  assert unknown.returncode == 2 and unknown.stderr.startswith('usage:')


# ---- what reads them -------------------------------------------------------------


def test_configs_take_their_names_from_the_project():
  config = configs.PipelineConfig()
  assert configs.ENV_PREFIX == project.ENV_PREFIX + '_'
  assert (config.pipeline_name, config.model_name) == (project.PIPELINE_NAME, project.MODEL_NAME)
  assert config.pipeline_image.endswith(f'/{project.IMAGE_NAME}:latest')
  assert config.pipeline_spec_file == f'{project.PIPELINE_NAME}-pipeline.json'


def test_client_and_monitoring_default_to_the_examples_model(monkeypatch):
  from client import predict
  from operations import monitoring
  monkeypatch.delenv(configs.ENV_PREFIX + 'MODEL_NAME', raising=False)
  # The project's model for taxi; another example's pipeline pushes its own.
  pushed = configs.example_defaults().model_name
  assert predict.DEFAULT_MODEL == pushed
  user_args = predict._parser().parse_args(['--rest', 'http://127.0.0.1:8501', '--json', '{}'])
  assert user_args.model_name == pushed
  assert monitoring.parse_args(['--logs', 'x']).model_name == pushed
  assert f'{configs.ENV_PREFIX}MODEL_NAME' in monitoring.EPILOG


def test_rollout_template_serves_the_project_model():
  from operations import rollout
  config = rollout.read_config(rollout.TEMPLATE)
  assert [m.name for m in config.model_config_list.config] == [project.MODEL_NAME]


def test_setup_py_package_and_console_scripts_follow_the_project():
  import setuptools
  with unittest.mock.patch.object(setuptools, 'setup') as setup:
    import runpy
    runpy.run_path(str(REPO / 'setup.py'))
  arguments = setup.call_args.kwargs
  assert arguments['name'] == project.PIPELINE_NAME
  scripts = [s.split('=')[0] for s in arguments['entry_points']['console_scripts']]
  assert scripts == [f'{project.NAMES["short_name"]}-pipeline',
                     f'{project.NAMES["short_name"]}-model-server']


def test_make_image_names_the_project_image():
  def image_command(**env):
    result = subprocess.run(['make', '-n', '-s', 'image'], cwd=REPO,
                            env=_child_env(**{'GIT_COMMIT': 'c0ffee', **env}),
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()
  assert image_command() == f'docker build --build-arg GIT_COMMIT=c0ffee -t {project.IMAGE_NAME}:local .'
  variable = configs.ENV_PREFIX + 'PIPELINE_IMAGE'
  assert image_command(**{variable: 'registry/x:1'}) == \
      'docker build --build-arg GIT_COMMIT=c0ffee -t registry/x:1 .'
  # As CI builds it: the registry and the commit from CI, the name from the project.
  assert image_command(IMAGE_REGISTRY='r.example/p/repo', IMAGE_TAG='abc123') == \
      f'docker build --build-arg GIT_COMMIT=c0ffee -t r.example/p/repo/{project.IMAGE_NAME}:abc123 .'


def test_ci_workflow_agrees_with_the_project_names():
  workflow = yaml.safe_load((REPO / '.github' / 'workflows' / 'ci.yml').read_text())
  deploy = workflow['jobs']['deploy']
  fields = {f.upper() for f in configs.PipelineConfig.__dataclass_fields__}
  image = {'IMAGE_REGISTRY', 'IMAGE_TAG'}  # deploy.mk adds the project's image name.
  assert image <= set(deploy['env'])
  for name in set(deploy['env']) - image:
    assert name.startswith(configs.ENV_PREFIX), f'ci.yml: {name} is not a {configs.ENV_PREFIX}*'
    assert name[len(configs.ENV_PREFIX):] in fields, f'ci.yml: {name} sets no config field'
  # Beyond the variable names, the workflow names nothing of the project.
  text = (REPO / '.github' / 'workflows' / 'ci.yml').read_text().replace(configs.ENV_PREFIX, '')
  for name in (project.PIPELINE_NAME, project.MODEL_NAME, project.IMAGE_NAME):
    assert name not in text
  uploads = [s['with']['path'] for s in deploy['steps']
             if s.get('uses', '').startswith('actions/upload-artifact')]
  assert len(uploads) == 1
  assert fnmatch.fnmatch(configs.PipelineConfig().pipeline_spec_file, uploads[0])
