"""python -m serving.server: a local drop-in for tensorflow_model_server.

    python -m serving.server --port=8500 --rest_api_port=8501 \\
        --model_name=taxi_big_tipper --model_base_path=/serving/taxi_big_tipper

One process, one event loop (uvloop when installed) serving gRPC (grpc.aio)
and REST (aiohttp); models run on threads, where TensorFlow releases the GIL.
--server_processes=N runs N such processes on the same ports (serving/workers.py).
"""

import os

import compat.keras  # noqa: F401  First: TF_USE_LEGACY_KERAS before TensorFlow loads.

if __name__ == '__main__':  # `python -m serving.server`, not a program importing it.
  # As the standard tensorflow/serving image (built without oneDNN; its -mkl
  # image has it): TF's wheel enables oneDNN, whose memory pools keep a large
  # request's peak for good. Before TensorFlow is imported; =1 turns it on.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import asyncio
import concurrent.futures
import gc
import logging
import signal
import sys
import threading
from typing import Optional

from aiohttp import web
from tensorflow_serving.config import model_server_config_pb2

from serving import batching, errors, flags, protos, workers
from serving.core import DirectRunner, ServerCore
from serving.grpc_api import make_server
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.request_log import RequestLogger
from serving.rest import RestApi

log = logging.getLogger('serving.server')
VERSION = '2.16.1-local'
DEFAULT_METRICS_PATH = '/monitoring/prometheus/metrics'


def server_config(args) -> model_server_config_pb2.ModelServerConfig:
  """--model_config_file, or the single model of --model_name/--model_base_path."""
  if args.model_config_file:
    return protos.parse_text_file(args.model_config_file,
                                  model_server_config_pb2.ModelServerConfig)
  if not args.model_base_path:
    raise errors.invalid_argument('Both server_options.model_config_file and'
                                  ' server_options.model_base_path are empty!')
  config = model_server_config_pb2.ModelServerConfig()
  config.model_config_list.config.add(name=args.model_name, base_path=args.model_base_path,
                                      model_platform='tensorflow')
  return config


def _configure_tensorflow_threads(args) -> None:
  import tensorflow as tf
  intra = args.tensorflow_intra_op_parallelism or args.tensorflow_session_parallelism
  inter = args.tensorflow_inter_op_parallelism or args.tensorflow_session_parallelism
  try:
    if intra:
      tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
      tf.config.threading.set_inter_op_parallelism_threads(inter)
  except RuntimeError:  # TF already initialised (server embedded in a process).
    log.warning('TensorFlow threads already configured; parallelism flags ignored')


def _channel_args(text: str):
  pairs = [item.split('=', 1) for item in text.split(',') if item]
  return [(k, int(v) if v.lstrip('-').isdigit() else v) for k, v in pairs]


