"""Server-side batching like TF Serving's BasicBatchScheduler.

Requests for the same signature (and the same input shapes past the batch
dimension) queue into an open batch. A batch runs when it is full or its
oldest request waited batch_timeout_micros, as soon as one of
num_batch_threads is free; while all threads are busy the open batch keeps
filling, so batches grow with load. Inputs are concatenated along dim 0 and
outputs split back, so each caller gets exactly its unbatched result.

With enable_large_batch_splitting, as in TF Serving, a request that does not
fit the open batch is cut: its first piece fills the open batch, the rest go
in pieces of max_execution_batch_size rows, and the pieces' outputs are
concatenated back. A big request then never holds the model (nor, here,
Python's GIL while TensorFlow converts its strings) for longer than one
execution batch.
"""

import asyncio
import collections
import logging
import queue
import threading
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from serving import errors, protos

log = logging.getLogger(__name__)

Arrays = Dict[str, np.ndarray]


class Options:
  """BatchingParameters values with TF Serving's defaults."""

  def __init__(self, params: Optional[protos.BatchingParameters] = None):
    params = params or protos.BatchingParameters()

    def get(field, default):
      return getattr(params, field).value if params.HasField(field) else default

    self.max_batch_size = get('max_batch_size', 1000)
    self.batch_timeout_s = get('batch_timeout_micros', 0) / 1e6
    self.num_batch_threads = max(1, get('num_batch_threads', 4))
    self.max_enqueued_batches = get('max_enqueued_batches', 1 << 30)
    self.split_large_batches = get('enable_large_batch_splitting', False)
    # The rows of one model run: TF Serving's default is max_batch_size.
    self.max_execution_batch_size = self.max_batch_size
    if self.split_large_batches:
      self.max_execution_batch_size = max(1, get('max_execution_batch_size', self.max_batch_size))
    ignored = [f.name for f, _ in params.ListFields() if f.name in (
        'allowed_batch_sizes', 'pad_variable_length_inputs', 'thread_pool_name')]
    if params.HasField('max_execution_batch_size') and not self.split_large_batches:
      ignored.append('max_execution_batch_size (without enable_large_batch_splitting)')
    if ignored:
      log.info('Batching parameters without effect here (ignored): %s', ignored)


def batch_size(inputs: Arrays) -> Optional[int]:
  """The common dim 0 of all inputs, or None when they cannot be batched."""
  sizes = {v.shape[0] if v.ndim else None for v in inputs.values()}
  size = sizes.pop() if len(sizes) == 1 else None
  return size if size else None


def batch_key(signature, inputs: Arrays):
  return (id(signature),) + tuple(
      (name, v.dtype.str, v.shape[1:]) for name, v in sorted(inputs.items()))


class _Task:
  __slots__ = ('inputs', 'size', 'future')

  def __init__(self, inputs, size, future):
    self.inputs, self.size, self.future = inputs, size, future


class _Batch:
  def __init__(self, call: Callable[[Arrays], Arrays], timeout_s: float):
    self.call = call
    self.tasks: List[_Task] = []
    self.size = 0
    self.deadline = time.monotonic() + timeout_s


