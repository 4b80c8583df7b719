"""Interleaved A/B of two checkouts' servers (or two sets of flags), on a shared machine.

Both servers are started once, then measured in turn (A, B, A, B, ...) with
the same load for a few seconds each, so that both see the same minutes of
the machine's load. Per cell: req/s, p50/p99, the server's CPU per request
and the mean processed batch size (from its own Prometheus histogram).

    python bench/serving_ab.py --a /tmp/old_checkout --b . --kind grpc \\
        [--a_flags=--foo=1] [--b_flags=--foo=2] [--rounds 3] [--seconds 3] [--concurrency 64]
        [--batching TEXT_PROTO] [--b_batching TEXT_PROTO]

--kind grpc uses h2load, rest uses wrk, both as bench/serving_bench.py does.
Not a test: numbers go to bench/README_serving.md.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse
import base64
import json
import shutil
import sys
import tempfile

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'bench'))

import serving_bench as sb  # noqa: E402
from serving.server_process import ServerProcess  # noqa: E402

MODEL_NAME = 'taxi_big_tipper'
MODEL_DIR = '/work/prebuilt/serving_model/taxi_big_tipper/1796118303'
BATCHING = ('max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n'
            'num_batch_threads { value: 1 }\n')


def batch_stats(metrics_url):
  """(sum, count) of the processed batch size histogram so far."""
  text = requests.get(metrics_url, timeout=10).text
  values = {}
  for line in text.splitlines():
    if line.startswith(':tensorflow:serving:batching_session:processed_batch_size_'):
      name, value = line.rsplit(' ', 1)
      values[name.split('{')[0].rsplit('_', 1)[1]] = float(value)
  return values.get('sum', 0.0), values.get('count', 0.0)


def start(root, work, label, flags, batching_file, monitoring_file, base):
  server = ServerProcess(
      f'--model_name={MODEL_NAME}', f'--model_base_path={base}', '--enable_batching',
      f'--batching_parameters_file={batching_file}', f'--monitoring_config_file={monitoring_file}',
      *flags, log_path=os.path.join(work, f'{label}.log'), root=os.path.abspath(root))
  return server


def measure(server, kind, concurrency, seconds, body, script):
  metrics_url = f'{server.rest}/monitoring/prometheus/metrics'
  before = batch_stats(metrics_url)
  if kind == 'grpc':
    run = lambda: sb.grpc_h2load(server.grpc_target, MODEL_NAME, concurrency, seconds,
                                 metrics_url)
  else:
    url = f'{server.rest}/v1/models/{MODEL_NAME}:predict'
    run = lambda: sb.wrk(url, body, concurrency, seconds, script)
  result = sb.measured(server.pid, run)
  after = batch_stats(metrics_url)
  count = after[1] - before[1]
  result['batch'] = (after[0] - before[0]) / count if count else 0.0
  return result


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--a', default=ROOT, help='checkout A (its serving/ runs)')
  parser.add_argument('--b', default=ROOT, help='checkout B')
  parser.add_argument('--a_flags', default='', help='extra server flags for A, comma-separated')
  parser.add_argument('--b_flags', default='', help='extra server flags for B, comma-separated')
  parser.add_argument('--kind', choices=('grpc', 'rest'), default='grpc')
  parser.add_argument('--concurrency', type=int, default=64)
  parser.add_argument('--seconds', type=int, default=3)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--model_dir', default=MODEL_DIR)
  parser.add_argument('--batching', default=BATCHING, help='batching parameters (text proto)')
  parser.add_argument('--b_batching', help="B's batching parameters (default: --batching)")
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix='serving_ab_')
  base = os.path.join(work, MODEL_NAME)
  shutil.copytree(args.model_dir, os.path.join(base, '1'))
  batching_files = {}
  for label, text in (('A', args.batching), ('B', args.b_batching or args.batching)):
    batching_files[label] = os.path.join(work, f'batching_{label}.config')
    with open(batching_files[label], 'w') as f:
      f.write(text)
  monitoring_file = os.path.join(work, 'monitoring.config')
  with open(monitoring_file, 'w') as f:
    f.write('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
  script = os.path.join(work, 'post.lua')
  with open(script, 'w') as f:
    f.write(sb.WRK_LUA)
  body = json.dumps({'instances': [{'b64': base64.b64encode(sb.example_bytes()).decode()}]})
  servers = {}
  try:
    for label, root, flags in (('A', args.a, args.a_flags), ('B', args.b, args.b_flags)):
      servers[label] = start(root, work, label, [f for f in flags.split(',') if f],
                             batching_files[label], monitoring_file, base)
    for server in servers.values():
      server.wait_until_available(MODEL_NAME)
      measure(server, args.kind, 8, 1, body, script)  # Warm up.
    print('| round | checkout | req/s | p50 ms | p99 ms | server CPU us/req | mean batch | load |')
    print('|---|---|---|---|---|---|---|---|')
    for i in range(args.rounds):
      for label, server in servers.items():
        r = measure(server, args.kind, args.concurrency, args.seconds, body, script)
        print(f'| {i + 1} | {label} | {r["rps"]:.0f} | {r["p50_ms"]:.2f} | {r["p99_ms"]:.2f} |'
              f' {r["cpu_us"]:.0f} | {r["batch"]:.1f} | {r["load"]:.1f} |'
              + (f' errors: {r["errors"]}' if r.get('errors') else ''), flush=True)
  finally:
    for server in servers.values():
      server.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
  main()
