"""Times the pipeline: a cold run, the reruns with nothing changed, and the
official TFX taxi example on the same machine, side by side.

    python bench/pipeline_bench.py [--skip-baseline] [--out bench/results/pipeline.json]

Each run is a separate process (what a user types), timed wall-clock, with
its peak resident memory from wait4(). The official example
(tfx/examples/chicago_taxi_pipeline/taxi_pipeline_native_keras.py from the
installed tfx) runs unmodified with the two fixes it needs: dill installed
and TF_USE_LEGACY_KERAS=1.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # pylint: disable=g-import-not-at-top
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


def timed(cmd, env=None, cwd=None):
  """Runs cmd; returns (seconds, peak RSS in MB, exit code)."""
  started = time.time()
  process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  _, status, usage = os.wait4(process.pid, 0)
  seconds = time.time() - started
  return round(seconds, 1), round(usage.ru_maxrss / 1024), os.waitstatus_to_exitcode(status)


def our_runs(workdir: pathlib.Path):
  cmd = [sys.executable, str(REPO / 'local_runner.py'),
         '--output-root', str(workdir / 'out'), '--serving-dir', str(workdir / 'serving')]
  results = {}
  for name in ('cold', 'rerun_1', 'rerun_2'):
    summary = workdir / f'{name}.json'
    seconds, rss, code = timed(cmd + ['--summary-json', str(summary)], cwd=REPO)
    detail = json.loads(summary.read_text())
    results[name] = {
        'seconds': seconds, 'peak_rss_mb': rss, 'exit_code': code,
        'metrics': {k: detail['metrics'].get(k) for k in ('auc', 'accuracy')},
        'components': {c['component']: ('cached' if c['cached'] else c['seconds'])
                       for c in detail['components']},
    }
    print(name, json.dumps(results[name]), flush=True)
  return results


def official_taxi_run(workdir: pathlib.Path):
  example = pathlib.Path(importlib.util.find_spec('tfx').origin).parent / \
      'examples' / 'chicago_taxi_pipeline'
  home = workdir / 'home'
  (home / 'taxi' / 'data' / 'simple').mkdir(parents=True)
  shutil.copy(example / 'data' / 'simple' / 'data.csv', home / 'taxi' / 'data' / 'simple')
  shutil.copy(example / 'taxi_utils_native_keras.py', home / 'taxi')
  env = dict(os.environ, HOME=str(home), TF_USE_LEGACY_KERAS='1')
  seconds, rss, code = timed(
      [sys.executable, str(example / 'taxi_pipeline_native_keras.py')], env=env)
  result = {'seconds': seconds, 'peak_rss_mb': rss, 'exit_code': code}
  print('official_taxi_example', json.dumps(result), flush=True)
  return result


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--skip-baseline', action='store_true')
  parser.add_argument('--out', default=str(REPO / 'bench' / 'results' / 'pipeline.json'))
  args = parser.parse_args()
  workdir = pathlib.Path(tempfile.mkdtemp(prefix='pipeline_bench_'))
  results = {'ours': our_runs(workdir), 'cpus': os.cpu_count(),
             'load_before': os.getloadavg()}
  if not args.skip_baseline:
    results['official'] = official_taxi_run(workdir)
    results['cold_ratio'] = round(
        results['ours']['cold']['seconds'] / results['official']['seconds'], 3)
    print('cold run / official example:', results['cold_ratio'])
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.out).write_text(json.dumps(results, indent=2))
  shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
  main()
