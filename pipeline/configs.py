"""Every knob of the pipeline, in one place.

Each field can be overridden by an environment variable named
<ENV_PREFIX>_<FIELD>, TAXI_<FIELD> for the taxi project (e.g.
TAXI_TRAIN_STEPS=500), and, for the common ones, by a local_runner.py flag.
The names (pipeline, model, variable prefix, image) come from
pipeline/project.py. Paths are relative to the repository root unless absolute.

The selected example (<ENV_PREFIX>_EXAMPLE, examples/) replaces some
defaults with its own CONFIG_DEFAULTS (its data, schema, hyperparameters,
names and output roots).

load() refuses what would otherwise fail late or silently, with a
ConfigError naming the cause and the fix: an unknown <ENV_PREFIX>_* variable
(an error, not a warning: a typo like TAXI_TRAIN_STEP would silently train
with the default), an example other than the one the process runs, a boolean or number that is not one, a value outside its
choices (CHOICES), a slice on no model feature, a missing data root, span
folder, schema or hyperparameters file, a hyperparameter key models/model.py
does not read or a feature cross of no model feature, and a serving config
that is missing or tracked (the canary rollout rewrites it).
"""

import dataclasses
import difflib
import os
import re
from typing import Dict, List, Optional

from pipeline import project

# ExampleGen's splits (see PipelineConfig's split buckets).
TRAIN, EVAL, TEST = 'train', 'eval', 'test'
SPLITS = (TRAIN, EVAL, TEST)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_PREFIX = project.NAMES['env_var_prefix']  # project.ENV_PREFIX plus _, e.g. TAXI_


