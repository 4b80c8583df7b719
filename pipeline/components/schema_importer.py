"""CuratedSchemaGen: ImportSchemaGen whose cache key includes the schema's
content, so editing schema/ re-runs validation and everything after it."""

from tfx import types
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.types import component_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs


class _CuratedSchemaGenSpec(standard_component_specs.ImportSchemaGenSpec):
  PARAMETERS = {
      **standard_component_specs.ImportSchemaGenSpec.PARAMETERS,
      # Unused by the executor; part of the cache key.
      'content_fingerprint': component_spec.ExecutionParameter(type=str),
  }


class CuratedSchemaGen(ImportSchemaGen):
  """ImportSchemaGen that re-runs when the schema file's content changes."""

  SPEC_CLASS = _CuratedSchemaGenSpec

  def __init__(self, schema_file: str, content_fingerprint: str):
    spec = _CuratedSchemaGenSpec(
        schema_file=schema_file,
        content_fingerprint=content_fingerprint,
        schema=types.Channel(type=standard_artifacts.Schema))
    # Skip ImportSchemaGen.__init__, which builds the plain spec.
    super(ImportSchemaGen, self).__init__(spec=spec)
