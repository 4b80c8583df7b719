"""Model quality on the test split: the pipeline's model beside scikit-learn's
gradient-boosted trees and a one-hot logistic regression, over 5 seeds.

    python bench/quality_bench.py [--seeds 1,2,3,4,5] [--work-dir /tmp/quality_bench]
                                  [--out bench/results/quality.json] [--reuse]

For each seed, a fresh pipeline run (`python local_runner.py`, as a user
types it, into its own output root and serving dir under --work-dir) trains
our model with that 'seed' hyperparameter (the checked-in hyperparameters
otherwise); Transform analyses afresh too, so its run-to-run variation is in
the spread. The run uses no infra validator (it pushes the same SavedModel,
faster) and floors of 0, so a weak seed is still pushed and measured.

Our model is scored outside TFMA, as a user would score it: the pushed
SavedModel's serving_default signature on the test split's tf.Examples, read
from the run's ExampleGen output. ExampleGen's hash split is the same in
every run (checked here), so all models see exactly the same rows:

- HistGradientBoostingClassifier: the raw model columns, categoricals as
  categories (unseen values as missing), NaN for missing numbers. A small
  sweep of its settings is judged on `eval` (AUC), never on `test`; the
  chosen one is then trained once per seed (its feature subsampling makes
  the seed matter).
- LogisticRegression: categoricals and bucketed coordinates one-hot, the
  other numbers (log1p where the model takes their log) standardised. lbfgs
  is deterministic, so its seeds agree.

All train on `train` and are measured on `test`: mean, min and max AUC,
accuracy (threshold 0.5) and log-loss. Then ours minus the trees, with a 95%
interval from resampling the rows (paired): what the split's size alone
allows; the same for `eval` beside it. Prints a markdown table, writes JSON.
Binary examples only (the taxi one). About 3 min on 2 quiet cores (five
pipeline runs of ~30 s, the rest in seconds); --reuse scores existing runs.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# One OpenMP thread for scikit-learn's trees: on 2 shared cores, its
# spinning worker threads made the sweep ~10x slower under load.
os.environ.setdefault('OMP_NUM_THREADS', '1')

import argparse  # pylint: disable=g-import-not-at-top
import glob
import hashlib
import itertools
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from models import features  # noqa: E402
from pipeline import configs  # noqa: E402

DEFAULT_SEEDS = '1,2,3,4,5'
OURS, TREES, LOGISTIC = 'ours (pushed SavedModel)', 'HistGradientBoosting', 'LogisticRegression'
# The trees' settings tried on `eval`: learning rate x leaves x iterations.
TREE_GRID = {'learning_rate': (0.05, 0.1), 'max_leaf_nodes': (15, 31), 'max_iter': (200, 400)}
TREE_MAX_FEATURES = 0.8  # Per-split feature subsampling: the seed then matters.
# Rows resampled (paired, with replacement) for the interval of ours minus the
# trees: how far apart the split's size alone lets two models' scores land.
BOOTSTRAP_RESAMPLES = 1000


class BenchError(RuntimeError):
  """Something the bench cannot measure; the message names the cause and fix."""


# ---- the pipeline runs ------------------------------------------------------------------


def run_pipeline(seed: int, seed_dir: pathlib.Path, reuse: bool) -> dict:
  """A fresh pipeline run training with `seed`; returns its summary."""
  summary_file = seed_dir / 'summary.json'
  if reuse and summary_file.exists():
    return json.loads(summary_file.read_text())
  shutil.rmtree(seed_dir, ignore_errors=True)
  seed_dir.mkdir(parents=True)
  hyperparameters = json.loads((REPO / configs.PipelineConfig.hyperparameters_file).read_text())
  hyperparameters['seed'] = seed
  (seed_dir / 'hyperparameters.json').write_text(json.dumps(hyperparameters, indent=2))
  prefix = configs.ENV_PREFIX
  env = dict(os.environ, PYTHONPATH=str(REPO), **{
      prefix + 'HYPERPARAMETERS_FILE': str(seed_dir / 'hyperparameters.json'),
      prefix + 'INFRA_VALIDATOR': 'none', prefix + 'MIN_AUC': '0', prefix + 'MIN_ACCURACY': '0'})
  started = time.time()
  done = subprocess.run(
      [sys.executable, 'local_runner.py', '--output-root', str(seed_dir / 'tfx_output'),
       '--serving-dir', str(seed_dir / 'serving_model'), '--summary-json', str(summary_file)],
      cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  if done.returncode != 0 or not summary_file.exists():
    raise BenchError(f'the pipeline run for seed {seed} failed (exit {done.returncode}): '
                     f'see {seed_dir}/tfx_output/logs/; {done.stderr.strip()[-300:]}')
  summary = json.loads(summary_file.read_text())
  if not summary.get('pushed_path'):
    raise BenchError(f'the run for seed {seed} pushed no model ({summary.get("push_result")}):'
                     f' see {summary.get("log_path")}')
  print(f'  seed {seed}: pipeline run {time.time() - started:.0f} s', file=sys.stderr)
  return summary


def split_records(output_root: pathlib.Path, split: str) -> list:
  """The serialized tf.Examples of one split of the run's ExampleGen output."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  artifacts = glob.glob(str(output_root / '*' / 'CsvExampleGen' / 'examples' / '*'))
  if len(artifacts) != 1:
    raise BenchError(f'{output_root} holds {len(artifacts)} ExampleGen outputs, not 1: '
                     f'run without --reuse for fresh runs')
  files = sorted(glob.glob(os.path.join(artifacts[0], f'Split-{split}', '*')))
  records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type='GZIP')]
  if not records:
    raise BenchError(f'the {split} split under {artifacts[0]} is empty: check the split '
                     f'buckets of pipeline/configs.py')
  return records


