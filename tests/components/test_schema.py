"""The curated schema import re-runs when the schema file's content changes."""

from components import schema


def test_fingerprint_is_an_execution_property_that_follows_the_content(tmp_path):
  path = tmp_path / 'schema.pbtxt'
  path.write_text('feature { name: "text" type: BYTES }\n')
  first = schema.CuratedSchemaGen(schema_file=str(path), fingerprint=schema.fingerprint(str(path)))
  path.write_text('feature { name: "text" type: BYTES }\nfeature { name: "label" type: BYTES }\n')
  second = schema.CuratedSchemaGen(schema_file=str(path), fingerprint=schema.fingerprint(str(path)))
  assert first.exec_properties['schema_file'] == second.exec_properties['schema_file']
  assert (
    first.exec_properties[schema.FINGERPRINT_KEY] != second.exec_properties[schema.FINGERPRINT_KEY]
  )
  assert set(first.outputs) == {'schema'}
