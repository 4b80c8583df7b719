"""The audit trail: every decision that changes what is served, recorded
durably and append-only.

Pushes (pipeline/components/pusher.py), canary labelling, promote and
rollback (operations/rollout.py) and retrain decisions (operations/retrain.py)
each write records into <serving dir>/audit/, beside the model directories
TF Serving reads (it only looks inside a model's own base path).

One immutable JSON file per record, never one growing log: the serving dir
can be a bucket (gs://...), where an object cannot be appended to, only
replaced whole; a new object per record appends without rewriting anything,
and two writers (a Pusher on Kubeflow, an engineer's rollout) never
interleave. Locally a record is written aside, fsynced, then hard-linked to
its name (link fails rather than replace an existing file) and the folder is
fsynced: a record is either whole or absent, and once there stays as it was.
On a bucket the upload of an object is atomic in the same way.

Names start with the UTC time in nanoseconds, so listing sorted is history
order (across machines, as far as their clocks agree). An action writes
`attempted` before it changes anything and then one of `done`, `failed`
(with the error and what was left behind) or `refused` (the step was not
allowed), so a command that fails half-way, or dies, still leaves a record:
an `attempted` with no outcome says the process ended before it could write
one.

    python -m operations.rollout history [MODEL] [--json]
"""

import contextlib
import datetime
import getpass
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from typing import Dict, Iterator, List, Optional

DIR_NAME = 'audit'  # In the serving dir.
ATTEMPTED, DONE, FAILED, REFUSED = 'attempted', 'done', 'failed', 'refused'
# Single-record events: a push that was not needed, a decision taken.
SKIPPED, DECIDED = 'skipped', 'decided'
OUTCOMES = (DONE, FAILED, REFUSED, SKIPPED, DECIDED)
# Set by an image build (Dockerfile) where the code has no .git to ask:
# `<commit>` or `<commit>-dirty`.
GIT_COMMIT_ENV = 'PIPELINE_GIT_COMMIT'
_last_time_ns = 0


class AuditError(Exception):
  """The audit trail cannot be read or written."""


def audit_dir(serving_dir: str) -> str:
  return _join(serving_dir, DIR_NAME)


def _is_remote(path: str) -> bool:
  return '://' in path


def _join(*parts: str) -> str:
  return '/'.join(p.rstrip('/') for p in parts) if _is_remote(parts[0]) else os.path.join(*parts)


# ---- who ran it, where, with which code ----------------------------------------------


