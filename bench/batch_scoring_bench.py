"""Batch scoring speed: `local_runner.py --score` vs REST batches of 100.

For each size, a drop of taxi-like unlabelled rows with an id column
(data/generate_taxi.py's rows, tips dropped), then:
  score  `python local_runner.py --score DROP --id-column trip_id` on a copy of
         a trained output root (the local runner, Beam in memory): wall time
         from the command's start to its exit, rows/s, and each step's time.
  rest   `python -m serving.server` with the same model (its pushed version),
         one client POSTing the same rows to :predict (predict_raw, as
         client/predict.py sends them) in batches of 100, one after another;
         the time of the requests only (the server is started and warm).
Peak memory: the largest resident set (RSS) of each process tree, sampled
every 0.2 s with psutil.

    python bench/batch_scoring_bench.py [--rows 150000,1500000]
        [--output-root /work/prebuilt/tfx_output] [--skip-rest]

Not a test: numbers go to bench/README.md ("Batch scoring"). The run's JSON
goes to bench/results/batch_scoring.json (git-ignored).
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import argparse  # pylint: disable=g-import-not-at-top
import csv
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data import generate_taxi as generate  # noqa: E402  pylint: disable=wrong-import-position
from pipeline import project  # noqa: E402  pylint: disable=wrong-import-position

ID = 'trip_id'
REST_BATCH = 100


class PeakRss:
  """The largest RSS of a process and its children, sampled in a thread."""

  def __init__(self, pid: int, every_s: float = 0.2):
    self.peak = 0
    self._process = psutil.Process(pid)
    self._stop = threading.Event()
    self._every_s = every_s
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()

  def _sample(self):
    while not self._stop.is_set():
      try:
        tree = [self._process] + self._process.children(recursive=True)
        self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
      except psutil.Error:
        pass  # Ended between the listing and the reading.
      self._stop.wait(self._every_s)

  def stop(self) -> int:
    self._stop.set()
    self._thread.join()
    return self.peak


def write_drop(folder: str, rows: int) -> str:
  """<folder>/rows.csv: generated rows without tips, an id first."""
  labelled = generate.write_span(folder + '-labelled', 1, rows)
  path = os.path.join(folder, 'rows.csv')
  os.makedirs(folder, exist_ok=True)
  with open(labelled, newline='') as source, open(path, 'w', newline='') as target:
    reader, writer = csv.reader(source), csv.writer(target, lineterminator='\n')
    header = next(reader)
    tips = header.index('tips')
    writer.writerow([ID] + header[:tips] + header[tips + 1:])
    for n, row in enumerate(reader):
      writer.writerow([f'trip-{n}'] + row[:tips] + row[tips + 1:])
  shutil.rmtree(folder + '-labelled')
  return path


def copy_output_root(source: str, target: str) -> str:
  """A copy of an output root whose MLMD names the copy's artifacts."""
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


def _env():
  env = {k: v for k, v in os.environ.items() if not k.startswith(project.NAMES['env_var_prefix'])}
  env.update(TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=REPO)
  return env


def bench_score(output_root: str, drop: str, rows: int, work: str) -> dict:
  summary_path = os.path.join(work, 'summary.json')
  started = time.monotonic()
  process = subprocess.Popen(
      [sys.executable, 'local_runner.py', f'--output-root={output_root}',
       f'--serving-dir={work}/serving_model', f'--score={drop}', f'--id-column={ID}',
       '--no-cache', f'--summary-json={summary_path}'],
      cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  peak = PeakRss(process.pid)
  output, _ = process.communicate()
  seconds = time.monotonic() - started
  peak_rss = peak.stop()
  if process.returncode != 0:
    raise RuntimeError(f'scoring failed:\n{output}')
  with open(summary_path) as f:
    summary = json.load(f)
  assert summary['rows'] == rows, summary
  return {'seconds': round(seconds, 1), 'rows_per_s': round(rows / seconds),
          'peak_rss_mib': round(peak_rss / 2**20),
          'steps_s': {c['component']: c['seconds'] for c in summary['components']}}


def bench_rest(model_base: str, drop: str, rows: int) -> dict:
  from client.predict import RestClient, rows_from_csv  # pylint: disable=g-import-not-at-top
  from serving.server_process import ServerProcess  # pylint: disable=g-import-not-at-top
  with open(drop, newline='') as f:
    typed = list(rows_from_csv(f))  # The id is not a model input: left out.
  with ServerProcess(f'--model_name={project.MODEL_NAME}',
                     f'--model_base_path={model_base}') as server:
    server.wait_until_available(project.MODEL_NAME)
    peak = PeakRss(server.pid)
    client = RestClient(server.rest)
    client.predict(typed[:REST_BATCH])  # Warm.
    started = time.monotonic()
    answered = 0
    for start in range(0, len(typed), REST_BATCH):
      answered += len(client.predict(typed[start:start + REST_BATCH]))
    seconds = time.monotonic() - started
    peak_rss = peak.stop()
  assert answered == rows
  return {'seconds': round(seconds, 1), 'rows_per_s': round(rows / seconds),
          'server_peak_rss_mib': round(peak_rss / 2**20)}


def served_model_base(output_root: str) -> str:
  from pipeline import metadata  # pylint: disable=g-import-not-at-top
  pushed = metadata.Lineage(os.path.join(output_root, 'metadata.sqlite')).pushed_model()
  return os.path.dirname(metadata.custom_property(pushed, 'pushed_destination'))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', default='150000', help='sizes, comma-separated')
  parser.add_argument('--output-root', default='/work/prebuilt/tfx_output',
                      help='a trained output root (copied, never written)')
  parser.add_argument('--skip-rest', action='store_true')
  args = parser.parse_args(argv)
  results = []
  for rows in [int(n) for n in args.rows.split(',')]:
    work = tempfile.mkdtemp(prefix=f'batch_scoring_{rows}_')
    try:
      drop = write_drop(os.path.join(work, 'drop'), rows)
      output_root = copy_output_root(args.output_root, os.path.join(work, 'tfx_output'))
      result = {'rows': rows, 'cpus': os.cpu_count(), 'load_before': os.getloadavg()[0],
                'score': bench_score(output_root, os.path.dirname(drop), rows, work)}
      print(json.dumps(result), flush=True)
      if not args.skip_rest:
        result['rest'] = bench_rest(served_model_base(output_root), drop, rows)
      result['load_after'] = os.getloadavg()[0]
      print(json.dumps(result), flush=True)
      results.append(result)
    finally:
      shutil.rmtree(work, ignore_errors=True)
  os.makedirs(os.path.join(REPO, 'bench', 'results'), exist_ok=True)
  with open(os.path.join(REPO, 'bench', 'results', 'batch_scoring.json'), 'w') as f:
    json.dump(results, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
