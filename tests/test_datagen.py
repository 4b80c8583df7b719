"""data/generate_taxi.py: shipped-like rows, deterministic, streamed, with drift knobs."""

import collections
import csv
import datetime
import tracemalloc

import numpy as np
import pytest

import data.generate_taxi
import examples
from data import generate_taxi as generate
from examples import taxi

# data/generate_taxi.py makes the taxi example's data: these tests run when it is selected.
pytestmark = pytest.mark.example('taxi')

ROWS = 12_000
TAXI_COLUMNS = list(taxi.RAW_FEATURES) + examples.label_columns(taxi)
CAST = {'float': float, 'int': lambda text: int(float(text)), 'string': str}


def _read(path):
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    return reader.fieldnames, list(reader)


def _big_tipper(row):
  fare, tips = float(row['fare'] or 0), float(row['tips'] or 0)
  return tips > taxi.BIG_TIP_FRACTION * fare


def _rate(rows, predicate):
  return sum(map(predicate, rows)) / len(rows)


@pytest.fixture(scope='module')
def shipped():
  return _read(generate.SHIPPED_CSV)[1]


@pytest.fixture(scope='module')
def span(tmp_path_factory):
  root = tmp_path_factory.mktemp('gen')
  path = generate.write_span(str(root), 1, ROWS, seed=7)
  return root, path


def test_writes_the_span_layout_the_pipeline_reads(span):
  root, path = span
  assert path == str(root / 'span-1' / 'data.csv')
  assert sorted(p.name for p in (root / 'span-1').iterdir()) == ['data.csv']  # No leftovers.


def test_columns_and_values_are_the_shipped_kind(span, shipped):
  _, path = span
  header, rows = _read(path)
  assert header == TAXI_COLUMNS == list(shipped[0])
  assert len(rows) == ROWS
  for row in rows[:2000]:
    for name, spec in taxi.RAW_FEATURES.items():
      if row[name] != '':
        CAST[spec.dtype](row[name])  # Raises on a wrong type.
      if spec.required:
        assert row[name] != '', name


def test_time_columns_agree_with_the_timestamp(span):
  _, path = span
  for row in _read(path)[1][:2000]:
    t = datetime.datetime.fromtimestamp(int(row['trip_start_timestamp']), datetime.timezone.utc)
    assert (int(row['trip_start_hour']), int(row['trip_start_day']),
            int(row['trip_start_month'])) == (t.hour, t.isoweekday() % 7 + 1, t.month)


def test_joint_distribution_and_label_follow_the_shipped_data(span, shipped):
  _, path = span
  rows = _read(path)[1]
  # The label's relation to payment type: big tippers pay by card.
  for payment in ('Credit Card', 'Cash'):
    mine = [r for r in rows if r['payment_type'] == payment]
    theirs = [r for r in shipped if r['payment_type'] == payment]
    assert abs(len(mine) / len(rows) - len(theirs) / len(shipped)) < 0.02, payment
    assert abs(_rate(mine, _big_tipper) - _rate(theirs, _big_tipper)) < 0.03, payment
  assert abs(_rate(rows, _big_tipper) - _rate(shipped, _big_tipper)) < 0.02
  fares = np.array([float(r['fare']) for r in rows])
  shipped_fares = np.array([float(r['fare']) for r in shipped])
  assert abs(np.median(fares) / np.median(shipped_fares) - 1) < 0.05
  # Noise, not copies.
  assert len({r['fare'] for r in rows}) > 2 * len({r['fare'] for r in shipped})


def test_same_seed_same_bytes_other_seed_other_rows(tmp_path):
  a = generate.write_span(str(tmp_path / 'a'), 1, 3000, seed=1)
  b = generate.write_span(str(tmp_path / 'b'), 1, 3000, seed=1)
  c = generate.write_span(str(tmp_path / 'c'), 1, 3000, seed=2)
  assert open(a, 'rb').read() == open(b, 'rb').read()
  assert open(a, 'rb').read() != open(c, 'rb').read()


def test_memory_stays_flat_as_rows_grow(monkeypatch, tmp_path):
  monkeypatch.setattr(data.generate_taxi, 'CHUNK_ROWS', 500)
  source = generate.Source()

  def peak(rows):
    tracemalloc.start()
    for _ in generate.generate_rows(rows, seed=0, source=source):
      pass
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top

  peak(1000)  # One-time allocations (lazy imports, caches) happen here.
  small, large = peak(2000), peak(20_000)
  # Ten times the rows, about the same memory: no list of rows is kept.
  assert large < 1.5 * small


def test_payment_mix_drift(tmp_path, shipped):
  path = generate.write_span(str(tmp_path), 2, 6000, seed=3,
                             drift=generate.Drift(payment_mix={'Credit Card': 0.7}))
  rows = _read(path)[1]
  shares = collections.Counter(r['payment_type'] for r in rows)
  assert abs(shares['Credit Card'] / len(rows) - 0.7) < 0.02
  # Within a payment type, rows are still drawn as shipped: same tipping.
  card = [r for r in rows if r['payment_type'] == 'Credit Card']
  shipped_card = [r for r in shipped if r['payment_type'] == 'Credit Card']
  assert abs(_rate(card, _big_tipper) - _rate(shipped_card, _big_tipper)) < 0.03


def test_fare_inflation_and_hour_shift_drift():
  base = [r for chunk in generate.generate_rows(4000, seed=5) for r in chunk]
  drift = generate.Drift(fare_inflation=0.25, hour_shift=3)
  drifted = [r for chunk in generate.generate_rows(4000, seed=5, drift=drift) for r in chunk]
  header = TAXI_COLUMNS
  col = {name: i for i, name in enumerate(header)}
  fares = [(float(a[col['fare']]), float(b[col['fare']])) for a, b in zip(base, drifted)]
  ratio = sum(b for _, b in fares) / sum(a for a, _ in fares)
  assert ratio == pytest.approx(1.25, rel=0.01)
  # Tips inflate with fares: the label does not drift with prices.
  as_dict = lambda r: dict(zip(header, r))
  same_label = _rate(list(zip(base, drifted)),
                     lambda p: _big_tipper(as_dict(p[0])) == _big_tipper(as_dict(p[1])))
  assert same_label > 0.995
  for a, b in zip(base, drifted):
    assert int(b[col['trip_start_hour']]) == (int(a[col['trip_start_hour']]) + 3) % 24
    assert int(b[col['trip_start_timestamp']]) - int(a[col['trip_start_timestamp']]) == 3 * 3600


def test_unknown_payment_type_or_shares_over_one_are_refused():
  with pytest.raises(ValueError, match='not in the data'):
    list(generate.generate_rows(10, drift=generate.Drift(payment_mix={'Bitcoin': 0.1})))
  with pytest.raises(ValueError, match='at most 1'):
    list(generate.generate_rows(10, drift=generate.Drift(payment_mix={'Cash': 0.8,
                                                                      'Credit Card': 0.5})))


def test_command_line(tmp_path, capsys):
  assert generate.main(['--root', str(tmp_path), '--rows', '500', '--span', '4',
                        '--payment-mix', 'Credit Card=0.5', '--fare-inflation', '0.1',
                        '--hour-shift', '-2']) == 0
  path = tmp_path / 'span-4' / 'data.csv'
  assert capsys.readouterr().out.strip() == str(path)
  assert len(_read(path)[1]) == 500
  assert generate.parse_payment_mix('Credit Card=0.6, Cash=0.3') == {
      'Credit Card': 0.6, 'Cash': 0.3}
