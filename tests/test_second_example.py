"""The second example (iris: multi-class, a plain class-name label column),
selected with the one switch, through what a user runs: the pipeline
(blessed, pushed), the server, the client over REST, monitoring of the
served requests. Every step is a subprocess with TAXI_EXAMPLE=iris, since
the models read the switch when imported and this process runs the taxi
example."""

import csv
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import examples
from examples import iris
from pipeline import configs

REPO = pathlib.Path(configs.REPO_ROOT)
IRIS_CSV = REPO / iris.CONFIG_DEFAULTS['data_root'] / 'span-1' / 'data.csv'


def _iris_env():
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_USE_LEGACY_KERAS='1',
             TF_CPP_MIN_LOG_LEVEL='3')
  env = {k: v for k, v in env.items() if not k.startswith(configs.ENV_PREFIX)}
  env[examples.SWITCH] = 'iris'
  return env


def _run(*args, check=True):
  result = subprocess.run([sys.executable, *args], cwd=REPO, env=_iris_env(),
                          capture_output=True, text=True, timeout=900)
  if check:
    assert result.returncode == 0, f'{args} exited {result.returncode}:\n{result.stderr[-3000:]}'
  return result


def test_the_switch_selects_the_iris_description():
  probe = ('from models import features as f; from pipeline import configs; c = configs.load();'
           'print(f.TASK, f.CLASS_NAMES, f.LABEL_KEY, c.data_root, c.schema_file, c.model_name)')
  out = _run('-c', probe).stdout.split()
  assert out[0] == 'multiclass_classification'
  assert out[-3:] == ['data/iris', 'schema/iris.pbtxt', 'iris']
  assert 'species_xf' in out


