"""Batch scoring as a user runs it: a trained output root, a drop of
unlabelled rows, `python local_runner.py --score DROP`, then the file.

The trained output root: a copy of $SCORING_TEST_OUTPUT_ROOT (a real run's
output root, e.g. /work/prebuilt/tfx_output) when set, else of the session's
pipeline run (tests/conftest.py).
"""

import csv
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

import examples
from pipeline import configs, project
from tests import conftest

# The selected example's names (the pipeline's and the served model's).
NAMES = configs.example_defaults()
SCORING_PIPELINE = f'{NAMES.pipeline_name}-scoring'
ID = 'row_id'
BATCH = 100


def _env():
  # No <ENV_PREFIX>_* setting of this shell, but the example this process runs.
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(project.NAMES['env_var_prefix']) or k == examples.SWITCH}
  env.update(TF_USE_LEGACY_KERAS='1', PYTHONPATH=str(conftest.REPO))
  return env


def copy_output_root(source: str, target: str) -> str:
  """A copy of an output root whose MLMD names the copy's artifacts (MLMD
  stores absolute URIs), so scoring never writes into the source."""
  shutil.copytree(source, target)
  for folder, _, _ in os.walk(target):  # A read-only source makes read-only folders.
    os.chmod(folder, 0o755)
  os.chmod(os.path.join(target, 'metadata.sqlite'), 0o644)
  source, target = os.path.abspath(source), os.path.abspath(target)
  with sqlite3.connect(os.path.join(target, 'metadata.sqlite')) as db:
    db.execute('UPDATE Artifact SET uri = replace(uri, ?, ?)', (source, target))
    db.execute('UPDATE ArtifactProperty SET string_value = replace(string_value, ?, ?) '
               'WHERE string_value LIKE ?', (source, target, source + '%'))
  return target


@pytest.fixture(scope='module')
def trained_root(request):
  source = os.environ.get('SCORING_TEST_OUTPUT_ROOT')
  if not source:
    config, _ = request.getfixturevalue('pipeline_run')
    source = config.path(config.output_root)
  return source.rstrip('/')


@pytest.fixture
def output_root(trained_root, tmp_path):
  return copy_output_root(trained_root, str(tmp_path / 'tfx_output'))


def _served_model_base(output_root: str) -> str:
  """The serving directory the trained run pushed to (<serving_dir>/<model>)."""
  from pipeline import metadata
  pushed = metadata.Lineage(os.path.join(output_root, 'metadata.sqlite')).pushed_model()
  return os.path.dirname(metadata.custom_property(pushed, 'pushed_destination'))


