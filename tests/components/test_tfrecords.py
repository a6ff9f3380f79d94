"""TFRecord framing both ways (components/tfrecords.py), against TensorFlow's own reader and
writer, and the TensorFlow-free modules of ExampleGen."""

import io
import subprocess
import sys

import pytest
import tensorflow as tf

from components import tfrecords

# Empty, short, and past the cached headers' lengths; bytes of every value.
RECORDS = [b'', b'a', bytes(range(256)) * 3, b'\x00' * (1 << 16), 'é'.encode()]


def test_framed_records_are_what_tensorflow_writes_and_reads(tmp_path):
  path = str(tmp_path / 'tf.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    for record in RECORDS:
      writer.write(record)
  with open(path, 'rb') as f:
    written = f.read()
  assert tfrecords.frame(RECORDS) == written
  assert list(tfrecords.unframe(io.BytesIO(written))) == RECORDS
  assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == RECORDS


@pytest.mark.parametrize(
  ('damage', 'record', 'problem'),
  [
    (lambda data: data[:-2], 5, 'the file ends inside it'),
    (lambda data: data + b'\x01\x02', 6, 'the file ends inside its header'),
    # The second record's length byte (its header follows the first record's 16 bytes).
    (lambda data: data[:16] + b'\x09' + data[17:], 2, 'its length does not match its checksum'),
    # The second record's data byte: header 12 bytes after the first record.
    (lambda data: data[:28] + b'b' + data[29:], 2, 'its data does not match its checksum'),
  ],
)
def test_damaged_framing_names_the_record_and_the_problem(damage, record, problem):
  data = damage(tfrecords.frame(RECORDS))
  with pytest.raises(tfrecords.FramingError) as raised:
    list(tfrecords.unframe(io.BytesIO(data)))
  assert (raised.value.record, raised.value.problem) == (record, problem)


def test_readers_framing_and_encoding_load_without_tensorflow_or_beam():
  # The format readers, the framing and the tf.Example encoder are plain Python: a tool that
  # checks input files need not start TensorFlow.
  code = (
    'import sys\n'
    'from components import example_encoding, readers, tfrecords\n'
    'heavy = sorted(m for m in ("tensorflow", "apache_beam", "tfx") if m in sys.modules)\n'
    'print(",".join(heavy))\n'
  )
  out = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, check=True
  ).stdout.strip()
  assert out == ''