class ModelServer:
  """The whole server; `serve()` runs it on the current event loop."""

  def __init__(self, args):
    self.args = args
    self.metrics = Metrics()
    self._scheduler = None
    if args.enable_batching:
      params = (protos.parse_text_file(args.batching_parameters_file, protos.BatchingParameters)
                if args.batching_parameters_file else None)
      self._scheduler = batching.BatchScheduler(batching.Options(params))
      self._scheduler.on_batch = self.metrics.batch_size.observe
    self._pool = concurrent.futures.ThreadPoolExecutor(
        max(8, 4 * (os.cpu_count() or 1)), thread_name_prefix='predict')
    runner = self._scheduler or DirectRunner(self._pool)
    self.manager = ModelManager(
        self._load, args.max_num_load_retries, args.load_retry_interval_micros / 1e6,
        args.allow_version_labels_for_unavailable_models)
    self.core = ServerCore(self.manager, runner, self.metrics,
                           args.enable_signature_method_name_check,
                           args.enable_serialization_as_tensor_content)
    self._loggers = {}
    # A config-file poll and a ReloadConfig request may apply a config at once:
    # without it each would open its own log file for the same model.
    self._loggers_lock = threading.Lock()
    self._config_text = None
    self._stopping: Optional[asyncio.Event] = None
    self._loop = None
    self.ready = threading.Event()
    self.worker = workers.WorkerInfo.from_env(args.server_processes)

  def _load(self, name, version, path):
    servable = self.core.load(name, version, path, self.args.saved_model_tags.split(','),
                              self.args.num_request_iterations_for_warmup,
                              self.args.enable_model_warmup)
    # Frees versions unloaded since the last load. Cheap: the long-lived
    # objects of the start-up (TensorFlow's modules, ~350k objects) are frozen
    # out of the GC by serve(); a version loaded into a session is only ~2k
    # Python objects. (A full collection over everything held the GIL for
    # ~0.3-0.5 s, stalling every request in flight.)
    gc.collect()
    return servable

  # ---- configuration ---------------------------------------------------------------

  def reload_config(self, config) -> None:
    """Serves the models of config (startup, config file polls, and
    ModelService.HandleReloadConfigRequest), returning once each of them is
    available, or raising if one will not be."""
    self.manager.apply_config(config)
    self._update_request_loggers(config)
    poll_s = self.args.file_system_poll_wait_seconds
    self.manager.wait_for_configured_models(poll_s if poll_s > 0 else 1)

  def _reload_config_everywhere(self, config) -> None:
    """ModelService.HandleReloadConfigRequest: here, then in the other workers."""
    self.reload_config(config)
    if self.worker is not None:
      workers.forward_reload(config, self.worker.peer_sockets)

  def _update_request_loggers(self, config) -> None:
    with self._loggers_lock:
      self._replace_request_loggers(config)

  def _replace_request_loggers(self, config) -> None:
    wanted = {c.name: c.logging_config for c in config.model_config_list.config
              if c.logging_config.log_collector_config.filename_prefix}
    for name in list(self._loggers):
      if name not in wanted or self._loggers[name][0] != wanted[name]:
        self._loggers.pop(name)[1].close()
        self.core.request_loggers.pop(name, None)
    for name, logging_config in wanted.items():
      if name not in self._loggers:
        logger = RequestLogger(name, logging_config)
        self._loggers[name] = (logging_config, logger)
        self.core.request_loggers[name] = logger
        log.info('Logging %.3g of requests to model %s in %s',
                 logging_config.sampling_config.sampling_rate, name, logger.path)

  def _poll_config_file(self, interval_s: int) -> None:
    while not self._stopped_event.wait(interval_s):
      try:
        with open(self.args.model_config_file) as f:
          text = f.read()
        if text != self._config_text:
          log.info('Model config file changed: reloading')
          self.reload_config(server_config(self.args))
          self._config_text = text
      except Exception:  # A bad edit must not stop serving the current config.
        log.exception('Reloading %s failed; keeping the current config',
                      self.args.model_config_file)

  def _metrics_path(self) -> str:
    if not self.args.monitoring_config_file:
      return ''
    config = protos.parse_text_file(self.args.monitoring_config_file, protos.MonitoringConfig)
    if not config.prometheus_config.enable:
      return ''
    return config.prometheus_config.path or DEFAULT_METRICS_PATH

  # ---- running ---------------------------------------------------------------------

  async def serve(self) -> None:
    args = self.args
    self._loop = asyncio.get_running_loop()
    self._stopping = asyncio.Event()
    self._stopped_event = threading.Event()
    _configure_tensorflow_threads(args)
    config = server_config(args)
    if args.model_config_file:
      with open(args.model_config_file) as f:
        self._config_text = f.read()
    # Like tensorflow_model_server, load the initial models before listening.
    await self._loop.run_in_executor(None, self.reload_config, config)
    # Everything alive now lives as long as the server (modules, the first
    # versions): freeze it out of the GC, so that full collections do not
    # walk it (100+ ms pauses, the p99 under load). The first versions'
    # Python objects stay frozen after they are unloaded (a one-time ~2k
    # objects; their sessions, the memory that matters, are closed).
    gc.collect()
    gc.freeze()
    host = args.listen_address
    channel_args = _channel_args(args.grpc_channel_arguments)
    addresses = [f'{host}:{args.port}']
    if args.grpc_socket_path:
      addresses.append(f'unix:{args.grpc_socket_path}')
    grpc_servers = [make_server(self.core, self._reload_config_everywhere,
                                addresses, channel_args)]
    if self.worker is not None:  # This process alone; peers forward reloads here.
      grpc_servers.append(make_server(self.core, self.reload_config,
                                      f'unix:{self.worker.own_socket}', channel_args))
    for grpc_server in grpc_servers:
      await grpc_server.start()
    log.info('Running gRPC ModelServer at %s:%d ...', host, args.port)
    if args.grpc_socket_path:
      log.info('Running gRPC ModelServer at UNIX socket %s ...', args.grpc_socket_path)
    runner = None
    if args.rest_api_port:
      if args.rest_api_port == args.port:
        log.error('--rest_api_port cannot be same as --port. Skipped exporting HTTP/REST API.')
      else:
        rest = RestApi(self.core, self._metrics_path(), args.max_request_body_bytes,
                       args.max_request_values)
        runner = web.ServerRunner(rest.server())
        await runner.setup()
        await web.TCPSite(runner, host, args.rest_api_port, backlog=1024,
                          reuse_port=self.worker is not None).start()
        log.info('Exporting HTTP/REST API at %s:%d ...', host, args.rest_api_port)
    self.manager.start_polling(args.file_system_poll_wait_seconds)
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
      threading.Thread(target=self._poll_config_file, daemon=True, name='config-poller',
                       args=(args.model_config_file_poll_wait_seconds,)).start()
    self.ready.set()
    try:
      await self._stopping.wait()
    finally:
      log.info('Shutting down')
      self._stopped_event.set()
      for grpc_server in grpc_servers:
        await grpc_server.stop(grace=2)
      if runner is not None:
        await runner.cleanup()
        await rest.close()
      self.manager.stop()
      for _, logger in self._loggers.values():
        logger.close()
      if self._scheduler is not None:
        self._scheduler.close()
      self._pool.shutdown(wait=False, cancel_futures=True)

  def stop(self) -> None:
    """Thread-safe: asks serve() to finish."""
    if self._loop is not None and self._stopping is not None:
      self._loop.call_soon_threadsafe(self._stopping.set)

  def shutdown(self, timeout_s: float = 30) -> None:
    """Stops a server started by start_in_thread() and waits for it."""
    self.stop()
    self.thread.join(timeout_s)


