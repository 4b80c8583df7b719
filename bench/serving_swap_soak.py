"""Soak: does a new model version stall the server while it loads?

Serves a copy of a pushed version (as version 1) with the local server in a
subprocess, drives REST at --concurrency with single-row requests spread
over the client signatures (predict_raw, serving_default, classification,
regression), pushes the same model in as version 2 mid-run (the pipeline's
push: copy to `.2.incomplete`, then rename), and reports:

- max and p99 latency, overall and in the swap window (from the push until
  --window_s after version 2 became AVAILABLE), failures, and the longest
  time in which no request completed;
- when version 2 became AVAILABLE (seconds after the push) and when
  version 1 was unloaded;
- the latency of the first request per signature pinned to version 2, sent
  as soon as it is AVAILABLE: slow ones mean its warmup missed a signature.

Target: no request slower than 0.5 s across the swap, zero failures. The load
generator is aiohttp in this process, on the same cores as the server: its
own CPU is part of every latency measured. Loopback only; stops by itself.

    python bench/serving_swap_soak.py --model_dir serving_model/taxi_big_tipper/<version>
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse
import asyncio
import base64
import itertools
import json
import shutil
import sys
import tempfile
import threading
import time

import aiohttp
import numpy as np
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from client import predict as taxi_client  # noqa: E402
from serving.server_process import ServerProcess  # noqa: E402

MODEL = 'taxi_big_tipper'
CSV_PATH = os.path.join(ROOT, 'data', 'taxi', 'span-1', 'data.csv')
BATCHING_CONFIG = os.path.join(ROOT, 'serving', 'deploy', 'batching.config')
SIGNATURES = ('predict_raw', 'serving_default', 'classification', 'regression')


def request_bodies(count: int):
  """(signature, REST method, JSON body) for `count` rows and each signature."""
  with open(CSV_PATH) as f:
    rows = list(itertools.islice(taxi_client.rows_from_csv(f), count))
  bodies = []
  for row in rows:
    b64 = {'b64': base64.b64encode(taxi_client.to_example(row)).decode()}
    bodies += [
        ('predict_raw', ':predict',
         {'signature_name': 'predict_raw', 'instances': [taxi_client._filled(row)]}),
        ('serving_default', ':predict', {'signature_name': 'serving_default', 'instances': [b64]}),
        ('classification', ':classify', {'signature_name': 'classification', 'examples': [row]}),
        ('regression', ':regress', {'signature_name': 'regression', 'examples': [row]}),
    ]
  return [(s, m, json.dumps(b)) for s, m, b in bodies]


def push(source: str, base: str, version: int) -> None:
  """As the pipeline's pusher: the server never sees a half-copied version."""
  temp = os.path.join(base, f'.{version}.incomplete')
  shutil.copytree(source, temp)
  os.rename(temp, os.path.join(base, str(version)))


def start_server(base: str, log_path: str, batching: bool):
  flags = [f'--model_name={MODEL}', f'--model_base_path={base}', '--file_system_poll_wait_seconds=1']
  if batching:
    flags += ['--enable_batching', f'--batching_parameters_file={BATCHING_CONFIG}']
  server = ServerProcess(*flags, log_path=log_path)
  return server.process, f'{server.rest}/v1/models/{MODEL}'


def version_states(url: str) -> dict:
  try:
    status = requests.get(url, timeout=2).json()['model_version_status']
    return {int(v['version']): v['state'] for v in status}
  except (requests.RequestException, ValueError, KeyError):
    return {}


def wait_for(predicate, process, log_path, timeout_s=300.0, what='the server'):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise SystemExit(f'error: the server exited: see {log_path}')
    if predicate():
      return time.monotonic()
    time.sleep(0.02)
  raise SystemExit(f'error: {what} not ready within {timeout_s} s: see {log_path}')


class VersionWatcher(threading.Thread):
  """Polls the status every 20 ms: when version 2 is AVAILABLE, sends one
  request per signature pinned to it, and notes when version 1 is gone."""

  def __init__(self, url, bodies, stop):
    super().__init__(daemon=True)
    self.url, self.bodies, self.stop = url, bodies, stop
    self.available_at = self.v1_unloaded_at = None
    self.first_requests = {}

  def run(self):
    while not self.stop.is_set():
      states = version_states(self.url)
      now = time.monotonic()
      if self.available_at is None and states.get(2) == 'AVAILABLE':
        self.available_at = now
        self._first_request_per_signature()
      if self.available_at is not None and states.get(1, 'END') == 'END':
        self.v1_unloaded_at = time.monotonic()
        return
      time.sleep(0.02)

  def _first_request_per_signature(self):
    pinned = self.url + '/versions/2'
    for signature, method, body in self.bodies[:len(SIGNATURES)]:
      start = time.perf_counter()
      response = requests.post(pinned + method, data=body, timeout=30)
      self.first_requests[signature] = {'ms': round((time.perf_counter() - start) * 1e3, 1),
                                        'status': response.status_code}


