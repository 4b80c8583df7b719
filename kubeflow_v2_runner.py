"""Compiles the pipeline for Vertex AI Pipelines / Kubeflow Pipelines 2.x.

    python kubeflow_v2_runner.py --gcs-bucket B --project P             # compile only
    python kubeflow_v2_runner.py --gcs-bucket B --project P --submit    # and run on Vertex
    python kubeflow_v2_runner.py ... --beam-profile dataflow            # Beam steps on Dataflow

The same definition as local_runner.py (pipeline/pipeline.py), compiled by
TFX's KubeflowV2DagRunner into a PipelineJob JSON file, which Vertex AI
Pipelines runs. For open-source KFP 2.x, write YAML (--output x.yaml): the
same compiler then writes the bare PipelineSpec that KFP uploads, and the
pipeline root is given when creating the run. Compiling needs no
cloud account and no network. Paths in the spec are the bucket's and the
image's (configs.for_cloud), never this machine's; the code comes from the
pipeline image (Dockerfile, `make image`), so build and push it from the same
commit. --submit sends the file with google-cloud-aiplatform's PipelineJob.

Every flag has an environment variable <PREFIX>_<FIELD> (pipeline/configs.py;
the prefix is pipeline/project.py's ENV_PREFIX).
"""

import compat.keras  # noqa: F401  First: Keras 2 for TFX (see compat/keras.py).

import os
import sys
if '--verbose' not in sys.argv:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import argparse  # pylint: disable=g-import-not-at-top
import re

from pipeline import project

_P = project.NAMES['env_var_prefix']  # TAXI_: the configs' environment variables.

# What KFP and Vertex accept as a pipeline name.
PIPELINE_NAME_PATTERN = re.compile(r'[a-z0-9][a-z0-9-]{0,127}')


EPILOG = f"""\
exit status: 0 compiled (and submitted, with --submit); 1 a missing or wrong
setting, an unwritable --output, or a refused submission (the reason on
stderr, one line); 2 a usage error.

environment: every field of pipeline/configs.py as {_P}<FIELD> (e.g.
{_P}GCP_PROJECT, {_P}GCS_BUCKET, {_P}PIPELINE_IMAGE, {_P}BEAM_PROFILE);
flags win over them. An unknown {_P}* variable is an error.
"""


# Project modules are imported inside the functions that use them: the
# pipeline loads TFX (seconds), and a usage error must answer at once.


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # One line, not usage plus error.
    self.exit(2, f'{self.prog}: {message} (see --help)\n')


def _default(field: str) -> str:
  """'<PREFIX>_<FIELD>, else <default>': what a flag left out means."""
  from pipeline import configs
  value = getattr(configs.PipelineConfig, field)
  shown = 'off' if value is False else (value or 'unset')
  return f'default: ${configs.ENV_PREFIX}{field.upper()}, else {shown}'


def parse_args(argv):
  parser = _Parser(prog='python kubeflow_v2_runner.py', description=__doc__.split('\n')[0],
                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)

  def flag(name, help, dest=None, **kwargs):  # pylint: disable=redefined-builtin
    dest = dest or name[2:].replace('-', '_')
    parser.add_argument(name, dest=dest, help=f'{help} ({_default(dest)})', **kwargs)

  flag('--project', 'Google Cloud project', dest='gcp_project')
  flag('--region', 'Vertex AI and Dataflow region', dest='gcp_region')
  flag('--service-account', 'runs the pipeline steps', dest='gcp_service_account')
  flag('--gcs-bucket', 'bucket for data, artifacts, models and Beam temp files')
  flag('--gcs-data-root', 'data in the bucket; unset: gs://<bucket>/<data_root>')
  flag('--image', 'pipeline image (make image)', dest='pipeline_image')
  flag('--beam-profile', 'where the Beam steps run: in their step container, or on Dataflow',
       choices=['local', 'dataflow'])
  flag('--vertex-training', 'Trainer/Tuner as Vertex AI custom jobs',
       action='store_true', default=None)
  flag('--vertex-serving', 'also deploy blessed models to a Vertex AI endpoint',
       action='store_true', default=None)
  flag('--tune', 'run the Tuner', action='store_true', default=None)
  flag('--output', 'compiled file: .json (Vertex PipelineJob) or .yaml (KFP PipelineSpec)',
       dest='pipeline_spec_file')
  parser.add_argument('--no-cache', action='store_true', help='re-run every step')
  parser.add_argument('--submit', action='store_true', help='submit to Vertex AI Pipelines')
  parser.add_argument('--verbose', action='store_true', help="TensorFlow's C++ logs too")
  return parser.parse_args(argv)


