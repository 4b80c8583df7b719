"""Taxi-like CSV spans of any size, drawn from the shipped data.

    python -m data.generate_taxi --root /tmp/big --rows 1500000            # span-1
    python -m data.generate_taxi --root /tmp/big --rows 100000 --span 2 \\
        --fare-inflation 0.1 --hour-shift 2 --payment-mix 'Credit Card=0.6'

Each output row is a shipped row (data/taxi/span-1/data.csv) drawn at random,
with multiplicative noise on its amounts and distances and a jitter on its
time and place. A row keeps its own tips, scaled with its fare, so the label
(tips > 20% of the fare) relates to the features as in the real data.

Rows are written in fixed-size chunks, so memory stays flat at any size, and
each chunk draws from its own seed: the same seed gives the same bytes.

Drift knobs (for monitoring): payment mix, fare inflation, hour-of-day shift.
"""

import os

import compat.keras  # noqa: F401  First: Keras 2 for TFX (see compat/keras.py).

import argparse  # pylint: disable=g-import-not-at-top
import csv
import dataclasses
import datetime
import sys
from typing import Dict, Iterator, List, Optional

import numpy as np

from examples.taxi import BIG_TIP_FRACTION  # The label's definition.

SHIPPED_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'taxi', 'span-1', 'data.csv')
CHUNK_ROWS = 20_000  # Part of the seed scheme: changing it changes the output.

# Noise: lognormal sigma on amounts and distances, degrees on coordinates,
# quarter hours on start times (the shipped data is on a 15-minute grid).
AMOUNT_SIGMA = 0.05
DISTANCE_SIGMA = 0.05
DURATION_SIGMA = 0.05
COORD_SIGMA_DEG = 0.002
TIME_JITTER_QUARTERS = 2


@dataclasses.dataclass
class Drift:
  """Changes from the shipped distribution; the defaults change nothing."""
  # Share of rows per payment type, e.g. {'Credit Card': 0.6}; types not named
  # share the rest in their shipped proportions.
  payment_mix: Dict[str, float] = dataclasses.field(default_factory=dict)
  fare_inflation: float = 0.0  # 0.1: every fare (and its tip) 10% higher.
  hour_shift: int = 0  # Trips start this many hours later (day/month follow).


class Source:
  """The shipped rows, column-wise, with numeric columns parsed once."""

  def __init__(self, path: str = SHIPPED_CSV):
    with open(path, newline='') as f:
      reader = csv.reader(f)
      self.header = next(reader)
      rows = list(reader)
    self.col = {name: i for i, name in enumerate(self.header)}
    self.rows = rows
    self.payment = np.array([r[self.col['payment_type']] for r in rows])

    def floats(name):  # NaN marks an empty cell: it stays empty.
      return np.array([float(r[self.col[name]]) if r[self.col[name]] else np.nan
                       for r in rows])

    self.fare, self.tips = floats('fare'), floats('tips')
    self.miles, self.seconds = floats('trip_miles'), floats('trip_seconds')
    self.coords = {n: floats(n) for n in (
        'pickup_latitude', 'pickup_longitude', 'dropoff_latitude', 'dropoff_longitude')}
    self.timestamp = floats('trip_start_timestamp').astype(np.int64)

  def row_weights(self, payment_mix: Dict[str, float]) -> np.ndarray:
    """Probability of drawing each row so payment types follow payment_mix."""
    types, counts = np.unique(self.payment, return_counts=True)
    unknown = set(payment_mix) - set(types)
    if unknown:
      raise ValueError(f'payment types not in the data: {", ".join(sorted(unknown))}: '
                       f'use some of {", ".join(types)}')
    named = sum(payment_mix.values())
    if min(payment_mix.values(), default=0) < 0 or named > 1:
      raise ValueError(f'payment mix shares {payment_mix} must be at least 0 and add up '
                       f'to at most 1')
    rest = counts[[t not in payment_mix for t in types]].sum()
    share = {t: payment_mix.get(t, (1 - named) * c / rest if rest else 0.0)
             for t, c in zip(types, counts)}
    per_row = {t: share[t] / c for t, c in zip(types, counts)}
    weights = np.array([per_row[p] for p in self.payment])
    return weights / weights.sum()


