"""Runs the pipeline on this machine (TFX launchers, MLMD in SQLite).

    python local_runner.py                 # quiet: a line per component
    python local_runner.py --verbose       # full TFX / Beam logs
    python local_runner.py --tune          # re-tune hyperparameters first
    python local_runner.py --retrain-if-needed [--monitoring-result m.json]
    python local_runner.py --score DROP [--id-column trip_id] [--score-format jsonl]

Exit status: 0 a blessed model was pushed as the new highest version (or
that version already holds it); 1 the run failed (bad data, error); 2 a
usage error; 3 it ran but the model was not blessed. See --help.
With --score: 0 the drop was scored, 1 it was not (bad rows, no blessed
model, no rows), 2 a usage error.
"""

import compat.keras  # noqa: F401  First: Keras 2 for TFX (see compat/keras.py).

import os
import sys

# Before anything imports TensorFlow: quiet runs silence TF's C++ logging,
# which only reads this at start-up.
if '--verbose' not in sys.argv:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  import warnings
  warnings.filterwarnings('ignore')  # Library deprecation chatter.

import argparse  # pylint: disable=g-import-not-at-top
import contextlib
import datetime
import gc
import json
import logging
import time

from pipeline import project, quiet

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_BLESSED = 0, 1, 2, 3

EPILOG = """\
exit status:
  0  a blessed model was pushed as the new highest version, or the highest
     version already holds this model (or --retrain-if-needed: no need)
  1  the run failed (bad data, an error in a component)
  2  a usage error: a bad flag, config value or missing file
  3  the run finished but the model was not blessed: nothing pushed
  with --score: 0 scored; 1 not scored (bad rows, no blessed model, no rows)

environment:
  Every field of pipeline/configs.py can be set as {P}<FIELD>, e.g.
  {P}TRAIN_STEPS=500, {P}DATA_ROOT=/data/mine, {P}TUNER_TRIALS=2,
  {P}SERVING_CONFIG_FILE=models.config; flags override them.

logs:
  Every run writes its full log to <output-root>/logs/; quiet runs print its
  path at the end (and its last lines when the run fails).
"""

# Libraries whose INFO logs go only to the log file in quiet runs (and this
# runner's record of a failure, shown on the console as one line). The root
# logger is left alone: a user's own logging (in run_fn, say) reaches the
# log file, and its warnings the console.
LIBRARY_LOGGERS = ('local_runner',) + quiet.LIBRARY_LOGGERS
FAILURE_LOG_LINES = 20
# Project modules are imported inside the functions that use them: most load
# TFX, Beam or TensorFlow (seconds), and a usage error must answer at once.


def parse_args(argv):
  from pipeline import configs
  defaults = configs.PipelineConfig()
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n')[0],
      epilog=EPILOG.replace('{P}', project.NAMES['env_var_prefix']),
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-root', metavar='DIR',
                      help=f'folder holding span-<N>/*.csv (default: {defaults.data_root})')
  parser.add_argument('--output-root', metavar='DIR',
                      help=f'pipeline artifacts, MLMD and logs (default: {defaults.output_root})')
  parser.add_argument('--serving-dir', metavar='DIR',
                      help=f'where blessed models are pushed (default: {defaults.serving_dir})')
  parser.add_argument('--train-steps', type=int, metavar='N',
                      help=f'training steps (default: {defaults.train_steps})')
  parser.add_argument('--tune', action='store_true', default=None,
                      help='run the Tuner first; its best values are saved to '
                           '<output-root>/tuned_hyperparameters.json, which later '
                           'runs with that output root use (default: off)')
  parser.add_argument('--span-window', type=int, metavar='N',
                      help=f'train on the latest N spans (default: {defaults.span_window})')
  parser.add_argument('--retrain-if-needed', action='store_true',
                      help='run only if a new span arrived or monitoring found skew/drift')
  parser.add_argument('--monitoring-result', metavar='JSON',
                      help='monitoring.json written by operations.monitoring '
                           '(with --retrain-if-needed)')
  parser.add_argument('--score', metavar='DROP',
                      help='score a drop of unlabelled rows with the latest blessed model '
                           'instead of training: a data root (its latest span-<N>/) or a '
                           'folder of CSV files (see pipeline/batch_scoring.py)')
  parser.add_argument('--id-column', metavar='NAME', default='',
                      help='with --score: the column that identifies a row, carried to the '
                           'predictions (default: none, every input column is carried)')
  parser.add_argument('--score-format', choices=['csv', 'jsonl'], default='csv',
                      help='with --score: the predictions file format (default: csv)')
  parser.add_argument('--beam-profile', choices=['local', 'dataflow'],
                      help=f'Beam runner settings (default: {defaults.beam_profile})')
  parser.add_argument('--no-cache', action='store_true', help='re-run every component')
  parser.add_argument('--summary-json', metavar='FILE', help='also write the run summary here')
  parser.add_argument('--verbose', action='store_true',
                      help='also print the full TFX/Beam logs (default: quiet, a line '
                           'per component)')
  return parser.parse_args(argv)