@dataclasses.dataclass
class PipelineConfig:
  # The example whose data and task the pipeline runs (examples/): set
  # <ENV_PREFIX>_EXAMPLE, which the models read when imported; load() fills
  # in the selected one. Its CONFIG_DEFAULTS replace the defaults below.
  example: str = ''

  # Names. KFP wants [a-z0-9-] for pipelines; TF Serving any path-safe name.
  pipeline_name: str = project.PIPELINE_NAME
  model_name: str = project.MODEL_NAME

  # Where things live.
  data_root: str = 'data'  # Each example states its own folder (CONFIG_DEFAULTS).
  # New data arrives as span-<N>/ folders; ExampleGen reads the latest one.
  input_pattern: str = 'span-{SPAN}/*.csv'
  # Train on the latest N spans (a rolling window). Above 1, Transform reuses
  # the analysis of spans it has seen (its analyzer cache).
  span_window: int = 1
  output_root: str = 'tfx_output'  # Pipeline artifacts and MLMD (git-ignored).
  serving_dir: str = 'serving_model'  # Pushed models: <serving_dir>/<model_name>/<version>.
  schema_file: str = 'schema/schema.pbtxt'
  hyperparameters_file: str = 'models/hyperparameters.json'

  # Code the components run, by import path (no local files in compiled specs).
  preprocessing_fn: str = 'models.preprocessing.preprocessing_fn'
  run_fn: str = 'models.model.run_fn'
  tuner_fn: str = 'models.model.tuner_fn'

  # Splits, by a hash of each example (the same rows land in the same split
  # on every run), in hash buckets: train:eval:test = 3:1:1.
  # - train: what the model learns from (Transform analyses it alone).
  # - eval: validation, where every choice is made (the Tuner's objective,
  #   early stopping, hand-picked hyperparameters).
  # - test: read only by the Evaluator, for the blessing and the reported
  #   quality, so those are measured on data no choice was made on.
  # On the ~15k taxi rows a fifth is ~3,000 trips: accuracy's standard error
  # there is about 0.006, small enough to compare models, while train keeps
  # 60% (9,000 trips). Each bucket must hold at least one.
  train_buckets: int = 3
  eval_buckets: int = 1
  test_buckets: int = 1

  # Training.
  train_steps: int = 300  # About 8 epochs of the shipped data; more overfits.
  eval_steps: int = 0  # 0: the whole eval split.
  tune: bool = False
  tuner_trials: int = 8  # Random and Bayesian search; Hyperband sizes its own.
  tuner_steps: int = 300
  # keras-tuner's search: 'random', 'bayesian' (optimisation) or 'hyperband'.
  tuner_algorithm: str = 'random'

  # Blessing, judged on the test split: absolute floors and the allowed
  # change against the last blessed model.
  # Floors that catch a broken model (always "no": accuracy 0.763, AUC 0.5),
  # below what the default run reaches on test over 6 seeds (AUC >= 0.9568,
  # accuracy >= 0.900: margins of 0.027 and 0.020, over 3 standard errors
  # of 3,000 trips; README, "Quality").
  min_auc: float = 0.93
  min_accuracy: float = 0.88
  # A candidate whose AUC is below the baseline's by more than this is not
  # blessed. Not 0: a fresh run with another seed moves test AUC by up to
  # 0.0018 (bench/quality_bench.py and the default seed 42), so less would refuse an
  # equally good retrain.
  max_auc_drop: float = 0.002
  # Multi-class: a candidate whose accuracy is below the baseline's by more
  # than this is not blessed (min_accuracy is the floor).
  max_accuracy_drop: float = 0.01
  # Regression: the eval split's RMSE must be at most max_rmse, in the
  # label's units, so each regression example states it (0: not stated, an
  # error for a regression); and at most max_rmse_increase above the
  # baseline's, as a fraction of it (unit-free, so one default fits all).
  max_rmse: float = 0.0
  max_rmse_increase: float = 0.01
  slice_features: str = ''  # Model features, comma-separated (CONFIG_DEFAULTS).
  # TFMA's calibration and confusion-matrix plots, for TFMA's notebook views
  # (the run report draws none of them); off, the Evaluator is faster.
  eval_plots: bool = False

  # Infra validation before the push: 'local' (our TF-Serving-compatible
  # server, no Docker), 'docker' or 'kubernetes' (TFX's InfraValidator with
  # the real TF Serving image), or 'none'.
  infra_validator: str = 'local'
  infra_num_examples: int = 10

  # Canary rollout: when set, each newly pushed version is labelled `canary`
  # in this TF Serving model config file while `stable` stays (see
  # operations/rollout.py for promote/rollback).
  serving_config_file: str = ''

  # Beam: 'local' (in-memory DirectRunner) or 'dataflow'.
  beam_profile: str = 'local'
  # Local runs: how many components may run at once when their inputs are
  # ready (the InfraValidator beside the Evaluator); 1 is TFX's one-by-one.
  parallel_components: int = 2

  # Google Cloud (Vertex AI Pipelines, Kubeflow Pipelines, Dataflow).
  # kubeflow_v2_runner.py compiles for_cloud(config): data, artifacts and
  # models in the bucket, repository files in the image, so the compiled
  # spec holds no path of the machine that compiled it.
  gcp_project: str = ''
  gcp_region: str = 'us-central1'
  gcp_service_account: str = ''  # Runs the pipeline's steps; '' = the project's default.
  gcs_bucket: str = ''
  gcs_data_root: str = ''  # '' = gs://<gcs_bucket>/<data_root>
  gcs_output_root: str = ''  # '' = gs://<gcs_bucket>/tfx_output
  gcs_serving_dir: str = ''  # '' = gs://<gcs_bucket>/serving_model (TF Serving on GKE reads it)
  # Where repository files (schema, setup.py) are read at run time: '' = this
  # checkout; for_cloud() sets image_code_root, where the Dockerfile puts them.
  code_root: str = ''
  image_code_root: str = '/pipeline'
  pipeline_image: str = f'gcr.io/PROJECT/{project.IMAGE_NAME}:latest'
  # What kubeflow_v2_runner.py writes.
  pipeline_spec_file: str = project.NAMES['pipeline_spec_file']
  dataflow_machine_type: str = 'n1-standard-4'
  dataflow_max_workers: int = 10
  dataflow_disk_size_gb: int = 50
  # Optional managed training and serving (pipeline/components/cloud.py picks the components).
  vertex_training: bool = False  # Trainer and Tuner run as Vertex AI custom jobs.
  vertex_training_machine_type: str = 'n1-standard-4'
  vertex_tuner_parallel_trials: int = 1
  vertex_serving: bool = False  # Also deploy blessed models to a Vertex AI endpoint.
  vertex_endpoint_name: str = project.PIPELINE_NAME
  # The newest TensorFlow CPU prediction image google-cloud-aiplatform lists.
  vertex_serving_image: str = 'us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest'
  vertex_serving_machine_type: str = 'n1-standard-2'
  vertex_serving_max_replicas: int = 2

  # ---- derived paths --------------------------------------------------------

  def path(self, relative: str) -> str:
    return relative if os.path.isabs(relative) or '://' in relative else os.path.join(
        REPO_ROOT, relative)

  @property
  def pipeline_root(self) -> str:
    return os.path.join(self.path(self.output_root), self.pipeline_name)

  @property
  def metadata_path(self) -> str:
    return os.path.join(self.path(self.output_root), 'metadata.sqlite')

  @property
  def push_dir(self) -> str:
    return os.path.join(self.path(self.serving_dir), self.model_name)

  @property
  def split_buckets(self) -> Dict[str, int]:
    """Split name -> hash buckets, in SPLITS order."""
    return {TRAIN: self.train_buckets, EVAL: self.eval_buckets, TEST: self.test_buckets}

  @property
  def slices(self) -> List[str]:
    return [s for s in self.slice_features.split(',') if s]

  def beam_pipeline_args(self) -> List[str]:
    return BEAM_PROFILES[self.beam_profile](self)