def fingerprint(records: list) -> str:
  """The examples' hash, whatever the order of records and of feature maps
  (a map's serialized order may differ between runs)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  canonical = sorted(tf.train.Example.FromString(r).SerializeToString(deterministic=True)
                     for r in records)
  return hashlib.sha256(b''.join(canonical)).hexdigest()[:16]


# ---- the data as columns ----------------------------------------------------------------


def columns_of(records: list) -> dict:
  """{column: list of values, None where missing} of every CSV column."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  names = list(features.RAW_FEATURES) + features.TRAINING_ONLY
  columns = {name: [] for name in names}
  for record in records:
    feature = tf.train.Example.FromString(record).features.feature
    for name in names:
      kind = feature[name].WhichOneof('kind') if name in feature else None
      values = getattr(feature[name], kind).value if kind else []
      value = values[0] if values else None
      columns[name].append(value.decode() if isinstance(value, bytes) else value)
  return columns


def labels_of(columns: dict) -> np.ndarray:
  """The label as Transform computes it (models/preprocessing.py's label):
  missing values filled with the feature's default, 0 for training-only
  ones, in float32 as in the graph (float64 turns 16 of 3,000 taxi test
  labels, tips of exactly a fifth of the fare, the other way)."""
  dense = {}
  for name in list(features.RAW_FEATURES) + features.TRAINING_ONLY:
    spec = features.RAW_FEATURES.get(name)
    if spec is not None and spec.dtype == 'string':
      continue  # The label function reads numbers.
    default = spec.default if spec is not None else 0.0
    dense[name] = np.array([default if v is None else v for v in columns[name]],
                           dtype=np.float32)
  if features.LABEL_COLUMN:
    return np.array([0 if v is None else int(v) for v in columns[features.LABEL_COLUMN]])
  return np.asarray(features.LABEL(dense), dtype=int)


