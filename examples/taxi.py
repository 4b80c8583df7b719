"""The taxi example: will a Chicago taxi passenger tip more than 20 %?

Binary classification; the label is a function of two columns (the tip and
the fare), and the tip exists only in training data.
"""

from examples.description import BINARY, Feature

TASK = BINARY

# The label is derived: a 'big tipper' tips more than BIG_TIP_FRACTION of the fare.
BIG_TIP_FRACTION = 0.2

# Order is the CSV header order of the shipped data.
RAW_FEATURES = {
    'pickup_community_area': Feature('int', 'categorical', 0, num_buckets=78),
    # Whole-dollar tips (60 % of card tips) cross BIG_TIP_FRACTION of the fare
    # at every $5 of fare: P(big tipper) drops there (0.8 -> 0.4 at $10), so
    # where a fare sits in its $5 period is a feature.
    'fare': Feature('float', 'log_numeric', 0.0, required=True, period=1 / BIG_TIP_FRACTION),
    'trip_start_month': Feature('int', 'categorical', 1, num_buckets=13, required=True),
    'trip_start_hour': Feature('int', 'categorical', 0, num_buckets=24, required=True),
    'trip_start_day': Feature('int', 'categorical', 1, num_buckets=8, required=True),
    'trip_start_timestamp': Feature('int', 'numeric', 0, required=True),
    'pickup_latitude': Feature('float', 'bucket', 0.0, num_buckets=10),
    'pickup_longitude': Feature('float', 'bucket', 0.0, num_buckets=10),
    'dropoff_latitude': Feature('float', 'bucket', 0.0, num_buckets=10),
    'dropoff_longitude': Feature('float', 'bucket', 0.0, num_buckets=10),
    'trip_miles': Feature('float', 'log_numeric', 0.0, required=True),
    'pickup_census_tract': Feature('int', 'ignored', 0),
    'dropoff_census_tract': Feature('int', 'ignored', 0),
    'payment_type': Feature('string', 'vocab', '', required=True),
    'company': Feature('string', 'vocab', ''),
    'trip_seconds': Feature('int', 'log_numeric', 0),
    'dropoff_community_area': Feature('int', 'categorical', 0, num_buckets=78),
}

# Columns of training data that are not features (absent when serving).
TIPS_KEY = 'tips'
TRAINING_ONLY = [TIPS_KEY]

FARE_KEY = 'fare'
LABEL_KEY = 'big_tipper'
CLASS_NAMES = ['0', '1']  # Class 1: a big tipper.


def LABEL(columns):  # pylint: disable=invalid-name
  """The label from dense columns (tensors): 1 when the tip is more than
  BIG_TIP_FRACTION of the fare."""
  return columns[TIPS_KEY] > BIG_TIP_FRACTION * columns[FARE_KEY]


# Where the data is and how the Evaluator slices it; everything else is
# pipeline/configs.py's default (the project's names and output roots).
CONFIG_DEFAULTS = {
    'data_root': 'data/taxi',
    'slice_features': 'trip_start_hour,payment_type',
}

# What the model card of each pushed version says (pipeline/model_card.py);
# an example without them gets a generic text.
INTENDED_USE = (
    'Predicts whether a Chicago taxi trip ends with a tip above 20 % of the fare, from '
    'what is known when the trip ends (times, places, fare, payment type, company). '
    'A demonstration of the pipeline on public City of Chicago data; not for decisions '
    'about drivers or passengers.')
KNOWN_LIMITS = [
    'Cash tips are rarely recorded in the source data, so cash trips look like non-tippers.',
    'Trained on the spans below only: other years, cities or fare rules are not measured.',
    'A slice with few examples (e.g. rare payment types) has noisy metrics: read its count.',
]
