"""Canary rollout with TF Serving version labels: canary, promote, rollback.

The serving config is TF Serving's ModelServerConfig text proto (the file
given to --model_config_file). The rollout rewrites it, so it is a generated
file, never the tracked template serving/deploy/models.config (whose comments
explain the fields): `init` writes it, by default to the selected example's
serving dir (serving_model/models.config for taxi), with the template's
version policy and request logging, this machine's paths (the template's
/models/... are the Docker image's) and the example's model name. Two labels name the versions clients address
(`/v1/models/NAME/labels/stable`, gRPC `model_spec.version_label`):

- `canary NAME VERSION`: a newly pushed version becomes `canary`; `stable`
  stays where it was (the first version ever becomes both);
- `promote NAME`: `stable` moves to the canary version, once the monitoring
  comparison of canary vs stable passed;
- `rollback NAME`: `canary` moves back to the stable version.

The version policy is set to exactly the labelled versions, so both stay
loaded whatever else is pushed. TF Serving (and serving.server) refuse a
label on a version that is not loaded yet, so a new canary is written in two
steps: first the policy (the server loads it), then the label.

    python -m operations.rollout init         # serving_model/models.config, once
    python -m serving.server --model_config_file=serving_model/models.config \\
        --model_config_file_poll_wait_seconds=5
    python -m operations.rollout canary taxi_big_tipper 1700003600
    python -m operations.rollout promote taxi_big_tipper --monitoring monitoring/monitoring.json
    python -m operations.rollout rollback taxi_big_tipper

The server picks the file up at its next --model_config_file_poll_wait_seconds
poll, or at once with --reload HOST:PORT (ModelService.HandleReloadConfigRequest).

Every step is recorded in the audit trail (pipeline/audit.py), by default
<the config's folder>/audit/, the serving dir's, where the Pusher records its
pushes: `attempted`, then `done`, `refused` (e.g. a promote whose comparison
did not pass) or `failed` (with the labels the failure left in force).

    python -m operations.rollout history taxi_big_tipper
"""

import os

import compat.keras  # noqa: F401  First: Keras 2 for TFX (see compat/keras.py).

import argparse
import json
import random
import sys
import time
from typing import Callable, Dict, List, Optional

from pipeline import audit
from pipeline import configs
from pipeline import project

STABLE, CANARY = 'stable', 'canary'
TEMPLATE = os.path.join(configs.REPO_ROOT, 'serving', 'deploy', 'models.config')
DOCKER_MODEL_ROOT = '/models'  # Where docker-compose.yml mounts the serving dir.
GENERATED_NAME = 'models.config'  # In the serving dir.
RELOAD_ATTEMPTS = 5  # Waits 0.5, 1, 2, 4 s between them: a server still starting.


class RolloutError(Exception):
  """A rollout step that failed or must not happen."""


class RolloutRefused(RolloutError):
  """A step the rules do not allow (e.g. promote after a failed comparison):
  refused before anything changed (the audit record says `refused`)."""


# ---- the config file ---------------------------------------------------------------


def default_config_path(environ=os.environ) -> str:
  """$<PREFIX>SERVING_CONFIG_FILE (TAXI_ for the taxi project), else <serving dir>/models.config
  (the selected example's serving dir, as the pipeline pushes there)."""
  defaults = configs.example_defaults(environ)
  serving_dir = environ.get(configs.ENV_PREFIX + 'SERVING_DIR') or defaults.serving_dir
  return defaults.path(environ.get(configs.ENV_PREFIX + 'SERVING_CONFIG_FILE') or
                       os.path.join(serving_dir, GENERATED_NAME))


def read_config(path: str):
  from google.protobuf import text_format
  from tensorflow_serving.config import model_server_config_pb2
  config = model_server_config_pb2.ModelServerConfig()
  with open(path) as f:
    text_format.Parse(f.read(), config)
  return config


def _header(path: str) -> str:
  """The leading comment lines of the file (the generated file's origin)."""
  if not os.path.exists(path):
    return ''
  lines = []
  with open(path) as f:
    for line in f:
      if not line.startswith('#'):
        break
      lines.append(line)
  return ''.join(lines)


def _is_template(path: str) -> bool:
  return os.path.exists(path) and os.path.samefile(path, TEMPLATE)


def write_config(config, path: str, header: Optional[str] = None) -> None:
  """Atomically: a server polling the file never reads half of it.

  Comments other than the header are not kept (text protos drop them).
  """
  from google.protobuf import text_format
  if _is_template(path):
    raise RolloutError(f'{path} is the tracked template: the rollout writes the generated '
                       f'config instead (python -m operations.rollout init)')
  header = _header(path) if header is None else header
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(header + text_format.MessageToString(config))
  os.replace(tmp, path)


