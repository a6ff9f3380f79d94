"""Conversions between wire formats (TensorProto, TF Serving's REST JSON) and numpy arrays."""

import base64
import binascii
import math

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2

from serving import errors

_DT_STRING = tf.string.as_datatype_enum
# The fixed-width dtypes whose bytes travel in tensor_content as numpy lays them out.
_NUMERIC = {tf.as_dtype(t).as_datatype_enum: np.dtype(t) for t in (
    np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8,
    np.uint16, np.uint32, np.uint64, np.bool_)}
_NUMERIC_ENUM = {v: k for k, v in _NUMERIC.items()}


def from_tensor_proto(key, proto):
  """Decodes one TensorProto of a PredictRequest.

  Strings and numbers packed in tensor_content (what tf.make_tensor_proto writes) take a fast
  path; everything else goes through tf.make_ndarray.

  Raises:
    ServingError: INVALID_ARGUMENT when the proto is malformed (e.g. its content does not match
      its shape).
  """
  shape = [d.size for d in proto.tensor_shape.dim]
  size = math.prod(shape) if not proto.tensor_shape.unknown_rank else -1
  if proto.dtype == _DT_STRING and len(proto.string_val) == size and size > 0:
    return np.array(list(proto.string_val), dtype=object).reshape(shape)
  numpy_dtype = _NUMERIC.get(proto.dtype)
  if numpy_dtype is not None and proto.tensor_content and \
     len(proto.tensor_content) == size * numpy_dtype.itemsize:
    return np.frombuffer(proto.tensor_content, dtype=numpy_dtype).reshape(shape)
  try:
    return tf.make_ndarray(proto)
  except (ValueError, TypeError, KeyError) as e:
    raise errors.invalid_argument(f'input "{key}": cannot decode its TensorProto: {e}') from None


def to_tensor_proto(array):
  """Encodes an output array (a fast path for strings and common numeric types)."""
  proto = tensor_pb2.TensorProto()
  if array.dtype == object:
    proto.dtype = _DT_STRING
    proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode()
                            for v in array.ravel().tolist())
  elif array.dtype in _NUMERIC_ENUM:
    proto.dtype = _NUMERIC_ENUM[array.dtype]
    proto.tensor_content = np.ascontiguousarray(array).tobytes()
  else:
    return tf.make_tensor_proto(array)
  for size in array.shape:
    proto.tensor_shape.dim.add(size=size)
  return proto


def from_json(key, value, dtype):
  """Converts a JSON value (nested lists) to an array of `dtype`, TF Serving's way.

  Strings become UTF-8 bytes; {"b64": "..."} objects become the bytes they encode.

  Raises:
    ServingError: INVALID_ARGUMENT naming the input when the value is ragged, not of the
      expected kind, or not valid base64 / UTF-8.
  """
  if dtype == tf.string:
    array = np.asarray(_strings(key, value), dtype=object)
    if array.dtype != object or (array.size and not isinstance(array.flat[0], bytes)):
      raise errors.invalid_argument(f'input "{key}": ragged or mixed-type list')
    return array
  try:
    array = np.asarray(value)
  except ValueError as e:
    raise errors.invalid_argument(f'input "{key}": ragged list ({e})') from None
  numpy_dtype = dtype.as_numpy_dtype
  allowed = {'b': 'b', 'i': 'iu', 'u': 'iu', 'f': 'iuf', 'c': 'iufc'}[np.dtype(numpy_dtype).kind]
  if array.size and array.dtype.kind not in allowed:
    raise errors.invalid_argument(
        f'input "{key}" expects {dtype.name} values but got'
        f' {_json_kind(array)} (e.g. {json_safe(array.flat[0])!r})')
  if array.dtype.kind in 'iu' and np.dtype(numpy_dtype).kind in 'iu':
    info = np.iinfo(numpy_dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
      raise errors.invalid_argument(f'input "{key}": value out of range for {dtype.name}')
  return array.astype(numpy_dtype)


def _json_kind(array):
  return {'U': 'strings', 'O': 'objects or mixed values', 'f': 'floats', 'b': 'booleans',
          'i': 'integers'}.get(array.dtype.kind, array.dtype.name)


def json_safe(value):
  return value.item() if hasattr(value, 'item') else value


def _strings(key, value):
  if isinstance(value, list):
    return [_strings(key, v) for v in value]
  if isinstance(value, str):
    try:
      return value.encode('utf-8')
    except UnicodeEncodeError as e:
      raise errors.invalid_argument(f'input "{key}": string is not valid UTF-8 ({e})') from None
  if isinstance(value, dict) and set(value) == {'b64'} and isinstance(value['b64'], str):
    try:
      return base64.b64decode(value['b64'], validate=True)
    except (binascii.Error, ValueError) as e:
      raise errors.invalid_argument(f'input "{key}": invalid base64 in "b64": {e}') from None
  raise errors.invalid_argument(
      f'input "{key}" expects strings (or {{"b64": ...}} objects) but got {value!r:.80}')


def to_json(key, array):
  """Converts an output array to JSON values, TF Serving's way.

  String outputs whose key ends in `_bytes`, and strings that are not UTF-8, become
  {"b64": ...} objects; other strings are text.
  """
  if array.dtype == object or array.dtype.kind == 'S':
    as_b64 = key.endswith('_bytes')

    def convert(v):
      if isinstance(v, list):
        return [convert(x) for x in v]
      if not as_b64:
        try:
          return v.decode('utf-8')
        except UnicodeDecodeError:
          pass
      return {'b64': base64.b64encode(v).decode('ascii')}

    return convert(array.tolist())
  return array.tolist()


def example_from_json(index, obj):
  """Builds a tf.Example from a REST classify example: feature name -> value or list of values.

  Strings become bytes_list, integers int64_list, floats float_list, {"b64": ...} bytes.

  Raises:
    ServingError: INVALID_ARGUMENT naming the example and feature that cannot be converted.
  """
  if not isinstance(obj, dict):
    raise errors.invalid_argument(f'examples[{index}] must be an object of features, got {obj!r:.80}')
  example = example_pb2.Example()
  for name, value in obj.items():
    values = value if isinstance(value, list) else [value]
    feature = example.features.feature[name]
    where = f'examples[{index}] feature "{name}"'
    if not values:
      raise errors.invalid_argument(f'{where} is an empty list (its type is unknown)')
    if all(isinstance(v, (str, dict)) for v in values):
      feature.bytes_list.value.extend(_strings(where, values))
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
      feature.int64_list.value.extend(values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
      feature.float_list.value.extend(values)
    else:
      raise errors.invalid_argument(f'{where} mixes or has unsupported value types: {value!r:.80}')
  return example


def merge_context(context, example):
  """The example with the context's features added (the example's own win), as TF Serving does."""
  if context is None:
    return example
  merged = example_pb2.Example()
  merged.CopyFrom(context)
  for name, feature in example.features.feature.items():
    merged.features.feature[name].CopyFrom(feature)
  return merged


def text_feature(text):
  """A tf.Example with one `text` bytes feature."""
  return example_pb2.Example(features=feature_pb2.Features(feature={
      'text': feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[text]))}))
