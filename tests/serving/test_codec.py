"""Wire conversions: TensorProto fast paths agree with TensorFlow's; TF Serving's JSON rules."""

import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from serving import codec, errors

ARRAYS = [
  np.array([[1.5, -2.0], [3.25, 0.0]], dtype=np.float32),
  np.array([1, 2, 3], np.int64),
  np.array([True, False]),
  np.array(7, dtype=np.int32),
  np.array([[b'a', b'\xff'], [b'', b'xyz']], dtype=object),
  np.array([1.0, 2.0], dtype=np.float64),
  np.array([], dtype=np.float32),
]


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
  assert list(codec.from_json('t', ['é', {'b64': 'AP8='}], tf.string)) == [
    'é'.encode(),
    b'\x00\xff',
  ]
  assert codec.from_json('n', [[1, 2]], tf.float32).dtype == np.float32
  with pytest.raises(errors.ServingError, match='expects int64 values but got floats'):
    codec.from_json('n', [1.5], tf.int64)
  with pytest.raises(errors.ServingError, match='out of range for int32'):
    codec.from_json('n', [2**40], tf.int32)
  with pytest.raises(errors.ServingError, match='expects float32 values but got strings'):
    codec.from_json('n', ['1.0'], tf.float32)


def test_json_errors_quote_values_as_json():
  # A user wrote null, NaN and true; Python's None, nan and True would confuse them.
  for value, written in ((None, 'null'), (float('nan'), 'NaN'), ({'a': True}, '{"a": true}')):
    with pytest.raises(errors.ServingError) as raised:
      codec.from_json('t', [value], tf.string)
    assert raised.value.message.endswith(f'but got {written}')
  with pytest.raises(errors.ServingError, match=r'got objects or mixed values \(e\.g\. null\)'):
    codec.from_json('n', [None], tf.float32)
  assert codec.as_json('x' * 100).endswith('...') and len(codec.as_json('x' * 100)) == 80


def test_json_outputs():
  strings = np.array([b'ok', b'\xff'], dtype=object)
  assert codec.to_json('labels', strings) == ['ok', {'b64': '/w=='}]
  assert codec.to_json('image_bytes', strings[:1]) == [{'b64': 'b2s='}]
  assert codec.to_json('p', np.array([[0.5]], np.float32)) == [[0.5]]


def _typed(dtype, values, shape):
  """A TensorProto carrying its values in the typed field (not tensor_content)."""
  proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
  for size in shape:
    proto.tensor_shape.dim.add(size=size)
  field = {
    tf.float32: 'float_val',
    tf.float64: 'double_val',
    tf.int32: 'int_val',
    tf.int8: 'int_val',
    tf.uint8: 'int_val',
    tf.int64: 'int64_val',
    tf.bool: 'bool_val',
    tf.uint32: 'uint32_val',
    tf.uint64: 'uint64_val',
    tf.float16: 'half_val',
    tf.bfloat16: 'half_val',
  }[dtype]
  if field == 'half_val':
    values = np.array(values, dtype.as_numpy_dtype).view(np.uint16).tolist()
  getattr(proto, field).extend(values)
  return proto


@pytest.mark.parametrize(
  'dtype',
  [
    tf.float32,
    tf.float64,
    tf.int32,
    tf.int8,
    tf.uint8,
    tf.int64,
    tf.bool,
    tf.uint32,
    tf.uint64,
    tf.float16,
    tf.bfloat16,
  ],
  ids=lambda d: d.name,
)
@pytest.mark.parametrize(
  'values,shape',
  [([1, 0, 1, 1, 0, 1], [2, 3]), ([1], [4]), ([1], [])],
  ids=['full', 'broadcast', 'scalar'],
)
def test_typed_value_fields_decode_as_tensorflow_does(dtype, values, shape):
  proto = _typed(dtype, values, shape)
  np.testing.assert_array_equal(codec.from_tensor_proto('x', proto), tf.make_ndarray(proto))


