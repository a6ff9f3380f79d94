"""Wire conversions: TensorProto fast paths agree with TensorFlow's; TF Serving's JSON rules."""

import numpy as np
import pytest
import tensorflow as tf

from serving import codec, errors

ARRAYS = [np.array([[1.5, -2.0], [3.25, 0.0]], dtype=np.float32), np.array([1, 2, 3], np.int64),
          np.array([True, False]), np.array(7, dtype=np.int32),
          np.array([[b'a', b'\xff'], [b'', b'xyz']], dtype=object),
          np.array([1.0, 2.0], dtype=np.float64), np.array([], dtype=np.float32)]


@pytest.mark.parametrize('array', ARRAYS, ids=lambda a: f'{a.dtype}{list(a.shape)}')
def test_tensor_proto_round_trips_agree_with_tensorflow(array):
  np.testing.assert_array_equal(tf.make_ndarray(codec.to_tensor_proto(array)), array)
  decoded = codec.from_tensor_proto('x', tf.make_tensor_proto(array))
  np.testing.assert_array_equal(decoded, array)
  assert decoded.shape == array.shape


def test_a_single_string_value_broadcasts_as_in_tensorflow():
  proto = tf.make_tensor_proto(['a'])
  proto.tensor_shape.dim[0].size = 3
  assert list(codec.from_tensor_proto('x', proto)) == [b'a'] * 3


def test_json_strings_b64_and_numbers():
  assert list(codec.from_json('t', ['é', {'b64': 'AP8='}], tf.string)) == ['é'.encode(),
                                                                          b'\x00\xff']
  assert codec.from_json('n', [[1, 2]], tf.float32).dtype == np.float32
  with pytest.raises(errors.ServingError, match='expects int64 values but got floats'):
    codec.from_json('n', [1.5], tf.int64)
  with pytest.raises(errors.ServingError, match='out of range for int32'):
    codec.from_json('n', [2 ** 40], tf.int32)
  with pytest.raises(errors.ServingError, match='expects float32 values but got strings'):
    codec.from_json('n', ['1.0'], tf.float32)


def test_json_outputs():
  strings = np.array([b'ok', b'\xff'], dtype=object)
  assert codec.to_json('labels', strings) == ['ok', {'b64': '/w=='}]
  assert codec.to_json('image_bytes', strings[:1]) == [{'b64': 'b2s='}]
  assert codec.to_json('p', np.array([[0.5]], np.float32)) == [[0.5]]
