"""Big REST requests must not block everyone else (issue 11, item 13).

Starts the server (a subprocess) on a pushed taxi model, then sends a large
classify body (--classify-mb of examples) and a columnar predict_raw of
--rows rows at the same time, while another client (a process of its own,
as other users are) polls the model-status endpoint and the Prometheus
metrics every 10 ms. Reports how long the big requests took and what they
got, the status/metrics latency (max, p99, p50, and the slowest polls with
their time after the big requests started) while they were in flight, and
the RSS of the server (and of its worker processes) before, at its peak and
after.

    python bench/serving_big_request_soak.py \\
        --model_base_path /work/prebuilt/serving_model/taxi_big_tipper

--root runs another checkout's server (e.g. the code before a change).
Loopback only; stops by itself.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import threading
import time

import psutil
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models import features  # noqa: E402
from serving.server_process import ServerProcess  # noqa: E402

MODEL = 'taxi_big_tipper'
_VALUES = {'float': lambda r: round(r.uniform(0, 50), 3), 'int': lambda r: r.randint(0, 77),
           'string': lambda r: r.choice(['Cash', 'Credit Card', 'Flash Cab', ''])}


def example(rng: random.Random) -> dict:
  return {n: _VALUES[f.dtype](rng) for n, f in features.RAW_FEATURES.items()}


def classify_body(megabytes: float, rng: random.Random) -> bytes:
  one = json.dumps(example(rng)).encode()
  count = int(megabytes * 1e6 / (len(one) + 2))
  examples = b', '.join(json.dumps(example(rng)).encode() for _ in range(count))
  return b'{"signature_name": "classification", "examples": [' + examples + b']}'


def columnar_body(rows: int, rng: random.Random) -> bytes:
  inputs = {n: [_VALUES[f.dtype](rng) for _ in range(rows)]
            for n, f in features.RAW_FEATURES.items()}
  return json.dumps({'signature_name': 'predict_raw', 'inputs': inputs}).encode()


def rss_mb(pid: int) -> float:
  return psutil.Process(pid).memory_info().rss / 2**20


def children_rss_mb(pid: int) -> float:
  """The server's worker processes (the JSON decoding worker)."""
  return sum(c.memory_info().rss for c in psutil.Process(pid).children(recursive=True)) / 2**20


POLLED = {'status': f'/v1/models/{MODEL}', 'metrics': '/monitoring/prometheus/metrics'}


def poll(url: str, timeout: float, stop, results) -> None:
  """In its own process: GETs the status and metrics endpoints every 10 ms
  until stop is set; sends back [(endpoint, wall-clock start, seconds)]."""
  polls = []
  with requests.Session() as session:
    while not stop.is_set():
      for name, path in POLLED.items():
        started, start = time.time(), time.perf_counter()
        session.get(url + path, timeout=timeout).raise_for_status()
        polls.append((name, started, time.perf_counter() - start))
      time.sleep(0.01)
  results.send(polls)


def latencies_between(polls, start: float, end: float) -> dict:
  return {name: [s for n, t, s in polls if n == name and start <= t <= end] for name in POLLED}


def slowest(polls, start: float, end: float, count: int = 5) -> list:
  """The slowest polls while the big requests ran: (endpoint, s after they started, ms)."""
  during = sorted((p for p in polls if start <= p[1] <= end), key=lambda p: -p[2])
  return [(n, round(t - start, 2), round(s * 1e3, 1)) for n, t, s in during[:count]]


