"""Request logging like TF Serving's logging_config: sampled requests and
responses written as TFRecord files of tensorflow.serving.PredictionLog."""

import logging
import os
import queue
import random
import threading
import time

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

log = logging.getLogger(__name__)


class RequestLogger:
  """Samples and writes one model's PredictionLogs on a background thread
  (serving never waits for the disk)."""

  def __init__(self, model_name: str, logging_config):
    collector = logging_config.log_collector_config
    if collector.type not in ('', 'tfrecord', 'file'):
      log.info('log_collector_config.type %r: writing TFRecord files', collector.type)
    self.model_name = model_name
    self.sampling_rate = logging_config.sampling_config.sampling_rate
    self.sampling_config = logging_config.sampling_config
    self.path = f'{collector.filename_prefix}-{os.getpid()}-{time.time_ns()}.tfrecord'
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    self._queue: queue.Queue = queue.Queue(maxsize=10000)
    self._thread = threading.Thread(target=self._write_loop, daemon=True,
                                    name=f'request-log-{model_name}')
    self._thread.start()

  def sampled(self) -> bool:
    return self.sampling_rate > 0 and random.random() < self.sampling_rate

  def log(self, prediction_log: prediction_log_pb2.PredictionLog) -> None:
    prediction_log.log_metadata.sampling_config.CopyFrom(self.sampling_config)
    prediction_log.log_metadata.timestamp_secs = int(time.time())
    try:
      self._queue.put_nowait(prediction_log)
    except queue.Full:
      log.warning('Request log queue full: dropping a record')

  def _write_loop(self) -> None:
    with tf.io.TFRecordWriter(self.path) as writer:
      while True:
        record = self._queue.get()
        if record is None:
          return
        writer.write(record.SerializeToString())
        if self._queue.empty():
          writer.flush()  # Readers see records without waiting for close.

  def close(self) -> None:
    self._queue.put(None)
    self._thread.join(timeout=10)
