"""Clients for the pipeline's model on TF Serving (or the local server).

Build requests from raw feature rows (dicts, JSON lines or CSV rows like the
training data, typed by models/features.py), send them over REST or gRPC,
get back the model's answers, shaped by the example's task
(models/features.py): binary {"probability": p, "class": 0 or 1},
multi-class {"class": name, "probabilities": {name: p, ...}}, regression
{"prediction": x}. A row without a required feature
(schema presence 1.0, models/features.py) or with a cell of the wrong type is
a RowError before anything is sent: the model would only guess. Retries with
exponential backoff on UNAVAILABLE / 503 and connection failures; every other
error is raised as a ServingClientError with the server's message.

    python -m client.predict --rest http://127.0.0.1:8501 --csv data.csv
    python -m client.predict --grpc 127.0.0.1:8500 --jsonl rows.jsonl
"""

import os

import compat.keras  # noqa: F401  First: Keras 2 for TFX (see compat/keras.py).

import argparse
import base64
import csv
import json
import re
import sys
import time
from typing import Dict, Iterable, Iterator, List, Optional

import grpc
import requests

from models import features
from pipeline import configs

Row = Dict[str, object]
# The model the selected example's pipeline pushes (<ENV_PREFIX>MODEL_NAME
# overrides it, as for the pipeline), not always the project's: an iris
# client addressing the taxi model would get 404s.
DEFAULT_MODEL = (os.environ.get(configs.ENV_PREFIX + 'MODEL_NAME') or
                 configs.example_defaults().model_name)


class ServingClientError(Exception):
  """A request the server refused or that kept failing."""

  def __init__(self, message: str, status=None):
    super().__init__(message)
    self.status = status


# ---- rows ------------------------------------------------------------------------

class RowError(ValueError):
  """A row the model cannot take: a cell that is not of its feature's type,
  or a required feature left out."""


_REQUIRED = [name for name, spec in features.RAW_FEATURES.items() if spec.required]
_TYPE_NAMES = {'float': 'a number', 'int': 'an integer', 'string': 'a string'}


def _typed_value(name: str, value):
  """A cell (CSV text or a JSON value) as its feature's type; None if empty."""
  dtype = features.RAW_FEATURES[name].dtype
  try:
    if isinstance(value, str):
      typed = features.parse_value(name, value)
      if dtype == 'int' and typed is not None and float(value) != typed:
        raise ValueError  # '3.7' is not an id or a count.
      return typed
    if dtype == 'string' or isinstance(value, bool):
      raise TypeError  # JSON true is not 1, and 5 is not a payment type.
    if dtype == 'int' and float(value) != int(value):
      raise ValueError
    return float(value) if dtype == 'float' else int(value)
  except (TypeError, ValueError, OverflowError):
    raise RowError(f'column {name}: {value!r} is not {_TYPE_NAMES[dtype]}') from None


def typed_row(row: Row) -> Row:
  """Raw features only, typed per models/features.py; empty cells dropped
  (the model fills a missing optional feature with its default). A missing
  required feature is a RowError: the model would only guess."""
  if not isinstance(row, dict):
    raise RowError(f'expected an object of feature values, got {row!r:.80}')
  typed = {}
  for name, value in row.items():
    if name not in features.RAW_FEATURES or value is None:
      continue  # Label and training-only columns, unknown keys: not model inputs.
    value = _typed_value(name, value)
    if value is not None:
      typed[name] = value
  missing = [name for name in _REQUIRED if name not in typed]
  if missing:
    raise RowError(f'missing required feature{"s" if len(missing) > 1 else ""}'
                   f' {", ".join(missing)}')
  return typed


def _typed_rows(rows: List[Row]) -> List[Row]:
  """typed_row of each; a RowError says which row (0-based, as in the list)."""
  typed = []
  for i, row in enumerate(rows):
    try:
      typed.append(typed_row(row))
    except RowError as e:
      raise RowError(f'row {i}: {e}') from None
  return typed


def rows_from_csv(lines: Iterable[str], source: str = 'CSV') -> Iterator[Row]:
  """CSV with a header, like the training data (its label and training-only
  columns are ignored). A RowError names the line."""
  reader = csv.DictReader(lines)
  for row in reader:
    try:
      yield typed_row(row)
    except RowError as e:
      raise RowError(f'{source} line {reader.line_num}: {e}') from None


