"""The second and third examples' test metrics beside a scikit-learn
baseline on the same split.

Runs an example's pipeline (TAXI_EXAMPLE=<example> local_runner.py) into a
temporary output root, reads the train and test rows ExampleGen split off
(its hash split, so both models see exactly the same rows), fits a
scikit-learn baseline on the train rows and prints its test metrics beside
the Evaluator's (TFMA, which reads only test) for the pipeline's model:

- iris (multi-class): LogisticRegression; accuracy, per-class precision/recall;
- diabetes (regression): LinearRegression (ordinary least squares); RMSE, MAE.

About 30 s (iris) to 2 min (diabetes) on 2 cores per pipeline run.

    python bench/second_example_baseline.py [--example iris|diabetes] [--output-root DIR]
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import examples  # noqa: E402
from examples import diabetes, iris  # noqa: E402


def run_pipeline(example: str, output_root: str) -> None:
  env = dict(os.environ, PYTHONPATH=ROOT, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='3')
  env[examples.SWITCH] = example
  subprocess.run([sys.executable, 'local_runner.py', '--output-root', output_root,
                  '--serving-dir', os.path.join(output_root, 'serving_model')],
                 cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def _value(feature):
  kind = feature.WhichOneof('kind')
  value = getattr(feature, kind).value[0]
  return value.decode() if isinstance(value, bytes) else value


def read_split(output_root: str, split: str, example):
  """(feature rows, labels) of one split of ExampleGen's output."""
  import tensorflow as tf
  files = glob.glob(os.path.join(output_root, '**', 'CsvExampleGen', 'examples', '*',
                                 f'Split-{split}', '*'), recursive=True)
  if not files:
    raise SystemExit(f'no {split} examples under {output_root}: did the pipeline run?')
  x, y = [], []
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    x.append([_value(feature[name]) for name in example.RAW_FEATURES])
    y.append(_value(feature[example.LABEL]))
  return x, y


def pipeline_metrics(output_root: str, class_names=()) -> dict:
  """The overall metrics of the Evaluator's run (per class: 'name/class')."""
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
        name = f'{name}/{class_names[key.sub_key.class_id.value]}'
      if not key.is_diff and entry.value.HasField('double_value'):
        metrics[name] = entry.value.double_value.value
  return metrics


def compare_iris(output_root: str) -> list:
  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import accuracy_score, precision_recall_fscore_support
  x_train, y_train = read_split(output_root, 'train', iris)
  x_test, y_test = read_split(output_root, 'test', iris)
  predicted = LogisticRegression(max_iter=1000).fit(x_train, y_train).predict(x_test)
  precision, recall, _, _ = precision_recall_fscore_support(
      y_test, predicted, labels=iris.CLASS_NAMES, zero_division=0)
  ours = pipeline_metrics(output_root, iris.CLASS_NAMES)
  print(f'iris: {len(y_train)} train rows, {len(y_test)} test rows (ExampleGen hash split)')
  rows = [('accuracy', ours.get('accuracy'), accuracy_score(y_test, predicted))]
  for i, name in enumerate(iris.CLASS_NAMES):
    rows.append((f'precision/{name}', ours.get(f'precision/{name}'), precision[i]))
    rows.append((f'recall/{name}', ours.get(f'recall/{name}'), recall[i]))
  return 'LogisticRegression', rows


def compare_diabetes(output_root: str) -> list:
  from sklearn.linear_model import LinearRegression
  from sklearn.metrics import mean_absolute_error, mean_squared_error
  x_train, y_train = read_split(output_root, 'train', diabetes)
  x_test, y_test = read_split(output_root, 'test', diabetes)
  predicted = LinearRegression().fit(x_train, y_train).predict(x_test)
  ours = pipeline_metrics(output_root)
  print(f'diabetes: {len(y_train)} train rows, {len(y_test)} test rows (ExampleGen hash split)')
  return 'LinearRegression', [
      ('rmse', ours.get('rmse'), mean_squared_error(y_test, predicted) ** 0.5),
      ('mean_absolute_error', ours.get('mean_absolute_error'),
       mean_absolute_error(y_test, predicted))]


COMPARE = {'iris': compare_iris, 'diabetes': compare_diabetes}


def compare(example: str, output_root: str) -> int:
  """Prints the pipeline's test metrics beside the baseline's, on the same rows."""
  baseline, rows = COMPARE[example](output_root)
  print(f'{"metric":24} {"pipeline (TFMA)":>16} {baseline:>19}')
  for name, value, base in rows:
    shown = 'n/a' if value is None else f'{value:.4f}'
    print(f'{name:24} {shown:>16} {base:>19.4f}')
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--example', choices=sorted(COMPARE), default='iris',
                      help='(default: %(default)s)')
  parser.add_argument('--output-root',
                      help="a run of the example to reuse (default: run one in a temp dir)")
  args = parser.parse_args(argv)
  if args.output_root:
    return compare(args.example, args.output_root)
  with tempfile.TemporaryDirectory(prefix=f'{args.example}_baseline_') as output_root:
    run_pipeline(args.example, output_root)
    return compare(args.example, output_root)


if __name__ == '__main__':
  sys.exit(main())