@pytest.mark.parametrize(
  'proto,message',
  [
    (_typed(tf.float32, [1.0], [codec.MAX_BROADCAST_ELEMENTS + 1]), 'carries 1'),
    (_typed(tf.int64, [1, 2], [3]), 'needs 3 values but it carries 2'),
    (tf.make_tensor_proto(['a', 'b']), None),
  ],
  ids=['broadcast beyond the bound', 'too few values', 'string, fine'],
)
def test_values_must_fill_the_declared_shape(proto, message):
  if message is None:
    assert codec.from_tensor_proto('x', proto).shape == (2,)
    return
  with pytest.raises(errors.ServingError, match=message):
    codec.from_tensor_proto('x', proto)


@pytest.mark.parametrize('dtype', [tf.float16, tf.bfloat16], ids=lambda d: d.name)
@pytest.mark.parametrize('bits', [70000, -1, 1 << 20])
def test_half_values_outside_16_bits_are_the_clients_error(dtype, bits):
  proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
  proto.tensor_shape.dim.add(size=2)
  proto.half_val.extend([15360, bits])  # 15360: 1.0 in float16
  with pytest.raises(errors.ServingError, match=f'in \\[0, 65535\\]; got {bits}') as raised:
    codec.from_tensor_proto('x', proto)
  assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_request_budget_covers_all_its_inputs():
  budget = codec.Limits(max_elements=10, max_string_bytes=8).budget()
  codec.from_tensor_proto('a', tf.make_tensor_proto(np.zeros(6, np.float32)), budget)
  with pytest.raises(
    errors.ServingError, match='carries 12 tensor elements, more than the limit of 10'
  ):
    codec.from_tensor_proto('b', tf.make_tensor_proto(np.zeros(6, np.float32)), budget)
  budget = codec.Limits(max_elements=10, max_string_bytes=8).budget()
  codec.from_json('s', ['abcd'], tf.string, budget)
  with pytest.raises(errors.ServingError, match='9 bytes of strings, more than the limit of 8'):
    codec.from_json('t', ['abcde'], tf.string, budget)
  with pytest.raises(errors.ServingError, match='tensor elements'):
    codec.from_json('n', [[1] * 11], tf.int32, codec.Limits(max_elements=10).budget())


def test_rows_of_no_elements_count_against_the_element_limit():
  """A 31-byte PredictRequest declaring [2**34, 0] floats held a request thread for minutes,
  running its rows in calls of a few thousand: each row counts as at least one element."""
  proto = tensor_pb2.TensorProto(dtype=tf.float32.as_datatype_enum)
  for size in (2**34, 0):
    proto.tensor_shape.dim.add(size=size)
  with pytest.raises(
    errors.ServingError,
    match=r'carries 17179869184 tensor elements, more than the limit of 16777216 '
    r'\(--max_request_elements\)',
  ):
    codec.from_tensor_proto('x', proto, codec.DEFAULT_LIMITS.budget())
  del proto.tensor_shape.dim[:]
  for size in (8, 0):
    proto.tensor_shape.dim.add(size=size)
  assert codec.from_tensor_proto('x', proto).shape == (8, 0)


def test_text_example_is_what_serving_default_parses():
  example = codec.text_example('é')
  assert example.features.feature['text'].bytes_list.value == ['é'.encode()]
  assert codec.text_example(b'\xff').features.feature['text'].bytes_list.value == [b'\xff']


