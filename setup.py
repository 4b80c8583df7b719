"""The pipeline's package, named by pipeline/project.py.

Also what Dataflow workers install (`--setup_file`) so that Beam steps can
import the project's packages.
"""

import pathlib
import runpy

import setuptools


# The project's names (pipeline/project.py), run as a file: importing the
# package needs its dependencies, which are not installed yet.
NAMES = runpy.run_path(str(pathlib.Path(__file__).parent / 'pipeline' / 'project.py'))['NAMES']


def _requirements(name: str):
  """Names from a requirements file; exact versions come from requirements.lock."""
  lines = (pathlib.Path(__file__).parent / name).read_text().splitlines()
  return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


setuptools.setup(
    name=NAMES['package_name'],
    version='0.1.0',
    description=f"TFX pipeline {NAMES['pipeline_name']}: trains, validates and serves a model",
    python_requires='>=3.9,<3.11',
    packages=setuptools.find_packages(include=[
        'examples', 'models', 'pipeline', 'pipeline.*', 'orchestration', 'operations', 'reports',
        'client', 'serving', 'serving.*', 'compat']),
    py_modules=['local_runner', 'kubeflow_v2_runner'],
    package_data={'models': ['*.json'], 'examples': ['*.json'], 'reports': ['templates/*.j2'],
                  'pipeline': ['templates/*.j2']},
    # Workers get exact versions from requirements.lock; these only name them.
    install_requires=_requirements('requirements.txt'),
    extras_require={'dev': _requirements('requirements-dev.txt')},
    entry_points={'console_scripts': [
        f"{NAMES['pipeline_script']}=local_runner:main",
        f"{NAMES['model_server_script']}=serving.server:main",
    ]},
)
