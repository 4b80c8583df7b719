"""The iris example's eval metrics beside a scikit-learn baseline on the same split.

Runs the iris pipeline (TAXI_EXAMPLE=iris local_runner.py) into a temporary
output root, reads the train and eval rows ExampleGen split off (its hash
split, so both models see exactly the same rows), fits scikit-learn's
LogisticRegression on the train rows and prints its eval accuracy and
per-class precision/recall beside the Evaluator's (TFMA) for the pipeline's
model. About 30 s on 2 cores.

    python bench/second_example_baseline.py [--output-root DIR]
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from examples import iris  # noqa: E402
import examples  # noqa: E402


def run_pipeline(output_root: str) -> dict:
  summary_file = os.path.join(output_root, 'summary.json')
  env = dict(os.environ, PYTHONPATH=ROOT, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='3')
  env[examples.SWITCH] = 'iris'
  subprocess.run([sys.executable, 'local_runner.py', '--output-root', output_root,
                  '--serving-dir', os.path.join(output_root, 'serving_model'),
                  '--summary-json', summary_file], cwd=ROOT, env=env, check=True,
                 stdout=subprocess.DEVNULL)
  with open(summary_file) as f:
    return json.load(f)


def read_split(output_root: str, split: str):
  """(feature rows, class names) of one split of ExampleGen's output."""
  import tensorflow as tf
  files = glob.glob(os.path.join(output_root, '**', 'CsvExampleGen', 'examples', '*',
                                 f'Split-{split}', '*'), recursive=True)
  if not files:
    raise SystemExit(f'no {split} examples under {output_root}: did the pipeline run?')
  x, y = [], []
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    x.append([feature[name].float_list.value[0] for name in iris.RAW_FEATURES])
    y.append(feature[iris.LABEL].bytes_list.value[0].decode())
  return x, y


def pipeline_metrics(output_root: str) -> dict:
  """Overall accuracy and per-class precision/recall of the Evaluator's run."""
  import tensorflow_model_analysis as tfma
  (evaluation,) = glob.glob(os.path.join(output_root, '**', 'Evaluator', 'evaluation', '*'),
                            recursive=True)
  metrics = {}
  for sliced in tfma.load_metrics(evaluation):
    if sliced.slice_key.single_slice_keys:
      continue
    for entry in sliced.metric_keys_and_values:
      key = entry.key
      name = key.name
      if key.sub_key.HasField('class_id'):
        name = f'{name}/{iris.CLASS_NAMES[key.sub_key.class_id.value]}'
      if not key.is_diff and entry.value.HasField('double_value'):
        metrics[name] = entry.value.double_value.value
  return metrics


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--output-root', help='an iris run to reuse (default: run one in a temp dir)')
  args = parser.parse_args(argv)
  if args.output_root:
    return compare(args.output_root)
  with tempfile.TemporaryDirectory(prefix='iris_baseline_') as output_root:
    run_pipeline(output_root)
    return compare(output_root)


def compare(output_root: str) -> int:
  """Prints the pipeline's eval metrics beside the baseline's, on the same rows."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import accuracy_score, precision_recall_fscore_support
  x_train, y_train = read_split(output_root, 'train')
  x_eval, y_eval = read_split(output_root, 'eval')
  baseline = LogisticRegression(max_iter=1000).fit(x_train, y_train)
  predicted = baseline.predict(x_eval)
  precision, recall, _, _ = precision_recall_fscore_support(
      y_eval, predicted, labels=iris.CLASS_NAMES, zero_division=0)
  ours = pipeline_metrics(output_root)
  print(f'iris: {len(y_train)} train rows, {len(y_eval)} eval rows (ExampleGen hash split)')
  print(f'{"metric":24} {"pipeline (TFMA)":>16} {"LogisticRegression":>19}')
  rows = [('accuracy', ours.get('accuracy'), accuracy_score(y_eval, predicted))]
  for i, name in enumerate(iris.CLASS_NAMES):
    rows.append((f'precision/{name}', ours.get(f'precision/{name}'), precision[i]))
    rows.append((f'recall/{name}', ours.get(f'recall/{name}'), recall[i]))
  for name, value, base in rows:
    shown = 'n/a' if value is None else f'{value:.4f}'
    print(f'{name:24} {shown:>16} {base:>19.4f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