def _configure_logging(verbose: bool):
  """Quiet library loggers for the whole process (bench/scale_bench.py)."""
  from absl import logging as absl_logging
  if verbose:
    absl_logging.set_verbosity(absl_logging.INFO)
    return
  absl_logging.set_verbosity(absl_logging.FATAL)
  for name in LIBRARY_LOGGERS:
    logging.getLogger(name).setLevel(logging.CRITICAL)


@contextlib.contextmanager
def _logging_to(log_path: str, verbose: bool):
  """Every log record of the run into log_path; in quiet runs the library
  loggers reach only that file. Restored afterwards (a caller's process)."""
  from absl import logging as absl_logging
  file_handler = logging.FileHandler(log_path)
  file_handler.setFormatter(logging.Formatter(
      '%(asctime)s %(levelname)s %(name)s: %(message)s'))
  root = logging.getLogger()
  saved_root = (root.level, [(h, h.level) for h in root.handlers])
  saved_libraries = {name: (lg.level, lg.propagate, list(lg.handlers))
                     for name in LIBRARY_LOGGERS for lg in [logging.getLogger(name)]}
  saved_absl = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  root.setLevel(logging.INFO)
  root.addHandler(file_handler)
  if not verbose:
    for handler, _ in saved_root[1]:  # The console: the user's warnings only.
      handler.setLevel(max(handler.level, logging.WARNING))
    for name in LIBRARY_LOGGERS:
      library = logging.getLogger(name)
      library.setLevel(logging.INFO)
      library.handlers = [file_handler]
      library.propagate = False
  try:
    yield
  finally:
    root.removeHandler(file_handler)
    root.setLevel(saved_root[0])
    for handler, level in saved_root[1]:
      handler.setLevel(level)
    for name, (level, propagate, handlers) in saved_libraries.items():
      library = logging.getLogger(name)
      library.setLevel(level)
      library.propagate = propagate
      library.handlers = handlers
    absl_logging.set_verbosity(saved_absl)
    file_handler.close()


def _save_tuned_hyperparameters(config, printer):
  """After --tune: the current values with the tuned ones merged in, saved
  under the output root (never over the checked-in file)."""
  from pipeline import pipeline as pipeline_definition
  from pipeline import metadata
  if not [c for c in printer.components if c['component'] == 'Tuner']:
    return None
  store = metadata.open_store(config.metadata_path)
  artifact = metadata.LatestRun(store, config.pipeline_name, 'Tuner').one(
      'best_hyperparameters')
  with open(os.path.join(artifact.uri, 'best_hyperparameters.txt')) as f:
    tuned = json.load(f)['values']
  with open(pipeline_definition.hyperparameters_path(config)) as f:
    values = json.load(f)
  values.update(tuned)
  path = pipeline_definition.tuned_hyperparameters_path(config)
  with open(path, 'w') as f:
    json.dump(values, f, indent=2, sort_keys=True)
    f.write('\n')
  return path


def _one_line(error) -> str:
  return '; '.join(line.strip() for line in str(error).splitlines() if line.strip()) \
      or type(error).__name__


