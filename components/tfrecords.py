"""The intermediate TFRecord files ExampleGen and Transform write, gzip-compressed or not.

A file's name says how it is compressed: gzip files, and only those, end in `.gz`
(`contract.GZIP_SUFFIX`). Every reader decides by that name: Beam's `ReadFromTFRecord` (compression
AUTO, what StatisticsGen, Transform, the Evaluator and the Vocabulary read with), tfx_bsl's
datasets, and the Trainer's `trainer.inputs.records_dataset`.

The Examples artifact says the same: TFX has one TFRecord file format, `tfrecords_gzip`, and its
readers refuse any other value, so the artifact keeps that `file_format` (read: TFRecord files,
compression by file name) and records the compression itself in the custom property
`contract.TFRECORD_COMPRESSION_PROPERTY` ('none' or 'gzip').
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Sequence

import apache_beam as beam
import google_crc32c
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from tfx import types
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2

from tfxlm import contract

_BEAM_COMPRESSION = {
  contract.NO_COMPRESSION: CompressionTypes.UNCOMPRESSED,
  contract.GZIP: CompressionTypes.GZIP,
}


def check(compression: str) -> str:
  """`compression` if it is one of `contract.TFRECORD_COMPRESSIONS`.

  Raises:
    ValueError: naming the value and the choices.
  """
  if compression not in contract.TFRECORD_COMPRESSIONS:
    raise ValueError(
      f'TFRecord compression {compression!r} is not one of '
      f'{", ".join(contract.TFRECORD_COMPRESSIONS)}'
    )
  return compression


def suffix(compression: str) -> str:
  """The file name suffix of files written with `compression`."""
  return contract.GZIP_SUFFIX if check(compression) == contract.GZIP else ''


def write(path_prefix: str, compression: str) -> beam.PTransform:
  """Writes a PCollection of serialized records to `path_prefix`-NNNNN-of-NNNNN[.gz] files."""
  return beam.io.WriteToTFRecord(
    path_prefix,
    file_name_suffix=suffix(compression),
    compression_type=_BEAM_COMPRESSION[compression],
  )


_LENGTH = struct.Struct('<Q')
_CRC = struct.Struct('<I')
_CRC_MASK_DELTA = 0xA282EAD8
# Record lengths below this have their framing header (length and its CRC) cached: records of a
# file mostly repeat a few thousand lengths, and the header is a third of the framing's cost.
_CACHED_HEADER_LENGTHS = 1 << 16


def _masked_crc(data: bytes) -> bytes:
  """The TFRecord format's masked CRC32C of `data`, little-endian."""
  crc = google_crc32c.value(data)
  return _CRC.pack((((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=_CACHED_HEADER_LENGTHS)
def _header(length: int) -> bytes:
  """A TFRecord's header: its data's length and that length's masked CRC."""
  packed = _LENGTH.pack(length)
  return packed + _masked_crc(packed)


def frame(records: Iterable[bytes]) -> bytes:
  """`records` as TFRecords, one after the other: per record its header (`_header`), the data
  and the data's masked CRC. One loop with the steps inlined: this runs once per record."""
  parts = []
  append = parts.append
  crc32c = google_crc32c.value
  pack = _CRC.pack
  for record in records:
    length = len(record)
    append(_header(length) if length < _CACHED_HEADER_LENGTHS else _header.__wrapped__(length))
    append(record)
    crc = crc32c(record)
    append(pack((((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF))
  return b''.join(parts)


class _BatchSink(filebasedsink.FileBasedSink):
  """A TFRecord sink whose elements are lists of serialized records (see `write_batches`)."""

  def __init__(self, path_prefix: str, compression: str):
    super().__init__(
      path_prefix,
      coder=None,
      file_name_suffix=suffix(compression),
      mime_type='application/octet-stream',
      compression_type=_BEAM_COMPRESSION[compression],
    )

  def write_record(self, file_handle, value: Sequence[bytes]) -> None:
    file_handle.write(frame(value))


def write_batches(path_prefix: str, compression: str) -> beam.PTransform:
  """`write` for a PCollection of lists of serialized records: the same files, written a list
  at a time, so Beam's per-element steps of a write (windowing, the writer's call) run once per
  list rather than once per record."""
  return beam.io.Write(_BatchSink(path_prefix, compression))


def mark(artifact: types.Artifact, compression: str) -> None:
  """Records on an Examples artifact that it holds tf.Examples in TFRecord files written with
  `compression` (see the module docstring for TFX's `file_format`)."""
  examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
  examples_utils.set_file_format(
    artifact, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP)
  )
  artifact.set_string_custom_property(contract.TFRECORD_COMPRESSION_PROPERTY, check(compression))
