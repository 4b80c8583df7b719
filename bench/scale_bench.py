"""How the Beam-heavy steps scale with the data, on this machine.

    python bench/scale_bench.py                       # 15k, 150k, 1.5M rows
    python bench/scale_bench.py --rows 15000 150000   # a subset

For each size it generates taxi-like data (data/generate_taxi.py), then runs the
real pipeline (pipeline/pipeline.py, LocalDagRunner, the `local` Beam
profile) in a fresh subprocess, with a short training (the Evaluator needs a
model, not a good one). Per component it reports seconds, input rows per
second and the process's peak memory while that component ran (psutil
sampling); then the growth exponent k (time ~ rows^k) between the two largest
sizes. Results: bench/results/scale.json and a table on stdout.
"""

import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import argparse  # pylint: disable=g-import-not-at-top
import io
import json
import math
import resource
import subprocess
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
RESULTS = os.path.join(REPO, 'bench', 'results')
SIZES = (15_000, 150_000, 1_500_000)
BEAM_STEPS = ('CsvExampleGen', 'StatisticsGen', 'Transform', 'Evaluator')
TRAIN_STEPS, EVAL_STEPS = 30, 10  # The model only has to exist.
SAMPLE_SECONDS = 0.1
GB = 1024 ** 3


def data_root(rows: int) -> str:
  return os.path.join(RESULTS, 'scale', f'data-{rows}')


def ensure_data(rows: int, seed: int = 0) -> str:
  from data import generate_taxi as generate
  root = data_root(rows)
  if not os.path.exists(os.path.join(root, 'span-1', 'data.csv')):
    generate.write_span(root, 1, rows, seed)
  return root


def bench_config(rows: int, work_dir: str):
  from pipeline import configs
  overrides = dict(
      data_root=data_root(rows), output_root=os.path.join(work_dir, 'tfx_output'),
      serving_dir=os.path.join(work_dir, 'serving_model'), beam_profile='local',
      train_steps=TRAIN_STEPS, eval_steps=EVAL_STEPS, min_auc=0.0, min_accuracy=0.0)
  if 'infra_validator' in configs.PipelineConfig.__dataclass_fields__:
    overrides['infra_validator'] = 'none'  # Serving is not what is measured here.
  return configs.load(overrides, environ={})


class _CpuPrinter:
  """Mixin for ProgressPrinter: adds each component's CPU seconds.

  The machine's 2 cores are shared with other work; CPU time is what the
  component itself spent, wall time also what it waited for a core.
  """

  current = None  # The component running now (the runner runs one at a time here).

  def start(self, node_id: str):
    self._cpu_started = _cpu_seconds()
    self.current = node_id
    super().start(node_id)

  def finish(self, node_id: str):
    cpu = _cpu_seconds() - self._cpu_started
    self.current = None
    super().finish(node_id)
    self.components[-1]['cpu_seconds'] = round(cpu, 2)


def _cpu_seconds() -> float:
  times = os.times()
  return times.user + times.system


class _MemorySampler:
  """Samples this process's RSS and charges it to the running component."""

  def __init__(self, printer):
    import psutil
    self._process = psutil.Process()
    self._printer = printer
    self.peak = {}
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      node = self._printer.current
      if node:
        rss = self._process.memory_info().rss
        self.peak[node] = max(self.peak.get(node, 0), rss)
      self._stop.wait(SAMPLE_SECONDS)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()


def run_one(rows: int) -> dict:
  """One pipeline run on `rows` rows, in this process (the child)."""
  import shutil
  import psutil
  from tfx import v1 as tfx
  from local_runner import _configure_logging
  from pipeline import pipeline as pipeline_definition
  from orchestration import progress, runner

  work_dir = os.path.join(RESULTS, 'scale', f'run-{rows}')
  shutil.rmtree(work_dir, ignore_errors=True)
  config = bench_config(rows, work_dir)
  os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
  _configure_logging(verbose=False)
  pipeline = pipeline_definition.create_pipeline(
      config, enable_cache=False,
      metadata_connection_config=tfx.orchestration.metadata
      .sqlite_metadata_connection_config(config.metadata_path))
  printer_class = type('Printer', (_CpuPrinter, progress.ProgressPrinter), {})
  printer = printer_class(config.pipeline_name, config.metadata_path, io.StringIO())
  baseline_rss = psutil.Process().memory_info().rss
  load_at_start = os.getloadavg()[0]
  started = time.time()
  # One component at a time, so RSS and CPU are charged to the one running.
  dag_runner = runner.ParallelLocalDagRunner(1, on_start=printer.start, on_finish=printer.finish)
  with _MemorySampler(printer) as sampler, printer.watching():
    dag_runner.run(pipeline)
  components = {c['component']: {
      'seconds': c['seconds'], 'cpu_seconds': c['cpu_seconds'],
      'rows_per_s': _per_second(rows, c['seconds']),
      'rows_per_cpu_s': _per_second(rows, c['cpu_seconds']),
      'peak_rss_gb': round(sampler.peak.get(c['component'], 0) / GB, 3),
  } for c in printer.components}
  return {
      'rows': rows, 'seconds': round(time.time() - started, 1),
      'baseline_rss_gb': round(baseline_rss / GB, 3),
      # Other work on the 2 shared cores during the run (1-minute load average).
      'load_average_at_start': round(load_at_start, 2),
      'load_average_at_end': round(os.getloadavg()[0], 2),
      # ru_maxrss is in KiB on Linux: the whole run's high-water mark.
      'peak_rss_gb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 3),
      'components': components,
  }


