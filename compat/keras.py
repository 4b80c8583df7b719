"""Keras 2 for the whole process: the first import of every entry point.

TFX 1.16 builds, trains and loads its models with Keras 2 (the tf-keras
package), while TensorFlow 2.16+ picks Keras 3 unless TF_USE_LEGACY_KERAS is
set when TensorFlow is imported. Setting it here, in one module that each
entry point imports before anything else, keeps every process on Keras 2.
"""

import os
import sys

VARIABLE = 'TF_USE_LEGACY_KERAS'
_TRUE = ('1', 'true', 'True')  # What TensorFlow reads as set.


def use_legacy_keras() -> None:
  value = os.environ.get(VARIABLE)
  if value is None:
    if 'tensorflow' in sys.modules:
      raise ImportError(f'TensorFlow was imported before compat.keras could set {VARIABLE}=1, '
                        'so it uses Keras 3, which TFX 1.16 cannot: import compat.keras '
                        'first in the entry module (or export TF_USE_LEGACY_KERAS=1).')
    os.environ[VARIABLE] = '1'
  elif value not in _TRUE:
    # A user's setting: one line and exit status 2, as for any usage error.
    print(f'error: {VARIABLE}={value} selects Keras 3, which TFX 1.16 cannot use: '
          f'unset it or set it to 1.', file=sys.stderr)
    raise SystemExit(2)


use_legacy_keras()
