"""Conversions between wire formats (TensorProto, TF Serving's REST JSON) and numpy arrays.

Decoding is bounded: a TensorProto's declared shape is checked against the values it carries,
and every request draws on a `Budget` of elements and string bytes, before anything the size of
the declared shape is allocated. A 20-byte message declaring 2**31 strings is refused at once.
"""

import base64
import binascii
import dataclasses
import json
import math

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import errors
from tfxlm import contract

# A TensorProto carrying one value for a larger shape broadcasts it (TensorFlow's rule), but only
# up to this many elements: beyond, the sender must send the values it means.
MAX_BROADCAST_ELEMENTS = 1024
MAX_RANK = 32

_DT_STRING = tf.string.as_datatype_enum
# The fixed-width dtypes whose bytes travel in tensor_content as numpy lays them out.
_NUMERIC = {
  tf.as_dtype(t).as_datatype_enum: np.dtype(t)
  for t in (
    np.float16,
    np.float32,
    np.float64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
  )
}
_NUMERIC[tf.bfloat16.as_datatype_enum] = np.dtype(tf.bfloat16.as_numpy_dtype)
_NUMERIC_ENUM = {v: k for k, v in _NUMERIC.items()}
# Where each dtype's values travel when tensor_content is empty, and the numpy type they have
# there (half floats travel as their 16 bits in an int32 field).
_VALUE_FIELD = {
  tf.float32: ('float_val', np.float32),
  tf.float64: ('double_val', np.float64),
  tf.int8: ('int_val', np.int32),
  tf.int16: ('int_val', np.int32),
  tf.int32: ('int_val', np.int32),
  tf.uint8: ('int_val', np.int32),
  tf.uint16: ('int_val', np.int32),
  tf.int64: ('int64_val', np.int64),
  tf.uint32: ('uint32_val', np.uint32),
  tf.uint64: ('uint64_val', np.uint64),
  tf.bool: ('bool_val', np.bool_),
  tf.float16: ('half_val', np.int32),
  tf.bfloat16: ('half_val', np.int32),
}
_VALUE_FIELD = {dtype.as_datatype_enum: field for dtype, field in _VALUE_FIELD.items()}


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may carry, summed over its input tensors.

  Attributes:
    max_elements: tensor elements (a [4, 16] tensor is 64).
    max_string_bytes: bytes of all string elements (a broadcast string counts once per element).
  """

  max_elements: int = 1 << 24
  max_string_bytes: int = 64 << 20

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if getattr(self, field.name) < 1:
        raise ValueError(f'{field.name} must be positive, got {getattr(self, field.name)}')

  def budget(self) -> 'Budget':
    """A fresh budget for one request."""
    return Budget(self)


class Budget:
  """Counts the elements and string bytes one request has decoded so far against its Limits."""

  def __init__(self, limits: Limits):
    self._limits = limits
    self.elements = 0
    self.string_bytes = 0

  def charge(self, key: str, elements: int, string_bytes: int = 0) -> None:
    """Adds one input's elements and string bytes.

    Raises:
      ServingError: INVALID_ARGUMENT naming the input when the request goes over a limit.
    """
    self.elements += elements
    self.string_bytes += string_bytes
    if self.elements > self._limits.max_elements:
      raise errors.invalid_argument(
        f'input "{key}": the request carries {self.elements} tensor elements, more than the'
        f' limit of {self._limits.max_elements} (--max_request_elements); send fewer rows'
      )
    if self.string_bytes > self._limits.max_string_bytes:
      raise errors.invalid_argument(
        f'input "{key}": the request carries {self.string_bytes} bytes of strings, more than'
        f' the limit of {self._limits.max_string_bytes} (--max_request_string_bytes)'
      )


DEFAULT_LIMITS = Limits()


def _declared_shape(key, proto):
  if proto.tensor_shape.unknown_rank:
    raise errors.invalid_argument(
      f'input "{key}": its TensorProto has an unknown rank; give the shape'
    )
  shape = [d.size for d in proto.tensor_shape.dim]
  if len(shape) > MAX_RANK:
    raise errors.invalid_argument(f'input "{key}": rank {len(shape)} is more than {MAX_RANK}')
  if any(size < 0 for size in shape):
    raise errors.invalid_argument(f'input "{key}": shape {shape} has a negative dimension')
  return shape


def _check_count(key, carried, shape, size):
  """The values a proto carries must fill its shape, or be one value broadcast a little."""
  if carried == size or (carried == 1 and size <= MAX_BROADCAST_ELEMENTS):
    return
  raise errors.invalid_argument(
    f'input "{key}": cannot decode its TensorProto: shape {shape} needs {size} values but it'
    f' carries {carried} (one value broadcasts to at most {MAX_BROADCAST_ELEMENTS})'
  )


def from_tensor_proto(
  key: str, proto: tensor_pb2.TensorProto, budget: Budget | None = None
) -> np.ndarray:
  """Decodes one TensorProto of a PredictRequest, never allocating more than it carries.

  Args:
    key: the input's name, for messages.
    proto: the TensorProto.
    budget: the request's Budget (a fresh default one if None).

  Raises:
    ServingError: INVALID_ARGUMENT when the proto is malformed (its values do not fill its
      shape, its dtype is not one a signature can take) or the request goes over a limit.
  """
  budget = budget or DEFAULT_LIMITS.budget()
  shape = _declared_shape(key, proto)
  size = math.prod(shape)
  # Rows of no elements ([N, 0]) are rows still: the request runs them in calls of so many rows.
  rows = shape[0] if shape and not size else 0
  if rows:
    budget.charge(key, rows)
  if proto.dtype == _DT_STRING:
    values = proto.string_val
    _check_count(key, len(values), shape, size)
    if len(values) == size:
      budget.charge(key, size, sum(len(v) for v in values))
      array = np.empty(size, dtype=object)
      array[:] = list(values)
    else:
      budget.charge(key, size, len(values[0]) * size)
      array = np.full(size, values[0], dtype=object)
    return array.reshape(shape)
  numpy_dtype = _NUMERIC.get(proto.dtype)
  if numpy_dtype is None:
    name = (
      types_pb2.DataType.Name(proto.dtype)
      if proto.dtype in types_pb2.DataType.values()
      else str(proto.dtype)
    )
    raise errors.invalid_argument(
      f'input "{key}": dtype {name} is not supported; use a string,'
      ' integer, floating point or bool tensor'
    )
  if proto.tensor_content:
    if len(proto.tensor_content) != size * numpy_dtype.itemsize:
      raise errors.invalid_argument(
        f'input "{key}": cannot decode its TensorProto: shape {shape} of'
        f' {numpy_dtype.name} needs {size * numpy_dtype.itemsize} bytes of tensor_content,'
        f' it has {len(proto.tensor_content)}'
      )
    budget.charge(key, size)
    return np.frombuffer(proto.tensor_content, dtype=numpy_dtype).reshape(shape)
  field, wire_dtype = _VALUE_FIELD[proto.dtype]
  values = getattr(proto, field)
  _check_count(key, len(values), shape, size)
  budget.charge(key, size)
  wire = (
    np.array(values, dtype=wire_dtype)
    if len(values) == size
    else np.full(size, values[0], dtype=wire_dtype)
  )
  if field == 'half_val':
    if wire.size and (wire.min() < 0 or wire.max() > 0xFFFF):
      bad = wire[(wire < 0) | (wire > 0xFFFF)][0]
      raise errors.invalid_argument(
        f'input "{key}": half_val holds a {numpy_dtype.name} value as its 16 bits, an integer'
        f' in [0, 65535]; got {bad}'
      )
    return wire.astype(np.uint16).view(numpy_dtype).reshape(shape)
  return wire.astype(numpy_dtype).reshape(shape)


def to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
  """Encodes an output array (a fast path for strings and common numeric types)."""
  proto = tensor_pb2.TensorProto()
  if array.dtype == object:
    proto.dtype = _DT_STRING
    proto.string_val.extend(
      v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist()
    )
  elif array.dtype in _NUMERIC_ENUM:
    proto.dtype = _NUMERIC_ENUM[array.dtype]
    proto.tensor_content = np.ascontiguousarray(array).tobytes()
  else:
    return tf.make_tensor_proto(array)
  for size in array.shape:
    proto.tensor_shape.dim.add(size=size)
  return proto


def _check_rank(key, array):
  # As a TensorProto's (numpy walks no more than 32 dimensions: 33 to 64 deep, `array.flat`
  # failed, answered 500).
  if array.ndim > MAX_RANK:
    raise errors.invalid_argument(f'input "{key}": rank {array.ndim} is more than {MAX_RANK}')


def from_json(key: str, value: object, dtype: tf.DType, budget: Budget | None = None) -> np.ndarray:
  """Converts a JSON value (nested lists) to an array of `dtype`, TF Serving's way.

  Strings become UTF-8 bytes; {"b64": "..."} objects become the bytes they encode.

  Raises:
    ServingError: INVALID_ARGUMENT naming the input when the value is ragged, not of the
      expected kind, not valid base64 / UTF-8, or over the request's limits.
  """
  budget = budget or DEFAULT_LIMITS.budget()
  if dtype == tf.string:
    strings = _strings(key, value)
    try:
      array = np.asarray(strings, dtype=object)
    except ValueError:
      raise _ragged(key, strings) from None
    _check_rank(key, array)
    if array.size and any(not isinstance(v, bytes) for v in array.flat):
      raise _ragged(key, strings)
    budget.charge(key, array.size, sum(len(v) for v in array.flat))
    return array
  try:
    array = np.asarray(value)
  except ValueError:
    raise _ragged(key, value) from None
  _check_rank(key, array)
  budget.charge(key, array.size)
  numpy_dtype = dtype.as_numpy_dtype
  kind = np.dtype(numpy_dtype).kind
  allowed = {'b': 'b', 'i': 'iu', 'u': 'iu', 'f': 'iuf', 'c': 'iufc'}.get(kind)
  if allowed is None:
    raise errors.invalid_argument(f'input "{key}": dtype {dtype.name} cannot be sent as JSON')
  if array.size and array.dtype.kind not in allowed:
    # Integers too large for any numpy integer leave an object array: a float input reads
    # them as floats, an integer input refuses them.
    floats = _numbers_as_floats(key, array, dtype) if kind == 'f' else None
    if floats is None:
      huge = _huge_integer(array) if kind in 'iu' else None
      if huge is not None:
        raise _out_of_range(key, huge, dtype)
      raise errors.invalid_argument(
        f'input "{key}" expects {dtype.name} values but got'
        f' {_json_kind(array)} (e.g. {as_json(json_safe(array.flat[0]))})'
      )
    array = floats
  if not array.size:
    return array.astype(numpy_dtype)
  if array.dtype.kind in 'iu' and kind in 'iu':
    info = np.iinfo(numpy_dtype)
    low, high = array.min(), array.max()
    if low < info.min or high > info.max:
      raise _out_of_range(key, low if low < info.min else high, dtype)
  if kind == 'f' and dtype != tf.float64:
    # TF Serving refuses a finite number the float cannot hold rather than make it Infinity;
    # one that rounds to the largest float (3.4028235e38 for float32) is that float. NaN and
    # Infinity written as such stay as they are.
    with np.errstate(over='ignore'):
      narrow = array.astype(numpy_dtype)
    over = np.isinf(narrow) & ~np.isinf(array)
    if over.any():
      raise _out_of_range(key, array[over][0], dtype)
    return narrow
  return array.astype(numpy_dtype)


def _numbers_as_floats(key, array, dtype):
  """An object array of JSON numbers as float64 (None when it holds anything else).

  Raises:
    ServingError: INVALID_ARGUMENT for an integer beyond any double.
  """
  values = list(array.flat)
  if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
    return None
  floats = np.empty(len(values), np.float64)
  for i, v in enumerate(values):
    try:
      floats[i] = v
    except OverflowError:
      raise _out_of_range(key, v, dtype) from None
  return floats.reshape(array.shape)


def _out_of_range(key, value, dtype):
  bounds = (
    f'it would round to infinity; the largest {dtype.name} is {dtype.max:.8g}'
    if dtype.is_floating
    else f'it holds {dtype.min} to {dtype.max}'
  )
  return errors.invalid_argument(
    f'input "{key}": {as_json(json_safe(value))} is out of range for {dtype.name} ({bounds})'
  )


def _huge_integer(array):
  """The first integer of an object array too large for any numpy integer, or None."""
  for v in array.flat:
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
      return v
  return None


def _shape_of(value):
  """The shape a nested list has if every list is like its first element."""
  shape = []
  while isinstance(value, list):
    shape.append(len(value))
    if not value:
      break
    value = value[0]
  return shape


def _first_misfit(value, shape, path):
  """The index path of the first element of `value` that does not have `shape`, or None."""
  if not shape:
    return path if isinstance(value, list) else None
  if not isinstance(value, list) or len(value) != shape[0]:
    return path
  for i, v in enumerate(value):
    found = _first_misfit(v, shape[1:], path + [i])
    if found is not None:
      return found
  return None


def _ragged(key, value):
  """The error for a nested list whose rows differ in length or depth, naming the first one."""
  shape = _shape_of(value)
  path = _first_misfit(value, shape, [])
  if not path:
    return errors.invalid_argument(
      f'input "{key}": the list is ragged or mixes lists and values; every row must have the'
      ' same shape'
    )
  at = ''.join(f'[{i}]' for i in path)
  first = ''.join('[0]' for _ in path)
  got = _shape_of(_element(value, path))
  return errors.invalid_argument(
    f'input "{key}": the list is ragged: {key}{at} has shape {got} where {key}{first} has'
    f' {shape[len(path) :]}; every row must have the same shape'
  )


def _element(value, path):
  for i in path:
    value = value[i]
  return value


def _json_kind(array):
  return {
    'U': 'strings',
    'O': 'objects or mixed values',
    'f': 'floats',
    'b': 'booleans',
    'i': 'integers',
  }.get(array.dtype.kind, array.dtype.name)


def json_safe(value: object) -> object:
  """A numpy scalar as the Python value JSON can hold; anything else unchanged."""
  return value.item() if hasattr(value, 'item') else value


def as_json(value: object, limit: int = 80) -> str:
  """A request's value as it was written in JSON (null, true, NaN, "text"), not as Python
  prints it (None, True, nan, 'text'), cut to `limit` characters for an error message."""
  try:
    text = json.dumps(value, ensure_ascii=False)
  except (TypeError, ValueError):
    text = repr(value)
  return text if len(text) <= limit else text[: limit - 3] + '...'


def _strings(key, value):
  if isinstance(value, list):
    return [_strings(key, v) for v in value]
  if isinstance(value, str):
    try:
      return value.encode('utf-8')
    except UnicodeEncodeError as e:
      raise errors.invalid_argument(f'input "{key}": string is not valid UTF-8 ({e})') from None
  if isinstance(value, dict) and set(value) == {'b64'} and isinstance(value['b64'], str):
    text = value['b64']
    if '=' not in text:  # padding is optional, as in TF Serving (absl::Base64Unescape)
      text += '=' * (-len(text) % 4)
    try:
      return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
      raise errors.invalid_argument(f'input "{key}": invalid base64 in "b64": {e}') from None
  raise errors.invalid_argument(
    f'input "{key}" expects strings (or {{"b64": ...}} objects) but got {as_json(value)}'
  )


def to_json(key: str, array: np.ndarray) -> object:
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
  if array.dtype in _HALF_FLOATS:
    # As TF Serving writes them: widened to float32 (exactly), so 65504 is written 65504, not
    # float16's shortest 65500.0, which only a float16 reader takes back as 65504.
    array = array.astype(np.float32)
  if array.dtype == np.float32:
    return shortest_floats(array).tolist()
  return array.tolist()


# float32 is written in JSON by the shortest decimal that reads back as the same float32 (0.2, as
# TF Serving writes it), not by the digits of the double it widens to (0.20000000298023224).
_HALF_FLOATS = {np.dtype(np.float16), np.dtype(tf.bfloat16.as_numpy_dtype)}
_MAX_DIGITS = 9  # float32 needs at most 9 significant digits, float16 5, bfloat16 4
# Powers of ten a double holds exactly. A decimal of at most 9 digits scaled by one of them is
# the double nearest to that decimal, which Python writes back with those digits; so decimal
# exponents from -14 to 22 are done in vectorised passes, the (rare) others one at a time.
_EXACT_POWERS = 22
# Indexed by a scale s + _EXACT_POWERS: 10**s for s >= 0 (else 1), and 10**-s for s < 0 (else 1),
# so x * UP / DOWN scales by 10**s, and m / UP * DOWN back, each with one rounding.
_SCALE_UP = np.array([float(10 ** max(s, 0)) for s in range(-_EXACT_POWERS, _EXACT_POWERS + 1)])
_SCALE_DOWN = _SCALE_UP[::-1].copy()


def shortest_floats(array: np.ndarray) -> np.ndarray:
  """A narrow float array as float64 values whose repr is the shortest decimal that converts
  back to each element (what numpy's str of the element writes).

  A binary search over the number of significant digits (1 to 9), all elements at once: four
  passes of a dozen array operations.
  """
  flat = array.ravel()
  wide = flat.astype(np.float64)
  with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
    exponent = np.floor(np.log10(np.abs(wide)))
    vectorised = (exponent >= _MAX_DIGITS - 1 - _EXACT_POWERS) & (exponent <= _EXACT_POWERS)
    values = np.where(vectorised, wide, 1.0)
    # Table index of the scale for 0 digits; a digit count d adds d.
    offset = (_EXACT_POWERS - 1 - np.where(vectorised, exponent, 0)).astype(np.intp)
    target = values.astype(array.dtype)
    low = np.ones(flat.shape, np.intp)
    high = np.full(flat.shape, _MAX_DIGITS, np.intp)
    best = np.empty_like(wide)
    found = np.zeros(flat.shape, bool)  # best holds a candidate of `high` digits
    for _ in range(4):  # ceil(log2(9)) halvings of [1, 9]
      middle = (low + high) >> 1
      index = offset + middle
      up, down = _SCALE_UP[index], _SCALE_DOWN[index]
      candidate = np.rint(values * up / down) / up * down
      fits = (candidate.astype(array.dtype) == target) & (low < high)
      np.copyto(best, candidate, where=fits)
      found |= fits
      np.copyto(high, middle, where=fits)
      np.copyto(low, middle + 1, where=~fits & (low < high))
    # Those that never fitted need all 9 digits.
    rest = np.flatnonzero(vectorised & ~found)
    index = offset[rest] + _MAX_DIGITS
    up, down = _SCALE_UP[index], _SCALE_DOWN[index]
    best[rest] = np.rint(values[rest] * up / down) / up * down
  out = np.where(vectorised, best, wide)  # zeros, NaN and Infinity stay as they are
  for i in np.flatnonzero(~vectorised & np.isfinite(wide) & (wide != 0)):
    out[i] = float(str(flat[i]))  # beyond exact powers of ten: rare, one at a time
  return out.reshape(array.shape)


def example_from_json(index: int | str, obj: object) -> example_pb2.Example:
  """Builds a tf.Example from a REST classify example: feature name -> value or list of values.

  Strings become bytes_list, integers int64_list, floats float_list, {"b64": ...} bytes.

  Raises:
    ServingError: INVALID_ARGUMENT naming the example and feature that cannot be converted.
  """
  if not isinstance(obj, dict):
    raise errors.invalid_argument(
      f'examples[{index}] must be an object of features, got {as_json(obj)}'
    )
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
      if any(not -(2**63) <= v < 2**63 for v in values):
        raise errors.invalid_argument(f'{where}: integer out of range for int64')
      feature.int64_list.value.extend(values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
      big = [v for v in values if _rounds_to_float32_infinity(v)]
      if big:
        raise errors.invalid_argument(
          f'{where}: {as_json(big[0])} is out of range for a float feature (float32: it would'
          f' round to infinity; the largest float32 is {tf.float32.max:.8g})'
        )
      feature.float_list.value.extend(values)
    else:
      raise errors.invalid_argument(
        f'{where} mixes or has unsupported value types: {as_json(value)}'
      )
  return example


# float32's largest value plus half its last unit: a finite number of this magnitude or more
# rounds to infinity as a float32, one below it to a finite float32.
_FLOAT32_INFINITY_FROM = float(2**128 - 2**103)


def _rounds_to_float32_infinity(value):
  """True for a finite JSON number (float or integer of any size) float32 makes infinite."""
  try:
    value = float(value)
  except OverflowError:
    return True
  return math.isfinite(value) and abs(value) >= _FLOAT32_INFINITY_FROM


def text_example(text: str | bytes) -> example_pb2.Example:
  """A tf.Example with the one `text` feature the models' `serving_default` parses.

  The one builder the server (warm-up, tests) and the client share; str is sent as UTF-8.
  """
  value = text.encode('utf-8') if isinstance(text, str) else text
  return example_pb2.Example(
    features=feature_pb2.Features(
      feature={
        contract.TEXT_KEY: feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))
      }
    )
  )
