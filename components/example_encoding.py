"""Serialized tf.Examples of a text and a label, encoded without TensorFlow.

ExampleGen writes one per document: built here field by field rather than through the
tf.train.Example classes, it takes less than half the CPU, and the bytes parse as the same
tf.Example (tested against TensorFlow's own serialization).
"""

from __future__ import annotations

from tfxlm import contract


def _varint(value: int) -> bytes:
  out = bytearray()
  while value > 0x7F:
    out.append(value & 0x7F | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
  """One length-delimited protobuf field: tag, payload length (varint), payload."""
  return tag + _varint(len(payload)) + payload


# Protobuf tags of the length-delimited fields a tf.Example of bytes features is made of: field 1
# (Example.features, Features.feature map entries, their key, Feature.bytes_list, BytesList.value)
# and field 2 (a map entry's value).
_FIELD_1, _FIELD_2 = b'\x0a', b'\x12'
_TEXT_KEY_FIELD = _field(_FIELD_1, contract.TEXT_KEY.encode())
_LABEL_KEY_FIELD = _field(_FIELD_1, contract.LABEL_KEY.encode())


# The varints of lengths below 2**14 (two bytes or less), looked up rather than encoded: the
# four lengths of each feature make up most of the cost of an example.
_SHORT_VARINTS = tuple(_varint(length) for length in range(1 << 14))


def _length(value: int) -> bytes:
  """`value` as a varint (a length)."""
  return _SHORT_VARINTS[value] if value < 1 << 14 else _varint(value)


def _bytes_feature_entry(key_field: bytes, value: bytes) -> bytes:
  """A `Features.feature` map entry: key -> Feature(bytes_list=BytesList(value=[value])).

  Nested fields, innermost first: BytesList.value, Feature.bytes_list, the entry's value.
  """
  value_length = _length(len(value))
  bytes_list_size = 1 + len(value_length) + len(value)
  bytes_list_length = _length(bytes_list_size)
  feature_size = 1 + len(bytes_list_length) + bytes_list_size
  feature_length = _length(feature_size)
  entry_size = len(key_field) + 1 + len(feature_length) + feature_size
  return b''.join(
    (
      _FIELD_1,
      _length(entry_size),
      key_field,
      _FIELD_2,
      feature_length,
      _FIELD_1,
      bytes_list_length,
      _FIELD_1,
      value_length,
      value,
    )
  )


def make_example(text: str, label: str | None) -> bytes:
  """Serializes one tf.Example with `text` and, if not None or empty, `label`.

  Encoded here, field by field, rather than through the tf.train.Example classes: this runs
  once per document and takes less than half the CPU; the bytes parse as the same tf.Example.
  """
  features = _bytes_feature_entry(_TEXT_KEY_FIELD, text.encode())
  if label:
    features += _bytes_feature_entry(_LABEL_KEY_FIELD, label.encode())
  return _FIELD_1 + _length(len(features)) + features