def _local_beam_args(_: PipelineConfig) -> List[str]:
  # Beam's defaults: the in-memory DirectRunner with one worker. On 2 cores
  # it beats multi_processing about 2x for data of this size, which pays
  # pickling and worker start-up for nothing. No arguments at all, because
  # with any TFX first builds a source package of itself for remote workers
  # before every Beam step (tfx/utils/dependency_utils.py).
  return []


def _dataflow_beam_args(c: PipelineConfig) -> List[str]:
  args = [
      '--runner=DataflowRunner',
      f'--project={c.gcp_project}',
      f'--region={c.gcp_region}',
      f'--temp_location=gs://{c.gcs_bucket}/beam-tmp',
      f'--staging_location=gs://{c.gcs_bucket}/beam-staging',
      f'--machine_type={c.dataflow_machine_type}',
      f'--disk_size_gb={c.dataflow_disk_size_gb}',
      f'--max_num_workers={c.dataflow_max_workers}',
      '--autoscaling_algorithm=THROUGHPUT_BASED',
      '--experiments=use_runner_v2',
      # Workers run the pipeline image: the same TFX, Beam and our code.
      f'--sdk_container_image={c.pipeline_image}',
      # Workers install this package (models/, pipeline/) from setup.py: the
      # launcher's copy, which is the image's when compiled for the cloud.
      f'--setup_file={code_path(c, "setup.py")}',
  ]
  if c.gcp_service_account:
    args.append(f'--service_account_email={c.gcp_service_account}')
  return args


def code_path(c: PipelineConfig, relative: str) -> str:
  """A repository file where the pipeline's steps will read it."""
  if c.code_root and not (os.path.isabs(relative) or '://' in relative):
    return f"{c.code_root.rstrip('/')}/{relative}"  # A POSIX path in the image.
  return c.path(relative)


def for_cloud(c: PipelineConfig) -> PipelineConfig:
  """The config with every path moved off this machine (see 'Google Cloud')."""
  if not c.gcs_bucket:  # Beam's temp files and Vertex jobs need one too.
    raise ConfigError(f'for the cloud, set gcs_bucket ({ENV_PREFIX}GCS_BUCKET or --gcs-bucket)')
  bucket = f'gs://{c.gcs_bucket}'
  return dataclasses.replace(
      c,
      data_root=c.gcs_data_root or (c.data_root if '://' in c.data_root
                                    else f'{bucket}/{c.data_root}'),
      output_root=c.gcs_output_root or f'{bucket}/tfx_output',
      serving_dir=c.gcs_serving_dir or f'{bucket}/serving_model',
      code_root=c.code_root or c.image_code_root)