def _new_event_loop():
  try:
    import uvloop
    return uvloop.new_event_loop()
  except ImportError:
    return asyncio.new_event_loop()


# How soon a thread running Python (decoding or encoding a large request on
# the decode threads) hands the GIL to the event loop when it asks: Python's
# default, 5 ms, is paid at each of the loop's waits, and a status request
# then took 15-20 ms behind a large classify.
GIL_SWITCH_INTERVAL_S = 0.001


def run(server: ModelServer) -> None:
  """Runs server until stop() (or SIGTERM/SIGINT when on the main thread)."""
  sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
  loop = _new_event_loop()
  asyncio.set_event_loop(loop)
  if threading.current_thread() is threading.main_thread():
    for sig in (signal.SIGTERM, signal.SIGINT):
      loop.add_signal_handler(sig, server.stop)
  try:
    loop.run_until_complete(server.serve())
  finally:
    loop.close()


def start_in_thread(argv) -> ModelServer:
  """Starts a server on a daemon thread and waits until it serves (tests)."""
  server = ModelServer(flags.parse(argv))
  failures = []

  def target():
    try:
      run(server)
    except BaseException as e:  # Surfaced to the caller below.
      failures.append(e)
      server.ready.set()

  server.thread = threading.Thread(target=target, daemon=True, name='model-server')
  server.thread.start()
  server.ready.wait()
  if failures:
    raise failures[0]
  return server


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO,
                      format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  args = flags.parse(argv)
  if args.version:
    print(f'TensorFlow ModelServer: {VERSION}\nTensorFlow Library: 2.16')
    return 0
  if args.server_processes > 1 and workers.WORKER_INDEX_ENV not in os.environ:
    return workers.supervise(sys.argv[1:] if argv is None else list(argv), args.server_processes)
  try:
    run(ModelServer(args))
  except errors.ServingError as e:  # A bad config or model: no traceback, exit -1 (255).
    print(f'Failed to start server. Error: {e.code.name}: {e.message}', file=sys.stderr)
    return 255
  return 0


if __name__ == '__main__':
  sys.exit(main())
