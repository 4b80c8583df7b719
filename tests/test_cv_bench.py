"""The cross-validation bench's folds and its 'every seed wins' share."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench'))

import cv_bench  # noqa: E402


def test_the_folds_score_every_row_once():
  folds = cv_bench.fold_rows(1003, 5)
  rows = np.concatenate(folds)
  assert sorted(rows) == list(range(1003))
  assert [len(f) for f in folds] == [201, 201, 201, 200, 200]


def test_the_same_predictions_never_win():
  labels = np.random.default_rng(0).integers(0, 2, 500)
  same = np.tile(labels * 0.8 + 0.1, (3, 1))
  assert cv_bench.every_seed_wins(labels, same, same, rows=100, resamples=50) == 0.0


def test_a_model_right_on_every_row_wins_every_split_and_a_losing_seed_loses_them():
  labels = np.random.default_rng(1).integers(0, 2, 500)
  right, wrong = labels * 0.8 + 0.1, 0.9 - labels * 0.8
  trees = np.tile(np.where(np.arange(500) % 2, right, wrong), (2, 1))  # Half right.
  assert cv_bench.every_seed_wins(labels, np.tile(right, (2, 1)), trees, 100, 50) == 1.0
  one_seed_wrong = np.stack([right, wrong])
  assert cv_bench.every_seed_wins(labels, one_seed_wrong, trees, 100, 50) == 0.0
