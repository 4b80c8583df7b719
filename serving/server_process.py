"""`python -m serving.server` as a child process on free loopback ports.

For programs that need a model server of their own for a while (an infra
check of a candidate model, tests, benchmarks): starts it with
tensorflow_model_server's flags, waits until it serves, stops it. Its output
goes to a log file (a pipe nobody reads would fill up and stall it).
"""

import os
import subprocess
import sys
import tempfile
import time
from typing import Optional

import portpicker
import requests

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ServerExited(RuntimeError):
  """The server process ended while it was awaited."""


class ServerProcess:
  """The server with `flags`; --port and --rest_api_port are added (free
  ports) unless given. Use as a context manager, or call stop()."""

  def __init__(self, *flags: str, log_path: Optional[str] = None, env: Optional[dict] = None,
               root: str = _ROOT):
    """root: the checkout whose serving/ runs (benchmarks compare two)."""
    flags = list(flags)
    self.port = _flag_value(flags, 'port') or portpicker.pick_unused_port()
    self.rest_port = _flag_value(flags, 'rest_api_port') or portpicker.pick_unused_port()
    flags = [f for f in flags if not f.startswith(('--port=', '--rest_api_port='))]
    self.grpc_target = f'127.0.0.1:{self.port}'
    self.rest = f'http://127.0.0.1:{self.rest_port}'
    if log_path is None:
      handle, log_path = tempfile.mkstemp(prefix='serving_server_', suffix='.log')
      os.close(handle)
    self.log_path = log_path
    environment = dict(os.environ if env is None else env)
    environment['PYTHONPATH'] = os.pathsep.join(
        filter(None, [root, environment.get('PYTHONPATH')]))
    environment.setdefault('TF_USE_LEGACY_KERAS', '1')
    with open(log_path, 'ab') as log:
      self.process = subprocess.Popen(
          [sys.executable, '-m', 'serving.server', f'--port={self.port}',
           f'--rest_api_port={self.rest_port}', *flags],
          cwd=root, env=environment, stdout=log, stderr=subprocess.STDOUT)
    self.pid = self.process.pid

  def __enter__(self) -> 'ServerProcess':
    return self

  def __exit__(self, *exc) -> None:
    self.stop()

  def wait_until_available(self, model_name: str, timeout_s: float = 180) -> 'ServerProcess':
    """Until the REST status of model_name lists a version AVAILABLE."""
    url = f'{self.rest}/v1/models/{model_name}'
    deadline = time.monotonic() + timeout_s
    while True:
      self.check_running()
      try:
        response = requests.get(url, timeout=5)
        states = [v['state'] for v in response.json().get('model_version_status', [])]
        if 'AVAILABLE' in states:
          return self
      except (requests.ConnectionError, requests.Timeout, ValueError):
        pass  # Not listening yet.
      if time.monotonic() > deadline:
        raise TimeoutError(f'{model_name} not AVAILABLE after {timeout_s:.0f} s; server log:'
                           f' {self.log_path}\n{self.log_tail()}')
      time.sleep(0.25)

  def check_running(self) -> None:
    if self.process.poll() is not None:
      raise ServerExited(f'the model server exited with code {self.process.returncode}:\n'
                         f'{self.log_tail()}')

  def log_text(self) -> str:
    with open(self.log_path, errors='replace') as f:
      return f.read()

  def log_tail(self, lines: int = 20) -> str:
    return '\n'.join(self.log_text().splitlines()[-lines:])

  def stop(self, timeout_s: float = 30) -> int:
    """SIGTERM (the server shuts down cleanly), SIGKILL after timeout_s."""
    if self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(timeout_s)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    return self.process.returncode


def _flag_value(flags, name: str) -> Optional[int]:
  for flag in flags:
    if flag.startswith(f'--{name}='):
      return int(flag.split('=', 1)[1])
  return None