def model_frame(columns: dict, categories: dict = None):
  """The model features as a DataFrame: categoricals as pandas categories
  (those of `categories`, the train split's, when given), numbers as floats."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  frame = pd.DataFrame()
  for name, spec in features.model_features().items():
    if _is_categorical(spec):
      values = pd.Series([None if v is None else str(v) for v in columns[name]], dtype=object)
      known = categories[name] if categories else sorted(set(values.dropna()))
      frame[name] = pd.Categorical(values, categories=known)
    else:
      frame[name] = pd.Series([np.nan if v is None else float(v) for v in columns[name]])
  return frame


def _is_categorical(spec) -> bool:
  return spec.kind in ('categorical', 'vocab')


def category_lists(frame) -> dict:
  return {name: list(frame[name].cat.categories) for name in frame.columns
          if str(frame[name].dtype) == 'category'}


# ---- the models -------------------------------------------------------------------------


def metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
  from sklearn.metrics import accuracy_score, log_loss, roc_auc_score  # pylint: disable=g-import-not-at-top
  probabilities = np.clip(probabilities, 1e-7, 1 - 1e-7)
  return {'auc': float(roc_auc_score(labels, probabilities)),
          'accuracy': float(accuracy_score(labels, probabilities > 0.5)),
          'log_loss': float(log_loss(labels, probabilities, labels=[0, 1]))}


def score_saved_model(model_dir: str, records: list) -> np.ndarray:
  """P(class 1) from the SavedModel's serving_default signature, as a client calls it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  signature = tf.saved_model.load(model_dir).signatures['serving_default']
  batches = [records[i:i + 1024] for i in range(0, len(records), 1024)]
  return np.concatenate([
      signature(examples=tf.constant(batch))[features.OUTPUT_PROBABILITY].numpy()
      for batch in batches])


def trees(seed: int, **settings):
  from sklearn.ensemble import HistGradientBoostingClassifier  # pylint: disable=g-import-not-at-top
  return HistGradientBoostingClassifier(
      categorical_features='from_dtype', early_stopping=False,
      max_features=TREE_MAX_FEATURES, random_state=seed, **settings)


def choose_tree_settings(train, eval_) -> dict:
  """The grid's settings with the best AUC on eval (test is never looked at)."""
  (x_train, y_train), (x_eval, y_eval) = train, eval_
  tried = []
  for values in itertools.product(*TREE_GRID.values()):
    settings = dict(zip(TREE_GRID, values))
    model = trees(seed=0, **settings).fit(x_train, y_train)
    tried.append((metrics(y_eval, model.predict_proba(x_eval)[:, 1])['auc'], settings))
  best_auc, best = max(tried, key=lambda t: t[0])
  return {'chosen': best, 'eval_auc': best_auc,
          'tried': [{'eval_auc': auc, **s} for auc, s in tried]}


def logistic_regression(seed: int):
  """One-hot categoricals and coordinate buckets, standardised numbers."""
  # pylint: disable=g-import-not-at-top
  from sklearn.compose import ColumnTransformer
  from sklearn.impute import SimpleImputer
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import (FunctionTransformer, KBinsDiscretizer, OneHotEncoder,
                                     StandardScaler)
  by_kind = {}
  for name, spec in features.model_features().items():
    by_kind.setdefault(spec.kind, []).append(name)
  one_hot = make_pipeline(SimpleImputer(strategy='most_frequent'),
                          OneHotEncoder(handle_unknown='ignore'))
  buckets = make_pipeline(SimpleImputer(strategy='median'),
                          KBinsDiscretizer(n_bins=10, encode='onehot', strategy='quantile'))
  logs = make_pipeline(SimpleImputer(strategy='median'),
                       FunctionTransformer(lambda x: np.log1p(np.maximum(x, 0))), StandardScaler())
  plain = make_pipeline(SimpleImputer(strategy='median'), StandardScaler())
  parts = [('one_hot', one_hot, by_kind.get('categorical', []) + by_kind.get('vocab', [])),
           ('buckets', buckets, by_kind.get('bucket', [])),
           ('logs', logs, by_kind.get('log_numeric', [])),
           ('plain', plain, by_kind.get('numeric', []))]
  return make_pipeline(ColumnTransformer([p for p in parts if p[2]]),
                       LogisticRegression(max_iter=2000, random_state=seed))


def as_objects(frame):
  """Categories as plain values (scikit-learn's imputers want object columns)."""
  return frame.astype({c: object for c in frame.columns if str(frame[c].dtype) == 'category'})


# ---- the report -------------------------------------------------------------------------


