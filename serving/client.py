"""Clients for the taxi model on TF Serving (or the local server).

Build requests from raw feature rows (dicts, JSON lines or CSV rows like the
training data, typed by models/features.py), send them over REST or gRPC,
get back probabilities and classes. Retries with exponential backoff on
UNAVAILABLE / 503 and connection failures; every other error is raised as a
ServingClientError with the server's message.

    python -m serving.client --rest http://127.0.0.1:8501 --csv data.csv
    python -m serving.client --grpc 127.0.0.1:8500 --jsonl rows.jsonl
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse
import base64
import csv
import json
import sys
import time
from typing import Dict, Iterable, Iterator, List, Optional

import grpc
import requests

from models import features

Row = Dict[str, object]
DEFAULT_MODEL = 'taxi_big_tipper'


class ServingClientError(Exception):
  """A request the server refused or that kept failing."""

  def __init__(self, message: str, status=None):
    super().__init__(message)
    self.status = status


# ---- rows ------------------------------------------------------------------------

def typed_row(row: Row) -> Row:
  """Raw features only, typed per models/features.py; empty cells dropped
  (the model fills a missing feature with its default)."""
  typed = {}
  for name, value in row.items():
    if name not in features.RAW_FEATURES or value is None:
      continue  # Label/tips columns and unknown keys are not model inputs.
    if isinstance(value, str):
      value = features.parse_value(name, value)
    elif features.RAW_FEATURES[name].dtype == 'float':
      value = float(value)
    elif features.RAW_FEATURES[name].dtype == 'int':
      value = int(value)
    if value is not None:
      typed[name] = value
  return typed


def rows_from_csv(lines: Iterable[str]) -> Iterator[Row]:
  """CSV with a header, like the training data (tips is ignored)."""
  for row in csv.DictReader(lines):
    yield typed_row(row)


def rows_from_jsonl(lines: Iterable[str]) -> Iterator[Row]:
  for line in lines:
    if line.strip():
      yield typed_row(json.loads(line))


def to_example(row: Row) -> bytes:
  """A serialized tf.Example of one raw row (what serving_default takes)."""
  from tensorflow.core.example import example_pb2
  example = example_pb2.Example()
  for name, value in typed_row(row).items():
    kind = features.RAW_FEATURES[name].dtype
    feature = example.features.feature[name]
    if kind == 'float':
      feature.float_list.value.append(float(value))
    elif kind == 'int':
      feature.int64_list.value.append(int(value))
    else:
      feature.bytes_list.value.append(str(value).encode('utf-8'))
  return example.SerializeToString()


def _filled(row: Row) -> Row:
  """Every raw feature present, missing ones at the feature's default (the
  same value the model's Transform would fill)."""
  typed = typed_row(row)
  return {name: typed.get(name, spec.default) for name, spec in features.RAW_FEATURES.items()}


def _predictions(probabilities, classes) -> List[dict]:
  return [{'probability': float(p), 'class': int(c)} for p, c in zip(probabilities, classes)]


def _with_retries(send, retries: int, backoff_s: float, retryable):
  for attempt in range(retries + 1):
    try:
      return send()
    except Exception as e:  # Decide per error kind below.
      if attempt == retries or not retryable(e):
        raise
      time.sleep(backoff_s * (2 ** attempt))


# ---- REST --------------------------------------------------------------------------

class RestClient:
  """TF Serving's REST API. signature 'predict_raw' sends raw features as
  JSON; 'serving_default' sends b64 serialized tf.Examples."""

  def __init__(self, url: str, model_name: str = DEFAULT_MODEL, version: Optional[int] = None,
               label: str = '', timeout_s: float = 10.0, retries: int = 3,
               backoff_s: float = 0.2):
    suffix = f'/versions/{version}' if version else (f'/labels/{label}' if label else '')
    self.model_url = f'{url.rstrip("/")}/v1/models/{model_name}{suffix}'
    self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
    self.session = requests.Session()

  def _call(self, method: str, body: Optional[dict] = None) -> dict:
    url = self.model_url + method

    def send():
      if body is None:
        response = self.session.get(url, timeout=self.timeout_s)
      else:
        response = self.session.post(url, json=body, timeout=self.timeout_s)
      if response.status_code != 200:
        try:
          message = response.json()['error']
        except (ValueError, KeyError, TypeError):
          message = response.text[:500]
        raise ServingClientError(f'HTTP {response.status_code}: {message}',
                                 response.status_code)
      return response.json()

    def retryable(e):
      return (isinstance(e, ServingClientError) and e.status == 503 or
              isinstance(e, (requests.ConnectionError, requests.Timeout)))

    return _with_retries(send, self.retries, self.backoff_s, retryable)

  def predict(self, rows: List[Row], signature: str = 'predict_raw') -> List[dict]:
    if signature == 'predict_raw':
      instances = [_filled(r) for r in rows]
    else:
      instances = [{'b64': base64.b64encode(to_example(r)).decode()} for r in rows]
    body = self._call(':predict', {'signature_name': signature, 'instances': instances})
    return _predictions([p['probability'] for p in body['predictions']],
                        [p['class'] for p in body['predictions']])

  def classify(self, rows: List[Row], signature: str = 'classification') -> List[dict]:
    body = self._call(':classify', {'signature_name': signature,
                                    'examples': [typed_row(r) for r in rows]})
    return _from_scores([[score for _, score in result] for result in body['results']],
                        [[label for label, _ in result] for result in body['results']])

  def status(self) -> dict:
    return self._call('')

  def close(self):
    self.session.close()


