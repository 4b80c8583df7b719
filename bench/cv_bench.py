"""Our model beside the gradient-boosted trees by k-fold cross-validation
over the `train` and `eval` rows of a run: the rows choices may be made on
(`test` is never read here).

    python bench/cv_bench.py --output-root /tmp/run/tfx_output \
        [--folds 5] [--seeds 1,2,3,4,5] [--set dropout=0.3 ...] [--out FILE]

Why: `eval` alone (3,045 taxi rows) moves accuracy by +-0.55 points by
chance, too much to tell two models apart; 12,002 rows scored once each
tell differences of ~0.2 points. Each fold is scored by models that never
saw it, trained as the pipeline trains them:
- ours: models/model.py's model and loop on the run's Transform graph
  (applied here to the raw examples), on three quarters of the other folds,
  early stopping on the last quarter;
- the trees: quality_bench.py's HistGradientBoostingClassifier, its settings
  chosen on `eval` by quality_bench's sweep, on the same three quarters.

Prints each model's pooled AUC / accuracy / log-loss per seed, ours minus
the trees, and, from the pooled predictions, how often a split of the test
split's size would show ours ahead of the trees' accuracy on every seed.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('OMP_NUM_THREADS', '1')  # As quality_bench.py: scikit-learn under load.

import argparse  # pylint: disable=g-import-not-at-top
import json
import pathlib
import statistics
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'bench'))

import compat.keras  # noqa: E402,F401  First: Keras 2 for TFX.
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from models import features  # noqa: E402
from models import model  # noqa: E402
import quality_bench  # noqa: E402
import training_bench  # noqa: E402

TRAIN_STEPS = 300  # The pipeline's train_steps (a maximum: early stopping).
TEST_SPLIT_ROWS = 3000  # The size of the taxi test split, for the resampling.
RESAMPLES = 4000


def transformed(output_root: pathlib.Path, records: list) -> dict:
  """{transformed feature: values} of raw serialized examples, in their order,
  through the run's Transform graph."""
  transform_output = tft.TFTransformOutput(
      training_bench.newest(str(output_root / '*' / 'Transform' / 'transform_graph' / '*')))
  layer = transform_output.transform_features_layer()
  batches = []
  for start in range(0, len(records), 1024):
    parsed = tf.io.parse_example(tf.constant(records[start:start + 1024]),
                                 transform_output.raw_feature_spec())
    batches.append({k: v.numpy() for k, v in layer(parsed).items()})
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def fold_rows(rows: int, folds: int) -> list:
  return np.array_split(np.random.RandomState(0).permutation(rows), folds)


def ours(x: dict, labels: np.ndarray, fit: np.ndarray, stop: np.ndarray,
         scored: np.ndarray, hparams: dict) -> np.ndarray:
  seed = int(hparams['seed'])
  model.keras.utils.set_random_seed(seed)
  rows = lambda idx: ({k: v[idx] for k, v in x.items()}, labels[idx])
  train_data = tf.data.Dataset.from_tensor_slices(rows(fit)).shuffle(
      len(fit), seed=seed).repeat().batch(int(hparams['batch_size']))
  stop_data = tf.data.Dataset.from_tensor_slices(rows(stop)).batch(model.EVAL_BATCH_SIZE)
  trained = model.build_model(hparams)
  model.train(trained, train_data, TRAIN_STEPS, stop_data, **model.early_stopping(hparams))
  return trained.predict(rows(scored)[0], batch_size=model.EVAL_BATCH_SIZE, verbose=0).reshape(-1)