def spread(values) -> dict:
  return {'mean': statistics.fmean(values), 'min': min(values), 'max': max(values)}


def summarise(per_seed: dict) -> dict:
  return {model: {metric: spread([run[metric] for run in runs])
                  for metric in ('auc', 'accuracy', 'log_loss')}
          for model, runs in per_seed.items()}


def markdown_table(summary: dict, test_rows: int, seeds: list) -> str:
  lines = [f'On `test` ({test_rows:,} rows), {len(seeds)} seeds ({", ".join(map(str, seeds))}):'
           ' mean (min – max).', '',
           '| model | AUC | accuracy | log-loss |', '|---|---|---|---|']
  for model, by_metric in summary.items():
    cells = [f'{m["mean"]:.4f} ({m["min"]:.4f} – {m["max"]:.4f})' for m in by_metric.values()]
    lines.append(f'| {model} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def wins(per_seed: dict) -> dict:
  """Seeds (paired by index) on which ours beats the trees, per metric."""
  ours, them = per_seed[OURS], per_seed[TREES]
  return {'auc': sum(a['auc'] > b['auc'] for a, b in zip(ours, them)),
          'accuracy': sum(a['accuracy'] > b['accuracy'] for a, b in zip(ours, them)),
          'log_loss': sum(a['log_loss'] < b['log_loss'] for a, b in zip(ours, them))}


def paired_difference(labels: np.ndarray, ours: list, theirs: list,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
  """Ours minus the trees in AUC and accuracy (the seeds' means), and its 95%
  interval over `resamples` paired resamplings of the rows. `ours` and
  `theirs`: each seed's P(class 1) for the same rows."""
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  # Per row: how many of the seeds' models get it right, ours minus theirs.
  right = lambda p: ((p > 0.5) == labels).mean(axis=0)
  row_gain = right(ours) - right(theirs)
  mean_auc = lambda p, rows: statistics.fmean(roc_auc_score(labels[rows], s[rows]) for s in p)
  every_row = np.arange(len(labels))
  rng = np.random.default_rng(0)
  accuracy, auc = [], []
  for _ in range(resamples):
    rows = rng.integers(0, len(labels), len(labels))
    accuracy.append(row_gain[rows].mean())
    auc.append(mean_auc(ours, rows) - mean_auc(theirs, rows))
  interval = lambda values: [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
  return {'accuracy': float(row_gain.mean()), 'accuracy_95': interval(accuracy),
          'auc': mean_auc(ours, every_row) - mean_auc(theirs, every_row),
          'auc_95': interval(auc), 'resamples': resamples}


def difference_text(split: str, difference: dict) -> str:
  pp = lambda v: f'{100 * v:+.2f}'
  low, high = difference['accuracy_95']
  auc_low, auc_high = difference['auc_95']
  return (f'ours minus trees on `{split}`: accuracy {pp(difference["accuracy"])} pp '
          f'(95% interval {pp(low)} to {pp(high)}), AUC {difference["auc"]:+.4f} '
          f'({auc_low:+.4f} to {auc_high:+.4f})')


# ---- main -------------------------------------------------------------------------------


def same_data(runs: list) -> dict:
  """Every split's records, checked identical in every run (deterministic split)."""
  data = {}
  for split in configs.SPLITS:
    prints = {fingerprint(split_records(root, split)) for root in runs}
    if len(prints) != 1:
      raise BenchError(f'the {split} split differs between the runs: ExampleGen\'s hash '
                       f'split should not change with the seed; check pipeline/configs.py')
    data[split] = split_records(runs[0], split)
  return data


def log(started: float, what: str) -> None:
  print(f'  {time.time() - started:5.0f} s  {what}', file=sys.stderr, flush=True)


def bench(seeds: list, work_dir: pathlib.Path, reuse: bool) -> dict:
  started = time.time()
  summaries = {s: run_pipeline(s, work_dir / f'seed-{s}', reuse) for s in seeds}
  pipeline_seconds = time.time() - started
  log(started, 'pipeline runs done')
  data = same_data([work_dir / f'seed-{s}' / 'tfx_output' for s in seeds])
  columns = {split: columns_of(records) for split, records in data.items()}
  y = {split: labels_of(c) for split, c in columns.items()}
  x_train = model_frame(columns['train'])
  categories = category_lists(x_train)
  x = {'train': x_train, **{s: model_frame(columns[s], categories) for s in ('eval', 'test')}}

  per_seed = {OURS: [], TREES: [], LOGISTIC: []}
  scores = {OURS: {'eval': [], 'test': []}, TREES: {'eval': [], 'test': []}}
  for seed in seeds:
    for split in ('eval', 'test'):
      scores[OURS][split].append(score_saved_model(summaries[seed]['pushed_path'], data[split]))
    per_seed[OURS].append({'seed': seed, **metrics(y['test'], scores[OURS]['test'][-1])})
  log(started, 'scored our models')
  sweep = choose_tree_settings((x['train'], y['train']), (x['eval'], y['eval']))
  log(started, f'tree sweep on eval: {sweep["chosen"]}')
  for seed in seeds:
    model = trees(seed, **sweep['chosen']).fit(x['train'], y['train'])
    for split in ('eval', 'test'):
      scores[TREES][split].append(model.predict_proba(x[split])[:, 1])
    per_seed[TREES].append({'seed': seed, **metrics(y['test'], scores[TREES]['test'][-1])})
    model = logistic_regression(seed).fit(as_objects(x['train']), y['train'])
    per_seed[LOGISTIC].append({'seed': seed, **metrics(
        y['test'], model.predict_proba(as_objects(x['test']))[:, 1])})
  return {
      'split': 'test', 'rows': {s: len(r) for s, r in data.items()},
      'test_positive_rate': float(y['test'].mean()), 'seeds': seeds,
      'summary': summarise(per_seed), 'per_seed': per_seed,
      'ours_beats_trees_on_seeds': wins(per_seed), 'tree_sweep_on_eval': sweep,
      # Eval chose both models' settings (and our steps): its difference is
      # shown beside test's for the spread, not as a measurement.
      'ours_minus_trees': {split: paired_difference(y[split], scores[OURS][split],
                                                    scores[TREES][split])
                           for split in ('test', 'eval')},
      'pipeline_versions': {s: summaries[s]['pushed_path'] for s in seeds},
      'reused_pipeline_runs': reuse,
      'seconds': {'pipeline_runs': round(pipeline_seconds, 1),
                  'total': round(time.time() - started, 1)},
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seeds', default=DEFAULT_SEEDS, help='comma-separated training seeds')
  parser.add_argument('--work-dir', default='/tmp/quality_bench',
                      help='each seed\'s pipeline run goes to <work-dir>/seed-<N>/')
  parser.add_argument('--out', default=str(REPO / 'bench' / 'results' / 'quality.json'))
  parser.add_argument('--reuse', action='store_true',
                      help='score the runs already under --work-dir instead of running again')
  args = parser.parse_args(argv)
  try:
    seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
  except ValueError:
    parser.error(f'--seeds {args.seeds!r} is not a comma-separated list of integers')
  if not seeds:
    parser.error('--seeds names no seed: give e.g. --seeds 1,2,3,4,5')
  if features.TASK != features.BINARY:
    print(f'quality_bench: the {features.EXAMPLE_NAME} example is not a binary task; '
          f'run it with the taxi example', file=sys.stderr)
    return 2
  try:
    result = bench(seeds, pathlib.Path(args.work_dir), args.reuse)
  except BenchError as e:
    print(f'quality_bench: {e}', file=sys.stderr)
    return 1
  table = markdown_table(result['summary'], result['rows']['test'], seeds)
  print(table)
  print(f'\nOurs beats the trees on {result["ours_beats_trees_on_seeds"]} of {len(seeds)} '
        f'seeds; trees chosen on eval: {result["tree_sweep_on_eval"]["chosen"]}; '
        f'{result["seconds"]["total"]:.0f} s in all.')
  for split, difference in result['ours_minus_trees'].items():
    print(difference_text(split, difference))
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({**result, 'table': table}, indent=2))
  print(f'Wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