def summarize(config, printer, error, seconds, run_id=None):
  """The run's outcome, from what ran in this run only.

  'pushed' means this run created a new version, the highest in the serving
  directory; 'serving_version' is the highest version there, what TF Serving
  serves, and 'push_result' says which happened.
  """
  from pipeline import metadata
  ran = {c['component'] for c in printer.components}
  failed = [c['component'] for c in printer.components if c.get('failed')]
  summary = {
      'pipeline': config.pipeline_name,
      'run_id': run_id if printer.components else None,
      'succeeded': error is None,
      'error': None if error is None else _one_line(error),
      'failed_component': failed[0] if failed else None,
      'seconds': round(seconds, 1),
      'components': printer.components,
      'metrics': {}, 'blessed': False, 'pushed': False, 'pushed_path': None,
      'serving_version': None, 'push_result': 'nothing pushed',
  }
  store = metadata.open_store(config.metadata_path)
  if 'Evaluator' in ran and 'Evaluator' not in failed:
    out = metadata.LatestRun(store, config.pipeline_name, 'Evaluator')
    summary['metrics'] = metadata.evaluation_metrics(out.one('evaluation').uri)
    summary['metrics_split'] = metadata.evaluated_splits(out.execution)
    summary['blessed'] = metadata.custom_property(out.one('blessing'), 'blessed', 0) == 1
  if 'Pusher' in ran and error is None:
    push = metadata.push_outcome(
        metadata.LatestRun(store, config.pipeline_name, 'Pusher').one('pushed_model'))
    summary['pushed'] = push['new_version']
    summary['pushed_path'] = push['path'] if push['new_version'] else None
    summary['push_result'] = push['result']
  summary['serving_version'] = _served_version(config)
  return summary


def _served_version(config):
  """The highest version in the serving directory: what TF Serving serves."""
  from pipeline.components import pusher
  versions = pusher.version_dirs(config.push_dir)
  return versions[-1] if versions else None


def print_summary(summary):
  print()
  if summary.get('report_path'):
    print(f'Report: {summary["report_path"]}')
  if not summary['succeeded']:
    where = f' in {summary["failed_component"]}' if summary.get('failed_component') else ''
    print(f'FAILED{where} after {summary["seconds"]}s: {summary["error"]}')
    _print_log_tail(summary.get('log_path'))
    print('Nothing was pushed.')
    return
  from pipeline import metadata
  metrics = summary['metrics']
  shown = ', '.join(f'{k} {metrics[k]:.4f}' for k in metadata.HEADLINE_METRICS if k in metrics)
  print(f'Done in {summary["seconds"]}s. On {summary.get("metrics_split", "test")}: '
        f'{shown or "n/a"}.')
  if summary['pushed']:
    print(f'Blessed and pushed: {summary["pushed_path"]} (now served: the highest version)')
  elif _already_served(summary):
    print(f'Blessed; {summary["push_result"]}.')
  elif summary['blessed']:
    print('Blessed by the Evaluator but NOT pushed: the InfraValidator found it not '
          'servable (see its line above).')
  else:
    print('Model NOT blessed: nothing pushed (see the Evaluator thresholds in '
          'pipeline/configs.py).')
  if summary.get('labels'):
    print(f'Serving labels: {summary["labels"]}')
  if summary.get('hyperparameters_saved_to'):
    path = summary['hyperparameters_saved_to']
    print(f'Tuned hyperparameters: {path}. Later runs with this output root train '
          f'with them; to keep them for everyone: cp {path} {summary["hyperparameters_file"]} '
          '(then commit it).')
  if summary.get('log_path'):
    print(f'Full log: {summary["log_path"]}')


def _print_log_tail(log_path):
  if not log_path or not os.path.exists(log_path):
    return
  with open(log_path, errors='replace') as f:
    lines = f.readlines()[-FAILURE_LOG_LINES:]
  print(f'Last lines of the log ({log_path}):')
  for line in lines:
    print('  | ' + line.rstrip()[:300])


def _already_served(summary) -> bool:
  return summary['push_result'].startswith('not pushed: version')


def exit_code(summary) -> int:
  if not summary['succeeded']:
    return EXIT_FAILED
  return EXIT_OK if summary['pushed'] or _already_served(summary) else EXIT_NOT_BLESSED