def summary(latencies) -> dict:
  return {n: {'max': round(max(v) * 1e3, 1), 'p50': round(statistics.median(v) * 1e3, 1),
              'p99': round(sorted(v)[int(len(v) * 0.99)] * 1e3, 1)}
          for n, v in latencies.items() if v}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--model_base_path', default='/work/prebuilt/serving_model/' + MODEL)
  parser.add_argument('--classify-mb', type=float, default=50)
  parser.add_argument('--rows', type=int, default=200_000)
  parser.add_argument('--root', default=ROOT, help='checkout whose serving/ is run')
  parser.add_argument('--timeout', type=float, default=300)
  parser.add_argument('--batching_parameters_file', default='',
                      help='serve with --enable_batching and this file, e.g. '
                           'serving/deploy/batching.config (large-batch splitting)')
  args = parser.parse_args()
  rng = random.Random(0)
  bodies = {'classify': classify_body(args.classify_mb, rng), 'predict': columnar_body(args.rows, rng)}
  paths = {'classify': f'/v1/models/{MODEL}:classify', 'predict': f'/v1/models/{MODEL}:predict'}
  work = tempfile.mkdtemp(prefix='big_request_soak_')
  monitoring = os.path.join(work, 'monitoring.config')
  with open(monitoring, 'w') as f:
    f.write('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }')
  server = ServerProcess(
      f'--model_name={MODEL}', f'--model_base_path={args.model_base_path}',
      f'--monitoring_config_file={monitoring}', '--file_system_poll_wait_seconds=0',
      *([] if not args.batching_parameters_file else [
          '--enable_batching', f'--batching_parameters_file={args.batching_parameters_file}']),
      root=args.root, log_path=os.path.join(work, 'server.log'))
  url = server.rest
  try:
    server.wait_until_available(MODEL)
    # Warm both paths with small requests, then measure the baseline RSS.
    requests.post(url + paths['predict'], data=columnar_body(10, rng), timeout=60)
    requests.post(url + paths['classify'], data=classify_body(0.01, rng), timeout=60)
    time.sleep(1)
    rss = {'before': rss_mb(server.pid), 'peak': 0.0}
    worker_rss = {'peak': 0.0}
    results = {}

    def big(name):
      start = time.perf_counter()
      try:
        response = requests.post(url + paths[name], data=bodies[name], timeout=args.timeout)
        results[name] = {'status': response.status_code, 'seconds': time.perf_counter() - start,
                         'answer': response.text[:120]}
      except requests.RequestException as e:
        results[name] = {'status': None, 'seconds': time.perf_counter() - start, 'answer': str(e)}

    threads = [threading.Thread(target=big, args=(n,)) for n in bodies]
    context = multiprocessing.get_context('spawn')
    stop, (received, sent) = context.Event(), context.Pipe(duplex=False)
    poller = context.Process(target=poll, args=(url, args.timeout, stop, sent))
    poller.start()
    time.sleep(3)  # The same polls with no big request: the floor.
    started = time.time()
    for thread in threads:
      thread.start()
    while any(t.is_alive() for t in threads):
      rss['peak'] = max(rss['peak'], rss_mb(server.pid))
      worker_rss['peak'] = max(worker_rss['peak'], children_rss_mb(server.pid))
      time.sleep(0.05)
    ended = time.time()
    stop.set()
    polls = received.recv()
    poller.join()
    time.sleep(2)  # Let the server give memory back.
    rss['after'] = rss_mb(server.pid)
    worker_rss['after'] = children_rss_mb(server.pid)
    during = latencies_between(polls, started, ended)
    report = {
        'batching_parameters_file': args.batching_parameters_file or None,
        'bodies_mb': {n: round(len(b) / 1e6, 1) for n, b in bodies.items()},
        'big_requests': {n: {**r, 'seconds': round(r['seconds'], 2)} for n, r in results.items()},
        'polls': len(during['status']),
        'latency_ms': summary(during),
        'latency_ms_idle': summary(latencies_between(polls, 0, started)),
        'slowest_polls': slowest(polls, started, ended),
        'rss_mb': {k: round(v) for k, v in rss.items()},
        'worker_processes_rss_mb': {k: round(v) for k, v in worker_rss.items()},
        'server_alive': server.process.poll() is None,
    }
    print(json.dumps(report, indent=1))
  finally:
    server.stop()

if __name__ == '__main__':
  main()
