"""tensorflow_model_server's command line, flag for flag.

Every documented flag is accepted with its default and meaning, in either
`--flag=value` or `--flag value` form (booleans also as bare `--flag`). Flags
that mean nothing for this server are accepted and logged as ignored.
"""

import argparse
import logging

log = logging.getLogger(__name__)


def _bool(text: str) -> bool:
  value = text.strip().lower()
  if value in ('true', '1', 'yes', 't', 'y'):
    return True
  if value in ('false', '0', 'no', 'f', 'n'):
    return False
  raise argparse.ArgumentTypeError(f'not a boolean: {text}')


# name -> (type, default, used here?, help)
FLAGS = {
    'port': (int, 8500, True, 'Port to listen on for gRPC API.'),
    'grpc_socket_path': (str, '', True, 'Also serve gRPC on this UNIX socket.'),
    'rest_api_port': (int, 0, True, 'Port for the HTTP/REST API; 0 disables it.'),
    'rest_api_num_threads': (int, 0, False, 'HTTP threads (one event loop here).'),
    'rest_api_timeout_in_ms': (int, 30000, False, 'HTTP request timeout.'),
    'rest_api_enable_cors_support': (_bool, False, False, 'CORS headers.'),
    'enable_batching': (_bool, False, True, 'Enable server-side batching.'),
    'allow_version_labels_for_unavailable_models': (
        _bool, False, True, 'Allow assigning new labels to versions not yet available.'),
    'batching_parameters_file': (str, '', True, 'Ascii BatchingParameters protobuf file.'),
    'enable_per_model_batching_parameters': (_bool, False, False, 'Per-model batching files.'),
    'model_config_file': (str, '', True, 'Ascii ModelServerConfig protobuf file.'),
    'model_config_file_poll_wait_seconds': (
        int, 0, True, 'Seconds between re-reads of --model_config_file; 0 reads it once.'),
    'model_name': (str, 'default', True, 'Name of the model (ignored with --model_config_file).'),
    'model_base_path': (str, '', True, 'Path to export (ignored with --model_config_file).'),
    'num_load_threads': (int, 0, False, 'Threads for loading models.'),
    'num_unload_threads': (int, 0, False, 'Threads for unloading models.'),
    'max_num_load_retries': (int, 5, True, 'Retries of a failed model load.'),
    'load_retry_interval_micros': (int, 60 * 1000 * 1000, True, 'Wait between load retries.'),
    'file_system_poll_wait_seconds': (
        int, 1, True, 'Seconds between polls for new versions; 0 polls once, < 0 never.'),
    'flush_filesystem_caches': (_bool, True, False, 'Flush filesystem caches after loads.'),
    'tensorflow_session_parallelism': (int, 0, True, 'Threads of the TF session (0 = auto).'),
    'tensorflow_session_config_file': (str, '', False, 'Ascii ConfigProto file.'),
    'tensorflow_intra_op_parallelism': (int, 0, True, 'Intra-op threads (0 = auto).'),
    'tensorflow_inter_op_parallelism': (int, 0, True, 'Inter-op threads (0 = auto).'),
    'use_alts_credentials': (_bool, False, False, 'ALTS credentials for gRPC.'),
    'ssl_config_file': (str, '', False, 'SSL config for gRPC.'),
    'platform_config_file': (str, '', False, 'Ascii PlatformConfigMap file.'),
    'per_process_gpu_memory_fraction': (float, 0.0, False, 'GPU memory fraction.'),
    'saved_model_tags': (str, 'serve', True, 'Comma-separated MetaGraphDef tags to load.'),
    'grpc_channel_arguments': (str, '', True, 'Comma-separated key=value gRPC arguments.'),
    'grpc_max_threads': (int, 0, False, 'gRPC threads.'),
    'enable_model_warmup': (_bool, True, True, 'Replay assets.extra/tf_serving_warmup_requests.'),
    'num_request_iterations_for_warmup': (int, 1, True, 'Replays of each warmup request.'),
    'version': (_bool, False, True, 'Print the version and exit.'),
    'monitoring_config_file': (str, '', True, 'Ascii MonitoringConfig protobuf file.'),
    'remove_unused_fields_from_bundle_metagraph': (_bool, True, False, 'Trim the MetaGraph.'),
    'prefer_tflite_model': (_bool, False, False, 'Prefer a TFLite model.'),
    'use_tflite_model': (_bool, False, False, 'Use a TFLite model.'),
    'num_tflite_pools': (int, 1, False, 'TFLite pools.'),
    'num_tflite_interpreters_per_pool': (int, 1, False, 'TFLite interpreters per pool.'),
    'enable_serialization_as_tensor_content': (
        _bool, False, True, 'Predict outputs in tensor_content, not typed value fields.'),
    'enable_signature_method_name_check': (
        _bool, False, True, 'Require classify/regress method_name in SignatureDefs.'),
    'xla_cpu_compilation_enabled': (_bool, False, False, 'XLA on CPU.'),
    'enable_profiler': (_bool, True, False, 'Profiler service.'),
    'thread_pool_factory_config_file': (str, '', False, 'Thread pool factory config.'),
    'mixed_precision': (str, '', False, 'Mixed precision mode.'),
    'skip_initialize_tpu': (_bool, False, False, 'Skip TPU initialization.'),
    'enable_grpc_healthcheck_service': (_bool, False, False, 'gRPC health check service.'),
    'tensorflow_session_config_file_poll_wait_seconds': (int, 0, False, 'Session config re-read.'),
}

# Our own flags (tensorflow_model_server listens on all interfaces).
OWN_FLAGS = {
    'listen_address': (str, '127.0.0.1', True,
                       'Address the gRPC and REST APIs bind to (ours; 0.0.0.0 for all).'),
    'max_request_body_bytes': (int, 64 * 1024 * 1024, True,
                               'Larger REST bodies are refused with 413 (ours).'),
    'max_request_values': (int, 20_000_000, True,
                           'REST requests decoding into more values (tensor elements or feature'
                           ' values, a context counted once per example) are refused with 413'
                           ' (ours; 0: no bound).'),
    'server_processes': (int, 1, True,
                         'Server processes sharing the ports, each with its own copy of the'
                         ' models and batcher (ours; serving/workers.py).'),
}


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='taxi-model-server',
      description='A local drop-in for tensorflow_model_server (same flags).')
  for name, (kind, default, _, help_text) in {**FLAGS, **OWN_FLAGS}.items():
    if kind is _bool:
      p.add_argument(f'--{name}', type=_bool, nargs='?', const=True, default=default,
                     help=help_text)
    else:
      p.add_argument(f'--{name}', type=kind, default=default, help=help_text)
  return p


def parse(argv=None) -> argparse.Namespace:
  args = parser().parse_args(argv)
  for name, (_, default, used, _) in FLAGS.items():
    if not used and getattr(args, name) != default:
      log.warning('Flag --%s=%s has no effect in this server: ignored', name, getattr(args, name))
  return args
