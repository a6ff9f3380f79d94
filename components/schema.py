"""ImportSchemaGen that notices when the curated schema file is edited in place.

The stock ImportSchemaGen's only execution property is the file's path, so with caching on an
edited schema.pbtxt would be ignored: ExampleValidator would keep checking against the old
domain. Here the file's content hash is an execution property too, so an edit re-runs the import
and everything that depends on the schema.
"""

import hashlib

from tfx import types
from tfx.components.schema_gen.import_schema_gen import component as import_schema_gen
from tfx.types import component_spec, standard_artifacts, standard_component_specs

from tfxlm import schema_file

FINGERPRINT_KEY = 'schema_fingerprint'


class CuratedSchemaGenSpec(component_spec.ComponentSpec):
  """The stock ImportSchemaGenSpec plus the schema file's fingerprint."""

  PARAMETERS = {
    **standard_component_specs.ImportSchemaGenSpec.PARAMETERS,
    FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str),
  }
  INPUTS = standard_component_specs.ImportSchemaGenSpec.INPUTS
  OUTPUTS = standard_component_specs.ImportSchemaGenSpec.OUTPUTS


class CuratedSchemaGen(import_schema_gen.ImportSchemaGen):
  """Imports `schema_file` into the pipeline; `fingerprint` identifies its content."""

  SPEC_CLASS = CuratedSchemaGenSpec

  def __init__(self, schema_file: str, fingerprint: str):
    # Skips ImportSchemaGen.__init__, which builds the stock spec without the fingerprint.
    spec = CuratedSchemaGenSpec(
      schema_file=schema_file,
      schema_fingerprint=fingerprint,
      schema=types.Channel(type=standard_artifacts.Schema),
    )
    super(import_schema_gen.ImportSchemaGen, self).__init__(spec=spec)


def fingerprint(path: str) -> str:
  """The sha256 of a schema file's content (a local file or a gs:// URI)."""
  return hashlib.sha256(schema_file.read_bytes(path)).hexdigest()