def cloud_config(overrides=None, environ=os.environ):
  """Defaults, environment variables, flags; then every path moved off this machine."""
  from pipeline import configs
  config = configs.for_cloud(configs.load(overrides, environ=environ))
  if not PIPELINE_NAME_PATTERN.fullmatch(config.pipeline_name):
    raise ValueError(f'pipeline_name {config.pipeline_name!r} must match '
                     f'{PIPELINE_NAME_PATTERN.pattern} for KFP and Vertex')
  return config


def compile_pipeline(config, output_path: str, enable_cache: bool = True) -> dict:
  """Writes the PipelineJob JSON; returns it as a dict."""
  from tfx import v1 as tfx
  from pipeline import pipeline as pipeline_definition
  # No metadata connection: Vertex and KFP bring their own ML Metadata.
  pipeline = pipeline_definition.create_pipeline(config, enable_cache=enable_cache,
                                           for_kubeflow=True)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=config.pipeline_image),
      output_dir=os.path.dirname(os.path.abspath(output_path)),
      output_filename=os.path.basename(output_path))
  return runner.run(pipeline)


def submit(config, spec_path: str, enable_cache: bool = True):
  """Starts a Vertex AI PipelineJob from the compiled file; returns the job."""
  from google.cloud import aiplatform
  aiplatform.init(project=config.gcp_project, location=config.gcp_region,
                  staging_bucket=f'gs://{config.gcs_bucket}')
  job = aiplatform.PipelineJob(
      display_name=config.pipeline_name,
      template_path=spec_path,
      pipeline_root=config.pipeline_root,
      enable_caching=enable_cache,
      project=config.gcp_project,
      location=config.gcp_region)
  job.submit(service_account=config.gcp_service_account or None)
  return job


def _say(line: str) -> None:
  """Prints; a reader that left (`| head`) is no error: the work is done."""
  try:
    print(line, flush=True)
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv=None):
  import warnings
  warnings.filterwarnings('ignore', category=FutureWarning)  # Google libraries' Python notices.
  args = parse_args(sys.argv[1:] if argv is None else argv)
  overrides = {k: v for k, v in vars(args).items()
               if k not in ('no_cache', 'submit', 'verbose')}
  try:
    config = cloud_config(overrides)
  except ValueError as e:  # A missing or wrong setting: say which, no traceback.
    raise SystemExit(f'kubeflow_v2_runner.py: {e}') from None
  if args.submit and not config.gcp_project:
    raise SystemExit('kubeflow_v2_runner.py: --submit needs a project: --project or '
                     f'{_P}GCP_PROJECT')
  spec_path = config.path(config.pipeline_spec_file)  # Relative: to the repository.
  try:  # Before compiling, which takes a while and then fails with a traceback.
    os.makedirs(os.path.dirname(spec_path) or '.', exist_ok=True)
    if not os.access(os.path.dirname(spec_path) or '.', os.W_OK):
      raise PermissionError(13, 'Permission denied')
  except OSError as e:
    raise SystemExit(f'kubeflow_v2_runner.py: cannot write {spec_path}: {e.strerror}: '
                     f'give --output a writable path') from None
  compile_pipeline(config, spec_path, enable_cache=not args.no_cache)
  _say(f'Compiled {config.pipeline_name} to {spec_path} '
       f'(image {config.pipeline_image}, Beam profile {config.beam_profile}, '
       f'pipeline root {config.pipeline_root})')
  if args.submit:
    try:
      job = submit(config, spec_path, enable_cache=not args.no_cache)
    except Exception as e:  # pylint: disable=broad-except
      # Credentials, permissions, quota: Google's own message, on one line.
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise SystemExit(f'kubeflow_v2_runner.py: submitting to Vertex AI failed: {first_line}') \
          from None
    _say(f'Submitted: {job.resource_name}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
