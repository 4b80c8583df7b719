"""Trainer wall time of the two model families, side by side on one
pipeline run's Transform output (no pipeline run here: point it at an
output root that has one).

    python bench/trees_trainer_bench.py --output-root tfx_output

Times each family's run_fn (training and export) in this process, as the
Trainer calls it, with its checked-in hyperparameters (the trees':
models/trees_hyperparameters.json), and prints the seconds of each.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # pylint: disable=g-import-not-at-top
import json
import sys
import tempfile
import time


def fn_args(output_root: str, pipeline_name: str, hparams: dict, serving_model_dir: str,
            train_steps: int):
  """What the Trainer passes run_fn, from the output root's latest Transform."""
  from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
  from tfx.components.util import tfxio_utils
  from tfx.types import standard_artifacts
  from pipeline import metadata
  store = metadata.open_store(os.path.join(output_root, 'metadata.sqlite'), read_only=True)
  transform = metadata.LatestRun(store, pipeline_name, 'Transform')
  if transform.one('transformed_examples') is None:
    raise SystemExit(f'{output_root} has no Transform output of {pipeline_name}: run '
                     f'local_runner.py --output-root {output_root} first')
  examples = standard_artifacts.Examples()
  examples.set_mlmd_artifact(transform.one('transformed_examples'))
  return FnArgs(
      train_files=[os.path.join(examples.uri, 'Split-train', '*')],
      eval_files=[os.path.join(examples.uri, 'Split-eval', '*')],
      train_steps=train_steps,
      transform_output=transform.one('transform_graph').uri,
      serving_model_dir=serving_model_dir,
      custom_config={'hyperparameters': json.dumps(hparams)},
      data_accessor=DataAccessor(
          tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []), None, None))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--output-root', default='tfx_output')
  parser.add_argument('--train-steps', type=int, default=300,
                      help="the default family's steps (pipeline/configs.py's default)")
  args = parser.parse_args(argv)
  from models import model, trees
  from pipeline import configs
  config = configs.load(environ={})
  families = {'default (models.model)': (model.run_fn, model.default_hparams()),
              'trees (models.trees)': (trees.run_fn, trees.default_hparams())}
  with tempfile.TemporaryDirectory() as tmp:
    for name, (run_fn, hparams) in families.items():
      args_for_run = fn_args(config.path(args.output_root), config.pipeline_name, hparams,
                             os.path.join(tmp, name.split()[0]), args.train_steps)
      started = time.perf_counter()
      run_fn(args_for_run)
      print(f'{name}: run_fn {time.perf_counter() - started:.1f} s (train and export)')
  print(f'load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')
  return 0


if __name__ == '__main__':
  sys.exit(main())