async def drive(url, bodies, concurrency, push_at_s, do_push, finished):
  """Single-row requests from `concurrency` loops until finished(); pushes
  version 2 after push_at_s. Returns the per-request records and the push
  times."""
  records = []  # (end time, latency s, signature, ok)
  pushed = {}
  order = itertools.cycle(range(len(bodies)))
  connector = aiohttp.TCPConnector(limit=concurrency)
  headers = {'Content-Type': 'application/json'}
  async with aiohttp.ClientSession(connector=connector,
                                   timeout=aiohttp.ClientTimeout(total=30)) as session:

    async def loop():
      while not finished():
        signature, method, body = bodies[next(order)]
        start = time.monotonic()
        try:
          async with session.post(url + method, data=body, headers=headers) as response:
            await response.read()
            ok = response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
          ok = False
        now = time.monotonic()
        records.append((now, now - start, signature, ok))

    async def pusher():
      await asyncio.sleep(push_at_s)
      pushed['at'] = time.monotonic()
      await asyncio.get_running_loop().run_in_executor(None, do_push)
      pushed['done'] = time.monotonic()

    await asyncio.gather(pusher(), *[loop() for _ in range(concurrency)])
  return records, pushed


def summary(records, since=None, until=None) -> dict:
  picked = [r for r in records if (since is None or r[0] >= since) and
            (until is None or r[0] - r[1] <= until)]
  if not picked:
    return {'requests': 0}
  latencies = np.array([r[1] for r in picked])
  ends = np.sort([r[0] for r in picked])
  return {'requests': len(picked), 'failures': sum(not r[3] for r in picked),
          'p50_ms': round(float(np.percentile(latencies, 50)) * 1e3, 1),
          'p99_ms': round(float(np.percentile(latencies, 99)) * 1e3, 1),
          'max_ms': round(float(latencies.max()) * 1e3, 1),
          'over_500ms': int((latencies > 0.5).sum()),
          'longest_no_completion_ms': round(float(np.diff(ends).max(initial=0)) * 1e3, 1)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--model_dir', required=True, help='a pushed version directory')
  parser.add_argument('--seconds', type=float, default=30.0,
                      help='of load at least; more if version 2 is not AVAILABLE by then')
  parser.add_argument('--max_seconds', type=float, default=90.0,
                      help='of load at most: version 2 counts as never AVAILABLE')
  parser.add_argument('--push_at_s', type=float, default=8.0, help='when version 2 is pushed')
  parser.add_argument('--window_s', type=float, default=3.0,
                      help='the swap window lasts this long after version 2 is AVAILABLE')
  parser.add_argument('--concurrency', type=int, default=32)
  parser.add_argument('--no_batching', action='store_true',
                      help='without serving/deploy/batching.config')
  args = parser.parse_args()
  if not os.path.exists(os.path.join(args.model_dir, 'saved_model.pb')):
    raise SystemExit(f'error: no saved_model.pb in {args.model_dir}: pass a version directory')

  work = tempfile.mkdtemp(prefix='swap_soak_')
  base, log_path = os.path.join(work, MODEL), os.path.join(work, 'server.log')
  os.makedirs(base)
  push(args.model_dir, base, 1)
  process, url = start_server(base, log_path, batching=not args.no_batching)
  try:
    wait_for(lambda: version_states(url).get(1) == 'AVAILABLE', process, log_path)
    bodies = request_bodies(50)
    stop = threading.Event()
    watcher = VersionWatcher(url, bodies, stop)
    watcher.start()
    start = time.monotonic()

    def finished():
      now = time.monotonic()
      swapped = (watcher.v1_unloaded_at is not None and
                 now >= watcher.available_at + args.window_s)
      return now >= start + args.max_seconds or (now >= start + args.seconds and swapped)

    records, pushed = asyncio.run(drive(url, bodies, args.concurrency, args.push_at_s,
                                        lambda: push(args.model_dir, base, 2), finished))
    stop.set()
    watcher.join(10)
    with open(log_path, errors='replace') as f:
      warmup_lines = [line.strip() for line in f if 'Number of warmup records read' in line]
    after_push = lambda t: None if t is None else round(t - pushed['at'], 2)  # noqa: E731
    window_end = (watcher.available_at or pushed['at']) + args.window_s
    print(json.dumps({
        'concurrency': args.concurrency,
        'seconds': round(max(r[0] for r in records) - start, 1),
        'batching': not args.no_batching,
        'load_average': os.getloadavg()[0],
        'overall': summary(records),
        'swap_window': summary(records, since=pushed['at'], until=window_end),
        'push_copy_s': round(pushed['done'] - pushed['at'], 2),
        'v2_available_after_push_s': after_push(watcher.available_at),
        'v1_unloaded_after_push_s': after_push(watcher.v1_unloaded_at),
        'v2_first_request_per_signature': watcher.first_requests,
        'warmup_records_read': [line.rsplit('read: ', 1)[-1] for line in warmup_lines],
        # When the slow requests ended: before, during or after the load.
        'over_500ms_ended_after_push_s': sorted({round(r[0] - pushed['at'], 1)
                                                 for r in records if r[1] > 0.5})[:20],
    }, indent=1))
    if watcher.available_at is None:
      print(f'error: version 2 never became AVAILABLE: see {log_path}', file=sys.stderr)
      return 1
  finally:
    process.kill()
    process.wait()
  shutil.rmtree(work, ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
