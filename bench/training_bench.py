"""The Trainer's run_fn alone, on the Transform output of an earlier pipeline
run: its wall time, and the eval-split scores of the weights it keeps, over
seeds and hyperparameter overrides. For choices made on the eval split only
(the Evaluator's split is never read here).

    python bench/training_bench.py --output-root /tmp/full/tfx_output \
        [--seeds 42,7] [--set dropout=0.3 --set eval_every=0] [--no-export]

Reads the newest Transform artifacts under <output-root>/<pipeline>/Transform.
"""

import argparse
import glob
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import compat.keras  # noqa: E402,F401  First: Keras 2 for TFX.
from tfx.components.trainer import fn_args_utils  # noqa: E402
from tfx.types import artifact_utils, standard_artifacts  # noqa: E402

from models import model  # noqa: E402
from pipeline import project  # noqa: E402


def newest(pattern: str) -> str:
  """The artifact folder matching pattern with the highest id (by number, not text)."""
  found = sorted(glob.glob(pattern), key=lambda p: int(os.path.basename(p)))
  if not found:
    raise SystemExit(f'training_bench: nothing matches {pattern}: run local_runner.py first')
  return found[-1]


def fn_args_for(output_root: str, hparams: dict, train_steps: int, out_dir: str):
  transform = os.path.join(output_root, project.PIPELINE_NAME, 'Transform')
  examples = standard_artifacts.Examples()
  examples.uri = newest(os.path.join(transform, 'transformed_examples', '*'))
  examples.split_names = artifact_utils.encode_split_names(
      [os.path.basename(p)[len('Split-'):] for p in glob.glob(os.path.join(examples.uri, 'Split-*'))])
  graph = standard_artifacts.TransformGraph()
  graph.uri = newest(os.path.join(transform, 'transform_graph', '*'))
  fn_args = fn_args_utils.get_common_fn_args(
      {'examples': [examples], 'transform_graph': [graph]},
      {'train_args': json.dumps({'num_steps': train_steps}), 'eval_args': '{}',
       'custom_config': json.dumps({'hyperparameters': json.dumps(hparams)})})
  fn_args.transform_output = graph.uri
  fn_args.serving_model_dir = os.path.join(out_dir, 'serving')
  fn_args.model_run_dir = os.path.join(out_dir, 'model_run')
  fn_args.hyperparameters = None
  return fn_args


def _value(text: str):
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


def overrides(settings: list) -> dict:
  """--set KEY=VALUE options as hyperparameters (VALUE as JSON, else a string)."""
  return {k: _value(v) for k, v in (s.split('=', 1) for s in settings)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output-root', required=True)
  parser.add_argument('--seeds', default='42')
  parser.add_argument('--train-steps', type=int, default=300)
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
  parser.add_argument('--no-export', action='store_true',
                      help='skip the SavedModel export (quality sweeps)')
  args = parser.parse_args(argv)
  changed = overrides(args.set)
  if args.no_export:
    model.signatures.export = lambda *a, **k: None
  rows = []
  for seed in [int(s) for s in args.seeds.split(',')]:
    hparams = dict(model.default_hparams(), seed=seed, **changed)
    with tempfile.TemporaryDirectory() as out:
      fn_args = fn_args_for(args.output_root, hparams, args.train_steps, out)
      start, cpu = time.perf_counter(), time.process_time()
      model.run_fn(fn_args)
      seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
      # An older model.py (for a before/after timing) writes no record.
      record_path = os.path.join(fn_args.model_run_dir, getattr(model, 'TRAINING_RECORD_FILE', ''))
      record = json.load(open(record_path)) if os.path.isfile(record_path) else {}
    best = record.get('best_logs') or {}
    # CPU seconds too: on a shared machine the wall time says more about the neighbours.
    rows.append(dict(seed=seed, seconds=round(seconds, 1), cpu_seconds=round(cpu, 1),
                     steps=record.get('steps'), best_step=record.get('best_step'),
                     **{k: round(v, 4) for k, v in best.items() if k.startswith('val_')}))
    print(json.dumps(rows[-1]), flush=True)
  for key in [k for k in rows[0] if k.startswith('val_') or k.endswith('seconds')]:
    values = [r[key] for r in rows]
    print(f'{key}: mean {sum(values) / len(values):.4f} min {min(values):.4f} '
          f'max {max(values):.4f}')
  print('overrides:', json.dumps(changed), 'load average:', os.getloadavg()[0])


if __name__ == '__main__':
  main()
