"""serving/wire.py writes the PredictResponse bytes the library would."""

import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2

from serving import tensors, wire

OUTPUTS = [
    {'probability': np.array([0.57], np.float32), 'class': np.array([1], np.int64)},
    {'scalar': np.float32(3.0), 'empty': np.zeros((0, 3), np.float32),
     'bool': np.array([[True, False]]), 'int32': np.array([-1], np.int32),
     'big': np.arange(100000, dtype=np.float64).reshape(100, 1000),
     'fortran_order': np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
     'big_endian': np.arange(3, dtype='>i4'), 'half': np.array([1.5], np.float16),
     'strings': np.array([b'a', b'\xff'], object)},
]


def library_response(name, version, signature_name, outputs):
  response = predict_pb2.PredictResponse()
  response.model_spec.name, response.model_spec.signature_name = name, signature_name
  response.model_spec.version.value = version
  tensors.fill_protos(response.outputs, outputs)
  return response


@pytest.mark.parametrize('outputs', OUTPUTS)
@pytest.mark.parametrize('version', [0, 1, 2**40])
def test_predict_response_parses_as_the_library_builds_it(outputs, version):
  serialized = wire.predict_response('m', version, 'serving_default', outputs)
  assert (predict_pb2.PredictResponse.FromString(serialized)
          == library_response('m', version, 'serving_default', outputs))