BEAM_PROFILES = {'local': _local_beam_args, 'dataflow': _dataflow_beam_args}


class ConfigError(ValueError):
  """A config value that cannot work; the message names the cause and the fix."""


# Knobs with a fixed set of values: anything else is a typo, never a fallback.
CHOICES = {
    'beam_profile': tuple(BEAM_PROFILES),
    'infra_validator': ('local', 'docker', 'kubernetes', 'none'),
    'tuner_algorithm': ('random', 'bayesian', 'hyperband'),  # models/model.py's make_tuner.
}
TRUE_WORDS, FALSE_WORDS = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off', '')


def _coerce(name: str, text: str, like):
  """An environment variable's text as the field's type."""
  variable = ENV_PREFIX + name.upper()
  if isinstance(like, bool):
    word = text.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
      raise ConfigError(f'{variable}={text!r} is not a boolean: use one of '
                        f'{", ".join(TRUE_WORDS + FALSE_WORDS[:-1])}')
    return word in TRUE_WORDS
  try:
    return type(like)(text)
  except ValueError:
    kind = {int: 'an integer', float: 'a number'}.get(type(like), type(like).__name__)
    raise ConfigError(f'{variable}={text!r} is not {kind}: set it like {like!r}') from None


def _closest_field(name: str, prefix: str = '') -> str:
  """'did you mean X?' for a misspelt field (or variable, with its prefix)."""
  names = [f.name for f in dataclasses.fields(PipelineConfig)]
  close = difflib.get_close_matches(name, names, n=1)
  if not close:
    return 'see pipeline/configs.py for the fields'
  return f'did you mean {prefix}{close[0].upper() if prefix else close[0]}?'


def _check_environ(environ) -> None:
  """An unknown <ENV_PREFIX>_* variable is a typo that would silently change nothing."""
  fields = {f.name for f in dataclasses.fields(PipelineConfig)}
  for variable in sorted(environ):
    if variable.startswith(ENV_PREFIX) and variable[len(ENV_PREFIX):].lower() not in fields:
      raise ConfigError(f'unknown environment variable {variable}: '
                        f'{_closest_field(variable[len(ENV_PREFIX):].lower(), ENV_PREFIX)}')


def _check_choices(config: PipelineConfig) -> None:
  for name, allowed in CHOICES.items():
    value = getattr(config, name)
    if value not in allowed:
      raise ConfigError(f'{name} {value!r} is not one of {", ".join(allowed)}: '
                        f'set {ENV_PREFIX}{name.upper()} (or the flag) to one of them')


# Numbers below their floor make a run fail late (or train on nothing).
MINIMUMS = {'span_window': 1, 'train_buckets': 1, 'eval_buckets': 1, 'test_buckets': 1,
            'train_steps': 1, 'eval_steps': 0, 'tuner_trials': 1, 'tuner_steps': 1, 'parallel_components': 1,
            'infra_num_examples': 1, 'dataflow_max_workers': 1, 'max_auc_drop': 0,
            'max_accuracy_drop': 0, 'max_rmse': 0}
FRACTIONS = ('min_auc', 'min_accuracy', 'max_rmse_increase')


def _check_numbers(config: PipelineConfig) -> None:
  for name, floor in MINIMUMS.items():
    if getattr(config, name) < floor:
      raise ConfigError(f'{name} {getattr(config, name)} is below {floor}: '
                        f'set {ENV_PREFIX}{name.upper()} to {floor} or more')
  for name in FRACTIONS:
    if not 0 <= getattr(config, name) <= 1:
      raise ConfigError(f'{name} {getattr(config, name)} is not a fraction: '
                        f'set {ENV_PREFIX}{name.upper()} between 0 and 1')


def _check_slices(config: PipelineConfig) -> None:
  """TFMA finds no slices for a feature the examples lack: say so instead."""
  from models import features  # pylint: disable=g-import-not-at-top
  known = features.model_features()
  unknown = [s for s in config.slices if s not in known]
  if unknown:
    raise ConfigError(f'slice_features names {", ".join(unknown)}, not a model feature, '
                      f'so TFMA would find no slices: use features of models/features.py '
                      f'({", ".join(known)})')