def _relocated(path: str, serving_dir: str) -> str:
  """A template path under the Docker mount, under serving_dir instead."""
  if path == DOCKER_MODEL_ROOT or path.startswith(DOCKER_MODEL_ROOT + '/'):
    return os.path.join(serving_dir, os.path.relpath(path, DOCKER_MODEL_ROOT))
  return path


def _renamed(model, name: str) -> None:
  """The template's project model as the selected example's: its name, and
  its model and log paths, which end in the name."""
  collector = model.logging_config.log_collector_config
  for holder, field in ((model, 'base_path'), (collector, 'filename_prefix')):
    head, tail = os.path.split(getattr(holder, field))
    if tail == model.name:
      setattr(holder, field, os.path.join(head, name))
  model.name = name


def init(config_path: str, serving_dir: str, template: str = TEMPLATE,
         force: bool = False, model_name: str = '') -> bool:
  """Writes the generated serving config from the template; False if it exists.

  Version policy and logging come from the template; model and log paths
  move from the Docker mount to serving_dir. The template's model (the
  project's) is named model_name, by default the selected example's, which
  the pipeline pushes and labels. An existing file holds the current
  labels, so it is kept unless force.
  """
  if os.path.exists(config_path) and not force:
    return False
  serving_dir = os.path.abspath(serving_dir)
  model_name = model_name or configs.example_defaults().model_name
  config = read_config(template)
  for model in config.model_config_list.config:
    if model.name == project.MODEL_NAME:
      _renamed(model, model_name)
    model.base_path = _relocated(model.base_path, serving_dir)
    collector = model.logging_config.log_collector_config
    if collector.filename_prefix:
      collector.filename_prefix = _relocated(collector.filename_prefix, serving_dir)
  os.makedirs(os.path.dirname(os.path.abspath(config_path)), exist_ok=True)
  source = os.path.relpath(template, configs.REPO_ROOT)
  write_config(config, config_path, header=(
      f'# Generated by `python -m operations.rollout init` from {source}\n'
      f'# (see its comments), with paths under {serving_dir}. The rollout rewrites this file.\n'))
  return True


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


def default_audit_dir(config_path: str) -> str:
  """Beside the config, in the serving dir (where the Pusher records pushes)."""
  return audit.audit_dir(os.path.dirname(os.path.abspath(config_path)))


def _recorded(config_path: str, model_name: str, action: str, summary: str,
              audit_dir: Optional[str], **details):
  """The step's audit records; a failure records the labels it left in force."""
  if _is_template(config_path):  # Before any record: none goes into the source tree.
    raise RolloutError(f'{config_path} is the tracked template: the rollout writes the '
                       f'generated config instead (python -m operations.rollout init)')
  return audit.recorded(
      audit_dir or default_audit_dir(config_path), model_name, action, summary,
      refusals=(RolloutRefused,), config=os.path.abspath(config_path),
      left_behind=lambda: _in_force(config_path, model_name), **details)


def _in_force(config_path: str, model_name: str) -> Dict:
  """The labels and served versions the config file now holds."""
  model = model_config(read_config(config_path), model_name)
  return {'labels': dict(model.version_labels),
          'versions_served': list(model.model_version_policy.specific.versions)}


def _labels_text(new_labels: Dict[str, int]) -> str:
  return ' '.join(f'{label}={version}' for label, version in new_labels.items())


def canary(config_path: str, model_name: str, version: int,
           wait_until_loaded: Optional[Callable[[int], None]] = None,
           audit_dir: Optional[str] = None) -> Dict[str, int]:
  """Labels version `canary`; `stable` stays (the first version gets both)."""
  config = read_config(config_path)
  model = model_config(config, model_name)
  current = dict(model.version_labels)
  new = {STABLE: current.get(STABLE, version), CANARY: version}
  with _recorded(config_path, model_name, 'canary', f'canary to version {version}', audit_dir,
                 version=version, labels_before=current, labels_intended=new) as action:
    # Step 1: serve the new version beside the labelled ones, labels unchanged.
    _serve_exactly(model, list(current.values()) + [version])
    write_config(config, config_path)
    if wait_until_loaded is not None:
      wait_until_loaded(version)
    # Step 2: the label, now that the version can take it.
    done = _relabel(config, model, config_path, new)
    action.finish(audit.DONE, _labels_text(done), labels=done)
  return done


def canary_passed(monitoring_result: Dict) -> bool:
  """The monitoring comparison of the canary's predictions against stable's."""
  labels_seen = monitoring_result.get('labels', {})
  canary_version = str(labels_seen.get(CANARY))
  entry = monitoring_result.get('predictions_by_version', {}).get(canary_version)
  if entry is None or not entry.get('shift'):
    return False  # No canary traffic compared: nothing says it is safe.
  return not entry['shift']['anomalous']


