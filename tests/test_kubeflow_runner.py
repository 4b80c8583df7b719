"""The pipeline compiled for Vertex AI / Kubeflow Pipelines, and submitted.

Real TFX compiler, real KFP protos, real google-cloud-aiplatform client; only
the client's network call (PipelineJob.submit) is replaced.
"""

import json
import os
import re
import tempfile

import pytest
from apache_beam.options import pipeline_options
from google.auth import credentials as auth_credentials
from google.cloud import aiplatform
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import examples
import kubeflow_v2_runner
from pipeline.components import cloud
from pipeline import configs, project
from pipeline import pipeline as pipeline_module

IMAGE = f'europe-west4-docker.pkg.dev/test-project/ml/{project.IMAGE_NAME}:abc123'
CLOUD = dict(gcp_project='test-project', gcp_region='europe-west4', gcs_bucket='test-bucket',
             gcp_service_account='pipelines@test-project.iam.gserviceaccount.com',
             pipeline_image=IMAGE)


def _cloud_config(**overrides):
  return kubeflow_v2_runner.cloud_config({**CLOUD, **overrides}, environ={})


def _compile(tmp_path_factory, name, **overrides):
  config = _cloud_config(**overrides)
  path = tmp_path_factory.mktemp('spec') / name
  kubeflow_v2_runner.compile_pipeline(config, str(path))
  return config, path, json.loads(path.read_text())


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  """The default pipeline, its Beam steps on Dataflow."""
  return _compile(tmp_path_factory, 'pipeline.json', beam_profile='dataflow')


@pytest.fixture(scope='module')
def compiled_vertex(tmp_path_factory):
  """Every cloud option on: tuning, Vertex training and serving."""
  return _compile(tmp_path_factory, 'vertex.json', tune=True, vertex_training=True,
                  vertex_serving=True)


def _executors(job):
  return job['pipelineSpec']['deploymentSpec']['executors']


def _containers(job):
  return [e['container'] for e in _executors(job).values() if 'container' in e]


def _executor_class(job, task):
  spec = job['pipelineSpec']
  executor = spec['components'][spec['root']['dag']['tasks'][task]['componentRef']['name']]
  args = _executors(job)[executor['executorLabel']]['container']['args']
  return args[args.index('--executor_class_path') + 1]


def _local_dag(config):
  return {c.id: {u.id for u in c.upstream_nodes}
          for c in pipeline_module.create_pipeline(config).components}


def _compiled_dag(job, node_ids):
  """Tasks and their dependentTasks, named by pipeline node.

  The compiler splits a Resolver into one task per input channel
  ('<node id>-<channel>-resolver'); they map back to their node.
  """
  def node_of(task):
    return task if task in node_ids else task.split('-', 1)[0]
  dag = {}
  for task, spec in job['pipelineSpec']['root']['dag']['tasks'].items():
    dag.setdefault(node_of(task), set()).update(
        node_of(t) for t in spec.get('dependentTasks', []))
  return dag


# ---------------------------------------------------------------- format ----

def test_the_file_is_a_pipeline_job_with_a_strict_pipeline_spec(compiled):
  # TFX 1.16's KubeflowV2DagRunner writes a PipelineJob (JSON); its
  # pipelineSpec field is a Struct, so the spec is parsed on its own too.
  config, _, job = compiled
  parsed = json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
  spec = json_format.ParseDict(job['pipelineSpec'], pipeline_spec_pb2.PipelineSpec())
  assert spec.pipeline_info.name == config.pipeline_name
  assert spec.schema_version == '2.0.0'
  assert parsed.runtime_config.gcs_output_directory == (
      f'gs://test-bucket/tfx_output/{config.pipeline_name}')


def test_yaml_output_is_a_pipeline_spec_that_kfp_loads(tmp_path_factory):
  # Open-source KFP 2.x uploads a bare PipelineSpec; the same compiler writes
  # one when the file name ends in .yaml.
  import yaml
  from kfp import components as kfp_components
  path = tmp_path_factory.mktemp('spec') / 'pipeline.yaml'
  kubeflow_v2_runner.compile_pipeline(_cloud_config(), str(path))
  spec = yaml.safe_load(path.read_text())
  json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
  loaded = kfp_components.load_component_from_file(str(path))
  assert loaded.name == _cloud_config().pipeline_name
  assert 'Evaluator' in loaded.pipeline_spec.root.dag.tasks


