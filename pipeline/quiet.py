"""Library chatter kept off a command's console.

Only the named library loggers are quieted, never the root logger: a user's
own logging (in run_fn, say) still reaches its handlers.
"""

import logging
import os
import warnings

LIBRARY_LOGGERS = ('absl', 'apache_beam', 'tensorflow', 'tfx', 'ml_metadata',
                   'tensorflow_transform', 'tensorflow_model_analysis',
                   'tensorflow_data_validation', 'tfx_bsl', 'keras_tuner',
                   'google', 'urllib3', 'h5py', 'py.warnings')


def quiet_libraries(level: int = logging.ERROR) -> None:
  """Library logs below level and deprecation warnings off the console; TF's
  C++ logging too (read when TensorFlow loads, so call this before)."""
  warnings.filterwarnings('ignore')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  for name in LIBRARY_LOGGERS:
    logging.getLogger(name).setLevel(level)