def cross_validate(output_root: pathlib.Path, folds: int, seeds: list, overrides: dict) -> dict:
  splits = {s: quality_bench.split_records(output_root, s) for s in ('train', 'eval')}
  columns = {s: quality_bench.columns_of(r) for s, r in splits.items()}
  frames = {'train': quality_bench.model_frame(columns['train'])}
  frames['eval'] = quality_bench.model_frame(
      columns['eval'], quality_bench.category_lists(frames['train']))
  labels = {s: quality_bench.labels_of(c) for s, c in columns.items()}
  tree_settings = quality_bench.choose_tree_settings(
      (frames['train'], labels['train']), (frames['eval'], labels['eval']))['chosen']

  records = splits['train'] + splits['eval']
  y = np.concatenate([labels['train'], labels['eval']])
  x = transformed(output_root, records)
  if not (x.pop(features.LABEL_KEY).reshape(-1) == y).all():
    raise SystemExit('cv_bench: the Transform graph labels the rows otherwise than '
                     'quality_bench.labels_of: fix one of them')
  frame = quality_bench.model_frame(
      {name: columns['train'][name] + columns['eval'][name] for name in columns['train']})
  predictions = {'ours': np.zeros((len(seeds), len(y))), 'trees': np.zeros((len(seeds), len(y)))}
  parts = fold_rows(len(y), folds)
  for k, scored in enumerate(parts):
    rest = np.concatenate([p for j, p in enumerate(parts) if j != k])
    stop, fit = rest[:len(rest) // 4], rest[len(rest) // 4:]
    for i, seed in enumerate(seeds):
      hparams = dict(model.default_hparams(), seed=seed, **overrides)
      predictions['ours'][i, scored] = ours(x, y, fit, stop, scored, hparams)
      trees = quality_bench.trees(seed, **tree_settings).fit(frame.iloc[fit], y[fit])
      predictions['trees'][i, scored] = trees.predict_proba(frame.iloc[scored])[:, 1]
    print(f'  fold {k + 1} of {folds} done', file=sys.stderr, flush=True)
  return {'labels': y, 'tree_settings': tree_settings, **predictions}


def every_seed_wins(labels, ours_p, trees_p, rows: int, resamples: int = RESAMPLES) -> float:
  """The share of random `rows`-row subsets on which ours has the better
  accuracy on every seed: what a test split of that size would show."""
  right = lambda p: (p > 0.5) == labels
  gain = right(ours_p).astype(float) - right(trees_p)
  rng = np.random.default_rng(0)
  wins = [(gain[:, rng.choice(len(labels), rows, replace=False)].mean(axis=1) > 0).all()
          for _ in range(resamples)]
  return float(np.mean(wins))


def report(result: dict, overrides: dict) -> dict:
  y = result['labels']
  per_seed = {name: [quality_bench.metrics(y, p) for p in result[name]] for name in ('ours', 'trees')}
  out = {'rows': len(y), 'overrides': overrides, 'tree_settings': result['tree_settings'],
         'per_seed': per_seed,
         'mean': {name: {k: statistics.fmean(m[k] for m in scores) for k in scores[0]}
                  for name, scores in per_seed.items()},
         'accuracy_gain_per_seed': [o['accuracy'] - t['accuracy']
                                    for o, t in zip(per_seed['ours'], per_seed['trees'])],
         'every_seed_wins_on_a_test_sized_split': every_seed_wins(
             y, result['ours'], result['trees'], min(TEST_SPLIT_ROWS, len(y)))}
  for name, scores in out['mean'].items():
    print(f'{name}: ' + ' / '.join(f'{k} {v:.4f}' for k, v in scores.items()))
  print('ours minus trees, accuracy points per seed: ' +
        ', '.join(f'{100 * g:+.2f}' for g in out['accuracy_gain_per_seed']))
  print(f'share of {TEST_SPLIT_ROWS:,}-row splits where ours wins accuracy on every seed: '
        f'{out["every_seed_wins_on_a_test_sized_split"]:.2f}')
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output-root', required=True, type=pathlib.Path)
  parser.add_argument('--folds', type=int, default=5)
  parser.add_argument('--seeds', default=quality_bench.DEFAULT_SEEDS)
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
  parser.add_argument('--out', type=pathlib.Path)
  args = parser.parse_args(argv)
  overrides = training_bench.overrides(args.set)
  result = cross_validate(args.output_root, args.folds,
                          [int(s) for s in args.seeds.split(',')], overrides)
  out = report(result, overrides)
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main())
