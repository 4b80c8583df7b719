"""What the schema's Jensen-Shannon thresholds separate: the fare skew and
drift operations.monitoring measures for samples of the training data (noise)
and for a 20% fare inflation (signal), per sample size.

    python bench/monitoring_jsd.py [--samples 5]   # ~30 s of CPU

Training statistics: TFDV statistics of the whole shipped CSV. Clean samples
are drawn from that CSV without replacement; drift compares two disjoint
clean samples. Shifted traffic is data/generate_taxi.py with --fare-inflation 0.2.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import argparse  # pylint: disable=g-import-not-at-top
import csv
import random
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import generate_taxi as generate  # pylint: disable=g-import-not-at-top
from operations import monitoring
from client.predict import typed_row

SHIPPED = generate.SHIPPED_CSV
SCHEMA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'schema', 'schema.pbtxt')


def _fare_jsd(rows, training, schema, previous=None):
  """(skew, drift) of fare for rows; drift None without previous rows."""
  stats = monitoring.serving_statistics(rows, schema, training)
  before = monitoring.serving_statistics(previous, schema, training) if previous else None
  window = monitoring.validate_window(stats, schema, training, before)
  return window['skew']['fare']['value'], (window['drift'].get('fare') or {}).get('value')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--samples', type=int, default=5, help='samples per size')
  parser.add_argument('--sizes', default='500,2000,10000')
  args = parser.parse_args(argv)
  warnings.filterwarnings('ignore')
  with open(SHIPPED, newline='') as f:
    header, *lines = list(csv.reader(f))
  rows = [typed_row(dict(zip(header, line))) for line in lines]
  schema = monitoring.load_schema(SCHEMA)
  training = monitoring.statistics_of(rows, schema)
  fare = next(f for f in schema.feature if f.name == 'fare')
  print(f'fare thresholds: skew {fare.skew_comparator.jensen_shannon_divergence.threshold}, '
        f'drift {fare.drift_comparator.jensen_shannon_divergence.threshold}')
  print('n       clean skew max  clean drift max  inflated skew min  inflated drift min')
  for n in map(int, args.sizes.split(',')):
    clean_skew, clean_drift, shifted_skew, shifted_drift = [], [], [], []
    for k in range(args.samples):
      pair = random.Random(k).sample(rows, min(2 * n, len(rows)))
      skew, drift = _fare_jsd(pair[:n], training, schema, pair[n:] or None)
      clean_skew.append(skew)
      if drift is not None:
        clean_drift.append(drift)
      inflated = [typed_row(dict(zip(header, r))) for chunk in generate.generate_rows(
          n, k, generate.Drift(fare_inflation=0.2)) for r in chunk]
      skew, drift = _fare_jsd(inflated, training, schema, pair[:n])
      shifted_skew.append(skew)
      shifted_drift.append(drift)
    fmt = lambda values, pick: f'{pick(values):.4f}' if values else '  n/a '
    print(f'{n:<7} {fmt(clean_skew, max):>14}  {fmt(clean_drift, max):>15}  '
          f'{fmt(shifted_skew, min):>17}  {fmt(shifted_drift, min):>18}')


if __name__ == '__main__':
  main()
