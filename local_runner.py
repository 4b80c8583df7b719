"""Runs the taxi pipeline on this machine (TFX launchers, MLMD in SQLite).

    python local_runner.py                 # quiet: a line per component
    python local_runner.py --verbose       # full TFX / Beam logs
    python local_runner.py --tune          # re-tune hyperparameters first
    python local_runner.py --retrain-if-needed [--monitoring-result m.json]

Exit status: 0 a blessed model was pushed (or was already, cached);
1 the run failed (bad data, error); 3 it ran but the model was not blessed.
"""

import os
import sys

# Before anything imports TensorFlow: TFX 1.16 needs Keras 2 (tf-keras), and
# quiet runs silence TF's C++ logging, which only reads this at start-up.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
if '--verbose' not in sys.argv:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  import warnings
  warnings.filterwarnings('ignore')  # Library deprecation chatter.

import argparse  # pylint: disable=g-import-not-at-top
import gc
import json
import logging
import time

EXIT_OK, EXIT_FAILED, EXIT_NOT_BLESSED = 0, 1, 3


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data-root', help='folder holding span-<N>/*.csv')
  parser.add_argument('--output-root', help='pipeline artifacts and MLMD')
  parser.add_argument('--serving-dir', help='where blessed models are pushed')
  parser.add_argument('--train-steps', type=int)
  parser.add_argument('--tune', action='store_true', default=None,
                      help='run the Tuner and save what it finds')
  parser.add_argument('--span-window', type=int, help='train on the latest N spans')
  parser.add_argument('--retrain-if-needed', action='store_true',
                      help='run only if a new span arrived or monitoring found skew/drift')
  parser.add_argument('--monitoring-result', help='JSON written by pipeline.monitoring')
  parser.add_argument('--beam-profile', choices=['local', 'dataflow'])
  parser.add_argument('--no-cache', action='store_true', help='re-run every component')
  parser.add_argument('--summary-json', help='also write the run summary here')
  parser.add_argument('--verbose', action='store_true', help='full TFX/Beam logs')
  return parser.parse_args(argv)


def _configure_logging(verbose: bool):
  from absl import logging as absl_logging
  if verbose:
    absl_logging.set_verbosity(absl_logging.INFO)
    return
  # Failures still reach the user: as the exception the runner reports.
  absl_logging.set_verbosity(absl_logging.FATAL)
  for name in ('absl', 'apache_beam', 'tensorflow', ''):
    logging.getLogger(name).setLevel(logging.CRITICAL)


def _save_tuned_hyperparameters(config, printer):
  """After --tune, the best values become the checked-in defaults."""
  from pipeline import progress
  tuner_run = [c for c in printer.components if c['component'] == 'Tuner']
  if not tuner_run:
    return None
  store = progress.open_store(config.metadata_path)
  artifact = progress.LatestRun(store, config.pipeline_name, 'Tuner').one(
      'best_hyperparameters')
  with open(os.path.join(artifact.uri, 'best_hyperparameters.txt')) as f:
    values = json.load(f)['values']
  path = config.path(config.hyperparameters_file)
  with open(path, 'w') as f:
    json.dump(values, f, indent=2, sort_keys=True)
    f.write('\n')
  return path


def summarize(config, printer, error, seconds):
  """The run's outcome, from what ran in this run only."""
  from pipeline import progress
  ran = {c['component'] for c in printer.components}
  summary = {
      'pipeline': config.pipeline_name,
      'succeeded': error is None,
      'error': None if error is None else str(error),
      'seconds': round(seconds, 1),
      'components': printer.components,
      'metrics': {}, 'blessed': False, 'pushed': False, 'pushed_path': None,
  }
  store = progress.open_store(config.metadata_path)
  if 'Evaluator' in ran:
    out = progress.LatestRun(store, config.pipeline_name, 'Evaluator')
    summary['metrics'] = progress.evaluation_metrics(out.one('evaluation').uri)
    summary['blessed'] = progress.custom_property(out.one('blessing'), 'blessed', 0) == 1
  if 'Pusher' in ran:
    pushed = progress.LatestRun(store, config.pipeline_name, 'Pusher').one(
        'pushed_model')
    summary['pushed'] = progress.custom_property(pushed, 'pushed', 0) == 1
    if summary['pushed']:
      summary['pushed_path'] = progress.custom_property(pushed, 'pushed_destination')
  return summary


def print_summary(summary):
  print()
  if summary.get('report_path'):
    print(f'Report: {summary["report_path"]}')
  if not summary['succeeded']:
    print(f'FAILED after {summary["seconds"]}s: {summary["error"]}')
    print('Nothing was pushed.')
    return
  metrics = summary['metrics']
  shown = ', '.join(f'{k} {metrics[k]:.4f}' for k in ('auc', 'accuracy') if k in metrics)
  print(f'Done in {summary["seconds"]}s. Eval: {shown or "n/a"}.')
  if summary['pushed']:
    print(f'Blessed and pushed: {summary["pushed_path"]}')
    if summary.get('labels'):
      print(f'Serving labels: {summary["labels"]}')
  else:
    print('Model NOT blessed: nothing pushed (see the Evaluator thresholds in '
          'pipeline/configs.py).')


def exit_code(summary) -> int:
  if not summary['succeeded']:
    return EXIT_FAILED
  return EXIT_OK if summary['pushed'] else EXIT_NOT_BLESSED


def run(config, enable_cache=True, verbose=False, stream=sys.stdout):
  """Runs the pipeline in this process; returns the summary dict."""
  if config.infra_validator != 'local':
    return _run(config, enable_cache, verbose, stream)
  from serving import infra_check
  try:
    return _run(config, enable_cache, verbose, stream,
                on_execute=_start_standby_once(infra_check))
  finally:
    infra_check.stop_standby()


def _start_standby_once(infra_check):
  """Starts the infra check's model server as the first component really
  executes (a cached rerun starts none). Its start-up, mostly importing TF,
  then runs on the other core while the pipeline works, and the check itself
  only loads the candidate into it."""
  started = []

  def on_execute(node_id):
    if not started:
      started.append(node_id)
      infra_check.start_standby()
  return on_execute


def _run(config, enable_cache, verbose, stream, on_execute=None):
  from tfx.orchestration.metadata import sqlite_metadata_connection_config
  from pipeline import parallel_runner
  from pipeline import pipeline as taxi_pipeline
  from pipeline import progress

  if config.beam_profile == 'local':
    from pipeline import beam_speedups
    beam_speedups.apply()  # The in-memory runner's set-up, memoized.
  printer = progress.ProgressPrinter(config.pipeline_name, config.metadata_path, stream)
  _configure_logging(verbose)
  os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
  started = time.time()
  error = None
  try:
    print(f'Pipeline {config.pipeline_name}: data {config.path(config.data_root)}',
          file=stream)
    pipeline = taxi_pipeline.create_pipeline(
        config, enable_cache=enable_cache,
        metadata_connection_config=sqlite_metadata_connection_config(
            config.metadata_path))
    with printer.watching(on_execute):
      parallel_runner.ParallelLocalDagRunner(config.parallel_components).run(pipeline)
  except Exception as e:  # Reported, never swallowed: the exit code says it.
    error = e
    printer.fail(e)
  summary = summarize(config, printer, error, time.time() - started)
  if error is None and config.tune:
    summary['hyperparameters_saved_to'] = _save_tuned_hyperparameters(config, printer)
  summary['report_path'] = _write_report(config)
  if summary['pushed'] and config.serving_config_file:
    summary['labels'] = _label_canary(config, summary['pushed_path'])
  return summary


def _label_canary(config, pushed_path):
  """The new version becomes `canary` beside `stable` in the serving config."""
  from pipeline import rollout
  version = int(os.path.basename(pushed_path))
  path = config.path(config.serving_config_file)
  labels = rollout.labels(rollout.read_config(path), config.model_name)
  if version in labels.values():
    return labels  # Already labelled: an unchanged model, not re-pushed.
  return rollout.canary(path, config.model_name, version)


def _write_report(config):
  """The run's HTML report; a report that fails to build never fails the run."""
  from pipeline import report
  try:
    return report.write_run_report(config)
  except Exception as e:  # pylint: disable=broad-except
    print(f'(report not written: {e})', file=sys.stderr)
    return None


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  # Fewer garbage collections: the run allocates millions of short-lived
  # objects beside ~1M long-lived ones (TF, Beam, TFX), and with Python's
  # default thresholds its full collections took ~3 s of a 40 s run (gc
  # callbacks); with these, ~1.5 s in all. Cycles are still collected.
  gc.set_threshold(50_000, 20, 20)
  from pipeline import configs
  config = configs.load({
      'data_root': args.data_root, 'output_root': args.output_root,
      'serving_dir': args.serving_dir, 'train_steps': args.train_steps,
      'tune': args.tune, 'beam_profile': args.beam_profile,
      'span_window': args.span_window,
  })
  if args.retrain_if_needed:
    from pipeline import retrain
    decision = retrain.decide(config, args.monitoring_result)
    print(f'{"Retraining" if decision.run else "Not retraining"}: {decision.reason}.')
    if not decision.run:
      return EXIT_OK
  summary = run(config, enable_cache=not args.no_cache, verbose=args.verbose)
  print_summary(summary)
  if args.summary_json:
    with open(args.summary_json, 'w') as f:
      json.dump(summary, f, indent=2, default=str)
  return exit_code(summary)


def exit_now(code: int):
  """Exits without the interpreter's teardown of TF, Beam and gRPC, which
  took 3-20 s (measured) and does nothing for us: every output is written
  and closed by now."""
  sys.stdout.flush()
  sys.stderr.flush()
  logging.shutdown()
  os._exit(code)  # pylint: disable=protected-access


if __name__ == '__main__':
  exit_now(main())
