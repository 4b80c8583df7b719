"""The quality bench's paired interval of ours minus the trees."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench'))

import quality_bench  # noqa: E402


def _labels_and_a_good_model(rows=400, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, rows)
  good = np.clip(labels + rng.normal(0, 0.3, rows), 0, 1)
  return labels, good


def test_the_same_predictions_differ_by_nothing_in_any_resampling():
  labels, good = _labels_and_a_good_model()
  difference = quality_bench.paired_difference(labels, [good, good], [good, good], resamples=50)
  assert difference['accuracy'] == 0 and difference['accuracy_95'] == [0, 0]
  assert difference['auc'] == 0 and difference['auc_95'] == [0, 0]


def test_a_model_better_on_every_row_has_an_interval_above_zero():
  labels, good = _labels_and_a_good_model()
  coin = np.full(len(labels), 0.4) + 0.2 * (np.arange(len(labels)) % 2)  # Right on half.
  difference = quality_bench.paired_difference(labels, [good], [coin], resamples=200)
  assert difference['accuracy'] > 0.3
  low, high = difference['accuracy_95']
  assert 0 < low < difference['accuracy'] < high
  assert difference['auc_95'][0] > 0
  text = quality_bench.difference_text('test', difference)
  assert text.startswith('ours minus trees on `test`: accuracy +')


def test_the_seeds_are_averaged_before_the_difference():
  labels, good = _labels_and_a_good_model()
  wrong = 1 - good  # Wrong wherever good is right.
  difference = quality_bench.paired_difference(labels, [good, wrong], [good, good], resamples=20)
  alone_right = ((good > 0.5) == labels).mean()
  alone_wrong = ((wrong > 0.5) == labels).mean()
  assert np.isclose(difference['accuracy'], (alone_right + alone_wrong) / 2 - alone_right)
