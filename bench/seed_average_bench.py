"""Eval-split scores of models trained with several seeds, each alone and
averaged (a seed ensemble), on the Transform output of an earlier run. For
choices made on `eval` only (the Evaluator's `test` is never read here).

    python bench/seed_average_bench.py --output-root /tmp/run/tfx_output \
        [--seeds 1,2,3,4,5] [--set embedding_dim=8 ...]

Trains as the Trainer does (models/model.py: the same model, loop, early
stopping and kept weights), without exporting.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'bench'))
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import compat.keras  # noqa: E402,F401  First: Keras 2 for TFX.
import numpy as np  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from models import model  # noqa: E402
import quality_bench  # noqa: E402
import training_bench  # noqa: E402


def eval_predictions(output_root: str, hparams: dict, train_steps: int):
  """(labels, P(class 1)) on the eval split of one seed's trained model."""
  with tempfile.TemporaryDirectory() as out:
    fn_args = training_bench.fn_args_for(output_root, hparams, train_steps, out)
    seed = int(hparams['seed'])
    model.keras.utils.set_random_seed(seed)
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    dataset = model._input_fn(fn_args.train_files, fn_args.data_accessor,  # pylint: disable=protected-access
                              transform_output, int(hparams['batch_size']), seed=seed)
    eval_dataset = model._eval_input_fn(fn_args, transform_output)  # pylint: disable=protected-access
    trained = model.build_model(hparams)
    model.train(trained, dataset, train_steps, eval_dataset, **model.early_stopping(hparams))
    labels, probabilities = [], []
    for x, y in eval_dataset:
      probabilities.append(trained(x, training=False).numpy().reshape(-1))
      labels.append(y.numpy().reshape(-1))
  return np.concatenate(labels), np.concatenate(probabilities)


def rounded(scores: dict) -> dict:
  return {k: round(v, 4) for k, v in scores.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output-root', required=True)
  parser.add_argument('--seeds', default='1,2,3,4,5')
  parser.add_argument('--train-steps', type=int, default=300)
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
  args = parser.parse_args(argv)
  overrides = training_bench.overrides(args.set)
  labels, members = None, []
  for seed in [int(s) for s in args.seeds.split(',')]:
    hparams = dict(model.default_hparams(), seed=seed, **overrides)
    labels, probabilities = eval_predictions(args.output_root, hparams, args.train_steps)
    members.append(probabilities)
    print(f'seed {seed}:', rounded(quality_bench.metrics(labels, probabilities)), flush=True)
  alone = [quality_bench.metrics(labels, p) for p in members]
  print('members, mean:', rounded({k: statistics.fmean(s[k] for s in alone) for k in alone[0]}))
  print('average of the members:', rounded(quality_bench.metrics(labels, np.mean(members, 0))))
  print('overrides:', json.dumps(overrides))


if __name__ == '__main__':
  main()