def test_an_unknown_example_is_one_line_naming_the_choices():
  env = dict(_iris_env(), **{examples.SWITCH: 'irsi'})
  result = subprocess.run([sys.executable, '-c', 'import models.features'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [
      f"{examples.SWITCH}='irsi' is not an example: set it to one of taxi, iris, diabetes "
      '(examples/__init__.py)']


def test_a_config_of_another_example_than_the_process_runs_is_refused():
  other = next(name for name in examples.EXAMPLES if name != examples.selected_name())
  with pytest.raises(configs.ConfigError, match=f'{examples.SWITCH}={other}'):
    configs.load({'example': other}, environ={})


LABEL_PROBE = """
import tensorflow as tf
from models import preprocessing
names = tf.constant([['virginica'], ['setosa'], ['versicolor']])
print(preprocessing.label({'species': names}).numpy().tolist())
try:
  preprocessing.label({'species': tf.constant([['setosa'], ['rose']])})
except tf.errors.InvalidArgumentError as e:
  print('refused:', 'not one of CLASS_NAMES' in e.message)
"""


def test_iris_labels_are_class_ids_and_an_unknown_class_name_is_refused():
  out = _run('-c', LABEL_PROBE).stdout.splitlines()
  assert out == ['[2, 0, 1]', 'refused: True']


def test_the_shipped_iris_csv_has_the_described_columns():
  from models import features
  with open(IRIS_CSV, newline='') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == list(iris.RAW_FEATURES) + [iris.LABEL]
  assert len(rows) == 150
  assert sorted({r[iris.LABEL] for r in rows}) == iris.CLASS_NAMES
  assert features.EXAMPLE_NAME == examples.selected_name()  # This process's, not iris'.


def _served_config(path: pathlib.Path, base: str, log_prefix: pathlib.Path):
  path.write_text(textwrap.dedent(f'''
      model_config_list {{
        config {{
          name: "iris"
          base_path: "{base}"
          model_platform: "tensorflow"
          logging_config {{
            log_collector_config {{ type: "" filename_prefix: "{log_prefix}" }}
            sampling_config {{ sampling_rate: 1.0 }}
          }}
        }}
      }}'''))


@pytest.mark.slow  # The whole pipeline, a server subprocess, monitoring.
def test_iris_runs_through_pipeline_serving_client_and_monitoring(tmp_path):
  from serving.server_process import ServerProcess
  output_root, serving_dir = tmp_path / 'tfx_output', tmp_path / 'serving_model'
  summary_file = tmp_path / 'summary.json'
  _run('local_runner.py', '--output-root', str(output_root), '--serving-dir', str(serving_dir),
       '--summary-json', str(summary_file))
  summary = json.loads(summary_file.read_text())
  assert summary['succeeded'] and summary['blessed'] and summary['pushed'], summary
  assert summary['pushed_path'].startswith(str(serving_dir / 'iris'))

  with open(IRIS_CSV, newline='') as f:
    rows = list(csv.DictReader(f))
  sample = tmp_path / 'rows.csv'
  with open(sample, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows[::15])  # 10 rows, every species.

  config_file, log_prefix = tmp_path / 'models.config', tmp_path / 'logs' / 'requests'
  _served_config(config_file, str(serving_dir / 'iris'), log_prefix)
  with ServerProcess(f'--model_config_file={config_file}', env=_iris_env()) as server:
    server.wait_until_available('iris')
    answers = {}
    for signature in ('predict_raw', 'classification'):
      out = _run('-m', 'client.predict', '--rest', server.rest, '--model_name', 'iris',
                 '--csv', str(sample), '--signature', signature).stdout
      answers[signature] = [json.loads(line) for line in out.splitlines()]

  for signature, predictions in answers.items():
    assert len(predictions) == 10, signature
    for prediction in predictions:
      assert sorted(prediction['probabilities']) == iris.CLASS_NAMES, signature
      assert prediction['class'] in iris.CLASS_NAMES
      assert abs(sum(prediction['probabilities'].values()) - 1) < 1e-4
  # Setosa is the species any model separates: a model that learnt nothing fails here.
  truth = [r[iris.LABEL] for r in rows[::15]]
  assert [p['class'] for p, t in zip(answers['predict_raw'], truth) if t == 'setosa'] == \
      ['setosa'] * truth.count('setosa')
  assert [p['class'] for p in answers['classification']] == \
      [p['class'] for p in answers['predict_raw']]

  monitoring = _run('-m', 'operations.monitoring', '--logs', str(log_prefix), '--metadata',
                    str(output_root / 'metadata.sqlite'), '--model-name', 'iris',
                    '--min-window-examples', '5', '--out', str(tmp_path / 'monitoring'),
                    check=False)
  # 0 nothing found, 2 skew/drift, 3 other findings: a judgement; 1 is a failure.
  assert monitoring.returncode in (0, 2, 3), monitoring.stderr[-3000:]
  result = json.loads((tmp_path / 'monitoring' / 'monitoring.json').read_text())
  (version_summary,) = result['predictions_by_version'].values()
  assert version_summary['count'] == 20 and version_summary['positive_rate'] is None


EVAL_CONFIG_PROBE = """
import json
from google.protobuf import json_format
from pipeline import configs, evaluation
print(json.dumps(json_format.MessageToDict(evaluation.eval_config(configs.load()))))
"""


def test_the_evaluator_judges_iris_on_accuracy_and_reports_per_class_metrics():
  eval_config = json.loads(_run('-c', EVAL_CONFIG_PROBE).stdout.splitlines()[-1])
  (model_spec,) = eval_config['modelSpecs']
  assert model_spec['predictionKey'] == 'probabilities'
  assert model_spec['labelKey'] == 'species_xf'
  overall, per_class = eval_config['metricsSpecs']
  gated = [m for m in overall['metrics'] if m.get('perSliceThresholds')]
  assert [m['className'] for m in gated] == ['SparseCategoricalAccuracy']
  threshold = gated[0]['perSliceThresholds'][0]['threshold']
  assert threshold['valueThreshold']['lowerBound'] == iris.CONFIG_DEFAULTS['min_accuracy']
  assert per_class['binarize']['classIds']['values'] == [0, 1, 2]
  assert [m['className'] for m in per_class['metrics']] == ['Precision', 'Recall']