def run(config, enable_cache=True, verbose=False, stream=sys.stdout):
  """Runs the pipeline in this process; returns the summary dict, or None
  when another tool's patched runner took the pipeline without running it
  (`tfx pipeline create` does)."""
  if config.infra_validator != 'local':
    return _run(config, enable_cache, verbose, stream)
  from pipeline.components import infra_check
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
  from pipeline import pipeline as pipeline_definition
  started = []

  def on_execute(node_id):
    # The never-cached Pusher executes in every run, after the check.
    if not started and node_id not in pipeline_definition.NEVER_CACHED:
      started.append(node_id)
      infra_check.start_standby()
  return on_execute


def _new_run_log(config, pipeline_name: str):
  """A new run's id and its log file under <output_root>/logs/."""
  run_id = _new_run_id(pipeline_name)
  log_dir = os.path.join(config.path(config.output_root), 'logs')
  os.makedirs(log_dir, exist_ok=True)
  return run_id, os.path.join(log_dir, f'{run_id}.log')


def _new_run_id(pipeline_name: str) -> str:
  """The TFX pipeline run id (the MLMD 'pipeline_run' context's name)."""
  return f'{pipeline_name}-{datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")}'


def _run(config, enable_cache, verbose, stream, on_execute=None):
  from tfx.orchestration.metadata import sqlite_metadata_connection_config
  from orchestration import runner
  from pipeline import pipeline as pipeline_definition
  from orchestration import progress

  if config.beam_profile == 'local':
    from compat import beam as compat_beam
    compat_beam.apply()  # The in-memory runner's set-up, memoized.
  run_id, log_path = _new_run_log(config, config.pipeline_name)
  printer = progress.ProgressPrinter(config.pipeline_name, config.metadata_path, stream)
  started = time.time()
  error = None
  with _logging_to(log_path, verbose):
    try:
      print(f'Pipeline {config.pipeline_name}: data {config.path(config.data_root)}, '
            f'hyperparameters {pipeline_definition.hyperparameters_path(config)}', file=stream)
      pipeline = pipeline_definition.create_pipeline(
          config, enable_cache=enable_cache,
          metadata_connection_config=sqlite_metadata_connection_config(
              config.metadata_path))
      dag_runner = runner.ParallelLocalDagRunner(
          config.parallel_components, run_id=run_id,
          never_cached=pipeline_definition.NEVER_CACHED,
          on_start=printer.start, on_finish=printer.finish, on_execute=on_execute)
      with printer.watching():
        dag_runner.run(pipeline)
    except Exception as e:  # Reported, never swallowed: the exit code says it.
      logging.getLogger('local_runner').exception('The run failed')
      error = e
      printer.fail(e)
  if error is None and not printer.components:
    return None  # A patched runner (tfx CLI) took the pipeline; nothing ran.
  summary = summarize(config, printer, error, time.time() - started, run_id)
  summary['log_path'] = log_path
  summary['hyperparameters'] = pipeline_definition.hyperparameters_path(config)
  if error is None and config.tune:
    summary['hyperparameters_saved_to'] = _save_tuned_hyperparameters(config, printer)
    summary['hyperparameters_file'] = config.hyperparameters_file
  summary['report_path'] = _write_report(config, summary)
  if summary['pushed'] and config.serving_config_file:
    summary['labels'] = _label_canary(config, summary['pushed_path'])
  return summary


def _label_canary(config, pushed_path):
  """The new version becomes `canary` beside `stable` in the serving config."""
  from operations import rollout
  from pipeline import audit
  version = int(os.path.basename(pushed_path))
  path = config.path(config.serving_config_file)
  labels = rollout.labels(rollout.read_config(path), config.model_name)
  if version in labels.values():
    return labels  # Already labelled.
  # The canary's record goes beside the push's, wherever the config file lives.
  return rollout.canary(path, config.model_name, version,
                        audit_dir=audit.audit_dir(config.path(config.serving_dir)))


def _write_report(config, summary):
  """The run's HTML report; a report that fails to build never fails the run."""
  from reports import run_report
  try:
    return run_report.write_run_report(config, summary=summary)
  except Exception as e:  # pylint: disable=broad-except
    print(f'(report not written: {e})', file=sys.stderr)
    return None


