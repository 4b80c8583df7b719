"""The taxi big-tipper pipeline package.

Also what Dataflow workers install (`--setup_file`) so that Beam steps can
import the project's packages.
"""

import setuptools

setuptools.setup(
    name='taxi-big-tipper',
    version='0.1.0',
    description='TFX pipeline that trains, validates and serves a taxi tip classifier',
    python_requires='>=3.9,<3.11',
    packages=setuptools.find_packages(include=[
        'models', 'pipeline', 'pipeline.*', 'orchestration', 'operations', 'reports',
        'client', 'serving', 'compat']),
    py_modules=['local_runner', 'kubeflow_v2_runner'],
    package_data={'models': ['hyperparameters.json'], 'reports': ['templates/*.j2']},
    # Workers get exact versions from requirements.lock; this only names them.
    install_requires=[
        'tfx==1.16.0',
        'keras-tuner==1.3.5',
        'tensorflow-serving-api==2.16.1',
    ],
    entry_points={'console_scripts': [
        'taxi-pipeline=local_runner:main',
        'taxi-model-server=serving.server:main',
    ]},
)