def _git(repo: str, *args: str) -> Optional[str]:
  try:
    done = subprocess.run(['git', '-C', repo, *args], capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return done.stdout.strip() if done.returncode == 0 else None


_code_cache: Dict[str, Dict] = {}


def code_version(repo: Optional[str] = None) -> Dict:
  """The git commit of the code running here, and whether its tree differs.

  In a container image there is no .git: then $PIPELINE_GIT_COMMIT if the
  image build set it, else 'unknown' with the reason.
  """
  if repo is None:
    from pipeline import configs
    repo = configs.REPO_ROOT
  if repo not in _code_cache:
    commit = _git(repo, 'rev-parse', 'HEAD')
    if commit:
      status = _git(repo, 'status', '--porcelain', '--untracked-files=no')
      _code_cache[repo] = {'git_commit': commit, 'git_dirty': bool(status),
                           'source': f'git checkout {repo}'}
    elif os.environ.get(GIT_COMMIT_ENV):
      # `<commit>` or `<commit>-dirty`, as the image build wrote it.
      commit, dirty = os.environ[GIT_COMMIT_ENV], None
      if commit not in ('', 'unknown'):
        dirty = commit.endswith('-dirty')
        commit = commit[:-len('-dirty')] if dirty else commit
      _code_cache[repo] = {'git_commit': commit, 'git_dirty': dirty,
                           'source': f'${GIT_COMMIT_ENV} (set when the image was built)'}
    else:
      _code_cache[repo] = {'git_commit': 'unknown', 'git_dirty': None,
                           'source': f'{repo} is not a git checkout and ${GIT_COMMIT_ENV} '
                                     'is not set'}
  return dict(_code_cache[repo])


def _user() -> str:
  try:
    return getpass.getuser()
  except (KeyError, OSError):  # A container's uid with no passwd entry.
    return f'uid {os.getuid()}'


def who_and_where() -> Dict:
  """The process writing a record: OS user, host, command line, code.

  Inside a Kubeflow container the user is the container's (often root) and
  the host the pod: who submitted the run is known to Kubeflow, not here.
  """
  where = {'user': _user(), 'host': socket.gethostname(), 'pid': os.getpid(),
           'command': shlex.join(sys.argv), 'cwd': os.getcwd(), 'code': code_version()}
  pod = {k: os.environ[k] for k in ('KFP_POD_NAME', 'KFP_RUN_ID', 'KFP_RUN_NAME')
         if k in os.environ}
  if pod:
    where['kubeflow'] = pod
  return where


# ---- writing -----------------------------------------------------------------------


def _now_ns() -> int:
  """Strictly increasing within the process: the order of its own records."""
  global _last_time_ns
  _last_time_ns = max(time.time_ns(), _last_time_ns + 1)
  return _last_time_ns


def _write_local(path: str, data: bytes) -> None:
  folder = os.path.dirname(path)
  os.makedirs(folder, exist_ok=True)
  staging = os.path.join(folder, f'.{os.path.basename(path)}.{os.getpid()}.tmp')
  fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
  try:
    os.write(fd, data)
    os.fsync(fd)
  finally:
    os.close(fd)
  try:
    os.link(staging, path)  # Fails if the name exists: nothing is ever replaced.
  finally:
    os.unlink(staging)
  folder_fd = os.open(folder, os.O_RDONLY)
  try:
    os.fsync(folder_fd)  # The new name survives a crash too.
  finally:
    os.close(folder_fd)


def _write_remote(path: str, data: bytes) -> None:
  import tensorflow as tf
  if tf.io.gfile.exists(path):
    raise AuditError(f'audit record {path} exists already: records are never rewritten')
  with tf.io.gfile.GFile(path, 'wb') as f:  # The object appears whole on close.
    f.write(data)


def write(directory: str, model: str, action: str, status: str, summary: str,
          action_id: Optional[str] = None, **details) -> Dict:
  """Appends one record; returns it (with its 'path')."""
  time_ns = _now_ns()
  stamp = datetime.datetime.fromtimestamp(time_ns / 1e9, datetime.timezone.utc)
  record = {'time': stamp.strftime('%Y-%m-%dT%H:%M:%S.%fZ'), 'model': model,
            'action': action, 'status': status, 'summary': summary,
            'action_id': action_id or uuid.uuid4().hex[:12], 'by': who_and_where(), **details}
  name = f'{time_ns:020d}-{model}-{action}-{status}-{uuid.uuid4().hex[:6]}.json'
  path = _join(directory, name)
  data = (json.dumps(record, indent=1, sort_keys=True, default=str) + '\n').encode()
  (_write_remote if _is_remote(path) else _write_local)(path, data)
  return {**record, 'path': path}


class Action:
  """One decision: its `attempted` record now, its outcome later."""

  def __init__(self, directory: str, model: str, action: str, summary: str, **details):
    self.directory, self.model, self.action = directory, model, action
    self.id = uuid.uuid4().hex[:12]
    self.outcome: Optional[Dict] = None
    self.attempted = write(directory, model, action, ATTEMPTED, summary, self.id, **details)

  def finish(self, status: str, summary: str, **details) -> Dict:
    self.outcome = write(self.directory, self.model, self.action, status, summary, self.id,
                         **details)
    return self.outcome


@contextlib.contextmanager
def recorded(directory: str, model: str, action: str, summary: str, refusals=(),
             left_behind=lambda: {}, **details) -> Iterator[Action]:
  """`attempted`, then `done` (unless the body finished it), `refused` for
  one of refusals, `failed` for any other exception, which is re-raised.
  left_behind() says what a failure left (e.g. the labels now in force)."""
  action = Action(directory, model, action, summary, **details)
  try:
    yield action
  except refusals as e:
    action.finish(REFUSED, f'refused: {e}', error=str(e))
    raise
  except BaseException as e:
    try:
      after = left_behind()
    except Exception as reading:  # noqa: BLE001  The failure is the news, not this.
      after = {'unknown': f'{type(reading).__name__}: {reading}'}
    action.finish(FAILED, f'failed: {type(e).__name__}: {e}',
                  error=f'{type(e).__name__}: {e}', left_behind=after)
    raise
  if action.outcome is None:
    action.finish(DONE, summary)


# ---- reading -----------------------------------------------------------------------


def _names(directory: str) -> List[str]:
  if _is_remote(directory):
    import tensorflow as tf
    if not tf.io.gfile.isdir(directory):
      return []
    names = tf.io.gfile.listdir(directory)
  else:
    if not os.path.isdir(directory):
      return []
    names = os.listdir(directory)
  return sorted(n for n in names if n.endswith('.json') and not n.startswith('.'))


def _read(path: str) -> str:
  if _is_remote(path):
    import tensorflow as tf
    with tf.io.gfile.GFile(path) as f:
      return f.read()
  with open(path) as f:
    return f.read()


def history(directory: str, model: Optional[str] = None) -> List[Dict]:
  """Every record, oldest first (of one model if given)."""
  records = []
  for name in _names(directory):
    path = _join(directory, name)
    try:
      record = json.loads(_read(path))
    except ValueError as e:
      raise AuditError(f'audit record {path} is not JSON ({e}): it was altered after it '
                       'was written; restore it from a backup of the serving dir') from None
    if model is None or record.get('model') == model:
      records.append({**record, 'path': path})
  return records


def unfinished(records: List[Dict]) -> List[Dict]:
  """`attempted` records whose action wrote no outcome."""
  ended = {r['action_id'] for r in records if r['status'] in OUTCOMES}
  return [r for r in records if r['status'] == ATTEMPTED and r['action_id'] not in ended]


def _code_text(code: Dict) -> str:
  commit = str(code.get('git_commit', 'unknown'))
  short = commit[:10] if commit != 'unknown' else commit
  return short + ('+dirty' if code.get('git_dirty') else '')


def format_line(record: Dict) -> str:
  by = record.get('by', {})
  return (f'{record["time"]}  {record["model"]}  {record["action"]:<8} {record["status"]:<9} '
          f'{record["summary"]}  [{by.get("user", "?")}@{by.get("host", "?")}, '
          f'code {_code_text(by.get("code", {}))}, id {record["action_id"]}]')


def format_history(records: List[Dict]) -> str:
  lines = [format_line(r) for r in records]
  for r in unfinished(records):
    lines.append(f'WARNING: {r["action"]} {r["action_id"]} ({r["time"]}) has no outcome: '
                 f'the process ended before writing one; check what it left behind')
  return '\n'.join(lines) if lines else '(no audit records)'


def monitoring_summary(result: Dict, source: Optional[str] = None) -> Dict:
  """The part of a monitoring result that justified a decision, and where
  it came from (its file and that file's sha256, to check it later)."""
  import hashlib
  summary = {'source': source, 'model_name': result.get('model_name'),
             'labels': result.get('labels'), 'findings': result.get('findings'),
             'predictions_by_version': {
                 v: {k: p.get(k) for k in ('count', 'mean', 'compared_to', 'shift')}
                 for v, p in (result.get('predictions_by_version') or {}).items()}}
  if source and not _is_remote(source) and os.path.isfile(source):
    with open(source, 'rb') as f:
      summary['sha256'] = hashlib.sha256(f.read()).hexdigest()
  return summary