def _is_local(path: str) -> bool:
  return '://' not in path


# Where `local_runner.py --tune` saves the tuned values, under the output root
# (pipeline/pipeline.py's tuned_hyperparameters_path reads this name).
TUNED_HYPERPARAMETERS_FILE = 'tuned_hyperparameters.json'


def _hyperparameter_files(config: PipelineConfig) -> List[str]:
  """The local hyperparameters files a run may train with, when they exist."""
  paths = [config.path(config.hyperparameters_file),
           os.path.join(config.path(config.output_root), TUNED_HYPERPARAMETERS_FILE)]
  return [p for p in paths if _is_local(p) and os.path.isfile(p)]


def _read_hyperparameters(path: str) -> Dict:
  import json  # pylint: disable=g-import-not-at-top
  try:
    with open(path) as f:
      values = json.load(f)
  except json.JSONDecodeError as e:
    raise ConfigError(f'hyperparameters file {path} is not valid JSON ({e}): '
                      f'fix the file, e.g. against models/hyperparameters.json') from None
  if not isinstance(values, dict):
    raise ConfigError(f'hyperparameters file {path} holds a {type(values).__name__}, '
                      f'not a JSON object: write it as {{"key": value, ...}}')
  return values


def _check_hyperparameter_keys(path: str, values: Dict) -> None:
  """models/model.py would silently ignore a key it does not read."""
  from models import hyperparameters  # pylint: disable=g-import-not-at-top
  known = hyperparameters.KNOWN_KEYS
  for key in sorted(set(values) - set(known)):
    close = difflib.get_close_matches(key, known, n=1)
    hint = f'did you mean {close[0]!r}?' if close else 'remove it or add it to models/model.py'
    raise ConfigError(f'hyperparameters file {path} has key {key!r}, which models/model.py '
                      f'does not read (known: {", ".join(known)}): {hint}')


def _check_crosses(path: str, values: Dict) -> None:
  """A cross of an unknown column would fail deep in the Trainer with KeyError."""
  from models import features, hyperparameters  # pylint: disable=g-import-not-at-top
  known = features.model_features()
  for cross in hyperparameters.parse_crosses(values.get('crosses')):
    if len(cross) != 2:
      raise ConfigError(f'hyperparameters file {path} has cross {"*".join(cross)!r}, '
                        f'not of two features: write crosses as "a*b,c*d"')
    for name in cross:
      if name in known:
        continue
      why = ("an 'ignored' feature of models/features.py" if name in features.RAW_FEATURES
             else 'not a column of models/features.py')
      raise ConfigError(f'hyperparameters file {path} crosses {name!r}, {why}: cross '
                        f'model features ({", ".join(known)})')


def _check_hyperparameters(config: PipelineConfig) -> None:
  for path in _hyperparameter_files(config):
    values = _read_hyperparameters(path)
    _check_hyperparameter_keys(path, values)
    _check_crosses(path, values)


def _check_data_root(config: PipelineConfig) -> None:
  """The data root exists and holds span-N/ folders (local paths only)."""
  root = config.path(config.data_root)
  if not _is_local(root):
    return  # gs:// and the like: the run's ExampleGen checks them.
  if not os.path.isdir(root):
    raise ConfigError(f'data_root {root} does not exist: point {ENV_PREFIX}DATA_ROOT '
                      f'(--data-root) at the folder holding span-<N>/*.csv')
  span_folder = config.input_pattern.split('/')[0]
  if '{SPAN}' in span_folder:
    pattern = re.compile(re.escape(span_folder).replace(re.escape('{SPAN}'), r'\d+'))
    if not any(pattern.fullmatch(name) and os.path.isdir(os.path.join(root, name))
               for name in os.listdir(root)):
      raise ConfigError(f'data_root {root} has no {span_folder.replace("{SPAN}", "<N>")}/ '
                        f'folder: put each span of CSV files in {root}/'
                        f'{span_folder.replace("{SPAN}", "1")}/ and so on')