def promote(config_path: str, model_name: str,
            monitoring_result: Optional[Dict] = None, force: bool = False,
            audit_dir: Optional[str] = None,
            monitoring_source: Optional[str] = None) -> Dict[str, int]:
  """`stable` moves to the canary version, if the comparison passed.

  The record holds the comparison that justified it (monitoring_source: the
  file it was read from), or says it was forced.
  """
  config = read_config(config_path)
  model = model_config(config, model_name)
  current = dict(model.version_labels)
  justification = {'forced': force}
  if monitoring_result is not None:
    justification['monitoring'] = audit.monitoring_summary(monitoring_result, monitoring_source)
  summary = f'stable to canary version {current.get(CANARY)}' + (' (forced)' if force else '')
  with _recorded(config_path, model_name, 'promote', summary, audit_dir,
                 labels_before=current, **justification) as action:
    if CANARY not in current:
      raise RolloutRefused('no canary to promote')
    if not force:
      if monitoring_result is None or not canary_passed(monitoring_result):
        raise RolloutRefused('canary vs stable comparison has not passed: not promoting')
      if monitoring_result['labels'].get(CANARY) != current[CANARY]:
        raise RolloutRefused('the monitoring result is about another canary version')
    new = {STABLE: current[CANARY], CANARY: current[CANARY]}
    done = _relabel(config, model, config_path, new)
    action.finish(audit.DONE, _labels_text(done) + (' (forced)' if force else ''), labels=done,
                  **justification)
  return done


def rollback(config_path: str, model_name: str,
             audit_dir: Optional[str] = None) -> Dict[str, int]:
  """`canary` moves back to the stable version."""
  config = read_config(config_path)
  model = model_config(config, model_name)
  current = dict(model.version_labels)
  with _recorded(config_path, model_name, 'rollback',
                 f'canary back to stable version {current.get(STABLE)}', audit_dir,
                 labels_before=current) as action:
    if STABLE not in current:
      raise RolloutRefused('no stable version to roll back to')
    new = {STABLE: current[STABLE], CANARY: current[STABLE]}
    done = _relabel(config, model, config_path, new)
    action.finish(audit.DONE, _labels_text(done), labels=done)
  return done


# ---- talking to a server --------------------------------------------------------------


def reload(grpc_target: str, config_path: str, timeout_s: float = 60.0,
           attempts: int = RELOAD_ATTEMPTS) -> None:
  """Makes the server apply the config now (HandleReloadConfigRequest).

  Retries a server that cannot be reached (still starting); then fails
  saying so.
  """
  import grpc
  from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
  request = model_management_pb2.ReloadConfigRequest(config=read_config(config_path))
  retried = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
  for attempt in range(attempts):
    try:
      with grpc.insecure_channel(grpc_target) as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            request, timeout=timeout_s)
      break
    except grpc.RpcError as e:
      if e.code() not in retried:
        raise RolloutError(
            f'reload at {grpc_target} failed: {e.code().name} {e.details()}') from None
      if attempt == attempts - 1:
        raise RolloutError(
            f'no model server answers at {grpc_target} ({attempts} attempts, {e.code().name}): '
            f'start it, or fix --reload; {config_path} is written, a server polling it '
            f'applies it at its next poll') from None
      time.sleep(0.5 * 2 ** attempt)
  if response.status.error_code:
    raise RolloutError(f'reload refused: {response.status.error_message}')


def version_available(rest_url: str, model_name: str, version: int) -> bool:
  import requests
  try:
    response = requests.get(f'{rest_url.rstrip("/")}/v1/models/{model_name}/versions/{version}',
                            timeout=5)
  except requests.RequestException:
    return False
  if response.status_code != 200:
    return False
  try:
    statuses = response.json().get('model_version_status', [])
  except ValueError:  # Not JSON: not a model server.
    return False
  return 'AVAILABLE' in [s.get('state') for s in statuses]


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
  `lambda l: client.predict.RestClient(url, label=l)`.
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