def score(config, drop_path, id_column='', output_format='csv', enable_cache=True,
          verbose=False, stream=sys.stdout):
  """Scores a drop with the scoring pipeline (pipeline/batch_scoring.py) in
  this process; returns its summary. A drop or model that cannot be scored
  raises batch_scoring.ScoringError before anything runs."""
  from tfx.orchestration.metadata import sqlite_metadata_connection_config
  from orchestration import progress
  from orchestration import runner
  from pipeline import batch_scoring

  drop = batch_scoring.resolve_drop(config.path(drop_path), config.input_pattern)
  batch_scoring.check_drop(drop, id_column)
  model = batch_scoring.latest_blessed_model(config)
  if config.beam_profile == 'local':
    from compat import beam as compat_beam
    compat_beam.apply()
  name = batch_scoring.scoring_pipeline_name(config)
  run_id, log_path = _new_run_log(config, name)
  printer = progress.ProgressPrinter(name, config.metadata_path, stream)
  started = time.time()
  error = None
  with _logging_to(log_path, verbose):
    try:
      print(f'Pipeline {name}: scoring {", ".join(drop.csv_files)} with model version '
            f'{model.version or "(not pushed)"} ({model.model.uri})', file=stream)
      pipeline = batch_scoring.create_scoring_pipeline(
          config, drop, model, id_column=id_column, output_format=output_format,
          enable_cache=enable_cache,
          metadata_connection_config=sqlite_metadata_connection_config(config.metadata_path))
      dag_runner = runner.ParallelLocalDagRunner(
          config.parallel_components, run_id=run_id,
          on_start=printer.start, on_finish=printer.finish)
      with printer.watching():
        dag_runner.run(pipeline)
    except Exception as e:  # Reported, never swallowed: the exit code says it.
      logging.getLogger('local_runner').exception('The scoring run failed')
      error = e
      printer.fail(e)
  failed = [c['component'] for c in printer.components if c.get('failed')]
  summary = {
      'pipeline': name, 'run_id': run_id, 'succeeded': error is None,
      'error': None if error is None else _one_line(error),
      'failed_component': failed[0] if failed else None,
      'seconds': round(time.time() - started, 1), 'components': printer.components,
      'model': model.model.uri, 'model_version': model.version,
      'predictions_path': None, 'rows': 0, 'prediction_logs': None, 'log_path': log_path,
  }
  if error is None:
    from pipeline import metadata
    store = metadata.open_store(config.metadata_path)
    predictions = metadata.LatestRun(store, name, 'PredictionsWriter').one('predictions')
    summary['predictions_path'] = metadata.custom_property(predictions, 'file')
    summary['rows'] = metadata.custom_property(predictions, 'rows')
    summary['prediction_logs'] = metadata.LatestRun(store, name, 'BulkInferrer').one(
        'inference_result').uri
  return summary


def print_score_summary(summary):
  print()
  if not summary['succeeded']:
    where = f' in {summary["failed_component"]}' if summary.get('failed_component') else ''
    print(f'FAILED{where} after {summary["seconds"]}s: {summary["error"]}')
    _print_log_tail(summary.get('log_path'))
    if 'New column' in (summary['error'] or ''):
      print('A column that only identifies rows? Name it with --id-column: it is carried '
            'to the predictions, not validated.')
    print('Nothing was scored.')
    return
  version = summary['model_version']
  model = f'model version {version}' if version else 'a blessed model never pushed'
  print(f'Scored {summary["rows"]:,} rows in {summary["seconds"]}s with {model} '
        f'({summary["model"]}).')
  print(f'Predictions: {summary["predictions_path"]}')
  print(f'PredictionLog: {summary["prediction_logs"]}')
  print(f'Full log: {summary["log_path"]}')


def _main_score(args, config):
  from pipeline import batch_scoring
  for flag, value in (('--tune', args.tune), ('--retrain-if-needed', args.retrain_if_needed),
                      ('--monitoring-result', args.monitoring_result)):
    if value:
      raise UsageError(f'{flag} trains; --score only scores: run them separately')
  try:
    summary = score(config, args.score, id_column=args.id_column,
                    output_format=args.score_format, enable_cache=not args.no_cache,
                    verbose=args.verbose)
  except batch_scoring.DropError as e:
    raise UsageError(str(e)) from e
  except batch_scoring.ScoringError as e:
    print(f'local_runner.py: error: {e}', file=sys.stderr)
    return EXIT_FAILED, False
  print_score_summary(summary)
  if args.summary_json:
    with open(args.summary_json, 'w') as f:
      json.dump(summary, f, indent=2, default=str)
  return (EXIT_OK if summary['succeeded'] else EXIT_FAILED), True