def rows_from_jsonl(lines: Iterable[str], source: str = 'JSON lines') -> Iterator[Row]:
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      yield typed_row(json.loads(line))
    except json.JSONDecodeError as e:
      raise RowError(f'{source} line {number}: not JSON ({e.msg})') from None
    except RowError as e:
      raise RowError(f'{source} line {number}: {e}') from None


def to_example(row: Row) -> bytes:
  """A serialized tf.Example of one raw row (what serving_default takes)."""
  return features.to_example(typed_row(row)).SerializeToString()


def _filled(typed: Row) -> Row:
  """Every raw feature of a typed row present: missing optional ones at the
  feature's default (the value the model's Transform would fill), so that
  all rows of a request have the same inputs. Required ones are never
  filled (typed_row refused their absence)."""
  return {name: typed.get(name, spec.default) for name, spec in features.RAW_FEATURES.items()}


def _class_name(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _prediction(outputs) -> dict:
  """One row's answer from the model's outputs (serving_default, predict_raw)."""
  if features.TASK == features.REGRESSION:
    return {'prediction': float(outputs[features.OUTPUT_PREDICTION])}
  if features.TASK == features.MULTICLASS:
    scores = outputs[features.OUTPUT_PROBABILITIES]
    return {'class': _class_name(outputs[features.OUTPUT_CLASS]),
            'probabilities': {n: float(p) for n, p in zip(features.CLASS_NAMES, scores)}}
  return {'probability': float(outputs[features.OUTPUT_PROBABILITY]),
          'class': int(outputs[features.OUTPUT_CLASS])}


def _predictions(rows_of_outputs) -> List[dict]:
  # REST rows of a signature with one output (a regression's) are its value.
  return [_prediction(outputs if isinstance(outputs, dict)
                      else {features.OUTPUT_PREDICTION: outputs})
          for outputs in rows_of_outputs]


def _reason(error: Exception) -> str:
  """The OS's reason ('[Errno 111] Connection refused') out of requests'
  nested connection-pool message, else the exception's own text."""
  match = re.search(r'\[Errno -?\d+\] [^\'")]+', str(error))
  return match.group(0) if match else f'{type(error).__name__}: {error}'


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
      try:
        return response.json()
      except ValueError:
        raise ServingClientError(f'HTTP 200 but not JSON: {response.text[:200]!r}') from None

    def retryable(e):
      return (isinstance(e, ServingClientError) and e.status == 503 or
              isinstance(e, (requests.ConnectionError, requests.Timeout)))

    try:
      return _with_retries(send, self.retries, self.backoff_s, retryable)
    except requests.Timeout:
      raise ServingClientError(f'no answer from {url} within {self.timeout_s} s, in'
                               f' {self.retries + 1} attempts') from None
    except requests.RequestException as e:
      raise ServingClientError(f'cannot reach {url} ({_reason(e)}), in'
                               f' {self.retries + 1} attempts') from None

  def predict(self, rows: List[Row], signature: str = 'predict_raw') -> List[dict]:
    typed = _typed_rows(rows)
    if signature == 'predict_raw':
      instances = [_filled(r) for r in typed]
    else:
      instances = [{'b64': base64.b64encode(to_example(r)).decode()} for r in typed]
    body = self._call(':predict', {'signature_name': signature, 'instances': instances})
    return _predictions(body['predictions'])

  def classify(self, rows: List[Row], signature: str = 'classification') -> List[dict]:
    body = self._call(':classify', {'signature_name': signature,
                                    'examples': _typed_rows(rows)})
    return _from_scores([[score for _, score in result] for result in body['results']],
                        [[label for label, _ in result] for result in body['results']])

  def regress(self, rows: List[Row], signature: str = 'regression') -> List[dict]:
    body = self._call(':regress', {'signature_name': signature,
                                   'examples': _typed_rows(rows)})
    return _from_values(body['results'])

  def status(self) -> dict:
    return self._call('')

  def close(self):
    self.session.close()


def _from_scores(scores, labels) -> List[dict]:
  """classify results as predict's answers: binary, the probability of class
  '1' and the class; multi-class, every class's score and the argmax."""
  out = []
  for row_scores, row_labels in zip(scores, labels):
    row_labels = [_class_name(label) for label in row_labels]
    if features.TASK == features.MULTICLASS:
      probabilities = {n: float(p) for n, p in zip(row_labels, row_scores)}
      out.append({'class': max(probabilities, key=probabilities.get),
                  'probabilities': probabilities})
      continue
    probability = float(row_scores[row_labels.index('1')]) if '1' in row_labels else float(row_scores[-1])
    out.append({'probability': probability, 'class': int(probability > 0.5)})
  return out


def _from_values(values) -> List[dict]:
  """regress results as predict's answers (one number per row)."""
  return [{'prediction': float(value)} for value in values]


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
      attempts = (f' (in {self.retries + 1} attempts)'
                  if e.code() == grpc.StatusCode.UNAVAILABLE else '')
      raise ServingClientError(f'{e.code().name}: {e.details()}{attempts}', e.code()) from None

  def predict(self, rows: List[Row], signature: str = 'serving_default') -> List[dict]:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    self._spec(request.model_spec, signature)
    rows = _typed_rows(rows)
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
    outputs = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
    return _predictions([{name: values[i] for name, values in outputs.items()}
                         for i in range(len(rows))])

  def classify(self, rows: List[Row], signature: str = 'classification') -> List[dict]:
    from tensorflow_serving.apis import classification_pb2
    request = classification_pb2.ClassificationRequest()
    self._spec(request.model_spec, signature)
    for row in _typed_rows(rows):
      request.input.example_list.examples.add().ParseFromString(to_example(row))
    response = self._call(self.stub.Classify, request)
    classifications = response.result.classifications
    return _from_scores([[c.score for c in r.classes] for r in classifications],
                        [[c.label for c in r.classes] for r in classifications])

  def regress(self, rows: List[Row], signature: str = 'regression') -> List[dict]:
    from tensorflow_serving.apis import regression_pb2
    request = regression_pb2.RegressionRequest()
    self._spec(request.model_spec, signature)
    for row in _typed_rows(rows):
      request.input.example_list.examples.add().ParseFromString(to_example(row))
    response = self._call(self.stub.Regress, request)
    return _from_values([r.value for r in response.result.regressions])

  def close(self):
    self.channel.close()


# ---- CLI ---------------------------------------------------------------------------------

EXIT_OK, EXIT_SERVER, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_CLOSED_OUTPUT = 0, 1, 2, 130, 141
# A regression model answers Regress on 'regression' and has no
# classification signature (models/signatures.py).
SIGNATURES = ('predict_raw', 'serving_default') + (
    ('regression',) if features.TASK == features.REGRESSION else ('classification',))

_EPILOG = '''\
Prints one JSON line per row, in input order: {"probability": p, "class": 0 or 1}
for a binary task, {"class": name, "probabilities": {name: p, ...}} for multi-class,
{"prediction": x} for a regression.

exit status:
  0    every row was answered
  1    the server refused a request, or stayed unreachable through --retries
  2    bad usage or input: an argument, an input file that cannot be read, no
       rows, a row with a bad cell or without a required feature (the rows
       before its batch were answered; nothing is sent from there on)
  130  interrupted (Ctrl-C)
  141  standard output closed early (e.g. piped into `head`)

environment:
  HTTP_PROXY, HTTPS_PROXY, NO_PROXY        used for --rest (by requests)
  grpc_proxy, https_proxy, no_grpc_proxy, no_proxy
                                           used for --grpc (by gRPC)
  TF_USE_LEGACY_KERAS                      set to 1 if unset, as in the whole project
  TF_CPP_MIN_LOG_LEVEL                     TensorFlow's log level (--grpc and
                                           serving_default load TensorFlow)
'''


def _rest_url(text: str) -> str:
  if not text.startswith(('http://', 'https://')):
    raise argparse.ArgumentTypeError(f'{text!r} is not an http:// or https:// URL')
  return text


def _at_least(minimum, kind=int):
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if value < minimum:
      raise argparse.ArgumentTypeError(f'{text} is less than {minimum}')
    return value
  return parse


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m client.predict', description=__doc__.split('\n\n')[0],
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument('--rest', type=_rest_url, help='REST base URL, e.g. http://127.0.0.1:8501')
  where.add_argument('--grpc', help='gRPC target, e.g. 127.0.0.1:8500')
  rows = parser.add_mutually_exclusive_group(required=True)
  rows.add_argument('--csv', help='CSV file with a header, like the training data (- for stdin)')
  rows.add_argument('--jsonl', help='JSON lines file, one row object per line (- for stdin)')
  rows.add_argument('--json', help='One row as a JSON object')
  parser.add_argument('--model_name', default=DEFAULT_MODEL, help='(default: %(default)s)')
  parser.add_argument('--version', type=_at_least(1),
                      help='a version number (default: the latest available)')
  parser.add_argument('--label', default='', help='a version label, e.g. stable (default: none)')
  parser.add_argument('--signature', choices=SIGNATURES,
                      help='default: predict_raw for --rest, serving_default for --grpc')
  parser.add_argument('--batch_size', type=_at_least(1), default=64,
                      help='rows per request (default: %(default)s)')
  parser.add_argument('--timeout_s', type=_at_least(0.001, float), default=10.0,
                      help='per request (default: %(default)s)')
  parser.add_argument('--retries', type=_at_least(0), default=3,
                      help='on UNAVAILABLE / HTTP 503 / no connection, with exponential'
                           ' backoff from 0.2 s (default: %(default)s)')
  return parser


def _read_rows(args) -> Iterator[Row]:
  if args.json is not None:
    try:
      yield typed_row(json.loads(args.json))
    except json.JSONDecodeError as e:
      raise RowError(f'--json: not JSON ({e.msg})') from None
    except RowError as e:
      raise RowError(f'--json: {e}') from None
    return
  path = args.csv or args.jsonl
  reader = rows_from_csv if args.csv else rows_from_jsonl
  if path == '-':
    yield from reader(sys.stdin, source='stdin')
    return
  try:
    source = open(path, newline='' if args.csv else None)
  except OSError as e:
    raise RowError(f'cannot read {path}: {e.strerror}') from None
  with source:
    yield from reader(source, source=path)


def _one_line(error: Exception) -> str:
  return ' '.join(str(error).split())  # Server messages (TF's) span lines.


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  kwargs = dict(model_name=args.model_name, version=args.version, label=args.label,
                timeout_s=args.timeout_s, retries=args.retries)
  client = RestClient(args.rest, **kwargs) if args.rest else GrpcClient(args.grpc, **kwargs)
  signature = args.signature or ('predict_raw' if args.rest else 'serving_default')
  call = {'classification': client.classify, 'regression': client.regress}.get(
      signature, client.predict)
  answered = 0

  def send(batch):
    nonlocal answered
    try:
      predictions = call(batch, signature)
    except ServingClientError as e:
      raise ServingClientError(f'rows {answered + 1}-{answered + len(batch)}: {e}') from None
    _print(predictions)
    answered += len(batch)

  batch = []
  try:
    for row in _read_rows(args):
      batch.append(row)
      if len(batch) == args.batch_size:
        send(batch)
        batch = []
    if batch:
      send(batch)
    sys.stdout.flush()  # Here, so that a closed pipe is reported below.
    if not answered:
      path = args.csv or args.jsonl
      raise RowError(f'no rows in {"stdin" if path == "-" else path}')
  except RowError as e:
    return _fail(EXIT_INPUT, e)
  except ServingClientError as e:
    return _fail(EXIT_SERVER, e)
  except BrokenPipeError:
    # The reader is gone (`| head`): later writes, even Python's flush at
    # exit, would fail too, so stdout goes to devnull.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return _fail(EXIT_CLOSED_OUTPUT, f'standard output closed after {answered} predictions')
  except KeyboardInterrupt:
    return _fail(EXIT_INTERRUPTED, f'interrupted after {answered} predictions')
  finally:
    client.close()
  return EXIT_OK


def _fail(code: int, error) -> int:
  print(f'error: {_one_line(error)}', file=sys.stderr)
  return code


def _print(predictions: List[dict]) -> None:
  for prediction in predictions:
    print(json.dumps(prediction))


if __name__ == '__main__':
  sys.exit(main())