EPILOG = f"""\
exit status: 0 done (the new labels printed as JSON; history: one line per audit
record); 1 the step was refused or failed (the reason on stderr, one line; the
audit trail records it too); 2 a usage error.

environment: {configs.ENV_PREFIX}SERVING_CONFIG_FILE (the default --config),
{configs.ENV_PREFIX}SERVING_DIR (the default serving dir: the generated config's folder and
where `init` points the model paths).
"""


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m operations.rollout', description=__doc__.split('\n\n')[0],
      epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default=default_config_path(),
                      help='the generated ModelServerConfig text proto (default: %(default)s)')
  parser.add_argument('--reload', default='',
                      help='gRPC HOST:PORT of a server to reload at once (default: none; '
                      'the server polls the file)')
  parser.add_argument('--rest', default='',
                      help='REST URL: canary waits until the version is AVAILABLE (default: none)')
  parser.add_argument('--audit-dir', default='',
                      help='the audit trail (default: audit/ beside --config)')
  commands = parser.add_subparsers(dest='command', required=True)
  step = commands.add_parser('init', help='write --config from the tracked template')
  step.add_argument('--serving-dir', default=os.path.dirname(default_config_path()),
                    help='where the server finds pushed models (default: %(default)s; '
                    'for docker-compose.yml, /models)')
  step.add_argument('--template', default=TEMPLATE, help='(default: %(default)s)')
  step.add_argument('--force', action='store_true',
                    help='rewrite an existing config (its labels are lost)')
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
  step = commands.add_parser('history', help='print the audit trail, oldest first')
  step.add_argument('model_name', nargs='?', help='only this model\'s records')
  step.add_argument('--json', action='store_true', help='one JSON record per line')
  return parser.parse_args(argv)


def _read_monitoring(path: str) -> Dict:
  try:
    with open(path) as f:
      return json.load(f)
  except OSError as e:
    raise RolloutError(f'cannot read --monitoring {path}: {e.strerror}') from None
  except ValueError as e:
    raise RolloutError(f'--monitoring {path} is not JSON ({e}): give the monitoring.json '
                       f'that python -m operations.monitoring wrote') from None


def _history(args) -> str:
  """The records, one line each (or one JSON object each)."""
  records = audit.history(args.audit_dir, args.model_name)
  if args.json:
    return '\n'.join(json.dumps(r, sort_keys=True) for r in records)
  return audit.format_history(records)


def _reload(args) -> None:
  """A recorded reload: the config is written either way; this says whether
  the server applied it at once."""
  model_name = ','.join(m.name for m in read_config(args.config).model_config_list.config)
  with audit.recorded(args.audit_dir, model_name, 'reload', f'reload at {args.reload}',
                      config=os.path.abspath(args.config)):
    reload(args.reload, args.config)


def _run(args) -> Dict:
  if _is_template(args.config):
    raise RolloutError(f'{args.config} is the tracked template, which the rollout never '
                       f'rewrites: use the generated config (init writes {default_config_path()})')
  if args.command == 'init':
    if os.path.exists(args.config) and not args.force:
      return {'kept': args.config}  # It holds the current labels.
    with audit.recorded(args.audit_dir, '*', 'init', f'{args.config} from {args.template}'
                        + (' (--force: labels dropped)' if args.force else ''),
                        config=os.path.abspath(args.config), serving_dir=args.serving_dir):
      init(args.config, args.serving_dir, args.template, force=True)
    return {'written': args.config}
  if not os.path.exists(args.config):
    raise RolloutError(f'no serving config at {args.config}: create it with '
                       f'python -m operations.rollout --config {args.config} init')
  if args.command == 'canary':
    wait = None
    if args.reload:
      def wait(version, _wait=waiter(args.rest, args.model_name) if args.rest else None):
        _reload(args)
        if _wait:
          _wait(version)
    new = canary(args.config, args.model_name, args.version, wait, args.audit_dir)
  elif args.command == 'promote':
    result = _read_monitoring(args.monitoring) if args.monitoring else None
    new = promote(args.config, args.model_name, result, args.force, args.audit_dir,
                  monitoring_source=os.path.abspath(args.monitoring) if args.monitoring else None)
  elif args.command == 'rollback':
    new = rollback(args.config, args.model_name, args.audit_dir)
  else:
    return labels(read_config(args.config), args.model_name)
  if args.reload:
    _reload(args)
  return new


def main(argv=None) -> int:
  import warnings
  warnings.filterwarnings('ignore', category=FutureWarning)  # Google libraries' Python notices.
  args = parse_args(sys.argv[1:] if argv is None else argv)
  args.audit_dir = args.audit_dir or default_audit_dir(args.config)
  from google.protobuf import text_format
  try:
    if args.command == 'history':
      output = _history(args)
    else:
      output = json.dumps(_run(args), sort_keys=True)
  except (RolloutError, audit.AuditError) as e:
    print(f'rollout: {e}', file=sys.stderr)
    return 1
  except text_format.ParseError as e:
    print(f'rollout: {args.config} is not a ModelServerConfig text proto ({e}): '
          f'fix it, or rewrite it with init --force', file=sys.stderr)
    return 1
  except OSError as e:  # E.g. a config in a folder that cannot be written.
    print(f'rollout: {e.filename or args.config}: {e.strerror}', file=sys.stderr)
    return 1
  try:
    print(output)
    sys.stdout.flush()
  except BrokenPipeError:  # `| head`: the reader left; the step itself is done.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  return 0


if __name__ == '__main__':
  sys.exit(main())