class UsageError(Exception):
  """A mistake in how local_runner.py was called: one line, exit 2."""


def _load_config(args):
  from pipeline import configs
  try:
    return configs.load({
        'data_root': args.data_root, 'output_root': args.output_root,
        'serving_dir': args.serving_dir, 'train_steps': args.train_steps,
        'tune': args.tune, 'beam_profile': args.beam_profile,
        'span_window': args.span_window,
    })
  except (ValueError, KeyError, TypeError) as e:  # Bad environment values among them.
    raise UsageError(f'bad configuration: {_one_line(e)} (see pipeline/configs.py '
                     f'and the {project.NAMES["env_var_prefix"]}* environment variables)') from e


def _decide_retraining(config, args):
  from operations import retrain
  try:
    return retrain.decide(config, args.monitoring_result)
  except (OSError, ValueError, KeyError) as e:
    raise UsageError(_one_line(e)) from e


def _explain_cached_retrain(summary, decision):
  """Monitoring asked for a retrain, but nothing the model depends on changed."""
  trainer = [c for c in summary['components'] if c['component'] == 'Trainer']
  if decision.monitoring_only and trainer and trainer[0]['cached']:
    print('The Trainer was cached: data, code and configuration are those the current '
          'model was trained on, so retraining would rebuild the same model and it '
          'stands. Skew or drift needs newer data: add it as the next span-<N> '
          'folder of the data root (or run with --no-cache to train again anyway).')


def _main(argv):
  args = parse_args(argv)
  # Fewer garbage collections: the run allocates millions of short-lived
  # objects beside a million long-lived ones (TF, Beam, TFX), which Python's
  # default thresholds rescan over and over (bench/README.md has the figures).
  # Cycles are still collected.
  gc.set_threshold(50_000, 20, 20)
  if args.monitoring_result and not args.retrain_if_needed:
    raise UsageError('--monitoring-result is read only with --retrain-if-needed')
  if (args.id_column or args.score_format != 'csv') and not args.score:
    raise UsageError('--id-column and --score-format are read only with --score')
  config = _load_config(args)
  if args.score:
    return _main_score(args, config)
  decision = None
  if args.retrain_if_needed:
    decision = _decide_retraining(config, args)
    print(f'{"Retraining" if decision.run else "Not retraining"}: {decision.reason}.')
    if not decision.run:
      return EXIT_OK, False
  summary = run(config, enable_cache=not args.no_cache, verbose=args.verbose)
  if summary is None:
    print(f'Pipeline {config.pipeline_name} handed to the calling tool, not run here.')
    return EXIT_OK, False
  print_summary(summary)
  if decision is not None:
    _explain_cached_retrain(summary, decision)
  if args.summary_json:
    with open(args.summary_json, 'w') as f:
      json.dump(summary, f, indent=2, default=str)
  return exit_code(summary), True


def main_and_ran(argv):
  """(exit code, whether the pipeline ran in this process)."""
  try:
    return _main(argv)
  except UsageError as e:
    print(f'local_runner.py: error: {e}', file=sys.stderr)
    return EXIT_USAGE, False


def main(argv=None) -> int:
  return main_and_ran(sys.argv[1:] if argv is None else argv)[0]


def exit_now(code: int):
  """Exits without the interpreter's teardown of TF, Beam and gRPC, which
  took 3-20 s (measured) and does nothing for us: every output is written
  and closed by now."""
  sys.stdout.flush()
  sys.stderr.flush()
  logging.shutdown()
  os._exit(code)  # pylint: disable=protected-access


if __name__ == '__main__':
  # Fast exit only after a run in this process; when a tool drives this
  # script (`tfx pipeline create` runs it in its own process) it must
  # return to that tool.
  CODE, RAN = main_and_ran(sys.argv[1:])
  if RAN:
    exit_now(CODE)
  sys.exit(CODE)
