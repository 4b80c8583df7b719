"""The third example (diabetes: regression, a plain numeric label column),
selected with the one switch, through what a user runs: the pipeline
(blessed on RMSE, pushed), the server (REST and gRPC, Predict and Regress),
the client, monitoring of the served requests. Every step is a subprocess
with TAXI_EXAMPLE=diabetes, since the models read the switch when imported
and this process runs the default example."""

import csv
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import requests

import examples
from examples import diabetes
from pipeline import configs

REPO = pathlib.Path(configs.REPO_ROOT)
DIABETES_CSV = REPO / diabetes.CONFIG_DEFAULTS['data_root'] / 'span-1' / 'data.csv'
MODEL = diabetes.CONFIG_DEFAULTS['model_name']


def _env(**extra):
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_USE_LEGACY_KERAS='1',
             TF_CPP_MIN_LOG_LEVEL='3')
  env = {k: v for k, v in env.items() if not k.startswith(configs.ENV_PREFIX)}
  env[examples.SWITCH] = 'diabetes'
  env.update(extra)
  return env


def _run(*args, check=True, **extra_env):
  result = subprocess.run([sys.executable, *args], cwd=REPO, env=_env(**extra_env),
                          capture_output=True, text=True, timeout=900)
  if check:
    assert result.returncode == 0, f'{args} exited {result.returncode}:\n{result.stderr[-3000:]}'
  return result


def _rows():
  with open(DIABETES_CSV, newline='') as f:
    return list(csv.DictReader(f))


def test_the_switch_selects_the_diabetes_description():
  probe = ('from models import features as f, task; from pipeline import configs;'
           'c = configs.load(); print(f.TASK, f.LABEL_KEY, f.PREDICTION_KEY,'
           'task.TUNER_OBJECTIVE[f.TASK], c.data_root, c.schema_file, c.model_name)')
  out = _run('-c', probe).stdout.split()
  assert out[:3] == ['regression', 'progression_xf', 'prediction']
  assert out[-3:] == ['data/diabetes', 'schema/diabetes.pbtxt', MODEL]
  assert "('val_rmse'," in out and "'min')" in out


def test_the_shipped_diabetes_csv_has_the_described_columns():
  rows = _rows()
  assert list(rows[0]) == list(diabetes.RAW_FEATURES) + [diabetes.LABEL]
  assert len(rows) == 442
  assert {r['sex'] for r in rows} == {'1', '2'}
  labels = [float(r[diabetes.LABEL]) for r in rows]
  assert min(labels) == 25 and max(labels) == 346


LABEL_PROBE = """
import tensorflow as tf
from models import preprocessing
print(preprocessing.label({'progression': tf.constant([[151], [75]], tf.int64)}).numpy().tolist())
gap = tf.SparseTensor([[0, 0]], tf.constant([151], tf.int64), [2, 1])
try:
  preprocessing.label({'progression': gap})
except tf.errors.InvalidArgumentError as e:
  print('refused:', 'has no value of the label' in e.message)
"""


def test_a_regression_label_is_the_number_and_a_missing_one_is_refused():
  out = _run('-c', LABEL_PROBE).stdout.splitlines()
  assert out == ['[151.0, 75.0]', 'refused: True']


EVAL_CONFIG_PROBE = """
import json
from google.protobuf import json_format
from pipeline import configs, evaluation
print(json.dumps(json_format.MessageToDict(evaluation.eval_config(configs.load()))))
"""


def test_the_evaluator_blesses_a_regression_on_an_rmse_ceiling_and_its_increase():
  eval_config = json.loads(_run('-c', EVAL_CONFIG_PROBE).stdout.splitlines()[-1])
  (model_spec,) = eval_config['modelSpecs']
  assert model_spec['predictionKey'] == 'prediction'
  assert model_spec['labelKey'] == 'progression_xf'
  (spec,) = eval_config['metricsSpecs']
  names = [m['className'] for m in spec['metrics']]
  assert {'RootMeanSquaredError', 'MeanAbsoluteError', 'MeanSquaredError'} <= set(names)
  gated = [m for m in spec['metrics'] if m.get('perSliceThresholds')]
  assert [m['className'] for m in gated] == ['RootMeanSquaredError']
  threshold = gated[0]['perSliceThresholds'][0]['threshold']
  assert threshold['valueThreshold'] == {'upperBound': diabetes.CONFIG_DEFAULTS['max_rmse']}
  assert threshold['changeThreshold'] == {
      'direction': 'LOWER_IS_BETTER',
      'relative': configs.PipelineConfig.max_rmse_increase}


def test_a_regression_without_an_rmse_ceiling_is_refused_naming_the_setting():
  result = _run('-c', EVAL_CONFIG_PROBE, check=False, TAXI_MAX_RMSE='0')
  assert result.returncode != 0
  assert "max_rmse is 0.0: a regression is blessed on its RMSE, in the label's units" \
      in result.stderr
  assert 'TAXI_MAX_RMSE' in result.stderr


def test_an_rmse_increase_that_is_not_a_fraction_is_refused():
  result = _run('-c', 'from pipeline import configs; configs.load()', check=False,
                TAXI_MAX_RMSE_INCREASE='5')
  assert result.returncode != 0
  assert 'max_rmse_increase 5.0 is not a fraction' in result.stderr


