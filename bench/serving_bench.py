"""Serving speed: the local model server vs. the floor and a tutorial Flask app.

Single-example requests at concurrency 1, 8 and 64, load generated in other
processes (wrk + a Lua script for REST; for gRPC h2load when installed
(apt nghttp2-client) and 2 processes of grpc.aio calls on uvloop, both
sending one pre-serialized request), all on loopback. Each cell also reports the server's CPU per request, steadier
than req/s on a shared machine. Reports throughput and p50/p99 latency of:
  floor   the model's serving_default signature loaded and called in-process as the
          server does (serving/servable.py), one at a time; also the cost of writing
          its outputs in typed value fields vs tensor_content. Measured again
          around each of --ratio_rounds REST c=64 cells: the REST/floor ratio
          of each round uses the floors just before and after it
  flask   a minimal Flask app (app.run) answering POST /predict
  rest    serving.server REST, batching on
  grpc    serving.server gRPC Predict, batching on
  rest_N / grpc_N   the same with --server_processes=N (h2load then opens 4
          connections per process: the kernel spreads connections, not requests)
  echo    a bare grpc.aio server answering Predict with its request (the transport's ceiling)
  grpc_content  gRPC c=64 with --enable_serialization_as_tensor_content=true

    python bench/serving_bench.py [--model_dir PUSHED_VERSION_DIR] [--seconds 5]
        [--server_processes 2] [--skip_flask] [--concurrency 1,8,64] [--ratio_rounds 3]

Without --model_dir it benchmarks a stand-in with the taxi model's signatures
(tests/serving/tiny_models.py). Not a test: numbers go to bench/README_serving.md.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # The floor runs as `python -m serving.server` does.

import argparse
import base64
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import portpicker
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tests', 'serving'))

from serving.server_process import ServerProcess  # noqa: E402

ROW = {'fare': 12.45, 'trip_start_month': 5, 'trip_start_hour': 19, 'trip_start_day': 6,
       'trip_start_timestamp': 1400269500, 'trip_miles': 1.2, 'payment_type': 'Credit Card',
       'company': 'Taxi Affiliation Services', 'trip_seconds': 420}

FLASK_APP = textwrap.dedent('''
    import os, sys
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import base64
    import tensorflow as tf
    from flask import Flask, jsonify, request

    model = tf.saved_model.load(sys.argv[1])
    predict = model.signatures["serving_default"]
    app = Flask(__name__)

    @app.route("/predict", methods=["POST"])
    def handle():
        examples = [base64.b64decode(i["b64"]) for i in request.get_json()["instances"]]
        out = predict(examples=tf.constant(examples))
        return jsonify({"predictions": out["probability"].numpy().tolist()})

    app.run(host="127.0.0.1", port=int(sys.argv[2]))
''')

# The transport's ceiling: grpc.aio on uvloop answering Predict with its
# request bytes, no model and no protobuf; several copies share the port.
GRPC_ECHO_APP = textwrap.dedent('''
    import asyncio, sys, grpc, uvloop

    async def echo(request, context):
        return request

    async def serve():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService",
            {"Predict": grpc.unary_unary_rpc_method_handler(echo)})])
        server.add_insecure_port("127.0.0.1:" + sys.argv[1])
        await server.start()
        print("listening", flush=True)
        await server.wait_for_termination()

    uvloop.install()
    asyncio.run(serve())
''')

WRK_LUA = textwrap.dedent('''
    wrk.method = "POST"
    wrk.body = os.getenv("BODY")
    wrk.headers["Content-Type"] = "application/json"
    done = function(summary, latency, requests)
      io.write(string.format("JSON {\\"requests\\": %d, \\"seconds\\": %f, \\"errors\\": %d, ",
        summary.requests, summary.duration / 1e6,
        summary.errors.status + summary.errors.connect + summary.errors.read +
        summary.errors.write + summary.errors.timeout))
      io.write(string.format("\\"p50_ms\\": %f, \\"p99_ms\\": %f}\\n",
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
    end
''')


def example_bytes() -> bytes:
  from client.predict import to_example
  return to_example(ROW)


def percentiles(latencies_s):
  ms = np.asarray(latencies_s) * 1000
  return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


class Floor:
  """The serving_default signature loaded and called as the server does
  (serving/servable.py: a session callable), one example at a time. Loaded
  once, measured as often as asked: between the server's cells, so that the
  ratios compare minutes of the same machine load."""

  def __init__(self, model_dir):
    from serving.servable import Servable
    self._servable = Servable('taxi_big_tipper', 1, model_dir)
    signature = self._servable.signature('serving_default')
    name = next(iter(signature.input_dtypes))
    self.predict = lambda examples: signature.call(signature.prepare({name: examples},
                                                                     'taxi_big_tipper'))
    self._example = np.array([example_bytes()], object)
    for _ in range(200):
      self.predict(self._example)

  def measure(self, seconds) -> dict:
    load = os.getloadavg()[0]
    latencies, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
      start = time.perf_counter()
      self.predict(self._example)
      latencies.append(time.perf_counter() - start)
    p50, p99 = percentiles(latencies)
    return {'rps': len(latencies) / seconds, 'p50_ms': p50, 'p99_ms': p99, 'load': load}

  def extras(self) -> dict:
    """A 100-example batch's latency and the cost of writing outputs."""
    batch = np.array([example_bytes()] * 100, object)
    start = time.perf_counter()
    for _ in range(100):
      self.predict(batch)
    batch_ms = (time.perf_counter() - start) * 10
    encoding = bench_encoding({1: self.predict(self._example), 64: self.predict(batch[:64])})
    return {'batch100_ms': batch_ms, 'encoding_us': encoding}

  def close(self):
    self._servable.close()


