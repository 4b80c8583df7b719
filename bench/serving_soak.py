"""Soak: a long fuzz of the local server's REST API, under concurrency.

Random and mutated bodies (the same generators as tests/serving/
test_serving_fuzz.py, plus non-finite numbers, deep nesting and gzip or
falsely labelled encodings) against a server in a subprocess, for --seconds.
Big single requests: bench/serving_big_request_soak.py.
Reports request count, any 5xx, and the server's RSS over time (it should
stay flat). Loopback only; stops by itself.

    python bench/serving_soak.py --seconds 300
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse
import concurrent.futures
import gzip
import json
import random
import shutil
import sys
import tempfile
import time

import psutil
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'serving'))

import tiny_models  # noqa: E402
from serving.server_process import ServerProcess  # noqa: E402

VALID = [b'{"instances": [1.0, 2.0]}', b'{"inputs": {"x": [1.0]}}',
         b'{"signature_name": "raw", "instances": [{"a": 1.0, "s": "q"}]}',
         b'{"signature_name": "classification", "examples": [{"x": 1.0}]}',
         b'{"signature_name": "regression", "context": {"x": 2}, "examples": [{}]}',
         b'{"instances": [NaN, Infinity, -Infinity]}',
         b'{"instances": ' + b'[' * 600 + b']' * 600 + b'}',
         b'{"signature_name": "raw", "inputs": {"s": [{"b64": "AA"}], "n": [1, true]}}']
PATHS = ['/v1/models/tiny:predict', '/v1/models/tiny:classify', '/v1/models/tiny:regress',
         '/v1/models/tiny/versions/9:predict', '/v1/models/x:predict']


def random_body(rng: random.Random) -> bytes:
  body = bytearray(rng.choice(VALID))
  for _ in range(rng.randint(0, 3)):
    position = rng.randint(0, len(body))
    action = rng.random()
    if action < 0.3:
      del body[position:]
    elif action < 0.7:
      body[position:position] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4)))
    elif position < len(body):
      del body[position]
  if rng.random() < 0.05:
    body = bytearray(json.dumps({'instances': [0.5] * rng.randint(1, 5000)}).encode())
  return bytes(body)


def random_headers(rng: random.Random, body: bytes):
  """Sometimes gzip the body (as a client may); sometimes claim an encoding
  the body does not have."""
  roll = rng.random()
  if roll < 0.1:
    return gzip.compress(body), {'Content-Encoding': 'gzip'}
  if roll < 0.15:
    return body, {'Content-Encoding': rng.choice(['gzip', 'deflate', 'br'])}
  return body, {}


def rss_mb(pid: int) -> float:
  return psutil.Process(pid).memory_info().rss / 2**20


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--seconds', type=int, default=120)
  parser.add_argument('--concurrency', type=int, default=16)
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix='serving_soak_')
  tiny_models.save_tiny_model(os.path.join(work, 'tiny', '1'), 1)
  server = ServerProcess(
      '--model_name=tiny', f'--model_base_path={os.path.join(work, "tiny")}', '--enable_batching',
      '--max_request_body_bytes=65536', log_path=os.path.join(work, 'server.log'))
  url = server.rest
  try:
    server.wait_until_available('tiny')
    end = time.monotonic() + args.seconds
    counts = {'requests': 0, '5xx': 0, 'errors': 0}
    rss = [rss_mb(server.pid)]

    def worker(seed):
      rng = random.Random(seed)
      with requests.Session() as session:
        while time.monotonic() < end:
          try:
            body, headers = random_headers(rng, random_body(rng))
            status = session.post(url + rng.choice(PATHS), data=body, headers=headers,
                                  timeout=30).status_code
            counts['requests'] += 1
            counts['5xx'] += status >= 500
          except requests.RequestException:
            counts['errors'] += 1

    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
      futures = [pool.submit(worker, seed) for seed in range(args.concurrency)]
      while not all(f.done() for f in futures):
        time.sleep(min(10, args.seconds / 10))
        rss.append(rss_mb(server.pid))
    alive = server.process.poll() is None and requests.post(
        url + '/v1/models/tiny:predict', data=VALID[0], timeout=10).status_code == 200
    print(json.dumps({**counts, 'seconds': args.seconds, 'server_alive': alive,
                      'rss_mb': [round(r) for r in rss]}))
  finally:
    server.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
  main()
