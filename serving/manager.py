"""Model versions as TF Serving manages them.

Each model's base path is polled; the version policy picks the aspired
versions (numeric directory names only), new ones are loaded (and warmed up)
before old ones are unloaded (availability preserving), and a version leaves
memory only once its in-flight requests are done. A version that fails to
load is logged, reported in the status and never served.
"""

import logging
import os
import re
import threading
import time
from typing import Callable, Dict, List, Optional

import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import errors
from serving.servable import has_saved_model

log = logging.getLogger(__name__)
State = get_model_status_pb2.ModelVersionStatus.State
# Plain ints for the per-request path (State.X is a Python-level lookup).
AVAILABLE, UNLOADING = State.AVAILABLE, State.UNLOADING

_VERSION_DIR = re.compile(r'^\d+$')


class VersionRecord:
  """The life of one version: LOADING -> AVAILABLE -> UNLOADING -> END."""

  def __init__(self, version: int):
    self.version = version
    self.state = State.START
    self.error: Optional[errors.ServingError] = None
    self.servable = None
    self.in_flight = 0
    self.failures = 0
    self.last_failure = 0.0


class Model:
  def __init__(self, config):
    self.config = config
    self.versions: Dict[int, VersionRecord] = {}
    self.labels: Dict[str, int] = {}
    self.aspired: List[int] = []  # As of the last poll.

  def available(self) -> List[int]:
    return sorted(v for v, r in self.versions.items() if r.state == AVAILABLE)

  def latest(self) -> Optional[int]:
    return max((v for v, r in self.versions.items() if r.state == AVAILABLE), default=None)


def list_versions(base_path: str) -> Dict[int, str]:
  """Version number -> directory name of the numeric child directories.
  The number is read from the name, and the directory loaded as named on
  disk: `00000123` is version 123 (TF Serving). Anything else (e.g.
  '.123.incomplete') is skipped as TF Serving does, and so is a directory
  without a saved_model.pb yet."""
  try:
    children = tf.io.gfile.listdir(base_path)
  except tf.errors.NotFoundError:
    return {}
  versions = {}
  for child in sorted(c.rstrip('/') for c in children):
    if _VERSION_DIR.match(child) and has_saved_model(os.path.join(base_path, child)):
      versions[int(child)] = child
  return versions


def _close(servable) -> None:
  """Frees an unloaded version's session now, not at some later collection
  (outside the manager's lock: requests must not wait for it)."""
  close = getattr(servable, 'close', None)
  if close is not None:
    close()


def aspired_versions(policy, found: List[int]) -> List[int]:
  """ServableVersionPolicy: latest N (default 1), all, or specific."""
  choice = policy.WhichOneof('policy_choice')
  if choice == 'all':
    return sorted(found)
  if choice == 'specific':
    return sorted(set(found) & set(policy.specific.versions))
  num = policy.latest.num_versions if choice == 'latest' else 1
  return sorted(found)[-max(num, 1):]