def test_aiplatform_builds_a_job_from_it_offline(compiled):
  config, path, _ = compiled
  job = aiplatform.PipelineJob(
      display_name=config.pipeline_name, template_path=str(path),
      credentials=auth_credentials.AnonymousCredentials(),
      project=config.gcp_project, location=config.gcp_region)
  request = job._gca_resource  # pylint: disable=protected-access
  assert request.runtime_config.gcs_output_directory == config.pipeline_root
  assert set(request.pipeline_spec['root']['dag']['tasks']) >= {
      'CsvExampleGen', 'Trainer', 'Evaluator', 'Pusher'}


def test_pipeline_name_is_valid_for_kfp_and_vertex():
  assert kubeflow_v2_runner.PIPELINE_NAME_PATTERN.fullmatch(
      configs.load(environ={}).pipeline_name)
  with pytest.raises(ValueError, match='pipeline_name'):
    _cloud_config(pipeline_name='Taxi_Big_Tipper')


def test_compiling_for_the_cloud_needs_a_bucket():
  with pytest.raises(ValueError, match='gcs_bucket'):
    kubeflow_v2_runner.cloud_config({'gcs_bucket': ''}, environ={})
  with pytest.raises(SystemExit, match='gcs_bucket'):
    kubeflow_v2_runner.main(['--gcs-bucket', ''])


# ------------------------------------------------------------- same DAG ----

@pytest.mark.parametrize('fixture', ['compiled', 'compiled_vertex'])
def test_compiled_dag_is_the_local_pipeline_dag(fixture, request):
  config, _, job = request.getfixturevalue(fixture)
  local = _local_dag(config)
  # Locally the baseline resolver also reads the candidate, to exclude it;
  # compiled, it is TFX's own strategy (all the V2 compiler knows).
  local['LatestBlessedModelResolver'].remove('Trainer')
  assert _compiled_dag(job, set(local)) == local


def test_local_dag_of_the_cloud_config_is_the_local_runs_dag():
  # for_cloud() moves paths only: the same components, the same wiring.
  local = configs.load(environ={})
  assert _local_dag(configs.for_cloud(configs.load(CLOUD, environ={}))) == _local_dag(local)


# ------------------------------------------------- image and Beam args ----