def _unlabelled_rows(count: int, every: int = 7):
  """Shipped rows without the label columns, each with an id first
  (the iris CSV has fewer rows than asked for: all of them)."""
  from models import features
  header, rows = conftest.read_shipped_rows()
  keep = [i for i, name in enumerate(header) if name not in features.label_columns()]
  every = min(every, max(1, len(rows) // count))
  rows = [[f'row-{n}'] + [row[i] for i in keep] for n, row in enumerate(rows[::every][:count])]
  return [ID] + [header[i] for i in keep], rows


def _as_cells(answer):
  """A client's answer as the scored file's columns."""
  if 'probabilities' in answer:
    return dict({'class': answer['class']},
                **{f'probability_{name}': p for name, p in answer['probabilities'].items()})
  return answer


def _assert_same_answer(scored_row, answer):
  for column, value in _as_cells(answer).items():
    if isinstance(value, float):
      assert float(scored_row[column]) == pytest.approx(value, rel=1e-6, abs=1e-6), (column, scored_row)
    else:
      assert str(scored_row[column]) == str(value), (column, scored_row)


def _score(output_root, drop, *flags):
  return subprocess.run(
      [sys.executable, 'local_runner.py', f'--output-root={output_root}',
       f'--serving-dir={os.path.dirname(output_root)}/serving_model', f'--score={drop}', *flags],
      cwd=str(conftest.REPO), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, timeout=900)


def _printed_path(stdout: str) -> str:
  return re.search(r'^Predictions: (.+)$', stdout, re.M).group(1)


def _served_answers(model_base, header, rows):
  """The local model server's answers over REST, in batches of BATCH."""
  from client.predict import RestClient
  from serving.server_process import ServerProcess
  with ServerProcess(f'--model_name={NAMES.model_name}',
                     f'--model_base_path={model_base}') as server:
    server.wait_until_available(NAMES.model_name)
    client = RestClient(server.rest, NAMES.model_name)
    answers = []
    for start in range(0, len(rows), BATCH):
      batch = [dict(zip(header, row)) for row in rows[start:start + BATCH]]
      answers += client.predict(batch)
  return answers


def _no_scoring_outputs(output_root) -> bool:
  root = os.path.join(output_root, SCORING_PIPELINE)
  return not any(os.path.exists(os.path.join(root, node))
                 for node in ('BulkInferrer', 'PredictionsWriter'))


@pytest.mark.slow
def test_scored_csv_carries_each_id_once_with_the_served_models_prediction(output_root, tmp_path):
  header, rows = _unlabelled_rows(300)
  conftest.write_csv(tmp_path / 'drop' / 'rows.csv', header, rows)

  done = _score(output_root, tmp_path / 'drop', f'--id-column={ID}')

  assert done.returncode == 0, done.stdout + done.stderr
  assert f'Scored {len(rows)} rows' in done.stdout, done.stdout
  version = sorted(os.listdir(_served_model_base(output_root)))[-1]
  assert f'model version {version}' in done.stdout
  path = _printed_path(done.stdout)
  assert path.startswith(output_root) and path.endswith('.csv')
  with open(path, newline='') as f:
    scored = list(csv.DictReader(f))
  assert [r[ID] for r in scored].count(scored[0][ID]) == 1
  assert sorted(r[ID] for r in scored) == sorted(r[0] for r in rows)  # Each id once.
  served = dict(zip((r[0] for r in rows), _served_answers(
      _served_model_base(output_root), header, rows)))
  for row in scored:
    _assert_same_answer(row, served[row[ID]])


@pytest.mark.slow
def test_jsonl_of_a_data_roots_latest_span_without_ids_carries_every_column(
    output_root, tmp_path):
  header, rows = _unlabelled_rows(250, every=5)
  header, rows = header[1:], [row[1:] for row in rows]  # No id column.
  conftest.write_csv(tmp_path / 'drops' / 'span-1' / 'rows.csv', header, rows[:20])
  conftest.write_csv(tmp_path / 'drops' / 'span-2' / 'rows.csv', header, rows)

  done = _score(output_root, tmp_path / 'drops', '--score-format=jsonl')

  assert done.returncode == 0, done.stdout + done.stderr
  with open(_printed_path(done.stdout)) as f:
    scored = [json.loads(line) for line in f]
  assert len(scored) == len(rows)  # span-2's rows, one line each.
  served = _in_process_answers(_served_model_base(output_root), header, rows)
  assert list(scored[0]) == header + list(_as_cells(served[0]))
  main = next(c for c in _as_cells(served[0]) if c != 'class')  # A number per row.
  assert sorted(float(r[main]) for r in scored) == pytest.approx(
      sorted(_as_cells(a)[main] for a in served), rel=1e-6, abs=1e-6)


def _in_process_answers(model_base, header, rows):
  """serving_default of the pushed SavedModel, called in this process, as
  the client's answers."""
  import tensorflow as tf
  from client import predict
  version = sorted(os.listdir(model_base))[-1]
  signature = tf.saved_model.load(os.path.join(model_base, version)).signatures['serving_default']
  examples = tf.constant([predict.to_example(dict(zip(header, row))) for row in rows])
  outputs = {k: v.numpy() for k, v in signature(examples=examples).items()}
  return [predict._prediction({k: v[i] for k, v in outputs.items()})  # pylint: disable=protected-access
          for i in range(len(rows))]


@pytest.mark.slow
@pytest.mark.example('taxi')  # A value out of taxi's curated payment_type domain.
def test_bad_rows_stop_the_run_naming_the_anomaly_and_nothing_is_scored(output_root, tmp_path):
  header, rows = _unlabelled_rows(200)
  payment = header.index('payment_type')
  for row in rows[:10]:
    row[payment] = 'Bitcoin'
  conftest.write_csv(tmp_path / 'drop' / 'rows.csv', header, rows)

  done = _score(output_root, tmp_path / 'drop', f'--id-column={ID}')

  assert done.returncode == 1, done.stdout + done.stderr
  failed = [line for line in done.stdout.splitlines() if line.startswith('FAILED')]
  assert failed and 'AnomaliesGate' in failed[0], done.stdout
  assert 'payment_type' in failed[0] and 'Bitcoin' in failed[0]
  assert 'Nothing was scored.' in done.stdout
  assert _no_scoring_outputs(output_root)


@pytest.mark.slow
def test_an_unnamed_id_column_is_named_as_a_new_column(output_root, tmp_path):
  header, rows = _unlabelled_rows(150)
  conftest.write_csv(tmp_path / 'drop' / 'rows.csv', header, rows)

  done = _score(output_root, tmp_path / 'drop')

  assert done.returncode == 1, done.stdout + done.stderr
  assert f'{ID}: New column' in done.stdout and '--id-column' in done.stdout
  assert _no_scoring_outputs(output_root)


def _assert_one_line_error(done, code, *words):
  assert done.returncode == code, done.stdout + done.stderr
  assert 'Traceback' not in done.stderr, done.stderr
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1, done.stderr
  for word in words:
    assert word in lines[0], lines[0]


@pytest.mark.slow
def test_no_blessed_model_is_one_line(tmp_path):
  header, rows = _unlabelled_rows(10)
  conftest.write_csv(tmp_path / 'drop' / 'rows.csv', header, rows)
  empty_root = str(tmp_path / 'untrained')

  done = _score(empty_root, tmp_path / 'drop', f'--id-column={ID}')

  _assert_one_line_error(done, 1, 'no blessed model', empty_root)
  assert not os.path.exists(empty_root)  # Nothing created.


@pytest.mark.slow
def test_unknown_id_column_and_zero_rows_are_one_line(output_root, tmp_path):
  header, rows = _unlabelled_rows(10)
  conftest.write_csv(tmp_path / 'drop' / 'rows.csv', header, rows)
  conftest.write_csv(tmp_path / 'empty' / 'rows.csv', header, [])

  _assert_one_line_error(_score(output_root, tmp_path / 'drop', '--id-column=ride'), 2,
                         '--id-column ride', ID)
  _assert_one_line_error(_score(output_root, tmp_path / 'empty', f'--id-column={ID}'), 1,
                         'no rows to score')
  assert _no_scoring_outputs(output_root)


@pytest.mark.slow
def test_the_scoring_pipeline_takes_the_training_beam_args_and_compiles_for_kubeflow(
    output_root, tmp_path):
  import dataclasses
  from tfx import v1 as tfx
  from pipeline import batch_scoring
  header, rows = _unlabelled_rows(10)
  conftest.write_csv(tmp_path / 'drop' / 'rows.csv', header, rows)
  config = dataclasses.replace(
      configs.load({'output_root': output_root, 'beam_profile': 'dataflow'}, environ={}),
      gcp_project='project', gcs_bucket='bucket')
  drop = batch_scoring.resolve_drop(str(tmp_path / 'drop'), config.input_pattern)
  scoring = batch_scoring.create_scoring_pipeline(
      config, drop, batch_scoring.latest_blessed_model(config), id_column=ID)

  assert scoring.beam_pipeline_args == config.beam_pipeline_args()
  assert '--runner=DataflowRunner' in scoring.beam_pipeline_args
  spec = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image='image'),
      output_dir=str(tmp_path), output_filename='scoring.json').run(scoring)
  executors = spec['pipelineSpec']['deploymentSpec']['executors']
  assert {'BulkInferrer_executor', 'PredictionsWriter_executor'} <= set(executors)