def bench_encoding(outputs_by_batch, repeats=500, rounds=7):
  """Microseconds to write a PredictResponse's outputs and serialize it, in
  typed value fields (TF Serving's default) and in tensor_content, per batch
  size: the fastest of `rounds` interleaved rounds (steady on a shared machine)."""
  from serving import tensors
  from tensorflow_serving.apis import predict_pb2
  best = {}
  for _ in range(rounds):
    for batch, outputs in outputs_by_batch.items():
      for as_content in (False, True):
        start = time.perf_counter()
        for _ in range(repeats):
          response = predict_pb2.PredictResponse()
          tensors.fill_protos(response.outputs, outputs, as_content)
          response.SerializeToString()
        key = (batch, 'tensor_content' if as_content else 'typed')
        best[key] = min(best.get(key, 1e9), (time.perf_counter() - start) / repeats * 1e6)
  return best


def wrk(url, body, concurrency, seconds, script):
  env = dict(os.environ, BODY=body)
  out = subprocess.run(
      ['wrk', f'-t{min(concurrency, 2)}', f'-c{concurrency}', f'-d{seconds}s', '--latency',
       '-s', script, url], capture_output=True, text=True, env=env, check=True).stdout
  result = json.loads(out.split('JSON ', 1)[1])
  return {'rps': result['requests'] / result['seconds'], 'p50_ms': result['p50_ms'],
          'p99_ms': result['p99_ms'], 'errors': result['errors'],
          'seconds': result['seconds']}


def grpc_payload(model_name) -> bytes:
  """A serialized PredictRequest for one example (built once, in the parent:
  the load processes then need neither TensorFlow nor proto building)."""
  from serving import tensors
  from tensorflow_serving.apis import predict_pb2
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.inputs['examples'].CopyFrom(tensors.to_proto(np.array([example_bytes()], object)))
  return request.SerializeToString()


def _grpc_worker(target, payload, concurrency, seconds, ready, go, queue):
  """One load-generating process: `concurrency` calls always in flight on one
  channel, driven by asyncio (uvloop) so the client stays cheap."""
  import asyncio
  import grpc
  try:
    import uvloop
    uvloop.install()
  except ImportError:
    pass

  async def run():
    latencies, errors = [], 0
    async with grpc.aio.insecure_channel(target) as channel:
      predict = channel.unary_unary('/tensorflow.serving.PredictionService/Predict',
                                    request_serializer=None, response_deserializer=None)
      await predict(payload, timeout=30)  # Connected before the clock starts.
      ready.set()
      while not go.is_set():
        await asyncio.sleep(0.005)
      end = time.perf_counter() + seconds

      async def loop():
        nonlocal errors
        while time.perf_counter() < end:
          start = time.perf_counter()
          try:
            await predict(payload, timeout=10)
            latencies.append(time.perf_counter() - start)
          except grpc.RpcError:
            errors += 1
      await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies, errors

  queue.put(asyncio.run(run()))


