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

import apache_beam as beam
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


def mark(artifact: types.Artifact, compression: str) -> None:
  """Records on an Examples artifact that it holds tf.Examples in TFRecord files written with
  `compression` (see the module docstring for TFX's `file_format`)."""
  examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
  examples_utils.set_file_format(
    artifact, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP)
  )
  artifact.set_string_custom_property(contract.TFRECORD_COMPRESSION_PROPERTY, check(compression))
