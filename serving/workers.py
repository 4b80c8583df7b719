"""--server_processes=N: N server processes sharing the gRPC and REST ports.

One Python process tops out at one core's worth of grpc.aio per-call work, so
N > 1 starts N copies of `python -m serving.server` (same flags) that all
bind the ports with SO_REUSEPORT; the kernel spreads connections (not
requests: HTTP/2 keeps a connection on one process) across them. Each copy
loads every model and runs its own batcher. What keeps them one server:
  - metrics: prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR),
    so a scrape answered by any process counts every process's requests;
  - request logs: file names carry the writer's pid, so they never collide;
  - versions and --model_config_file: every process polls the same files;
  - HandleReloadConfigRequest: the process that gets it applies it, then
    forwards it to the others on their private Unix sockets
    (<work dir>/worker-<i>.sock, which also serve the whole API of one
    process) before answering;
  - shutdown: SIGTERM/SIGINT to this supervisor stop every process; if one
    dies on its own the others are stopped too.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import List, Optional

import grpc
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from serving import errors

log = logging.getLogger(__name__)

WORKER_INDEX_ENV = 'SERVING_WORKER_INDEX'
WORKER_DIR_ENV = 'SERVING_WORKER_DIR'


def work_dir(supervisor_pid: int) -> str:
  """Where a supervisor keeps its workers' sockets and metric files."""
  return os.path.join(tempfile.gettempdir(), f'serving-workers-{supervisor_pid}')


def socket_path(directory: str, index: int) -> str:
  return os.path.join(directory, f'worker-{index}.sock')


class WorkerInfo:
  """This process's place among the workers (from the supervisor's env)."""

  def __init__(self, index: int, directory: str, count: int):
    self.index, self.directory, self.count = index, directory, count

  @classmethod
  def from_env(cls, count: int) -> Optional['WorkerInfo']:
    if WORKER_INDEX_ENV not in os.environ:
      return None
    return cls(int(os.environ[WORKER_INDEX_ENV]), os.environ[WORKER_DIR_ENV], count)

  @property
  def own_socket(self) -> str:
    return socket_path(self.directory, self.index)

  @property
  def peer_sockets(self) -> List[str]:
    return [socket_path(self.directory, i) for i in range(self.count) if i != self.index]


def forward_reload(config, peer_sockets: List[str], timeout_s: float = 600) -> None:
  """Applies a ModelServerConfig on the other workers (their private sockets
  only apply it locally); raises the first failure as a ServingError."""
  request = model_management_pb2.ReloadConfigRequest(config=config)
  for path in peer_sockets:
    with grpc.insecure_channel(f'unix:{path}') as channel:
      try:
        model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            request, timeout=timeout_s)
      except grpc.RpcError as e:
        raise errors.ServingError(e.code(), f'Reloading the config on {path}: {e.details()}')


def supervise(argv: List[str], processes: int) -> int:
  """Runs `processes` workers with argv until a signal or one of them exits;
  returns 0 after a requested shutdown, else the failed worker's code."""
  directory = work_dir(os.getpid())
  os.makedirs(os.path.join(directory, 'metrics'))
  env = dict(os.environ, **{WORKER_DIR_ENV: directory,
                            'PROMETHEUS_MULTIPROC_DIR': os.path.join(directory, 'metrics')})
  workers: List[subprocess.Popen] = []
  requested = []  # Signals asking for a shutdown.

  def terminate_all():
    for worker in workers:
      if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)

  def on_signal(signum, _frame):
    requested.append(signum)
    terminate_all()

  signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)
  for i in range(processes):
    if requested:
      break
    workers.append(subprocess.Popen([sys.executable, '-m', 'serving.server', *argv],
                                    env=dict(env, **{WORKER_INDEX_ENV: str(i)})))
  log.info('Started %d server processes: %s', processes, [w.pid for w in workers])
  try:
    pid, status = os.wait()  # The first worker to exit (all of them, after a signal).
    first = next(w for w in workers if w.pid == pid)
    first.returncode = os.waitstatus_to_exitcode(status)
    if not requested:
      log.error('Server process %d exited with %d: stopping the others', pid, first.returncode)
      terminate_all()
    codes = [w.wait() for w in workers]
  finally:
    shutil.rmtree(directory, ignore_errors=True)
  failed = [c for c in codes if c]
  if not requested:  # A worker ended without being asked to: a failure.
    return failed[0] if failed and failed[0] > 0 else 1
  return failed[0] if failed else 0
