"""Renders the serving deploy files for the project's names (pipeline/project.py).

    python -m pipeline.deploy_files                     # -> tfx_output/deploy/
    python -m pipeline.deploy_files --out serving/deploy  # after renaming the project

Writes models.config, docker-compose.yml and k8s/*.yaml from
serving/deploy/templates/, beside copies of the name-free batching.config
and monitoring.config, so the output folder is a complete deploy folder
(docker-compose.yml mounts it as /config). The checked-in serving/deploy/
files are this rendering for the project's names (a test keeps them equal),
so the taxi example's users can use them as they are.
"""

import argparse
import os
import sys
from typing import Dict, Optional

import jinja2

from pipeline import project

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY_DIR = os.path.join(REPO_ROOT, 'serving', 'deploy')
TEMPLATE_DIR = os.path.join(DEPLOY_DIR, 'templates')
RENDERED = ('models.config', 'docker-compose.yml', 'prometheus.yml', 'k8s/configmap.yaml',
            'k8s/deployment.yaml', 'k8s/service.yaml')
# Name no model: the same for every project.
COPIED = ('batching.config', 'monitoring.config', 'alerts.yml', 'blackbox.yml',
          'grafana/dashboards/model-serving.json',
          'grafana/provisioning/dashboards/model-serving.yml',
          'grafana/provisioning/datasources/prometheus.yml')
DEFAULT_OUT = os.path.join(REPO_ROOT, 'tfx_output', 'deploy')  # Git-ignored; `make clean` removes it.


def render(names: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """{relative path: text} of every deploy file, for names (default: the project's)."""
  environment = jinja2.Environment(
      loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
      undefined=jinja2.StrictUndefined,  # A misspelt name in a template is an error.
      keep_trailing_newline=True, autoescape=False)
  names = project.NAMES if names is None else names
  copied = {}
  for path in COPIED:
    with open(os.path.join(DEPLOY_DIR, path)) as f:
      copied[path] = f.read()
  # The k8s ConfigMap carries the copied configs as they are, not a copy in
  # its template that could drift from them.
  context = dict(names, batching_config=copied['batching.config'],
                 monitoring_config=copied['monitoring.config'])
  files = {path: environment.get_template(path + '.j2').render(context) for path in RENDERED}
  files.update(copied)
  return files


def write(out_dir: str, files: Dict[str, str]) -> None:
  for path, text in files.items():
    target = os.path.join(out_dir, path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + '.tmp', 'w') as f:
      f.write(text)
    os.replace(target + '.tmp', target)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m pipeline.deploy_files',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=DEFAULT_OUT, help='(default: %(default)s)')
  args = parser.parse_args(argv)
  try:
    write(args.out, render())
  except OSError as e:
    print(f'python -m pipeline.deploy_files: cannot write to {args.out} '
          f'({e.strerror}): pass a writable --out', file=sys.stderr)
    return 1
  print(f'Deploy files for model {project.MODEL_NAME}: {os.path.abspath(args.out)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
