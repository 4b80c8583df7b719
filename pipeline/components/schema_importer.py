"""CuratedSchemaGen: the checked-in schema as the pipeline's Schema artifact,
re-run when the schema file's content changes."""

import os

from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.utils import io_utils

SCHEMA_FILE_NAME = 'schema.pbtxt'  # Where TFX's components look in a Schema artifact.


@component
def CuratedSchemaGen(  # pylint: disable=invalid-name
    schema_file: Parameter[str], content_fingerprint: Parameter[str],
    schema: OutputArtifact[standard_artifacts.Schema]):
  """Copies schema_file into the Schema artifact, as ImportSchemaGen does.

  content_fingerprint is unused here: as part of the cache key it makes an
  edit of the schema re-run this step and those that read its output (TFX
  keys on the file's path only).
  """
  del content_fingerprint
  io_utils.SchemaReader().read(schema_file)  # A schema proto, or TFX's error.
  io_utils.copy_file(schema_file, os.path.join(schema.uri, SCHEMA_FILE_NAME))