def _amounts(fare: np.ndarray, tips: np.ndarray, factor: np.ndarray):
  """Fare and tips times one factor, in cents, each row keeping its label.

  The label is tips > BIG_TIP_FRACTION * fare. Many tips are exactly 20%;
  rounding would flip them at random, so a flipped row's tip moves to half a
  cent or more on its original side of the line.
  """
  line = BIG_TIP_FRACTION
  was_big = tips > line * fare
  new_fare, new_tips = np.round(fare * factor, 2), np.round(tips * factor, 2)
  is_big = new_tips > line * new_fare
  lost, gained = was_big & ~is_big, ~was_big & is_big
  new_tips[lost] = np.ceil(line * new_fare[lost] * 100 + 0.5) / 100
  new_tips[gained] = np.maximum(np.floor(line * new_fare[gained] * 100 - 0.5) / 100, 0.0)
  return new_fare, new_tips


def _fmt_amount(x: float) -> str:
  return '' if np.isnan(x) else f'{x:.2f}'


def _fmt_coord(x: float) -> str:
  return '' if np.isnan(x) else f'{x:.6f}'


def _fmt_int(x: float) -> str:
  return '' if np.isnan(x) else str(int(round(x)))


def _time_columns(timestamp: int):
  # The shipped data's convention: local time stored as UTC seconds, day 1 = Sunday.
  t = datetime.datetime.fromtimestamp(int(timestamp), datetime.timezone.utc)
  return str(t.hour), str(t.isoweekday() % 7 + 1), str(t.month)


def _chunk(source: Source, rng: np.random.Generator, n: int, weights, drift: Drift
           ) -> List[List[str]]:
  idx = rng.choice(len(source.rows), size=n, p=weights)
  lognormal = lambda sigma: np.exp(rng.normal(0.0, sigma, n))
  # One factor for fare and tips: the tip fraction, hence the label, is kept.
  amount = lognormal(AMOUNT_SIGMA) * (1.0 + drift.fare_inflation)
  fare, tips = _amounts(source.fare[idx], source.tips[idx], amount)
  miles = source.miles[idx] * lognormal(DISTANCE_SIGMA)
  seconds = source.seconds[idx] * lognormal(DURATION_SIGMA)
  coords = {name: values[idx] + rng.normal(0.0, COORD_SIGMA_DEG, n)
            for name, values in source.coords.items()}
  quarters = rng.integers(-TIME_JITTER_QUARTERS, TIME_JITTER_QUARTERS + 1, n)
  timestamp = source.timestamp[idx] + quarters * 900 + drift.hour_shift * 3600

  c = source.col
  out = []
  for j, i in enumerate(idx):
    row = list(source.rows[i])
    row[c['fare']], row[c['tips']] = _fmt_amount(fare[j]), _fmt_amount(tips[j])
    row[c['trip_miles']] = _fmt_amount(miles[j])
    row[c['trip_seconds']] = _fmt_int(seconds[j])
    for name, values in coords.items():
      row[c[name]] = _fmt_coord(values[j])
    row[c['trip_start_timestamp']] = str(int(timestamp[j]))
    (row[c['trip_start_hour']], row[c['trip_start_day']],
     row[c['trip_start_month']]) = _time_columns(timestamp[j])
    out.append(row)
  return out


def generate_rows(rows: int, seed: int = 0, drift: Optional[Drift] = None,
                  source: Optional[Source] = None) -> Iterator[List[List[str]]]:
  """Yields chunks of at most CHUNK_ROWS rows, `rows` in all."""
  drift = drift or Drift()
  source = source or Source()
  weights = source.row_weights(drift.payment_mix)
  for k, start in enumerate(range(0, rows, CHUNK_ROWS)):
    rng = np.random.default_rng([seed, k])  # Each chunk its own stream.
    yield _chunk(source, rng, min(CHUNK_ROWS, rows - start), weights, drift)


