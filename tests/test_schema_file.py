"""tfxlm.schema_file: a schema reads the same from a local file and from a URI TensorFlow reads
(ram:// stands for gs://), and a URI that cannot be read is an OSError of one line."""

import pytest

from pipeline import config as config_lib
from tfxlm import schema_file


def test_a_schema_reads_the_same_from_a_file_and_a_uri_and_an_unreadable_uri_is_an_oserror(
  tmp_path,
):
  import tensorflow as tf

  uri = f'ram://{tmp_path.name}/schema.pbtxt'
  with open(config_lib.LABELED_SCHEMA, 'rb') as f:
    content = f.read()
  with tf.io.gfile.GFile(uri, 'wb') as f:
    f.write(content)
  assert schema_file.read_bytes(uri) == content
  assert schema_file.read(uri) == schema_file.read(config_lib.LABELED_SCHEMA)
  assert [feature.name for feature in schema_file.read(uri).feature] == ['text', 'label']
  with pytest.raises(FileNotFoundError):
    schema_file.read_bytes(f'ram://{tmp_path.name}/none.pbtxt')
  with pytest.raises(OSError, match=r"^File system scheme 'nosuch' not implemented [^\n]*$"):
    schema_file.read_bytes('nosuch://bucket/schema.pbtxt')
