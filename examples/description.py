"""What an example states about its data and its task (the vocabulary of
examples/taxi.py and examples/iris.py). Standard library only: configs and
the clients read it without TensorFlow."""

from typing import NamedTuple, Optional, Union

Value = Union[float, int, str]

BINARY = 'binary_classification'
MULTICLASS = 'multiclass_classification'
REGRESSION = 'regression'
TASKS = (BINARY, MULTICLASS, REGRESSION)
# Every task has a model head, signatures, metrics and monitoring
# (models/task.py, models/signatures.py, pipeline/evaluation.py).
SUPPORTED_TASKS = TASKS


class Feature(NamedTuple):
  """A raw CSV column and how the model uses it."""
  dtype: str  # 'float', 'int' or 'string': the tf.Example kind in the CSV.
  kind: str  # 'numeric', 'log_numeric', 'categorical', 'vocab', 'bucket', 'ignored'
  default: Value  # Fills a missing value, in training and in serving alike.
  num_buckets: Optional[int] = None  # Identity/bucketized categories.
  required: bool = False  # Present in every row (schema presence 1.0).
  # A number whose effect on the label repeats every `period` units also
  # reaches the model as its phase in that period (models/preprocessing.py).
  period: Optional[float] = None