class BatchScheduler:
  """Runs signature calls in batches on num_batch_threads batch threads.

  The threads take batches from a queue and hand the results back with one
  call_soon_threadsafe per batch: an executor future per batch (and its
  asyncio wrapper and callbacks) costs the event loop several times more."""

  def __init__(self, options: Options):
    self._options = options
    self._queue: queue.SimpleQueue = queue.SimpleQueue()
    self._threads = [threading.Thread(target=self._work, name=f'batch_{i}', daemon=True)
                     for i in range(options.num_batch_threads)]
    for thread in self._threads:
      thread.start()
    self._free_threads = options.num_batch_threads
    self._open: Dict[tuple, _Batch] = {}
    self._closed: collections.deque = collections.deque()
    self._timer = None
    self.on_batch: Callable[[int], None] = lambda size: None

  async def run(self, signature, feed: Arrays) -> Arrays:
    """Runs signature.call(feed), possibly as part of a larger batch."""
    loop = asyncio.get_running_loop()
    size = batch_size(feed)
    key = batch_key(signature, feed) if size is not None else None
    if size is not None and self._options.split_large_batches and size > self._room(key):
      return await self._run_in_pieces(loop, signature, feed, key, size)
    future = loop.create_future()
    if size is None or size > self._options.max_batch_size:
      self._add_alone(signature, feed, future)
    else:
      self._add(key, signature, _Task(feed, size, future))
    self._dispatch(loop)
    return await future

  async def _run_in_pieces(self, loop, signature, feed: Arrays, key, size: int) -> Arrays:
    """feed in pieces that fill the open batch, then execution batches;
    the pieces' outputs concatenated (the request whole and alone when its
    outputs are not batched along dim 0)."""
    bounds = _piece_bounds(size, self._room(key), self._options.max_execution_batch_size)
    futures = []
    for start, end in bounds:
      futures.append(loop.create_future())
      piece = {name: value[start:end] for name, value in feed.items()}
      self._add(key, signature, _Task(piece, end - start, futures[-1]))
    self._dispatch(loop)
    results = await asyncio.gather(*futures)
    if not all(_batched_along_dim_0(r, end - start) for r, (start, end) in zip(results, bounds)):
      future = loop.create_future()
      self._add_alone(signature, feed, future)
      self._dispatch(loop)
      return await future
    return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

  def _room(self, key) -> int:
    """Rows the open batch for key still takes (a new batch's when none is open)."""
    batch = self._open.get(key)
    return self._options.max_execution_batch_size - (batch.size if batch else 0)

  def _add_alone(self, signature, feed: Arrays, future) -> None:
    batch = _Batch(signature.call, 0)  # Runs alone, in its turn; size 0: not counted.
    batch.tasks.append(_Task(feed, 0, future))
    self._closed.append(batch)

  def _add(self, key, signature, task: _Task) -> None:
    batch = self._open.get(key)
    if batch is not None and batch.size + task.size > self._options.max_execution_batch_size:
      self._close(key)
      batch = None
    if batch is None:
      if len(self._closed) >= self._options.max_enqueued_batches:
        raise errors.unavailable(
            'The batch scheduling queue to which this task was submitted is full')
      batch = self._open[key] = _Batch(signature.call, self._options.batch_timeout_s)
    batch.tasks.append(task)
    batch.size += task.size
    if batch.size >= self._options.max_execution_batch_size:
      self._close(key)

  def _close(self, key) -> None:
    self._closed.append(self._open.pop(key))

  def _next_batch(self) -> Optional[_Batch]:
    if self._closed:
      return self._closed.popleft()
    now = time.monotonic()
    for key, batch in self._open.items():
      if batch.deadline <= now:
        return self._open.pop(key)
    return None

  def _dispatch(self, loop) -> None:
    while self._free_threads:
      batch = self._next_batch()
      if batch is None:
        break
      self._free_threads -= 1
      self._queue.put((loop, batch))
    self._arm_timer(loop)

  def _arm_timer(self, loop) -> None:
    """Wakes up at the earliest deadline of an open batch."""
    if self._timer is not None or not self._open or not self._free_threads:
      return
    delay = min(b.deadline for b in self._open.values()) - time.monotonic()
    self._timer = loop.call_later(max(delay, 0), self._on_timer, loop)

  def _on_timer(self, loop) -> None:
    self._timer = None
    self._dispatch(loop)

  def _work(self) -> None:
    """A batch thread: runs batches until close()."""
    while True:
      item = self._queue.get()
      if item is None:
        return
      loop, batch = item
      try:
        results = _run_batch(batch)
      except Exception as e:  # A bug, not a bad request: fail this batch only.
        log.exception('Batch failed')
        results = [errors.ServingError(errors.grpc.StatusCode.INTERNAL, str(e))] * len(batch.tasks)
      try:
        loop.call_soon_threadsafe(self._finished, loop, batch, results)
      except RuntimeError:  # The loop is closed: the server is gone.
        return

  def _finished(self, loop, batch: _Batch, results: list) -> None:
    self._free_threads += 1
    if batch.size:
      self.on_batch(batch.size)
    for task, result in zip(batch.tasks, results):
      if task.future.done():
        continue  # The caller went away.
      if isinstance(result, BaseException):
        task.future.set_exception(result)
      else:
        task.future.set_result(result)
    self._dispatch(loop)

  def close(self) -> None:
    for _ in self._threads:
      self._queue.put(None)


def _run_batch(batch: _Batch) -> list:
  """One call for the whole batch; per-task results (or errors)."""
  tasks = batch.tasks
  if len(tasks) == 1:
    return [_call_one(batch.call, tasks[0].inputs)]
  names = tasks[0].inputs.keys()
  merged = {n: np.concatenate([t.inputs[n] for t in tasks]) for n in names}
  try:
    outputs = batch.call(merged)
  except errors.ServingError:
    # One bad request must not fail its neighbours: rerun them one by one.
    return [_call_one(batch.call, t.inputs) for t in tasks]
  if not _batched_along_dim_0(outputs, batch.size):
    # Outputs not batched along dim 0 cannot be split: run unbatched.
    return [_call_one(batch.call, t.inputs) for t in tasks]
  offsets = np.cumsum([t.size for t in tasks])[:-1]
  split = {n: np.split(v, offsets) for n, v in outputs.items()}
  return [{n: parts[i] for n, parts in split.items()} for i in range(len(tasks))]


def _piece_bounds(size: int, room: int, capacity: int) -> List[tuple]:
  """(start, end) of each piece: the first fills `room`, the rest `capacity`."""
  bounds, start, end = [], 0, min(size, room)
  while start < size:
    bounds.append((start, end))
    start, end = end, min(size, end + capacity)
  return bounds


def _batched_along_dim_0(outputs: Arrays, rows: int) -> bool:
  return all(v.ndim and v.shape[0] == rows for v in outputs.values())


def _call_one(call, inputs):
  try:
    return call(inputs)
  except errors.ServingError as e:
    return e