class ModelManager:
  """Loads, serves and unloads the versions of the configured models."""

  def __init__(self, load_fn: Callable[[str, int, str], object],
               max_num_load_retries: int = 5, load_retry_interval_s: float = 60.0,
               allow_labels_for_unavailable: bool = False):
    self._load_fn = load_fn
    self._max_retries = max_num_load_retries
    self._retry_interval_s = load_retry_interval_s
    self._allow_unavailable_labels = allow_labels_for_unavailable
    self._models: Dict[str, Model] = {}
    self._lock = threading.Lock()  # Guards records' states and in-flight counts.
    self._reload_lock = threading.RLock()  # One poll / reload at a time.
    self._stop = threading.Event()
    self._poller: Optional[threading.Thread] = None

  # ---- configuration -------------------------------------------------------

  def apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
    """Serves exactly the models of config (as ReloadConfig): loads new
    models first, then updates version labels."""
    with self._reload_lock:
      configs = {c.name: c for c in config.model_config_list.config}
      with self._lock:
        for name in list(self._models):
          if name not in configs:
            self._models[name].config = None  # Unload all its versions.
        for name, model_config in configs.items():
          if name in self._models:
            self._models[name].config = model_config
          else:
            self._models[name] = Model(model_config)
      self.poll_once()
      with self._lock:
        for name in [n for n, m in self._models.items() if m.config is None and not m.versions]:
          del self._models[name]
      for name, model_config in configs.items():
        self._set_labels(self._models[name], dict(model_config.version_labels))

  def _set_labels(self, model: Model, labels: Dict[str, int]) -> None:
    available = set(model.available())
    for label, version in labels.items():
      is_new = label not in model.labels
      if version not in available and not (self._allow_unavailable_labels and is_new):
        raise errors.failed_precondition(
            f'Request to assign label to version {version} of model'
            f' {model.config.name}, which is not currently available for inference')
    model.labels = labels

  # ---- polling -------------------------------------------------------------

  def start_polling(self, interval_s: float) -> None:
    """Polls every interval_s; 0 polls only at start, < 0 never (TF Serving)."""
    if interval_s <= 0:
      return
    self._poller = threading.Thread(target=self._poll_loop, args=(interval_s,),
                                    name='version-poller', daemon=True)
    self._poller.start()

  def _poll_loop(self, interval_s: float) -> None:
    while not self._stop.wait(interval_s):
      try:
        self.poll_once()
      except Exception:  # Never let one bad poll stop serving.
        log.exception('Polling the model base paths failed')

  def stop(self) -> None:
    self._stop.set()
    if self._poller:
      self._poller.join(timeout=10)

  def poll_once(self) -> None:
    with self._reload_lock:
      for model in list(self._models.values()):
        self._reconcile(model)

  def _reconcile(self, model: Model) -> None:
    config = model.config
    aspired, found = [], {}
    if config is not None:
      found = list_versions(config.base_path)
      if not found:
        log.warning('No versions of servable %s found under base path %s',
                    config.name, config.base_path)
      aspired = aspired_versions(config.model_version_policy, list(found))
    model.aspired = aspired
    for version in aspired:
      self._maybe_load(model, version, os.path.join(config.base_path, found[version]))
    # Availability preserving: unload what is no longer aspired only once
    # something aspired is available (or the model is being removed).
    keep_old = config is not None and not set(aspired) & set(model.available())
    for version, record in list(model.versions.items()):
      if version not in aspired and record.state == State.AVAILABLE and not keep_old:
        self._unload(model, record)
      elif version not in aspired and record.state == State.END and record.servable is None:
        record.failures = 0  # Gone from disk: a later push may retry it.

  def _maybe_load(self, model: Model, version: int, path: str) -> None:
    record = model.versions.get(version)
    if record is not None:
      if record.state in (State.AVAILABLE, State.LOADING):
        return
      if record.error is not None and not self._should_retry(record):
        return  # Failed before: wait for the retry interval, up to the limit.
    record = record or VersionRecord(version)
    with self._lock:
      record.state, record.error = State.LOADING, None
      model.versions[version] = record
    log.info('Loading servable version {name: %s version: %d}', model.config.name, version)
    try:
      servable = self._load_fn(model.config.name, version, path)
    except Exception as e:  # Whatever breaks a load, the old version stays.
      error = e if isinstance(e, errors.ServingError) else errors.ServingError(
          errors.grpc.StatusCode.UNKNOWN, f'{type(e).__name__}: {e}')
      log.error('Loading servable version {name: %s version: %d} failed: %s',
                model.config.name, version, error.message)
      with self._lock:
        record.state, record.error = State.END, error
        record.failures += 1
        record.last_failure = time.monotonic()
      return
    with self._lock:
      record.servable, record.state = servable, State.AVAILABLE
    log.info('Successfully loaded servable version {name: %s version: %d}',
             model.config.name, version)

  def _should_retry(self, record: VersionRecord) -> bool:
    return (record.failures <= self._max_retries and
            time.monotonic() - record.last_failure >= self._retry_interval_s)

  def _unload(self, model: Model, record: VersionRecord) -> None:
    unloaded = None
    with self._lock:
      record.state = State.UNLOADING
      if record.in_flight == 0:
        unloaded = self._finish_unload(record)
    _close(unloaded)
    log.info('Unloading servable version %d (after in-flight requests finish)', record.version)

  @staticmethod
  def _finish_unload(record: VersionRecord):
    """Marks the version gone; returns its servable, to close outside the lock."""
    servable, record.servable, record.state = record.servable, None, State.END
    return servable

  # ---- serving ---------------------------------------------------------------

  def hold(self, name: str, version: Optional[int] = None, label: str = '') -> VersionRecord:
    """The version serving one request, held until release(): unloading waits for it."""
    with self._lock:
      record = self._resolve(name, version, label)
      record.in_flight += 1
    return record

  def peek(self, name: str, version: Optional[int] = None, label: str = ''):
    """The servable a request would be served by now, not held (REST reads
    its signatures to decode a body before the request holds a version)."""
    with self._lock:
      return self._resolve(name, version, label).servable

  def release(self, record: VersionRecord) -> None:
    unloaded = None
    with self._lock:
      record.in_flight -= 1
      if record.state == UNLOADING and record.in_flight == 0:
        unloaded = self._finish_unload(record)
    if unloaded is not None:
      _close(unloaded)

  def _resolve(self, name: str, version: Optional[int], label: str) -> VersionRecord:
    model = self._models.get(name)
    if label:
      if model is None or label not in model.labels:
        raise errors.invalid_argument(f'Unrecognized servable version label: {label}')
      version = model.labels[label]
    if model is not None:
      record = model.versions.get(version if version is not None else model.latest())
      if record is not None and record.state == AVAILABLE:
        return record
    request = f'Specific({name}, {version})' if version is not None else f'Latest({name})'
    raise errors.not_found(f'Servable not found for request: {request}')

  def version_records(self, name: str, version: Optional[int] = None,
                      label: str = '') -> List[VersionRecord]:
    """Records for GetModelStatus, newest first."""
    with self._lock:
      model = self._models.get(name)
      if model is None or not model.versions:
        raise errors.not_found(f'Could not find any versions of model {name}')
      if label:
        if label not in model.labels:
          raise errors.invalid_argument(f'Unrecognized servable version label: {label}')
        version = model.labels[label]
      if version is not None:
        if version not in model.versions:
          raise errors.not_found(f'Could not find version {version} of model {name}')
        return [model.versions[version]]
      return [model.versions[v] for v in sorted(model.versions, reverse=True)]

  def startup_failures(self) -> Optional[List[str]]:
    """At start-up, as TF Serving's ServerCore waits for every configured
    model: None while some model still has no available version but may get
    one (versions still loading or to be retried, or none on disk yet: TF
    Serving waits for them); else, in TF Serving's words, each version of a
    model that will not become available (all its aspired versions failed
    all their retries)."""
    failures, waiting = [], False
    with self._lock:
      for name, model in self._models.items():
        if model.config is None or model.available():
          continue
        records = [model.versions.get(v) for v in model.aspired]
        if not records or any(r is None or r.error is None or r.failures <= self._max_retries
                              for r in records):
          waiting = True
          continue
        failures += [f'{{{{name: {name} version: {r.version}}} due to error:'
                     f' {r.error.code.name}: {r.error.message}}}' for r in records]
    return None if waiting else failures

  def wait_for_configured_models(self, poll_interval_s: float) -> None:
    """Blocks until every configured model has an available version (polling
    for versions meanwhile), as TF Serving's start-up and ReloadConfig do;
    UNKNOWN "N model(s) did not become available" when some never will."""
    while True:
      failures = self.startup_failures()
      if failures is not None:
        break
      time.sleep(poll_interval_s)
      self.poll_once()
    if failures:
      # TF Serving's exact text (load_servables_fast.cc), trailing ", " included.
      raise errors.ServingError(
          errors.grpc.StatusCode.UNKNOWN,
          f'{len(failures)} model(s) did not become available: {{{"".join(f + ", " for f in failures)}}}')
