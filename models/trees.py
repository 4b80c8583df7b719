"""The second model family: gradient-boosted trees (TensorFlow Decision
Forests) on Transform's outputs, for the Trainer (`run_fn`).

Selected with <ENV_PREFIX>_RUN_FN=models.trees.run_fn and
<ENV_PREFIX>_HYPERPARAMETERS_FILE=models/trees_hyperparameters.json (README,
"Model families"). The trees read the same transformed features and label as
models/model.py, and models/signatures.py exports them with the same
signatures, so the Evaluator, the infra check, the servers and the clients
see no difference. TF Serving >= 2.11 serves TF-DF's ops natively; the local
server imports TF-DF when a model uses them (serving/servable.py).
"""

import json
import os
from typing import Dict, List

import tensorflow as tf
import tensorflow_decision_forests as tfdf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
from tfx_bsl.public import tfxio

import examples
from models import features
from models import model
from models import preprocessing
from models import signatures

HPARAMS_FILE = os.path.join(os.path.dirname(__file__), 'trees_hyperparameters.json')
SEED = model.SEED
TUNED_FILE = 'tuned_hyperparameters.json'  # pipeline/configs.py's TUNED_HYPERPARAMETERS_FILE.
# The project's variable prefix (TAXI_): models/ may not import pipeline/.
_ENV_PREFIX = examples.SWITCH[:-len('EXAMPLE')]
ENV_HINT = f'{_ENV_PREFIX}HYPERPARAMETERS_FILE=models/trees_hyperparameters.json'

# Trees read the whole split at once: big batches only make reading faster.
READ_BATCH_SIZE = 1024
# The YDF tasks by the example's task. A regression task would add
# features.REGRESSION: tfdf.keras.Task.REGRESSION here (its head is one
# number, as models/task.py's would be).
TASKS = {features.BINARY: tfdf.keras.Task.CLASSIFICATION,
         features.MULTICLASS: tfdf.keras.Task.CLASSIFICATION}
# Transformed features that are ids (categories), not quantities: TF-DF
# would treat an int as a number. A 'bucket' index stays a number: its
# order is the value's, so a split on it is a split on the value.
CATEGORICAL_KINDS = ('vocab', 'categorical')
# hyperparameters file key -> GradientBoostedTreesModel argument.
TREE_KEYS = {
    'num_trees': 'num_trees',
    'max_depth': 'max_depth',
    'shrinkage': 'shrinkage',
    'min_examples': 'min_examples',
    'subsample': 'subsample',
    'l2_regularization': 'l2_regularization',
    'early_stopping_num_trees_look_ahead': 'early_stopping_num_trees_look_ahead',
}


def default_hparams() -> Dict:
  with open(HPARAMS_FILE) as f:
    return json.load(f)


def _dataset(file_pattern: List[str], data_accessor: DataAccessor,
             tf_transform_output: tft.TFTransformOutput) -> tf.data.Dataset:
  """One pass, in file order, of (transformed features, label)."""
  return data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=READ_BATCH_SIZE,
                                     label_key=features.LABEL_KEY, shuffle=False,
                                     num_epochs=1),
      tf_transform_output.transformed_metadata.schema).prefetch(tf.data.AUTOTUNE)


def feature_usages() -> List[tfdf.keras.FeatureUsage]:
  """Every model feature by its transformed name, ids as categories."""
  usages = []
  for name, spec in features.model_features().items():
    semantic = (tfdf.keras.FeatureSemantic.CATEGORICAL if spec.kind in CATEGORICAL_KINDS
                else tfdf.keras.FeatureSemantic.NUMERICAL)
    usages.append(tfdf.keras.FeatureUsage(name=features.transformed_name(name),
                                          semantic=semantic))
    if spec.period:
      usages.append(tfdf.keras.FeatureUsage(name=preprocessing.phase_name(name),
                                            semantic=tfdf.keras.FeatureSemantic.NUMERICAL))
  return usages


def tree_arguments(hparams: Dict) -> Dict:
  """The GradientBoostedTreesModel arguments the hyperparameters set."""
  return {argument: hparams[key] for key, argument in TREE_KEYS.items() if key in hparams}


def build_model(hparams: Dict) -> tfdf.keras.GradientBoostedTreesModel:
  if features.TASK not in TASKS:
    raise ValueError(f'models/trees.py has no trees for task {features.TASK!r} '
                     f'(it has {", ".join(TASKS)}): add it to TASKS')
  return tfdf.keras.GradientBoostedTreesModel(
      task=TASKS[features.TASK],
      features=feature_usages(),
      # Only the listed features: a transformed column added later is not
      # silently learnt from with a guessed semantic.
      exclude_non_specified_features=True,
      random_seed=int(hparams.get('seed', SEED)),
      verbose=0,
      **tree_arguments(hparams))


def hparams_from(fn_args: FnArgs) -> Dict:
  """The pipeline's hyperparameters (its hyperparameters_file), else this
  family's checked-in ones; keys of the other family are refused."""
  if fn_args.hyperparameters:
    raise ValueError('The Tuner searches models/model.py\'s knobs, not the trees\': '
                     'train the trees without --tune')
  custom = fn_args.custom_config or {}
  hparams = (json.loads(custom['hyperparameters']) if 'hyperparameters' in custom
             else default_hparams())
  foreign = sorted(set(hparams) - set(TREE_KEYS) - {'seed'})
  if foreign:
    raise ValueError(
        f'The hyperparameters hold {", ".join(foreign)}, which models/trees.py does not read '
        f'(they are models/model.py\'s): train the trees with their own file, '
        f'{ENV_HINT}, and an output root without {TUNED_FILE} (--tune saves '
        f'models/model.py\'s values there, and runs prefer it)')
  return hparams


def run_fn(fn_args: FnArgs):
  """Trainer entry point: grows the trees, then exports the serving SavedModel.

  The eval split is TF-DF's validation set: it picks the number of trees
  (early stopping), as eval does for every choice of the default family.
  fn_args.train_steps does not apply: trees see the whole train split.
  """
  hparams = hparams_from(fn_args)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  train = _dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output)
  validation = _dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output)
  trees = build_model(hparams)
  trees.fit(train, validation_data=validation, verbose=0)
  # Quality is measured by the Evaluator, not here.
  signatures.export(trees, tf_transform_output, fn_args.serving_model_dir)