def grpc_load(target, model_name, concurrency, seconds, processes=2):
  ctx = multiprocessing.get_context('spawn')
  queue, go = ctx.Queue(), ctx.Event()
  payload = grpc_payload(model_name)
  per_process = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
  readies = [ctx.Event() for c in per_process if c]
  workers = [ctx.Process(target=_grpc_worker, args=(target, payload, c, seconds, r, go, queue))
             for c, r in zip([c for c in per_process if c], readies)]
  for w in workers:
    w.start()
  for r in readies:
    r.wait(120)
  go.set()
  results = [queue.get(timeout=seconds + 120) for _ in workers]
  for w in workers:
    w.join()
  latencies = [l for r in results for l in r[0]]
  p50, p99 = percentiles(latencies)
  return {'rps': len(latencies) / seconds, 'p50_ms': p50, 'p99_ms': p99,
          'errors': sum(r[1] for r in results), 'seconds': seconds}


def cpu_seconds(pid) -> float:
  """User + system CPU time of a process and its children's so far (Linux):
  with --server_processes the workers are the supervisor's children."""
  with open(f'/proc/{pid}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  with open(f'/proc/{pid}/task/{pid}/children') as f:
    children = [int(c) for c in f.read().split()]
  return ((int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
          + sum(cpu_seconds(c) for c in children))


def measured(pid, run):
  """run()'s result plus the server's CPU per answered request and the load
  average (the machine is shared: CPU per request is the steadier number)."""
  load = os.getloadavg()[0]
  before = cpu_seconds(pid)
  result = run()
  answered = result['rps'] * result.get('seconds', 0) or 1
  result['cpu_us'] = (cpu_seconds(pid) - before) / answered * 1e6
  result['load'] = load
  return result


def grpc_h2load(target, model_name, concurrency, seconds, metrics_url, processes=1):
  """gRPC load from h2load (nghttp2-client, C): gRPC is HTTP/2 POSTs of a
  length-prefixed message, so h2load sends a pre-serialized Predict without
  Python on the client side. HTTP status is 200 even for failed RPCs, so
  failures are counted from the server's own request_count metric (when
  metrics_url is given)."""
  import struct
  payload = grpc_payload(model_name)
  work = tempfile.mkdtemp(prefix='h2load_')
  body, log = os.path.join(work, 'body'), os.path.join(work, 'log')
  with open(body, 'wb') as f:
    f.write(b'\x00' + struct.pack('>I', len(payload)) + payload)
  connections = max(1, min(4 * processes, concurrency // 8))
  ok_before = grpc_ok_count(metrics_url) if metrics_url else 0
  subprocess.run(
      ['h2load', '-D', str(seconds), '-c', str(connections), '-t', '1',
       '-m', str(max(1, concurrency // connections)), '-d', body, '--log-file', log,
       '-H', 'content-type: application/grpc', '-H', 'te: trailers',
       f'http://{target}/tensorflow.serving.PredictionService/Predict'],
      capture_output=True, check=True)
  with open(log) as f:
    rows = [line.split() for line in f if line.strip()]
  shutil.rmtree(work, ignore_errors=True)
  latencies = [int(r[2]) / 1e6 for r in rows if r[1] == '200']
  ok = grpc_ok_count(metrics_url) - ok_before if metrics_url else len(latencies)
  p50, p99 = percentiles(latencies)
  return {'rps': len(latencies) / seconds, 'p50_ms': p50, 'p99_ms': p99,
          'errors': len(rows) - len(latencies) + max(0, len(latencies) - ok),
          'seconds': seconds}


def grpc_ok_count(metrics_url) -> float:
  text = requests.get(metrics_url, timeout=10).text
  return sum(float(line.rsplit(' ', 1)[1]) for line in text.splitlines()
             if line.startswith((':tensorflow:serving:request_count{',
                                  ':tensorflow:serving:request_count_total{'))  # Before 2026-12.
             and 'entrypoint="GRPC"' in line and 'status="OK"' in line)


def wait_http(url, timeout_s=120, method='get', **kwargs):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    try:
      if getattr(requests, method)(url, timeout=2, **kwargs).status_code < 500:
        return
    except requests.ConnectionError:
      pass
    time.sleep(0.25)
  raise RuntimeError(f'{url} did not come up')


def start_model_server(work, base, processes, extra_flags=()):
  return ServerProcess(
      '--model_name=taxi_big_tipper', f'--model_base_path={base}', '--enable_batching',
      f'--batching_parameters_file={os.path.join(work, "batching.config")}',
      f'--monitoring_config_file={os.path.join(work, "monitoring.config")}',
      f'--server_processes={processes}', *extra_flags,
      log_path=os.path.join(work, f'server_{processes}{"_".join(extra_flags)}.log'))


def bench_server(work, base, body, script, levels, seconds, processes, python_clients=False,
                 extra_flags=(), rest=True, floor=None, rounds=0):
  """Cells against serving.server --server_processes=N: 'rest' (wrk), 'grpc'
  (h2load, when installed) and, with python_clients, 'grpc_py' (grpc.aio clients);
  with a floor, 'rest_vs_floor': `rounds` REST c=64 cells each between two
  measurements of the floor."""
  server = start_model_server(work, base, processes, extra_flags)
  grpc_port, rest_port = server.port, server.rest_port
  cells = {}
  try:
    url = f'http://127.0.0.1:{rest_port}/v1/models/taxi_big_tipper:predict'
    server.wait_until_available('taxi_big_tipper')
    wait_workers(server, processes)
    wrk(url, body, 8, 2, script)  # Warm up.
    if rest:
      cells['rest'] = {c: measured(server.pid, lambda c=c: wrk(url, body, c, seconds, script))
                       for c in levels}
    target = f'127.0.0.1:{grpc_port}'
    if shutil.which('h2load'):
      metrics_url = f'http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics'
      cells['grpc'] = {c: measured(server.pid, lambda c=c: grpc_h2load(
          target, 'taxi_big_tipper', c, seconds, metrics_url, processes)) for c in levels}
    if python_clients:
      cells['grpc_py'] = {c: measured(server.pid, lambda c=c: grpc_load(
          target, 'taxi_big_tipper', c, seconds, processes=1 if c == 1 else 2))
                          for c in levels}
    if floor is not None and rounds:
      cells['rest_vs_floor'] = interleaved(
          floor, lambda: measured(server.pid, lambda: wrk(url, body, 64, seconds, script)),
          rounds, seconds)
  finally:
    server.stop()
  return cells


def interleaved(floor, run, rounds, seconds) -> list:
  """floor, run, floor, run, ..., floor: each run's req/s against the mean of
  the floors just before and after it (the machine's load drifts within a
  bench, and the floor with it)."""
  floors, cells = [floor.measure(seconds)], []
  for _ in range(rounds):
    cell = run()
    floors.append(floor.measure(seconds))
    around = (floors[-2]['rps'] + floors[-1]['rps']) / 2
    cells.append(dict(cell, floor_rps=around, ratio=cell['rps'] / around))
  return cells


def bench_echo(work, seconds, processes):
  """gRPC c=64 against GRPC_ECHO_APP in `processes` processes."""
  app = os.path.join(work, 'grpc_echo.py')
  with open(app, 'w') as f:
    f.write(GRPC_ECHO_APP)
  port = portpicker.pick_unused_port()
  logs = [os.path.join(work, f'echo_{i}.log') for i in range(processes)]
  servers = [start([sys.executable, app, str(port)], log) for log in logs]
  try:
    for log in logs:
      wait_for_line(log, 'listening')
    grpc_h2load(f'127.0.0.1:{port}', 'taxi_big_tipper', 64, 1, None, processes)  # Warm up.
    load, before = os.getloadavg()[0], sum(cpu_seconds(s.pid) for s in servers)
    result = grpc_h2load(f'127.0.0.1:{port}', 'taxi_big_tipper', 64, seconds, None, processes)
    answered = result['rps'] * seconds or 1
    result['cpu_us'] = (sum(cpu_seconds(s.pid) for s in servers) - before) / answered * 1e6
    result['load'] = load
  finally:
    for s in servers:
      stop(s)
  return result


def bench_flask(work, model_dir, body, script, levels, seconds):
  flask_port = portpicker.pick_unused_port()
  flask_app = os.path.join(work, 'flask_app.py')
  with open(flask_app, 'w') as f:
    f.write(FLASK_APP)
  flask = start([sys.executable, flask_app, model_dir, str(flask_port)], os.path.join(work, 'flask.log'))
  try:
    url = f'http://127.0.0.1:{flask_port}/predict'
    wait_http(url, method='post', data=body, headers={'Content-Type': 'application/json'})
    return {c: measured(flask.pid, lambda c=c: wrk(url, body, c, seconds, script)) for c in levels}
  finally:
    stop(flask)


def wait_for_line(path, text, timeout_s=60):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    with open(path) as f:
      if text in f.read():
        return
    time.sleep(0.1)
  raise RuntimeError(f'{path}: no {text!r} after {timeout_s} s')


def wait_workers(server, processes, timeout_s=300):
  """Until every worker answers on its own socket (the shared port answers
  as soon as the first one listens)."""
  import grpc
  from serving import workers
  from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = 'taxi_big_tipper'
  for i in range(processes if processes > 1 else 0):
    path = workers.socket_path(workers.work_dir(server.pid), i)
    with grpc.insecure_channel(f'unix:{path}') as channel:
      model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
          request, timeout=timeout_s, wait_for_ready=True)


def start(cmd, log_path):
  with open(log_path, 'wb') as log:
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env=dict(os.environ, TF_USE_LEGACY_KERAS='1'))


def stop(process):
  process.terminate()
  try:
    process.wait(15)
  except subprocess.TimeoutExpired:
    process.kill()


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--model_dir', help='a pushed SavedModel version directory')
  parser.add_argument('--seconds', type=int, default=5)
  parser.add_argument('--concurrency', default='1,8,64')
  parser.add_argument('--server_processes', type=int, default=2,
                      help='also bench the server with this many processes (1: skip)')
  parser.add_argument('--skip_flask', action='store_true', help='leave out the Flask app')
  parser.add_argument('--ratio_rounds', type=int, default=3,
                      help='REST c=64 cells measured between two floors, for the ratio')
  args = parser.parse_args()
  levels = [int(c) for c in args.concurrency.split(',')]
  work = tempfile.mkdtemp(prefix='serving_bench_')
  model_dir = args.model_dir
  if not model_dir:
    import tiny_models
    model_dir = tiny_models.save_taxi_like_model(os.path.join(work, 'export'))
  base = os.path.join(work, 'taxi_big_tipper')
  shutil.copytree(model_dir, os.path.join(base, '1'))
  script = os.path.join(work, 'post.lua')
  with open(script, 'w') as f:
    f.write(WRK_LUA)
  # One batch thread: a call of the real model costs ~0.6-0.9 ms of CPU for 1
  # example or 32, so on 2 cores fewer, larger batches leave more CPU for the
  # requests themselves; timeout 0 keeps c=1 latency at one model call.
  with open(os.path.join(work, 'batching.config'), 'w') as f:
    f.write('max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n'
            'num_batch_threads { value: 1 }\n')
  with open(os.path.join(work, 'monitoring.config'), 'w') as f:
    f.write('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
  body = json.dumps({'instances': [{'b64': base64.b64encode(example_bytes()).decode()}]})
  floor = Floor(model_dir)
  results = {'floor': {1: dict(floor.measure(args.seconds), **floor.extras())}}
  print('floor', results['floor'], flush=True)

  if not args.skip_flask:
    results['flask'] = bench_flask(work, model_dir, body, script, levels, args.seconds)
    print('flask', results['flask'], flush=True)

  results.update(bench_server(work, base, body, script, levels, args.seconds, 1,
                              python_clients=True, floor=floor, rounds=args.ratio_rounds))
  results.setdefault('grpc', results['grpc_py'])  # Without h2load.
  print('rest', results['rest'], '\ngrpc', results['grpc'], flush=True)
  try:
    if shutil.which('h2load'):
      results['echo'] = {n: bench_echo(work, args.seconds, n)
                         for n in sorted({1, args.server_processes})}
      print('grpc.aio echo', results['echo'], flush=True)
      if 64 in levels:  # The same gRPC cell with outputs packed in tensor_content.
        results['grpc_content'] = bench_server(
            work, base, body, script, [64], args.seconds, 1, rest=False,
            extra_flags=('--enable_serialization_as_tensor_content=true',))['grpc']
        print('grpc, tensor_content', results['grpc_content'], flush=True)
    if args.server_processes > 1 and shutil.which('h2load'):
      n = args.server_processes
      cells = bench_server(work, base, body, script, levels, args.seconds, n)
      results[f'rest_{n}'], results[f'grpc_{n}'] = cells['rest'], cells['grpc']
      print(f'{n} processes', results[f'rest_{n}'], results[f'grpc_{n}'], flush=True)
    # Again, at the end: the machine's load moves during a run.
    results['floor_end'] = floor.measure(args.seconds)
  finally:
    floor.close()
    shutil.rmtree(work, ignore_errors=True)
  print(report(results, levels))


STATED_FLOOR_RPS = 1660  # The real model one example at a time, on an idle machine.


def report(results, levels) -> str:
  lines = ['| system | concurrency | req/s | p50 ms | p99 ms | server CPU us/req | load avg |',
           '|---|---|---|---|---|---|---|']
  floor = results['floor'][1]
  lines.append(f'| in-process signature call (floor) | 1 | {floor["rps"]:.0f} |'
               f' {floor["p50_ms"]:.2f} | {floor["p99_ms"]:.2f} | | {floor["load"]:.1f} |')
  names = {'flask': 'flask (app.run)', 'rest': 'serving.server REST (wrk)',
           'grpc': 'serving.server gRPC (h2load)', 'grpc_py': 'serving.server gRPC (grpc.aio clients)'}
  if results['grpc'] is results['grpc_py']:
    names['grpc'] = names['grpc_py']
  multi = sorted(int(s.split('_')[1]) for s in results
                 if s.startswith('grpc_') and s.split('_')[1].isdigit())
  for n in multi:
    names[f'rest_{n}'] = f'serving.server REST, {n} processes (wrk)'
    names[f'grpc_{n}'] = f'serving.server gRPC, {n} processes (h2load)'
  systems = ['flask', 'rest', 'grpc', 'grpc_py'] + [
      f'{kind}_{n}' for n in multi for kind in ('rest', 'grpc')]
  for system in [s for s in systems if s in results]:
    if system == 'grpc_py' and results['grpc'] is results['grpc_py']:
      continue
    for c in levels:
      r = results[system][c]
      lines.append(f'| {names[system]} | {c} | {r["rps"]:.0f} | {r["p50_ms"]:.2f} | {r["p99_ms"]:.2f} |'
                   f' {r["cpu_us"]:.0f} | {r["load"]:.1f} |'
                   + (f' errors: {r["errors"]}' if r.get('errors') else ''))
  end = results.get('floor_end')
  if end:
    lines.append(f'| in-process signature call (floor), again at the end | 1 | {end["rps"]:.0f} |'
                 f' {end["p50_ms"]:.2f} | {end["p99_ms"]:.2f} | | {end["load"]:.1f} |')
  for n, r in results.get('echo', {}).items():
    lines.append(f'| grpc.aio echo, no model, {n} process{"es" if n > 1 else ""} (h2load) | 64 |'
                 f' {r["rps"]:.0f} | {r["p50_ms"]:.2f} | {r["p99_ms"]:.2f} | {r["cpu_us"]:.0f} |'
                 f' {r["load"]:.1f} |')
  content = results.get('grpc_content')
  if content:
    r = content[64]
    lines.append(f'| serving.server gRPC, --enable_serialization_as_tensor_content (h2load) | 64 |'
                 f' {r["rps"]:.0f} | {r["p50_ms"]:.2f} | {r["p99_ms"]:.2f} | {r["cpu_us"]:.0f} |'
                 f' {r["load"]:.1f} |' + (f' errors: {r["errors"]}' if r.get('errors') else ''))
  lines.append(f'\n100-example batch in-process: {floor["batch100_ms"]:.2f} ms')
  for batch in sorted({b for b, _ in floor['encoding_us']}):
    typed, packed = floor['encoding_us'][(batch, 'typed')], floor['encoding_us'][(batch, 'tensor_content')]
    lines.append(f'PredictResponse outputs written + serialized, {batch} example(s): typed fields'
                 f' {typed:.1f} us, tensor_content {packed:.1f} us')

  def check(name, value, target, ok):
    lines.append(f'- {name}: {value} (target {target}) {"met" if ok else "NOT met"}')
  lines.append('')
  if 64 in levels and results.get('echo'):
    grpc, echo = results['grpc'][64], results['echo'][1]
    lines.append(f'- gRPC Predict c=64 / grpc.aio echo c=64 (1 process): {grpc["rps"] / echo["rps"]:.2f}'
                 f' of its req/s; server CPU per request {grpc["cpu_us"]:.0f} us vs'
                 f' {echo["cpu_us"]:.0f} us')
  if content:
    typed, packed = results['grpc'][64], content[64]
    lines.append(f'- typed fields vs tensor_content, gRPC c=64: req/s {typed["rps"]:.0f} vs'
                 f' {packed["rps"]:.0f} ({typed["rps"] / packed["rps"] - 1:+.1%}), server CPU'
                 f' per request {typed["cpu_us"]:.0f} vs {packed["cpu_us"]:.0f} us'
                 f' ({typed["cpu_us"] / packed["cpu_us"] - 1:+.1%})')
  if 64 in levels and 1 in levels:
    rest, grpc = results['rest'][64], results['grpc'][64]
    flask = results.get('flask', {}).get(64)
    if flask:
      check('REST c=64 throughput / Flask', f'{rest["rps"] / flask["rps"]:.1f}x', '>= 3x',
            rest['rps'] >= 3 * flask['rps'])
      check('REST c=64 p99 / Flask p99', f'{rest["p99_ms"] / flask["p99_ms"]:.2f}x', '<= 0.33x',
            rest['p99_ms'] * 3 <= flask['p99_ms'])
    cells = [('REST', rest, 2), ('gRPC', grpc, 3)] + [
        (f'gRPC {n} processes', results[f'grpc_{n}'][64], 3) for n in multi]
    for name, r, times in cells:
      check(f'{name} c=64 / in-process one-at-a-time (this run, {floor["rps"]:.0f}/s)',
            f'{r["rps"] / floor["rps"]:.1f}x', f'>= {times}x', r['rps'] >= times * floor['rps'])
      check(f'{name} c=64 / stated idle-machine rate ({STATED_FLOOR_RPS}/s)',
            f'{r["rps"] / STATED_FLOOR_RPS:.1f}x', f'>= {times}x',
            r['rps'] >= times * STATED_FLOOR_RPS)
    rounds = results.get('rest_vs_floor', [])
    if rounds:
      ratios = sorted(r['ratio'] for r in rounds)
      lines.append('- REST c=64 / the floor measured just before and after it, per round: ' + ', '.join(
          f'{r["rps"]:.0f}/{r["floor_rps"]:.0f} = {r["ratio"]:.2f}x (load {r["load"]:.1f})'
          for r in rounds))
      check('REST c=64 / interleaved floor, median of the rounds', f'{ratios[len(ratios) // 2]:.2f}x',
            '>= 2x', ratios[len(ratios) // 2] >= 2)
    rest1 = results['rest'][1]
    check('REST c=1 p50 - in-process p50', f'{rest1["p50_ms"] - floor["p50_ms"]:+.2f} ms',
          '<= +1 ms', rest1['p50_ms'] <= floor['p50_ms'] + 1)
  return '\n'.join(lines)


if __name__ == '__main__':
  main()