def _check_repository_files(config: PipelineConfig) -> None:
  """The schema and the hyperparameters the pipeline reads (local paths only)."""
  files = {'schema_file': config.schema_file}
  if not config.tune:  # A tuning run writes the hyperparameters file.
    files['hyperparameters_file'] = config.hyperparameters_file
  for name, relative in files.items():
    path = config.path(relative)
    if _is_local(path) and not os.path.isfile(path):
      raise ConfigError(f'{name} {path} does not exist: set {ENV_PREFIX}{name.upper()} '
                        f'to the file (default {getattr(PipelineConfig, name)})')


def _check_serving_config_file(config: PipelineConfig) -> None:
  """The canary flow rewrites this file: never a tracked one, and it must exist."""
  if not config.serving_config_file:
    return
  path = os.path.abspath(config.path(config.serving_config_file))
  if not _is_local(path):
    return
  generated_roots = [os.path.abspath(config.path(r)) + os.sep
                     for r in (config.output_root, config.serving_dir)]
  in_repository = path.startswith(os.path.join(REPO_ROOT, ''))
  if in_repository and not any(path.startswith(r) for r in generated_roots):
    raise ConfigError(
        f'serving_config_file {path} is in the source tree, and the canary rollout '
        f'rewrites it: use the generated config (python -m operations.rollout init '
        f'writes {os.path.join(config.path(config.serving_dir), "models.config")})')
  if not os.path.isfile(path):
    raise ConfigError(f'serving_config_file {path} does not exist: create it with '
                      f'python -m operations.rollout init --config {path}')


def _check_example(config: PipelineConfig) -> None:
  """The models read the example when imported: a config of another one
  would build one example's pipeline around the other's code."""
  import examples  # pylint: disable=g-import-not-at-top
  if config.example not in examples.EXAMPLES:
    raise ConfigError(f'example {config.example!r} is not one of {", ".join(examples.EXAMPLES)}:'
                      f' set {examples.SWITCH} to one of them')
  running = examples.selected_name()
  if config.example != running:
    raise ConfigError(f'example {config.example!r} is not the one this process runs '
                      f'({running!r}, from {examples.SWITCH}): select it with '
                      f'{examples.SWITCH}={config.example} in the environment instead')


def validate(config: PipelineConfig) -> PipelineConfig:
  """Raises ConfigError for a value that would fail late or silently."""
  _check_choices(config)
  _check_example(config)
  _check_numbers(config)
  _check_slices(config)
  _check_data_root(config)
  _check_repository_files(config)
  _check_hyperparameters(config)
  _check_serving_config_file(config)
  return config


def example_defaults(environ=os.environ) -> PipelineConfig:
  """The defaults, with those the selected example states (CONFIG_DEFAULTS);
  no <ENV_PREFIX>_* variable and no check applied."""
  import examples  # pylint: disable=g-import-not-at-top
  try:
    name = examples.selected_name(environ)
  except examples.UnknownExampleError as e:
    raise ConfigError(str(e)) from None
  return dataclasses.replace(PipelineConfig(), example=name,
                             **examples.EXAMPLES[name].CONFIG_DEFAULTS)


def load(overrides: Optional[Dict] = None, environ=os.environ) -> PipelineConfig:
  """Defaults, then <ENV_PREFIX>_* environment variables, then explicit overrides.

  Raises ConfigError (a ValueError) naming the cause and the fix for an
  unknown variable or field, a value of the wrong type or out of its choices,
  a slice on no model feature, a missing data root or serving config.
  """
  _check_environ(environ)
  config = example_defaults()
  for field in dataclasses.fields(config):
    text = environ.get(ENV_PREFIX + field.name.upper())
    if text is not None:
      setattr(config, field.name, _coerce(field.name, text, getattr(config, field.name)))
  for name, value in (overrides or {}).items():
    if value is not None:
      if not hasattr(config, name):
        raise ConfigError(f'unknown config field {name!r}: {_closest_field(name)}')
      setattr(config, name, value)
  return validate(config)
