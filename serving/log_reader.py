"""Reads back the request logs (TFRecord files of PredictionLog) that TF
Serving's logging_config and serving/request_log.py write. Needs no
TensorFlow, so monitoring can start and fail fast."""

import dataclasses
import glob
import struct
from typing import Dict, Iterator, List

import google_crc32c
from google.protobuf import message
from tensorflow_serving.apis import prediction_log_pb2


@dataclasses.dataclass
class LogReadCounts:
  records: int = 0  # PredictionLogs read.
  corrupt: int = 0  # Records skipped: bad checksum, not a PredictionLog, torn tail.
  unusable: int = 0  # Valid logs without features we can read (e.g. other models).
  files: int = 0
  models: Dict[str, int] = dataclasses.field(default_factory=dict)  # Logs per model name.


def _masked_crc(data: bytes) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


def _tfrecords(path: str, counts: LogReadCounts) -> Iterator[bytes]:
  """The records of one TFRecord file, skipping corrupt ones.

  tf.data stops at the first bad record and loses the rest of the file; a
  server killed mid-write or a flipped byte must cost one record, not a day
  of logs. The framing is TFRecord's: length, crc(length), data, crc(data).
  """
  with open(path, 'rb') as f:
    while True:
      header = f.read(12)
      if not header:
        return
      if len(header) < 12:
        counts.corrupt += 1  # Torn tail: the writer stopped mid-record.
        return
      length, length_crc = struct.unpack('<QI', header)
      if _masked_crc(header[:8]) != length_crc:
        counts.corrupt += 1  # The length is garbage: nothing after can be framed.
        return
      data, footer = f.read(length), f.read(4)
      if len(data) < length or len(footer) < 4:
        counts.corrupt += 1
        return
      if _masked_crc(data) != struct.unpack('<I', footer)[0]:
        counts.corrupt += 1  # Damaged payload; the framing still holds.
        continue
      yield data


def log_files(pattern: str) -> List[str]:
  """Files of a glob, or of a logging_config filename_prefix."""
  return sorted(glob.glob(pattern) or glob.glob(pattern + '*'))


def read_logs(pattern: str, counts: LogReadCounts):
  """Every readable PredictionLog in the files of pattern."""
  for path in log_files(pattern):
    counts.files += 1
    for record in _tfrecords(path, counts):
      try:
        prediction_log = prediction_log_pb2.PredictionLog.FromString(record)
      except message.DecodeError:
        counts.corrupt += 1
        continue
      counts.records += 1
      yield prediction_log


def read_prediction_logs(pattern: str) -> Iterator[prediction_log_pb2.PredictionLog]:
  """Every readable PredictionLog in files matching pattern (a glob, or the
  filename_prefix of a logging_config); corrupt records are skipped."""
  return read_logs(pattern, LogReadCounts())
