"""AtomicPusher: the standard Pusher, but a version directory appears in the
serving directory only once it is complete (written aside, then renamed),
always as the new highest version (the one TF Serving serves), and not at all
when the highest version already holds the model."""

import os
import shutil
import time
from typing import Dict, List

from tfx.components import Pusher
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils


def version_dirs(base_dir: str) -> List[int]:
  """The numeric version directories TF Serving sees in base_dir, ascending."""
  return sorted(_version_paths(base_dir))


def _version_paths(base_dir: str) -> Dict[int, str]:
  """{version: its directory}: TF Serving reads the number from the name and
  loads the directory as named (`00000123` is version 123)."""
  if not os.path.isdir(base_dir):
    return {}
  return {int(name): os.path.join(base_dir, name)
          for name in os.listdir(base_dir) if name.isdigit()}


def _same_saved_model(model_path: str, version_dir: str) -> bool:
  """Whether two SavedModel dirs hold the same model (fingerprint.pb)."""
  mine = os.path.join(model_path, 'fingerprint.pb')
  theirs = os.path.join(version_dir, 'fingerprint.pb')
  return (os.path.exists(mine) and os.path.exists(theirs) and
          io_utils.read_bytes_file(mine) == io_utils.read_bytes_file(theirs))


def _mark_pushed(model_push, destination: str, version: int) -> None:
  """The custom properties TFX's Pusher sets on a push (what TFX's consumers,
  the report and monitoring read)."""
  model_push.set_int_custom_property('pushed', 1)
  model_push.set_string_custom_property('pushed_destination', destination)
  model_push.set_string_custom_property('pushed_version', str(version))


class _AtomicPusherExecutor(pusher_executor.Executor):
  """Pushes a blessed model as a NEW HIGHEST version, written aside and renamed in.

  TF Serving serves the highest version of the directory. So a blessed model
  is pushed unless the highest version already holds it; an older version
  holding it does not count: re-running an earlier configuration rolls that
  model forward as the newest version, which is what the user asked for.
  When the highest version already holds it, the output says so
  (pushed_version = that version, custom property `reused_version` = 1).

  TF Serving polls the model directory and tries to load every numeric
  subdirectory it sees; a version copied in place is visible half-written.
  A rename within one filesystem is atomic, and TF Serving ignores the
  non-numeric temporary name.
  """

  def Do(self, input_dict, output_dict, exec_properties):
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      model_push.set_int_custom_property('pushed', 0)
      return
    base_dir = self._base_directory(exec_properties)
    model_path = self.GetModelPath(input_dict)
    paths = _version_paths(base_dir)
    versions = sorted(paths)
    highest = paths[versions[-1]] if versions else None
    if highest and _same_saved_model(model_path, highest):
      _mark_pushed(model_push, highest, versions[-1])
      model_push.set_int_custom_property('reused_version', 1)
      return
    # Above every existing version, even one from a clock set ahead.
    version = str(max(int(time.time()), versions[-1] + 1 if versions else 0))
    final_dir = os.path.join(base_dir, version)
    staging_dir = os.path.join(base_dir, f'.{version}.incomplete')
    os.makedirs(base_dir, exist_ok=True)
    shutil.rmtree(staging_dir, ignore_errors=True)
    shutil.copytree(model_path, staging_dir)
    os.rename(staging_dir, final_dir)
    io_utils.copy_dir(final_dir, model_push.uri)  # TFX keeps an archive copy.
    _mark_pushed(model_push, final_dir, int(version))
    model_push.set_int_custom_property('reused_version', 0)

  @staticmethod
  def _base_directory(exec_properties) -> str:
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
    return destination.filesystem.base_directory


class AtomicPusher(Pusher):
  """Pusher to a local or mounted serving directory, never half-written.

  Its decision depends on the serving directory, which MLMD does not see:
  runners must never take it from the cache (pipeline.NEVER_CACHED)."""
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(_AtomicPusherExecutor)