@pytest.mark.parametrize(
  'value,dtype,message',
  [
    ([[1e39, 0.0]], tf.float32, '1e+39 is out of range for float32'),
    ([-1e39], tf.float32, '-1e+39 is out of range for float32'),
    ([70000], tf.float16, '70000 is out of range for float16'),
    ([1.0, 65520.0], tf.float16, '65520.0 is out of range for float16'),
    ([2**64], tf.int64, '18446744073709551616 is out of range for int64'),
    ([2**63], tf.int64, '9223372036854775808 is out of range for int64'),
    ([10**400], tf.float32, 'is out of range for float32'),
    ([10**400], tf.float64, 'is out of range for float64'),
    ([3.4028235677973366e38], tf.float32, 'is out of range for float32'),  # max + half an ulp
    ([1.0, 10**20], tf.float16, '1e+20 is out of range for float16'),
  ],
)
def test_json_numbers_a_dtype_cannot_hold_are_refused_not_made_infinite(value, dtype, message):
  # TF Serving: "Cannot convert JSON value: 1e39 to float without loss of precision".
  with pytest.raises(errors.ServingError) as raised:
    codec.from_json('x', value, dtype)
  assert raised.value.message.startswith('input "x": ') and message in raised.value.message


def test_json_infinity_and_nan_written_as_such_and_the_largest_floats_still_decode():
  array = codec.from_json('x', [float('inf'), float('-inf'), float('nan'), 3.4e38], tf.float32)
  assert np.isposinf(array[0]) and np.isneginf(array[1]) and np.isnan(array[2])
  assert array[3] == np.float32(3.4e38)
  assert codec.from_json('x', [65504], tf.float16)[0] == 65504


@pytest.mark.parametrize(
  'value,dtype,expected',
  [
    (3.4028235e38, tf.float32, np.finfo(np.float32).max),  # how the server writes FLT_MAX
    (3.4028235677973362e38, tf.float32, np.finfo(np.float32).max),
    (65505, tf.float16, 65504),
    (65504.0001, tf.float16, 65504),
    (65519.99, tf.float16, 65504),
    (-65519.99, tf.float16, -65504),
  ],
)
def test_json_numbers_that_round_to_the_largest_float_are_that_float(value, dtype, expected):
  assert codec.from_json('x', [value], dtype)[0] == expected


@pytest.mark.parametrize(
  'value,dtype', [(2**64, tf.float64), (10**20, tf.float32), (-(10**20), tf.float32)]
)
def test_integers_past_int64_sent_to_a_float_input_are_read_as_floats(value, dtype):
  array = codec.from_json('x', [[1, value]], dtype)
  assert array.dtype == dtype.as_numpy_dtype
  assert array.tolist() == [[1.0, float(dtype.as_numpy_dtype(value))]]


def test_integers_past_int64_mixed_with_other_values_are_still_refused():
  with pytest.raises(errors.ServingError, match='expects float32 values but got objects'):
    codec.from_json('x', [True, 10**20], tf.float32)


def test_float_features_a_float32_cannot_hold_are_refused():
  with pytest.raises(errors.ServingError, match=r'examples\[0\] feature "f": 1e\+39 is out'):
    codec.example_from_json(0, {'f': [1.0, 1e39]})
  with pytest.raises(errors.ServingError, match='out of range for a float feature'):
    codec.example_from_json(0, {'f': [1.0, 3.4028235677973366e38]})
  with pytest.raises(errors.ServingError, match='out of range for a float feature'):
    codec.example_from_json(0, {'f': [1.5, 10**400]})


def test_float_features_that_round_to_the_largest_float32_are_kept():
  example = codec.example_from_json(0, {'f': [3.4028235e38, -3.4028235677973362e38, 0.5, 10**20]})
  values = example.features.feature['f'].float_list.value
  expected = np.array([3.4028235e38, -3.4028235e38, 0.5, 1e20], np.float32)
  np.testing.assert_array_equal(np.array(values, np.float32), expected)


@pytest.mark.parametrize(
  'value,dtype,where',
  [
    ([[1, 2], [3]], tf.float32, 'x[1] has shape [1] where x[0] has [2]'),
    ([[1, 2], 3], tf.int64, 'x[1] has shape [] where x[0] has [2]'),
    ([[[1], [2]], [[1], [2, 3]]], tf.int32, 'x[1][1] has shape [2] where x[0][0] has [1]'),
    ([['a', 'b'], ['c']], tf.string, 'x[1] has shape [1] where x[0] has [2]'),
  ],
)
def test_a_ragged_list_names_its_first_odd_row(value, dtype, where):
  with pytest.raises(errors.ServingError) as raised:
    codec.from_json('x', value, dtype)
  assert f'the list is ragged: {where}' in raised.value.message


