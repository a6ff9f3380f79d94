"""TFRecord framing, both directions, and the compression names of the files that hold it.

A TFRecord file is a sequence of records, each framed as: its length (uint64, little-endian),
the masked CRC32C of those 8 bytes, the data, the masked CRC32C of the data. `frame` writes that
framing, `unframe` reads and checks it. Pure Python (struct and google_crc32c): ExampleGen's
readers and writers and Transform's writer share it; the Beam side is `components.tfrecord_files`.

A file's name says how it is compressed: gzip files, and only those, end in `.gz`
(`contract.GZIP_SUFFIX`).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Iterator
from typing import IO

import google_crc32c

from tfxlm import contract


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


class FramingError(ValueError):
  """A record whose framing is broken.

  Attributes:
    record: The record's number in the file, from 1.
    problem: What is wrong with it.
  """

  def __init__(self, record: int, problem: str):
    super().__init__(f'record {record}: {problem}')
    self.record = record
    self.problem = problem


def _crc_matches(data: bytes, masked: bytes) -> bool:
  return _masked_crc(data) == masked


def unframe(stream: IO[bytes]) -> Iterator[bytes]:
  """The records of a TFRecord stream, each checked against both of its CRCs.

  Raises:
    FramingError: at the first record that is truncated or does not match its checksums.
  """
  header_size = _LENGTH.size + _CRC.size
  number = 0
  while header := stream.read(header_size):
    number += 1
    if len(header) < header_size:
      raise FramingError(number, 'the file ends inside its header')
    if not _crc_matches(header[: _LENGTH.size], header[_LENGTH.size :]):
      raise FramingError(number, 'its length does not match its checksum')
    (length,) = _LENGTH.unpack(header[: _LENGTH.size])
    body = stream.read(length + _CRC.size)
    if len(body) < length + _CRC.size:
      raise FramingError(number, 'the file ends inside it')
    if not _crc_matches(body[:length], body[length:]):
      raise FramingError(number, 'its data does not match its checksum')
    yield body[:length]