def test_the_client_offers_regression_not_classification_for_a_regression_model():
  result = _run('-m', 'client.predict', '--rest', 'http://127.0.0.1:1', '--json', '{}',
                '--signature', 'classification', check=False)
  assert result.returncode == 2
  assert "invalid choice: 'classification'" in result.stderr
  assert "'regression'" in result.stderr


def _served_config(path: pathlib.Path, base: str, log_prefix: pathlib.Path):
  path.write_text(textwrap.dedent(f'''
      model_config_list {{
        config {{
          name: "{MODEL}"
          base_path: "{base}"
          model_platform: "tensorflow"
          logging_config {{
            log_collector_config {{ type: "" filename_prefix: "{log_prefix}" }}
            sampling_config {{ sampling_rate: 1.0 }}
          }}
        }}
      }}'''))


def _correlation(a, b):
  n = len(a)
  mean_a, mean_b = sum(a) / n, sum(b) / n
  cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b))
  var_a = sum((x - mean_a) ** 2 for x in a)
  var_b = sum((y - mean_b) ** 2 for y in b)
  return cov / (var_a * var_b) ** 0.5


@pytest.mark.slow  # The whole pipeline, a server subprocess, monitoring.
def test_diabetes_runs_through_pipeline_serving_client_and_monitoring(tmp_path):
  from serving.server_process import ServerProcess
  output_root, serving_dir = tmp_path / 'tfx_output', tmp_path / 'serving_model'
  summary_file = tmp_path / 'summary.json'
  _run('local_runner.py', '--output-root', str(output_root), '--serving-dir', str(serving_dir),
       '--summary-json', str(summary_file))
  summary = json.loads(summary_file.read_text())
  assert summary['succeeded'] and summary['blessed'] and summary['pushed'], summary
  assert summary['pushed_path'].startswith(str(serving_dir / MODEL))
  assert summary['metrics']['rmse'] <= diabetes.CONFIG_DEFAULTS['max_rmse']
  # The run report is written for a regression too: RMSE by slice, RMSE curves.
  report = (output_root / 'report.html').read_text()
  assert 'RMSE by sex' in report and 'Evaluated on the test split.' in report

  rows = _rows()[::15]  # 30 patients.
  sample = tmp_path / 'rows.csv'
  with open(sample, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)

  config_file, log_prefix = tmp_path / 'models.config', tmp_path / 'logs' / 'requests'
  _served_config(config_file, str(serving_dir / MODEL), log_prefix)
  answers = {}
  with ServerProcess(f'--model_config_file={config_file}', env=_env()) as server:
    server.wait_until_available(MODEL)
    signatures = requests.get(f'{server.rest}/v1/models/{MODEL}/metadata', timeout=30).json()[
        'metadata']['signature_def']['signature_def']
    for where, signature in (('--rest', 'predict_raw'), ('--rest', 'regression'),
                             ('--grpc', 'serving_default'), ('--grpc', 'regression')):
      target = server.rest if where == '--rest' else server.grpc_target
      out = _run('-m', 'client.predict', where, target, '--model_name', MODEL,
                 '--csv', str(sample), '--signature', signature).stdout
      answers[where, signature] = [json.loads(line) for line in out.splitlines()]

  assert 'classification' not in signatures
  assert signatures['regression']['method_name'] == 'tensorflow/serving/regress'
  assert list(signatures['regression']['outputs']) == ['outputs']
  predicted = [a['prediction'] for a in answers['--rest', 'predict_raw']]
  for key, got in answers.items():
    assert [sorted(a) for a in got] == [['prediction']] * 30, key
    assert [a['prediction'] for a in got] == pytest.approx(predicted, rel=1e-5), key
  # A model that learnt nothing answers about the mean for everyone.
  truth = [float(r[diabetes.LABEL]) for r in rows]
  assert _correlation(predicted, truth) > 0.5

  monitoring = _run('-m', 'operations.monitoring', '--logs', str(log_prefix), '--metadata',
                    str(output_root / 'metadata.sqlite'), '--model-name', MODEL,
                    '--min-window-examples', '5', '--out', str(tmp_path / 'monitoring'),
                    check=False)
  # 0 nothing found, 2 skew/drift, 3 other findings: a judgement; 1 is a failure.
  assert monitoring.returncode in (0, 2, 3), monitoring.stderr[-3000:]
  result = json.loads((tmp_path / 'monitoring' / 'monitoring.json').read_text())
  assert result['prediction_name'] == 'prediction'
  (version_summary,) = result['predictions_by_version'].values()
  assert version_summary['count'] == 120 and version_summary['positive_rate'] is None
  assert version_summary['mean'] == pytest.approx(sum(predicted) / 30, rel=1e-4)
  assert version_summary['std'] > 0
  quantiles = version_summary['quantiles']
  assert min(predicted) <= quantiles['p10'] <= quantiles['p50'] <= quantiles['p90'] <= max(predicted)
  html = (tmp_path / 'monitoring' / 'monitoring.html').read_text()
  assert 'mean prediction' in html and 'prediction (cumulative share)' in html