def _one_log(example):
  """The PredictionLog BulkInferrer writes for one example with the task's
  signature (Predict; Classify for multi-class), and the scored file's
  cells for it: named as the client names the answer (client/predict.py)."""
  from tensorflow.core.framework import tensor_pb2, types_pb2
  from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
  from models import features
  if features.TASK == features.MULTICLASS:
    scores = [0.125] * (features.NUM_CLASSES - 1) + [1 - 0.125 * (features.NUM_CLASSES - 1)]
    log = prediction_log_pb2.PredictionLog()
    log.classify_log.request.input.example_list.examples.add().CopyFrom(example)
    classes = log.classify_log.response.result.classifications.add().classes
    for name, score in zip(features.CLASS_NAMES, scores):
      classes.add(label=name, score=score)
    return log, dict({'class': features.CLASS_NAMES[-1]},
                     **{f'probability_{c}': str(p) for c, p in zip(features.CLASS_NAMES, scores)})

  def floats(*values):
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=values)
  if features.TASK == features.REGRESSION:
    outputs, cells = {features.OUTPUT_PREDICTION: floats(151.5)}, {'prediction': '151.5'}
  else:
    outputs = {features.OUTPUT_PROBABILITY: floats(0.75),
               features.OUTPUT_CLASS: tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64,
                                                            int64_val=[1])}
    cells = {'probability': '0.75', 'class': '1'}
  log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(
      request=predict_pb2.PredictRequest(inputs={'examples': tensor_pb2.TensorProto(
          dtype=types_pb2.DT_STRING, string_val=[example.SerializeToString()])}),
      response=predict_pb2.PredictResponse(outputs=outputs)))
  return log, cells


def test_the_scored_file_holds_the_tasks_answer_under_the_clients_names(tmp_path):
  # Before: a regression's file had 'probability' and 'class' columns,
  # read from outputs its model does not have; a multi-class model's
  # Predict logs failed in BulkInferrer (its string output).
  import tensorflow as tf
  from models import features
  from pipeline import batch_scoring
  header, rows = conftest.read_shipped_rows()
  feature = conftest.required_features()[0]
  row = {feature: features.parse_value(feature, rows[0][header.index(feature)])}
  example = features.to_example(row)
  example.features.feature[ID].bytes_list.value.append(b'trip-1')
  log, cells = _one_log(example)
  logs = str(tmp_path / 'prediction_logs.gz')
  with tf.io.TFRecordWriter(logs, tf.io.TFRecordOptions(compression_type='GZIP')) as writer:
    writer.write(log.SerializeToString())
  path = str(tmp_path / 'predictions.csv')

  assert batch_scoring.write_predictions([logs], [ID, feature], 'csv', path) == 1

  with open(path, newline='') as f:
    [scored] = list(csv.DictReader(f))
  assert list(scored) == [ID, feature] + list(cells)
  assert scored[ID] == 'trip-1' and scored[feature] == str(row[feature])
  assert {c: scored[c] for c in cells} == cells
