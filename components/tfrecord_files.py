"""The intermediate TFRecord files ExampleGen and Transform write, gzip-compressed or not.

Every reader decides the compression by the file name (`components.tfrecords.suffix`): Beam's
`ReadFromTFRecord` (compression AUTO, what StatisticsGen, Transform, the Evaluator and the
Vocabulary read with), tfx_bsl's datasets, and the Trainer's `trainer.inputs.records_dataset`.

The Examples artifact says the same: TFX has one TFRecord file format, `tfrecords_gzip`, and its
readers refuse any other value, so the artifact keeps that `file_format` (read: TFRecord files,
compression by file name) and records the compression itself in the custom property
`contract.TFRECORD_COMPRESSION_PROPERTY` ('none' or 'gzip').
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from tfx import types
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2

from components.tfrecords import check, frame, suffix
from tfxlm import contract

_BEAM_COMPRESSION = {
  contract.NO_COMPRESSION: CompressionTypes.UNCOMPRESSED,
  contract.GZIP: CompressionTypes.GZIP,
}


def write(path_prefix: str, compression: str) -> beam.PTransform:
  """Writes a PCollection of serialized records to `path_prefix`-NNNNN-of-NNNNN[.gz] files."""
  return beam.io.WriteToTFRecord(
    path_prefix,
    file_name_suffix=suffix(compression),
    compression_type=_BEAM_COMPRESSION[compression],
  )


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
