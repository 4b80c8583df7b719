"""Canary rollout with TF Serving version labels: canary, promote, rollback.

The serving config is TF Serving's ModelServerConfig text proto (the file
given to --model_config_file, e.g. serving/deploy/models.config). Two labels
name the versions clients address (`/v1/models/NAME/labels/stable`, gRPC
`model_spec.version_label`):

- `canary NAME VERSION`: a newly pushed version becomes `canary`; `stable`
  stays where it was (the first version ever becomes both);
- `promote NAME`: `stable` moves to the canary version, once the monitoring
  comparison of canary vs stable passed;
- `rollback NAME`: `canary` moves back to the stable version.

The version policy is set to exactly the labelled versions, so both stay
loaded whatever else is pushed. TF Serving (and serving.server) refuse a
label on a version that is not loaded yet, so a new canary is written in two
steps: first the policy (the server loads it), then the label.

    python -m pipeline.rollout --config models.config canary taxi_big_tipper 1700003600
    python -m pipeline.rollout --config models.config promote taxi_big_tipper \\
        --monitoring monitoring/monitoring.json
    python -m pipeline.rollout --config models.config rollback taxi_big_tipper

The server picks the file up at its next --model_config_file_poll_wait_seconds
poll, or at once with --reload HOST:PORT (ModelService.HandleReloadConfigRequest).
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse
import json
import random
import sys
import time
from typing import Callable, Dict, List, Optional

STABLE, CANARY = 'stable', 'canary'


class RolloutError(Exception):
  """A rollout step that must not happen (e.g. promote after a failed comparison)."""


# ---- the config file ---------------------------------------------------------------


def read_config(path: str):
  from google.protobuf import text_format
  from tensorflow_serving.config import model_server_config_pb2
  config = model_server_config_pb2.ModelServerConfig()
  with open(path) as f:
    text_format.Parse(f.read(), config)
  return config


def write_config(config, path: str) -> None:
  """Atomically: a server polling the file never reads half of it."""
  from google.protobuf import text_format
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text_format.MessageToString(config))
  os.replace(tmp, path)


def model_config(config, model_name: str = ''):
  models = config.model_config_list.config
  for model in models:
    if not model_name or model.name == model_name:
      return model
  raise RolloutError(f'model {model_name!r} is not in the serving config')


def labels(config, model_name: str = '') -> Dict[str, int]:
  return dict(model_config(config, model_name).version_labels)


def _serve_exactly(model, versions) -> None:
  model.model_version_policy.specific.ClearField('versions')
  model.model_version_policy.specific.versions.extend(sorted(set(versions)))


def _set_labels(model, new_labels: Dict[str, int]) -> None:
  model.version_labels.clear()
  for label, version in new_labels.items():
    model.version_labels[label] = version


def _relabel(config, model, config_path: str, new_labels: Dict[str, int]) -> Dict[str, int]:
  """Writes the labels, serving exactly the labelled versions."""
  _set_labels(model, new_labels)
  _serve_exactly(model, new_labels.values())
  write_config(config, config_path)
  return new_labels


# ---- the steps ---------------------------------------------------------------------


def canary(config_path: str, model_name: str, version: int,
           wait_until_loaded: Optional[Callable[[int], None]] = None) -> Dict[str, int]:
  """Labels version `canary`; `stable` stays (the first version gets both)."""
  config = read_config(config_path)
  model = model_config(config, model_name)
  current = dict(model.version_labels)
  new = {STABLE: current.get(STABLE, version), CANARY: version}
  # Step 1: serve the new version beside the labelled ones, labels unchanged.
  _serve_exactly(model, list(current.values()) + [version])
  write_config(config, config_path)
  if wait_until_loaded is not None:
    wait_until_loaded(version)
  # Step 2: the label, now that the version can take it.
  return _relabel(config, model, config_path, new)


def canary_passed(monitoring_result: Dict) -> bool:
  """The monitoring comparison of the canary's predictions against stable's."""
  labels_seen = monitoring_result.get('labels', {})
  canary_version = str(labels_seen.get(CANARY))
  entry = monitoring_result.get('predictions_by_version', {}).get(canary_version)
  if entry is None or not entry.get('shift'):
    return False  # No canary traffic compared: nothing says it is safe.
  return not entry['shift']['anomalous']


def promote(config_path: str, model_name: str,
            monitoring_result: Optional[Dict] = None, force: bool = False) -> Dict[str, int]:
  """`stable` moves to the canary version, if the comparison passed."""
  config = read_config(config_path)
  model = model_config(config, model_name)
  current = dict(model.version_labels)
  if CANARY not in current:
    raise RolloutError('no canary to promote')
  if not force:
    if monitoring_result is None or not canary_passed(monitoring_result):
      raise RolloutError('canary vs stable comparison has not passed: not promoting')
    if monitoring_result['labels'].get(CANARY) != current[CANARY]:
      raise RolloutError('the monitoring result is about another canary version')
  new = {STABLE: current[CANARY], CANARY: current[CANARY]}
  return _relabel(config, model, config_path, new)


def rollback(config_path: str, model_name: str) -> Dict[str, int]:
  """`canary` moves back to the stable version."""
  config = read_config(config_path)
  model = model_config(config, model_name)
  current = dict(model.version_labels)
  if STABLE not in current:
    raise RolloutError('no stable version to roll back to')
  new = {STABLE: current[STABLE], CANARY: current[STABLE]}
  return _relabel(config, model, config_path, new)


# ---- talking to a server --------------------------------------------------------------


def reload(grpc_target: str, config_path: str, timeout_s: float = 60.0) -> None:
  """Makes the server apply the config now (HandleReloadConfigRequest)."""
  import grpc
  from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
  request = model_management_pb2.ReloadConfigRequest(config=read_config(config_path))
  with grpc.insecure_channel(grpc_target) as channel:
    response = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
        request, timeout=timeout_s)
  if response.status.error_code:
    raise RolloutError(f'reload refused: {response.status.error_message}')


def version_available(rest_url: str, model_name: str, version: int) -> bool:
  import requests
  try:
    response = requests.get(f'{rest_url.rstrip("/")}/v1/models/{model_name}/versions/{version}',
                            timeout=5)
  except requests.RequestException:
    return False
  states = [s.get('state') for s in response.json().get('model_version_status', [])] \
      if response.status_code == 200 else []
  return 'AVAILABLE' in states


def waiter(rest_url: str, model_name: str, timeout_s: float = 120.0) -> Callable[[int], None]:
  """wait_until_loaded for canary(): polls the model status over REST."""

  def wait(version: int) -> None:
    deadline = time.monotonic() + timeout_s
    while not version_available(rest_url, model_name, version):
      if time.monotonic() > deadline:
        raise RolloutError(f'version {version} did not become AVAILABLE in {timeout_s}s')
      time.sleep(0.5)

  return wait


class TrafficSplit:
  """Sends each request to `stable` or `canary` by weighted choice.

  make_client(label) builds a client addressing that label, e.g.
  `lambda l: serving.client.RestClient(url, label=l)`.
  """

  def __init__(self, make_client: Callable[[str], object], weights: Dict[str, float],
               seed: Optional[int] = None):
    if not weights or min(weights.values()) < 0 or sum(weights.values()) <= 0:
      raise ValueError(f'weights must be non-negative with a positive sum: {weights}')
    self.labels = list(weights)
    self.weights = [weights[l] for l in self.labels]
    self.clients = {label: make_client(label) for label in self.labels}
    self.random = random.Random(seed)
    self.sent = {label: 0 for label in self.labels}

  def choose(self) -> str:
    return self.random.choices(self.labels, self.weights)[0]

  def predict(self, rows: List[Dict], **kwargs):
    """(label, predictions) of one request."""
    label = self.choose()
    self.sent[label] += 1
    return label, self.clients[label].predict(rows, **kwargs)

  def close(self) -> None:
    for client in self.clients.values():
      client.close()


# ---- CLI ---------------------------------------------------------------------------


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', required=True, help='model_config_list text proto')
  parser.add_argument('--reload', default='', help='gRPC HOST:PORT to reload at once')
  parser.add_argument('--rest', default='',
                      help='REST URL: canary waits until the version is AVAILABLE')
  commands = parser.add_subparsers(dest='command', required=True)
  step = commands.add_parser('canary', help='label a pushed version canary')
  step.add_argument('model_name')
  step.add_argument('version', type=int)
  step = commands.add_parser('promote', help='move stable to the canary')
  step.add_argument('model_name')
  step.add_argument('--monitoring', help='monitoring.json comparing canary with stable')
  step.add_argument('--force', action='store_true', help='promote without a comparison')
  step = commands.add_parser('rollback', help='move canary back to stable')
  step.add_argument('model_name')
  step = commands.add_parser('show', help='print the labels')
  step.add_argument('model_name')
  args = parser.parse_args(argv)

  try:
    if args.command == 'canary':
      wait = None
      if args.reload:
        def wait(version, _wait=waiter(args.rest, args.model_name) if args.rest else None):
          reload(args.reload, args.config)
          if _wait:
            _wait(version)
      new = canary(args.config, args.model_name, args.version, wait)
    elif args.command == 'promote':
      result = None
      if args.monitoring:
        with open(args.monitoring) as f:
          result = json.load(f)
      new = promote(args.config, args.model_name, result, args.force)
    elif args.command == 'rollback':
      new = rollback(args.config, args.model_name)
    else:
      new = labels(read_config(args.config), args.model_name)
    if args.reload and args.command != 'show':
      reload(args.reload, args.config)
  except RolloutError as e:
    print(f'rollout: {e}', file=sys.stderr)
    return 1
  print(json.dumps(new, sort_keys=True))
  return 0


if __name__ == '__main__':
  sys.exit(main())
