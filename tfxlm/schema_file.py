"""Reads a curated schema file (`data.schema_dir`): a local path, or a URI of a file system
TensorFlow reads (gs://), as the pipeline's components read it.

A local file is read with Python's own file API, so that loading a config imports no TensorFlow
(it takes seconds); only a URI imports it. Either way a file that cannot be read is an OSError
(FileNotFoundError when it is not there) whose message is one line.
"""

from __future__ import annotations

import errno


def is_uri(path: str) -> bool:
  """Whether `path` is a URI (gs://bucket/...) rather than a path of this machine."""
  return '://' in path


def read_bytes(path: str) -> bytes:
  """The content of the file at `path`.

  Raises:
    OSError: the file cannot be read; FileNotFoundError when it does not exist.
  """
  if not is_uri(path):
    with open(path, 'rb') as f:
      return f.read()
  import tensorflow as tf

  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      return f.read()
  except tf.errors.NotFoundError:
    raise FileNotFoundError(errno.ENOENT, 'no such file', path) from None
  except tf.errors.OpError as e:
    # TensorFlow's messages span lines ('...\n\t when reading gs://...'): one line here.
    raise OSError(' '.join(e.message.split())) from None


def read(path: str):
  """The `tensorflow_metadata` Schema in the text file at `path`.

  Raises:
    OSError: the file cannot be read.
    UnicodeDecodeError: it is not UTF-8 text.
    google.protobuf.text_format.ParseError: it is not a schema in text format.
  """
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2

  schema = schema_pb2.Schema()
  text_format.Parse(read_bytes(path).decode('utf-8'), schema)
  return schema
