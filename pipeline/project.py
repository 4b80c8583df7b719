"""The project's names, stated once: edit these four lines for your project.

Everything else that names the project follows from them:
  PIPELINE_NAME  the pipeline (Kubeflow/Vertex AI, the output folder under
                 tfx_output/), setup.py's package, the compiled spec
                 <PIPELINE_NAME>-pipeline.json, the Vertex AI endpoint.
  MODEL_NAME     the served model: serving_model/<MODEL_NAME>/<version>, TF
                 Serving's model name and readiness path, the client's and
                 monitoring's default model.
  ENV_PREFIX     configs are set as <ENV_PREFIX>_<FIELD> variables (CI sets
                 them too); lowercased, it is the short name of the console
                 scripts (<short>-pipeline) and Kubernetes objects.
  IMAGE_NAME     the pipeline image's repository name (deploy.mk, CI).

Deploy files are rendered from these by `python -m pipeline.deploy_files`;
tests/test_project_names.py checks the files that cannot read them (the CI
workflow, the checked-in serving/deploy/ files).

Plain Python with only the standard library, so that every consumer reads it
without TensorFlow or the venv: pipeline/configs.py imports it, setup.py runs
it with runpy (no package import: it works in pip's isolated builds), and
make runs it as a script: `python3 pipeline/project.py image_name`.
"""

import re
import sys
from typing import Dict

PIPELINE_NAME = 'taxi-big-tipper'
MODEL_NAME = 'taxi_big_tipper'
ENV_PREFIX = 'TAXI'
IMAGE_NAME = 'taxi-big-tipper'

# What each name may hold, and why: a name outside it fails late, far away.
RULES = {
    # Kubeflow Pipelines and Vertex AI accept [a-z0-9-] pipeline names.
    'pipeline_name': (r'[a-z][a-z0-9-]*[a-z0-9]', 'lowercase letters, digits and -'),
    # A folder and a URL path segment (/v1/models/<name>) for TF Serving.
    'model_name': (r'[A-Za-z][A-Za-z0-9_.-]*', 'letters, digits, _ . -'),
    # A shell variable name; its short name must make a Kubernetes (DNS) name.
    'env_prefix': (r'[A-Z][A-Z0-9_]*[A-Z0-9]', 'uppercase letters, digits and _'),
    # A Docker repository name.
    'image_name': (r'[a-z0-9]+([._-][a-z0-9]+)*', 'lowercase letters, digits and . _ -'),
}


class ProjectNameError(ValueError):
  """A project name that cannot work; the message names it and the fix."""


def derive(pipeline_name: str, model_name: str, env_prefix: str,
           image_name: str) -> Dict[str, str]:
  """The stated names and every name that follows from them, checked."""
  stated = {'pipeline_name': pipeline_name, 'model_name': model_name,
            'env_prefix': env_prefix, 'image_name': image_name}
  for key, value in stated.items():
    pattern, allowed = RULES[key]
    if not re.fullmatch(pattern, value):
      raise ProjectNameError(f'pipeline/project.py: {key.upper()} {value!r} may hold only '
                             f'{allowed} (pattern {pattern}): rename it')
  short_name = env_prefix.lower().replace('_', '-')
  return dict(
      stated,
      env_var_prefix=env_prefix + '_',  # TAXI -> TAXI_<FIELD>
      short_name=short_name,
      package_name=pipeline_name,
      pipeline_script=f'{short_name}-pipeline',
      model_server_script=f'{short_name}-model-server',
      pipeline_spec_file=f'{pipeline_name}-pipeline.json',
      serving_app=f'{short_name}-serving',  # Kubernetes Deployment, Service and label.
      serving_config_map=f'{short_name}-serving-config',
      models_volume_claim=f'{short_name}-models',
  )


def names() -> Dict[str, str]:
  """This project's names (the constants above and what follows from them)."""
  return derive(PIPELINE_NAME, MODEL_NAME, ENV_PREFIX, IMAGE_NAME)


try:
  NAMES = names()
except ProjectNameError as e:
  # Every command imports this module: one line naming the bad name, not a
  # traceback from deep inside whichever command ran first.
  raise SystemExit(str(e)) from None


def main(argv) -> int:
  """Prints one name, for make: `python3 pipeline/project.py image_name`."""
  if len(argv) != 1 or argv[0] not in NAMES:
    print(f'usage: python3 pipeline/project.py NAME, NAME one of {", ".join(NAMES)}',
          file=sys.stderr)
    return 2
  print(NAMES[argv[0]])
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
