"""The pipeline of the selected example (models/features.py): one definition
for every runner.

local_runner.py runs it with orchestration/runner.py (TFX's LocalDagRunner,
independent components side by side); kubeflow_v2_runner.py compiles
the same definition for Vertex AI Pipelines / Kubeflow Pipelines.
"""

import ast
import hashlib
import json
import os
from typing import Dict, List, Optional, Set

from ml_metadata.proto import metadata_store_pb2
# TFX's classes by module, not through tfx.v1: importing tfx.v1 also loads
# Google Cloud's client libraries, seconds on every run (see cloud.py).
from tfx.components import Evaluator, ExampleValidator, SchemaGen, StatisticsGen, Transform
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy)
from tfx.dsl.input_resolution.strategies.span_range_strategy import SpanRangeStrategy
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2, range_config_pb2, trainer_pb2, transform_pb2
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

from models import features
from pipeline.components import cloud
from pipeline.components.anomalies_gate import AnomaliesGate
from pipeline.components.baseline_resolver import PreviousBlessedModelStrategy
from pipeline.components.schema_importer import CuratedSchemaGen
from pipeline import configs
from pipeline import evaluation
from pipeline.components import csv_example_gen
from pipeline.components import infra_validator
from pipeline.configs import PipelineConfig

# Nodes a local run always executes: the Pusher decides from the serving
# directory, which its cache key does not cover (pipeline/components/pusher.py).
NEVER_CACHED = ('Pusher',)
TUNED_HYPERPARAMETERS_FILE = configs.TUNED_HYPERPARAMETERS_FILE


def source_fingerprint(files) -> str:
  """A short hash of the files' contents."""
  digest = hashlib.sha256()
  for path in files:
    with open(path, 'rb') as f:
      digest.update(f.read())
  return digest.hexdigest()[:16]


def code_fingerprint(*module_names: str) -> str:
  """A short hash of the code a step runs: the named modules and every
  project module they import, transitively.

  TFX keys a step on its code's import path, not on the code, so an edit
  would reuse a stale cached output. Following the imports (inside
  functions too) means a new helper module cannot be missed; only an import
  by a computed name (importlib) would be.
  """
  files = set()
  for name in module_names:
    files |= project_module_files(name)
  digest = hashlib.sha256()
  for path in sorted(files):
    digest.update(os.path.relpath(path, configs.REPO_ROOT).encode() + b'\0')
    with open(path, 'rb') as f:
      digest.update(f.read())
  return digest.hexdigest()[:16]


def project_module_files(module_name: str) -> Set[str]:
  """The source files of module_name, its packages and every project module
  they import, transitively. A project module is one whose source is in
  this repository (the .py file its dotted name names under REPO_ROOT)."""
  files: Dict[str, str] = {}
  pending = [module_name]
  while pending:
    name = pending.pop()
    path = _project_source(name)
    if path is None or name in files:
      continue  # A library, a name imported from a module, or seen.
    files[name] = path
    parts = name.split('.')
    pending += ['.'.join(parts[:i]) for i in range(1, len(parts))]  # Its packages.
    pending += _imported_names(path, name)
  return set(files.values())


def _project_source(module_name: str) -> Optional[str]:
  base = os.path.join(configs.REPO_ROOT, *module_name.split('.'))
  for path in (base + '.py', os.path.join(base, '__init__.py')):
    if os.path.isfile(path):
      return path
  return None