def _per_second(rows: int, seconds: float):
  return round(rows / seconds) if seconds > 0 else None  # Steps that took no time.


def run_in_subprocess(rows: int) -> dict:
  """A fresh process per size: no memory or cache carried between sizes."""
  out = subprocess.run([sys.executable, __file__, '--child', str(rows)],
                       capture_output=True, text=True, cwd=REPO)
  if out.returncode != 0:
    raise RuntimeError(f'{rows:,} rows failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def growth_exponent(small: dict, large: dict, component: str = None,
                    key: str = 'seconds') -> float:
  """k in time ~ rows^k, from two runs."""
  t0 = small['components'][component][key] if component else _beam_seconds(small, key)
  t1 = large['components'][component][key] if component else _beam_seconds(large, key)
  return round(math.log(t1 / t0) / math.log(large['rows'] / small['rows']), 3)


def _beam_seconds(run: dict, key: str = 'seconds') -> float:
  return sum(run['components'][c][key] for c in BEAM_STEPS)


def table(runs) -> str:
  lines = ['| rows | component | wall s | CPU s | rows/s (wall) | rows/CPU-s | peak RSS (GB) |',
           '|---:|---|---:|---:|---:|---:|---:|']
  for run in runs:
    for name in BEAM_STEPS:
      c = run['components'][name]
      lines.append(f"| {run['rows']:,} | {name} | {c['seconds']:.1f} | {c['cpu_seconds']:.1f} | "
                   f"{c['rows_per_s']:,} | {c['rows_per_cpu_s']:,} | {c['peak_rss_gb']:.2f} |")
    wall, cpu = _beam_seconds(run), _beam_seconds(run, 'cpu_seconds')
    lines.append(f"| {run['rows']:,} | **4 Beam steps** | {wall:.1f} | {cpu:.1f} | "
                 f"{round(run['rows'] / wall):,} | {round(run['rows'] / cpu):,} | "
                 f"{run['peak_rss_gb']:.2f} (whole run) |")
  if len(runs) >= 2:
    small, large = runs[-2], runs[-1]
    lines.append('')
    lines.append(f"Growth exponent k, {small['rows']:,} -> {large['rows']:,} rows:")
    for key in ('seconds', 'cpu_seconds'):
      lines.append(f"- {key}: 4 Beam steps {growth_exponent(small, large, key=key)}; " +
                   ', '.join(f'{c} {growth_exponent(small, large, c, key)}'
                             for c in BEAM_STEPS))
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', type=int, nargs='+', default=list(SIZES))
  parser.add_argument('--keep', action='store_true',
                      help="keep earlier results (scale.json) of sizes not run now")
  parser.add_argument('--child', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    print(json.dumps(run_one(args.child)))
    return 0
  results = os.path.join(RESULTS, 'scale.json')
  runs = []
  if args.keep and os.path.exists(results):
    with open(results) as f:
      runs = [r for r in json.load(f)['runs'] if r['rows'] not in args.rows]
  for rows in sorted(args.rows):
    ensure_data(rows)
    print(f'{rows:,} rows ...', file=sys.stderr, flush=True)
    runs.append(run_in_subprocess(rows))
    print(f"  {runs[-1]['seconds']}s, peak {runs[-1]['peak_rss_gb']} GB",
          file=sys.stderr, flush=True)
    runs.sort(key=lambda r: r['rows'])
    os.makedirs(RESULTS, exist_ok=True)
    with open(results, 'w') as f:
      json.dump({'runs': runs}, f, indent=2)
  print(table(runs))
  return 0


if __name__ == '__main__':
  sys.exit(main())