def _from_scores(scores, labels) -> List[dict]:
  """Probability of class '1' and the argmax class, from classify results."""
  out = []
  for row_scores, row_labels in zip(scores, labels):
    probability = float(row_scores[list(row_labels).index('1')]) if '1' in row_labels else float(row_scores[-1])
    out.append({'probability': probability, 'class': int(probability > 0.5)})
  return out


# ---- gRPC ----------------------------------------------------------------------------

class GrpcClient:
  """TF Serving's PredictionService over gRPC."""

  def __init__(self, target: str, model_name: str = DEFAULT_MODEL, version: Optional[int] = None,
               label: str = '', timeout_s: float = 10.0, retries: int = 3,
               backoff_s: float = 0.2):
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    self.channel = grpc.insecure_channel(target)
    self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.model_name, self.version, self.label = model_name, version, label
    self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s

  def _spec(self, proto, signature: str) -> None:
    proto.name, proto.signature_name = self.model_name, signature
    if self.version:
      proto.version.value = self.version
    elif self.label:
      proto.version_label = self.label

  def _call(self, method, request):
    def retryable(e):
      return isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.UNAVAILABLE

    try:
      return _with_retries(lambda: method(request, timeout=self.timeout_s),
                           self.retries, self.backoff_s, retryable)
    except grpc.RpcError as e:
      raise ServingClientError(f'{e.code().name}: {e.details()}', e.code()) from None

  def predict(self, rows: List[Row], signature: str = 'serving_default') -> List[dict]:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    self._spec(request.model_spec, signature)
    if signature == 'predict_raw':
      filled = [_filled(r) for r in rows]
      for name, spec in features.RAW_FEATURES.items():
        dtype = {'float': tf.float32, 'int': tf.int64, 'string': tf.string}[spec.dtype]
        values = [r[name] for r in filled]
        if spec.dtype == 'string':
          values = [str(v).encode('utf-8') for v in values]
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype, shape=[len(rows)]))
    else:
      request.inputs['examples'].CopyFrom(
          tf.make_tensor_proto([to_example(r) for r in rows], tf.string, shape=[len(rows)]))
    response = self._call(self.stub.Predict, request)
    return _predictions(tf.make_ndarray(response.outputs['probability']),
                        tf.make_ndarray(response.outputs['class']))

  def classify(self, rows: List[Row], signature: str = 'classification') -> List[dict]:
    from tensorflow_serving.apis import classification_pb2
    request = classification_pb2.ClassificationRequest()
    self._spec(request.model_spec, signature)
    for row in rows:
      request.input.example_list.examples.add().ParseFromString(to_example(row))
    response = self._call(self.stub.Classify, request)
    classifications = response.result.classifications
    return _from_scores([[c.score for c in r.classes] for r in classifications],
                        [[c.label for c in r.classes] for r in classifications])

  def close(self):
    self.channel.close()


# ---- CLI ---------------------------------------------------------------------------------

def _read_rows(args) -> Iterator[Row]:
  if args.json:
    yield typed_row(json.loads(args.json))
    return
  source = open(args.csv or args.jsonl) if (args.csv or args.jsonl) not in (None, '-') else sys.stdin
  with source:
    reader = rows_from_csv if args.csv else rows_from_jsonl
    yield from reader(source)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument('--rest', help='REST base URL, e.g. http://127.0.0.1:8501')
  where.add_argument('--grpc', help='gRPC target, e.g. 127.0.0.1:8500')
  rows = parser.add_mutually_exclusive_group(required=True)
  rows.add_argument('--csv', help='CSV file with a header (- for stdin)')
  rows.add_argument('--jsonl', help='JSON lines file, one row per line (- for stdin)')
  rows.add_argument('--json', help='One row as a JSON object')
  parser.add_argument('--model_name', default=DEFAULT_MODEL)
  parser.add_argument('--version', type=int)
  parser.add_argument('--label', default='')
  parser.add_argument('--signature', default='', help='predict_raw (REST default), '
                      'serving_default (gRPC default) or classification')
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--timeout_s', type=float, default=10.0)
  parser.add_argument('--retries', type=int, default=3)
  args = parser.parse_args(argv)

  kwargs = dict(model_name=args.model_name, version=args.version, label=args.label,
                timeout_s=args.timeout_s, retries=args.retries)
  client = RestClient(args.rest, **kwargs) if args.rest else GrpcClient(args.grpc, **kwargs)
  signature = args.signature or ('predict_raw' if args.rest else 'serving_default')
  call = client.classify if signature == 'classification' else client.predict
  batch = []
  try:
    for row in _read_rows(args):
      batch.append(row)
      if len(batch) == args.batch_size:
        _print(call(batch, signature))
        batch = []
    if batch:
      _print(call(batch, signature))
  except ServingClientError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  finally:
    client.close()
  return 0


def _print(predictions: List[dict]) -> None:
  for prediction in predictions:
    print(json.dumps(prediction))


if __name__ == '__main__':
  sys.exit(main())