def test_every_step_runs_the_configured_image_with_tfx_entrypoint(compiled):
  _, _, job = compiled
  containers = _containers(job)
  assert containers and {c['image'] for c in containers} == {IMAGE}
  assert {tuple(c['command']) for c in containers} == {
      ('python', '-m', 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor')}


def test_beam_steps_carry_the_dataflow_profile(compiled):
  config, _, job = compiled
  expected = config.beam_pipeline_args()
  assert '--runner=DataflowRunner' in expected
  assert f'--setup_file={config.image_code_root}/setup.py' in expected
  for name in ('CsvExampleGen', 'StatisticsGen', 'Transform', 'Evaluator'):
    executor = _executors(job)[f'{name}_executor']['container']['args']
    assert executor[-len(expected):] == expected, name


def test_local_profile_compiles_too(tmp_path_factory):
  _, _, job = _compile(tmp_path_factory, 'local.json', beam_profile='local')
  args = _executors(job)['Transform_executor']['container']['args']
  assert not any(a.startswith('--runner=') for a in args)  # Beam's DirectRunner.


# ------------------------------------------------ no path of this machine ----

def _strings(value):
  if isinstance(value, dict):
    for k, v in value.items():
      yield k
      yield from _strings(v)
  elif isinstance(value, list):
    for v in value:
      yield from _strings(v)
  elif isinstance(value, str):
    yield value
    if value[:1] in '{[':  # Exec properties are JSON inside strings.
      try:
        yield from _strings(json.loads(value))
      except ValueError:
        pass


@pytest.mark.parametrize('fixture', ['compiled', 'compiled_vertex'])
def test_no_path_of_the_compiling_machine(fixture, request):
  config, path, job = request.getfixturevalue(fixture)
  text = path.read_text()
  for local in {configs.REPO_ROOT, os.getcwd(), os.path.expanduser('~'),
                tempfile.gettempdir(), str(path.parent)}:
    assert local not in text, local
  # Every absolute file path left is the image's.
  absolute = re.compile(r'(?:^|[\s=:"\'])(/[\w.-]+(?:/[\w.{}*-]+)+)')
  found = {m for s in _strings(job) for m in absolute.findall(s) if '://' not in s}
  assert found and all(p.startswith(config.image_code_root + '/') for p in found), found


def test_data_artifacts_and_models_live_in_the_bucket(compiled):
  config, _, job = compiled
  text = json.dumps(job)
  local = configs.load(environ={})
  assert config.pipeline_root == f'gs://test-bucket/tfx_output/{local.pipeline_name}'
  assert f'gs://test-bucket/{local.data_root}' in text
  assert f'gs://test-bucket/serving_model/{local.model_name}' in text
  assert f'{config.image_code_root}/{local.schema_file}' in text


# ---------------------------------------------------- cloud components ----

def test_default_config_keeps_the_local_components():
  config = configs.load(environ={})
  by_id = {c.id: type(c).__name__ for c in pipeline_module.create_pipeline(config).components}
  assert by_id['Trainer'] == 'Trainer' and by_id['Pusher'] == 'AtomicPusher'
  assert 'VertexPusher' not in by_id
  assert cloud.vertex_pusher(config) is None


def test_vertex_options_swap_in_tfx_google_cloud_extensions(compiled_vertex):
  _, _, job = compiled_vertex
  vertex = 'tfx.extensions.google_cloud_ai_platform'
  assert _executor_class(job, 'Trainer') == f'{vertex}.trainer.executor.GenericExecutor'
  assert _executor_class(job, 'Tuner') == f'{vertex}.tuner.executor.Executor'
  assert _executor_class(job, 'VertexPusher') == f'{vertex}.pusher.executor.Executor'
  # The project's Pusher on a bucket too: saved_model.pb last, audited, with a model card.
  assert _executor_class(job, 'Pusher') == 'pipeline.components.pusher._AtomicPusherExecutor'


def test_vertex_trainer_runs_the_pipeline_image_in_the_configured_project():
  from tfx import v1 as tfx
  config = _cloud_config(vertex_training=True)
  trainer = cloud.trainer(
      config, run_fn='models.model.run_fn',
      examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples),
      custom_config={'code_fingerprint': 'x'})
  custom = trainer.exec_properties['custom_config']
  custom = json.loads(custom) if isinstance(custom, str) else custom
  job_args = custom[tfx.extensions.google_cloud_ai_platform.TRAINING_ARGS_KEY]
  assert custom['code_fingerprint'] == 'x'  # Still part of the cache key.
  assert custom[tfx.extensions.google_cloud_ai_platform.VERTEX_REGION_KEY] == 'europe-west4'
  assert job_args['project'] == 'test-project'
  pool = job_args['job_spec']['worker_pool_specs'][0]
  assert pool['container_spec']['image_uri'] == IMAGE
  assert pool['machine_spec']['machine_type'] == config.vertex_training_machine_type
  assert job_args['job_spec']['service_account'] == CLOUD['gcp_service_account']


# ----------------------------------------------------- Beam's own parse ----

def test_dataflow_profile_is_what_beam_parses_it_to():
  config = configs.load({**CLOUD, 'beam_profile': 'dataflow'}, environ={})
  options = pipeline_options.PipelineOptions(config.beam_pipeline_args())
  gcp = options.view_as(pipeline_options.GoogleCloudOptions)
  setup = options.view_as(pipeline_options.SetupOptions)
  workers = options.view_as(pipeline_options.WorkerOptions)
  assert options.view_as(pipeline_options.StandardOptions).runner == 'DataflowRunner'
  assert (gcp.project, gcp.region) == ('test-project', 'europe-west4')
  assert gcp.temp_location == 'gs://test-bucket/beam-tmp'
  assert gcp.staging_location == 'gs://test-bucket/beam-staging'
  assert gcp.service_account_email == CLOUD['gcp_service_account']
  assert setup.setup_file == os.path.join(configs.REPO_ROOT, 'setup.py')  # Launched from here.
  assert os.path.exists(setup.setup_file)
  assert workers.machine_type == 'n1-standard-4'
  assert workers.max_num_workers == config.dataflow_max_workers
  assert workers.disk_size_gb == config.dataflow_disk_size_gb
  assert workers.autoscaling_algorithm == 'THROUGHPUT_BASED'
  assert workers.sdk_container_image == IMAGE
  assert 'use_runner_v2' in options.view_as(pipeline_options.DebugOptions).experiments
  # Compiled for the cloud, the launcher is a step in the image.
  cloud_setup = pipeline_options.PipelineOptions(
      configs.for_cloud(config).beam_pipeline_args()).view_as(pipeline_options.SetupOptions)
  assert cloud_setup.setup_file == '/pipeline/setup.py'


def test_local_profile_is_beams_in_memory_direct_runner():
  options = pipeline_options.PipelineOptions(configs.load(environ={}).beam_pipeline_args())
  direct = options.view_as(pipeline_options.DirectOptions)
  assert direct.direct_running_mode == 'in_memory' and direct.direct_num_workers == 1


# ---------------------------------------------------------------- submit ----

def test_submit_sends_the_compiled_job_to_vertex(compiled, monkeypatch):
  config, path, _ = compiled
  sent = {}

  def fake_submit(job, **kwargs):  # The network boundary: record, don't send.
    sent['job'], sent['kwargs'] = job, kwargs

  state = aiplatform.initializer.global_config
  for attr in ('_project', '_location', '_staging_bucket', '_credentials'):
    monkeypatch.setattr(state, attr, getattr(state, attr))  # Restored after the test.
  # As if Application Default Credentials were set up; nothing is sent anyway.
  state._credentials = auth_credentials.AnonymousCredentials()
  monkeypatch.setattr(aiplatform.PipelineJob, 'submit', fake_submit)

  kubeflow_v2_runner.submit(config, str(path), enable_cache=False)

  job = sent['job']
  request = job._gca_resource  # pylint: disable=protected-access
  assert sent['kwargs'] == {'service_account': CLOUD['gcp_service_account']}
  assert job.project == 'test-project' and job.location == 'europe-west4'
  assert request.display_name == config.pipeline_name
  assert request.runtime_config.gcs_output_directory == config.pipeline_root
  assert request.pipeline_spec['pipelineInfo']['name'] == config.pipeline_name
  assert state.staging_bucket == 'gs://test-bucket'
  # enable_caching=False reaches every task.
  tasks = request.pipeline_spec['root']['dag']['tasks']
  assert all(not t['cachingOptions'].get('enableCache', False) for t in tasks.values())


def test_main_compiles_then_submits_with_flags_and_env(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(kubeflow_v2_runner, 'submit',
                      lambda config, spec, enable_cache: calls.append((config, spec)) or
                      type('Job', (), {'resource_name': 'projects/p/jobs/1'}))
  for name in list(os.environ):
    if name.startswith(configs.ENV_PREFIX) and name != examples.SWITCH:  # The process's example.
      monkeypatch.delenv(name)
  monkeypatch.setenv('TAXI_GCP_REGION', 'asia-east1')
  out = tmp_path / 'job.json'
  assert kubeflow_v2_runner.main(['--project', 'p1', '--gcs-bucket', 'b1', '--image', IMAGE,
                                  '--output', str(out), '--submit']) == 0
  config, spec = calls[0]
  assert spec == str(out) and out.exists()
  assert (config.gcp_project, config.gcp_region, config.gcs_bucket) == ('p1', 'asia-east1', 'b1')