def _imported_names(path: str, module_name: str) -> List[str]:
  """Every dotted name an import statement of the file may load: for
  `from a import b`, both a and a.b (b may be a module)."""
  with open(path, 'rb') as f:
    tree = ast.parse(f.read(), path)
  package = module_name.split('.')
  if not path.endswith('__init__.py'):
    package = package[:-1]
  names = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names += [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:  # Relative: from the module's package, `level - 1` up.
        base = '.'.join(package[:len(package) - node.level + 1] + ([base] if base else []))
      names.append(base)
      names += [f'{base}.{alias.name}' for alias in node.names]
  return names


def _module_of(function_path: str) -> str:
  """'models.model.run_fn' -> 'models.model'."""
  return function_path.rpartition('.')[0]


def categorical_stats_options():
  """Statistics that count hours, days and areas as categories.

  Only the categorical markers of models/features.py go in, not the curated
  schema, so a schema edit leaves StatisticsGen cached.
  """
  import tensorflow_data_validation as tfdv
  from tensorflow_metadata.proto.v0 import schema_pb2
  schema = schema_pb2.Schema()
  for name in features.categorical_ints():
    feature = schema.feature.add(name=name, type=schema_pb2.INT)
    feature.int_domain.is_categorical = True
  return tfdv.StatsOptions(schema=schema)


def tuned_hyperparameters_path(config: PipelineConfig) -> str:
  """Where `local_runner.py --tune` saves what it found: under the output
  root, never over the checked-in models/hyperparameters.json."""
  return os.path.join(config.path(config.output_root), TUNED_HYPERPARAMETERS_FILE)


def hyperparameters_path(config: PipelineConfig) -> str:
  """The hyperparameters runs train with: the tuned ones of this output root
  when `--tune` saved some, else the checked-in file."""
  tuned = tuned_hyperparameters_path(config)
  return tuned if os.path.exists(tuned) else config.path(config.hyperparameters_file)


def _read_hyperparameters(config: PipelineConfig) -> str:
  path = hyperparameters_path(config)
  if not os.path.exists(path):
    return '{}'
  with open(path) as f:
    return json.dumps(json.load(f), sort_keys=True)


def _span_window(config: PipelineConfig, example_gen):
  """The Examples the model learns from, and the nodes that select them.

  ExampleGen ingests the newest span; with span_window > 1 a Resolver adds
  the previous spans' Examples, and Transform gets its last analyzer cache so
  that it analyses only the new span.
  """
  if config.span_window <= 1:
    return example_gen.outputs['examples'], None, []
  spans = Resolver(
      strategy_class=SpanRangeStrategy,
      config={'range_config': range_config_pb2.RangeConfig(
          rolling_range=range_config_pb2.RollingRange(num_spans=config.span_window))},
      examples=Channel(type=standard_artifacts.Examples,
                       producer_component_id=example_gen.id),
  ).with_id('SpanWindowResolver')
  spans.add_upstream_node(example_gen)
  cache = Resolver(
      strategy_class=LatestArtifactStrategy,
      cache=Channel(type=standard_artifacts.TransformCache),
  ).with_id('TransformCacheResolver')
  return spans.outputs['examples'], cache.outputs['cache'], [spans, cache]


def _train_args(steps: int) -> trainer_pb2.TrainArgs:
  return trainer_pb2.TrainArgs(splits=[configs.TRAIN], num_steps=steps)


def _validation_args(config: PipelineConfig) -> trainer_pb2.EvalArgs:
  """Trainer and Tuner validate on eval, never on test (the Evaluator's)."""
  return trainer_pb2.EvalArgs(splits=[configs.EVAL], num_steps=config.eval_steps or None)


def _baseline_resolver(trainer, for_kubeflow: bool):
  """The latest blessed model: the Evaluator's baseline.

  Locally the candidate is excluded, so a rerun stays cached (see
  PreviousBlessedModelStrategy). The Kubeflow V2 compiler knows
  only TFX's own strategy.
  """
  inputs = {
      'model': Channel(type=standard_artifacts.Model),
      'model_blessing': Channel(type=standard_artifacts.ModelBlessing),
  }
  if for_kubeflow:
    strategy = LatestBlessedModelStrategy
  else:
    strategy = PreviousBlessedModelStrategy
    inputs['candidate'] = trainer.outputs['model']
  return Resolver(strategy_class=strategy, **inputs).with_id(
      'LatestBlessedModelResolver')


def create_pipeline(
    config: PipelineConfig,
    enable_cache: bool = True,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    for_kubeflow: bool = False,
) -> Pipeline:
  """Builds every component and wires them into one pipeline."""
  example_gen = csv_example_gen.csv_example_gen(
      code_fingerprint=code_fingerprint('pipeline.components.csv_example_gen'),
      input_base=config.path(config.data_root),
      input_config=example_gen_pb2.Input(splits=[
          example_gen_pb2.Input.Split(name='all', pattern=config.input_pattern)]),
      output_config=csv_example_gen.hash_split_config(config.split_buckets))

  statistics_gen = StatisticsGen(
      examples=example_gen.outputs['examples'],
      stats_options=categorical_stats_options())

  # Inferred schema, only for review: diff it against the curated one.
  inferred_schema_gen = SchemaGen(
      statistics=statistics_gen.outputs['statistics'], infer_feature_shape=False)

  # The step reads the schema where it runs (the image, on the cloud); its
  # fingerprint comes from this checkout's copy, which the image is built from.
  schema_gen = CuratedSchemaGen(
      schema_file=configs.code_path(config, config.schema_file),
      content_fingerprint=source_fingerprint(files=[config.path(config.schema_file)]),
  ).with_id('CuratedSchemaGen')

  example_validator = ExampleValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_gen.outputs['schema'])

  anomalies_gate = AnomaliesGate(
      anomalies=example_validator.outputs['anomalies'],
      statistics=statistics_gen.outputs['statistics'])

  training_examples, analyzer_cache, window_nodes = _span_window(config, example_gen)

  transform = Transform(
      examples=training_examples,
      analyzer_cache=analyzer_cache,
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=config.preprocessing_fn,
      disable_statistics=True,  # StatisticsGen already described the data.
      # tf.Transform's TF1 graph path: the same outputs (identical eval
      # metrics), less CPU, as it traces preprocessing_fn once rather than
      # once per analysis phase (bench/README.md).
      force_tf_compat_v1=True,
      # Analysed on train only; transformed only what Trainer and Tuner
      # read. The Evaluator reads the raw test examples through the model's
      # own preprocessing, so transforming test would be work for nothing.
      splits_config=transform_pb2.SplitsConfig(
          analyze=[configs.TRAIN], transform=[configs.TRAIN, configs.EVAL]),
      custom_config={'code_fingerprint': code_fingerprint(_module_of(config.preprocessing_fn))})
  transform.add_upstream_node(anomalies_gate)

  tuner = None
  if config.tune:
    tuner = cloud.tuner(
        config,
        tuner_fn=config.tuner_fn,
        examples=transform.outputs['transformed_examples'],
        transform_graph=transform.outputs['transform_graph'],
        train_args=_train_args(config.tuner_steps),
        eval_args=_validation_args(config),
        # The Trainer's hyperparameters: the search varies some, keeps the rest.
        custom_config={'max_trials': config.tuner_trials,
                       'tuner_algorithm': config.tuner_algorithm,
                       # The trials' TensorBoard logs (the Tuner's working dir is temporary).
                       'log_dir': os.path.join(config.pipeline_root, 'Tuner', 'tensorboard'),
                       'hyperparameters': _read_hyperparameters(config),
                       'code_fingerprint': code_fingerprint(_module_of(config.tuner_fn))})

  trainer = cloud.trainer(
      config,
      run_fn=config.run_fn,
      examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      hyperparameters=tuner.outputs['best_hyperparameters'] if tuner else None,
      train_args=_train_args(config.train_steps),
      eval_args=_validation_args(config),
      custom_config={
          'hyperparameters': _read_hyperparameters(config),
          'code_fingerprint': code_fingerprint(_module_of(config.run_fn)),
      })

  model_resolver = _baseline_resolver(trainer, for_kubeflow)

  # The blessing and the reported quality: on test, which no choice saw.
  evaluator = Evaluator(
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      baseline_model=model_resolver.outputs['model'],
      example_splits=[configs.TEST],
      eval_config=evaluation.eval_config(config))

  infra_check = None
  push_inputs = {'model': trainer.outputs['model']}
  if config.infra_validator != 'none':
    infra_check = infra_validator.infra_validator(
        config, trainer.outputs['model'], example_gen.outputs['examples'])
    # Pusher then pushes the validated copy, warmup requests included.
    push_inputs = {'infra_blessing': infra_check.outputs['blessing']}

  pusher = cloud.pusher(config, **push_inputs,
                        model_blessing=evaluator.outputs['blessing'])
  # With vertex_serving, blessed models also go to a Vertex AI endpoint.
  vertex_pusher = cloud.vertex_pusher(config, **push_inputs,
                                      model_blessing=evaluator.outputs['blessing'])

  nodes: List = [example_gen, statistics_gen, inferred_schema_gen, schema_gen,
                 example_validator, anomalies_gate, *window_nodes, transform]
  nodes += [tuner] if tuner else []
  nodes += [trainer, model_resolver, evaluator]
  nodes += [infra_check] if infra_check else []
  nodes += [pusher]
  nodes += [vertex_pusher] if vertex_pusher else []
  return Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=config.pipeline_root,
      components=nodes,
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=config.beam_pipeline_args())