@pytest.mark.parametrize('dtype', [np.float32, np.float16, tf.bfloat16.as_numpy_dtype])
def test_narrow_float_outputs_are_written_with_float32s_shortest_digits(dtype):
  rng = np.random.default_rng(0)
  special = [0.0, -0.0, 0.2, 0.1, -1 / 3, 1e-20, 1e-45, 2.5e10, 3e38, 65504.0, np.inf, np.nan]
  with np.errstate(over='ignore'):  # 3e38 is Infinity in float16
    values = np.concatenate(
      [special, rng.standard_normal(500), 10.0 ** rng.uniform(-40, 38, 500)]
    ).astype(dtype)
  written = json.loads(json.dumps(codec.to_json('y', values.reshape(2, -1))))
  # Every value reads back as itself, read as float32 as TF Serving's clients do (float16 and
  # bfloat16 widen to float32 exactly).
  decoded = np.array(written, dtype=np.float64).astype(np.float32).ravel()
  np.testing.assert_array_equal(decoded, values.astype(np.float32))

  def digits(text):
    return len(text.lstrip('-').split('e')[0].replace('.', '').strip('0'))

  # No more digits than numpy writes the float32 value with.
  for value, text in zip(values.astype(np.float32), [repr(x) for row in written for x in row]):
    if np.isfinite(value) and value != 0:
      assert digits(text) <= digits(str(value)), (text, str(value))
  assert json.dumps(codec.to_json('y', np.array([0.2, -0.5], np.float32))) == '[0.2, -0.5]'


@pytest.mark.parametrize('dtype', [np.float16, tf.bfloat16.as_numpy_dtype])
def test_half_float_outputs_read_back_exactly_as_float32_and_float64(dtype):
  values = np.array([65504, -65504, 2048, 0.5, 1.5, 3], dtype)
  if dtype == np.float16:  # 65504 written as float16's shortest digits would be 65500.0
    assert json.dumps(codec.to_json('y', values[:1])) == '[65504.0]'
  written = json.loads(json.dumps(codec.to_json('y', values)))
  assert written == values.astype(np.float64).tolist()
  assert json.dumps(codec.to_json('y', np.array([0.1], dtype))) == json.dumps(
    codec.to_json('y', np.array([0.1], dtype).astype(np.float32))
  )


def test_b64_padding_is_optional_as_in_tf_serving():
  decoded = codec.from_json('t', [{'b64': 'YQ'}, {'b64': 'YWI'}, {'b64': 'YQ=='}], tf.string)
  assert list(decoded) == [b'a', b'ab', b'a']
  for bad in ('YQ=', 'Y', 'Y-_w'):  # wrong padding, a lone character, the URL-safe alphabet
    with pytest.raises(errors.ServingError, match='invalid base64'):
      codec.from_json('t', [{'b64': bad}], tf.string)


@pytest.mark.parametrize('dtype', [tf.string, tf.float32])
@pytest.mark.parametrize('depth', [33, 39, 64])
def test_json_values_nested_deeper_than_a_tensor_may_be_are_refused(dtype, depth):
  # Strings 33 to 64 deep once failed inside numpy (500, a traceback in the log per request).
  leaf = 'a' if dtype == tf.string else 1.0
  value = leaf
  for _ in range(depth):
    value = [value]
  with pytest.raises(errors.ServingError) as raised:
    codec.from_json('text', value, dtype)
  assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert raised.value.message == f'input "text": rank {depth} is more than 32'
  nested = leaf
  for _ in range(32):
    nested = [nested]
  assert codec.from_json('text', nested, dtype).ndim == 32