def write_span(root: str, span: int, rows: int, seed: int = 0,
               drift: Optional[Drift] = None) -> str:
  """Writes <root>/span-<span>/data.csv; returns its path."""
  path = os.path.join(root, f'span-{span}', 'data.csv')
  source = Source()
  source.row_weights((drift or Drift()).payment_mix)  # A mix it cannot draw fails here, first.
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.partial'  # ExampleGen never sees a half-written span.
  try:
    with open(tmp, 'w', newline='') as f:
      writer = csv.writer(f, lineterminator='\n')
      writer.writerow(source.header)
      for chunk in generate_rows(rows, seed, drift, source):
        writer.writerows(chunk)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):  # Interrupted or failed: no half file left behind.
      os.remove(tmp)
  return path


def parse_payment_mix(text: str) -> Dict[str, float]:
  """'Credit Card=0.6,Cash=0.3' -> {'Credit Card': 0.6, 'Cash': 0.3}."""
  mix = {}
  for part in filter(None, (p.strip() for p in text.split(','))):
    name, _, share = part.rpartition('=')
    try:
      mix[name.strip()] = float(share)
    except ValueError:
      raise ValueError(f'--payment-mix part {part!r} is not TYPE=SHARE: '
                       f"write e.g. 'Credit Card=0.6,Cash=0.3'") from None
    if not name.strip():
      raise ValueError(f'--payment-mix part {part!r} names no payment type: '
                       f"write e.g. 'Credit Card=0.6'")
  return mix


EPILOG = """\
exit status: 0 written (its path printed); 1 a bad value or an unwritable
root (the reason on stderr, one line); 2 a usage error.
Reads no environment variables.
"""


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # One line, not usage plus error.
    self.exit(2, f'{self.prog}: {message} (see --help)\n')


PROG = 'python -m data.generate_taxi'


def parse_args(argv):
  parser = _Parser(prog=PROG, description=__doc__.split('\n')[0], epilog=EPILOG,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--root', required=True, help='writes <root>/span-<N>/data.csv')
  parser.add_argument('--rows', type=int, required=True, help='rows to write, at least 1')
  parser.add_argument('--span', type=int, default=1, help='N (default: %(default)s)')
  parser.add_argument('--seed', type=int, default=0,
                      help='the same seed gives the same bytes (default: %(default)s)')
  parser.add_argument('--payment-mix', default='', help="share per payment type, e.g. "
                      "'Credit Card=0.6'; the others share the rest as shipped "
                      "(default: as shipped)")
  parser.add_argument('--fare-inflation', type=float, default=0.0,
                      help='0.1: every fare 10%% higher (default: %(default)s)')
  parser.add_argument('--hour-shift', type=int, default=0,
                      help='trips start N hours later (default: %(default)s)')
  args = parser.parse_args(argv)
  if args.rows < 1:
    parser.error(f'--rows {args.rows}: a span needs at least 1 row')
  if args.span < 0:
    parser.error(f'--span {args.span}: spans are numbered from 0')
  if args.fare_inflation <= -1:
    parser.error(f'--fare-inflation {args.fare_inflation}: fares would not be positive')
  return args


def main(argv=None):
  args = parse_args(argv)
  try:
    drift = Drift(parse_payment_mix(args.payment_mix), args.fare_inflation, args.hour_shift)
    path = write_span(args.root, args.span, args.rows, args.seed, drift)
  except ValueError as e:  # A drift the data cannot have.
    print(f'{PROG}: {e}', file=sys.stderr)
    return 1
  except OSError as e:
    print(f'{PROG}: cannot write under {args.root}: {e.strerror} ({e.filename})',
          file=sys.stderr)
    return 1
  try:
    print(path, flush=True)
  except BrokenPipeError:  # `| head -0`: the reader left; the span is written.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  return 0


if __name__ == '__main__':
  sys.exit(main())
