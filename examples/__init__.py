"""The shipped examples, each one module describing its data and its task
(features, label, task, class names, training-only columns, config
defaults), and the one switch between them: <ENV_PREFIX>_EXAMPLE (TAXI_EXAMPLE
for this project), 'taxi' when unset.

The models read the selection when they are imported (models/features.py),
so it is an environment variable, read by every process alike: the
pipeline's steps, the server, the client and monitoring.

To adopt a new CSV, edit examples/taxi.py (or add a module here and to
EXAMPLES) rather than anything under models/.
"""

import os

from examples import diabetes, iris, taxi
from pipeline import project

EXAMPLES = {'taxi': taxi, 'iris': iris, 'diabetes': diabetes}
DEFAULT_EXAMPLE = 'taxi'
SWITCH = project.NAMES['env_var_prefix'] + 'EXAMPLE'  # TAXI_EXAMPLE


class UnknownExampleError(ValueError):
  """The switch names no example."""


def selected_name(environ=os.environ) -> str:
  name = environ.get(SWITCH) or DEFAULT_EXAMPLE
  if name not in EXAMPLES:
    raise UnknownExampleError(f'{SWITCH}={name!r} is not an example: set it to one of '
                              f'{", ".join(EXAMPLES)} (examples/__init__.py)')
  return name


def label_columns(example) -> list:
  """Columns only training data has: the training-only ones and the label
  column (none when the label is a function of other columns)."""
  label = [example.LABEL] if isinstance(example.LABEL, str) else []
  return list(example.TRAINING_ONLY) + label


def selected(environ=os.environ):
  """The module describing the selected example."""
  return EXAMPLES[selected_name(environ)]
