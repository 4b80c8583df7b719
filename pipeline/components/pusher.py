"""AtomicPusher: the standard Pusher, but a version directory appears in the
serving directory only once it is complete (written aside, then renamed; in
a bucket, which has no rename, saved_model.pb last, as TFX's Pusher does),
always as the new highest version (the one TF Serving serves), and not at all
when the highest version already holds the model. Every push, and every
decision not to push, is recorded in the audit trail (pipeline/audit.py),
and every pushed version carries its model card (pipeline/model_card.py)."""

import os
import shutil
import time
from typing import Dict, List

from tfx.components import Pusher
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils

from pipeline import audit
from pipeline import metadata
from pipeline import model_card


def version_dirs(base_dir: str) -> List[int]:
  """The numeric version directories TF Serving sees in base_dir, ascending."""
  return sorted(_version_paths(base_dir))


def _version_paths(base_dir: str) -> Dict[int, str]:
  """{version: its directory}: TF Serving reads the number from the name and
  loads the directory as named (`00000123` is version 123)."""
  if not fileio.isdir(base_dir):
    return {}
  names = (name.rstrip('/') for name in fileio.listdir(base_dir))  # A bucket's end in '/'.
  return {int(name): os.path.join(base_dir, name) for name in names if name.isdigit()}


def _same_saved_model(model_path: str, version_dir: str) -> bool:
  """Whether two SavedModel dirs hold the same model (fingerprint.pb)."""
  mine = os.path.join(model_path, 'fingerprint.pb')
  theirs = os.path.join(version_dir, 'fingerprint.pb')
  return (fileio.exists(mine) and fileio.exists(theirs) and
          io_utils.read_bytes_file(mine) == io_utils.read_bytes_file(theirs))


def _mark_pushed(model_push, destination: str, version: int) -> None:
  """The custom properties TFX's Pusher sets on a push (what TFX's consumers,
  the report and monitoring read)."""
  model_push.set_int_custom_property('pushed', 1)
  model_push.set_string_custom_property('pushed_destination', destination)
  model_push.set_string_custom_property('pushed_version', str(version))


def _mark_recorded(model_push, record, card: str = '') -> None:
  """Where the push's audit record and model card are: MLMD links the run
  to them (metadata.push_outcome, the run report)."""
  model_push.set_string_custom_property('audit_record', record['path'])
  model_push.set_string_custom_property('audit_action_id', record['action_id'])
  if card:
    model_push.set_string_custom_property('model_card', card)


def _blessing_facts(input_dict) -> Dict:
  """What the Evaluator (and the InfraValidator, if it ran) said of the model."""
  facts = {}
  for key, name in ((standard_component_specs.MODEL_BLESSING_KEY, 'evaluator'),
                    (standard_component_specs.INFRA_BLESSING_KEY, 'infra_validator')):
    if input_dict.get(key):
      blessing = artifact_utils.get_single_instance(input_dict[key]).mlmd_artifact
      facts[name] = {'uri': blessing.uri, **{
          k: metadata.custom_property(blessing, k)
          for k in ('blessed', 'current_model', 'current_model_id', 'baseline_model', 'details')
          if k in blessing.custom_properties}}
  facts['blessed'] = all(f.get('blessed') == 1 for f in facts.values())
  return facts


def _evaluation_facts(blessing_uri: str) -> Dict:
  """Metrics overall and per slice, the thresholds and the verdict."""
  try:
    uri = metadata.evaluation_of_blessing(blessing_uri)
  except LookupError as e:
    return {'unavailable': str(e)}
  if not fileio.exists(os.path.join(uri, 'eval_config.json')):
    return {'unavailable': f'no Evaluator output at {uri} beside the blessing {blessing_uri}'}
  return {'uri': uri, 'validation_ok': metadata.validation_passed(uri),
          'thresholds': metadata.metric_thresholds(uri),
          'slices': metadata.metrics_by_slice(uri)}


def _training_facts(evaluator_blessing: Dict) -> Dict:
  """Spans, their statistics and the training code, from the run's MLMD if
  this process can open it (a local run's SQLite file; not Kubeflow's
  metadata service, which components cannot query)."""
  metadata_path = metadata.local_metadata_path(evaluator_blessing['uri'])
  model_id = evaluator_blessing.get('current_model_id')
  if metadata_path is None or model_id is None:
    return {'unavailable': 'training spans and statistics are not recorded here: the run\'s '
                           'MLMD is not a local file the Pusher can read (on Kubeflow see the '
                           'run\'s lineage in its metadata)'}
  try:
    return metadata.Lineage(metadata_path).training_of_model(int(model_id))
  except (LookupError, RuntimeError, ValueError) as e:
    return {'unavailable': f'reading training lineage from {metadata_path} failed: {e}'}


def _push_facts(input_dict) -> Dict:
  blessing = _blessing_facts(input_dict)
  evaluator = blessing.get('evaluator', {})
  evaluation = _evaluation_facts(evaluator['uri']) if evaluator else {
      'unavailable': 'no Evaluator blessing among the Pusher\'s inputs'}
  return {'blessing': blessing, 'evaluation': evaluation,
          'training': _training_facts(evaluator) if evaluator else {
              'unavailable': 'no Evaluator blessing to find the trained model from'}}


def _recorded_facts(facts: Dict) -> Dict:
  """The push record's share of the facts: the overall metrics, not every slice."""
  evaluation, training = facts['evaluation'], facts['training']
  overall = [s['metrics'] for s in evaluation.get('slices', []) if s['overall']]
  return {
      'blessing': facts['blessing'],
      'evaluation': {k: v for k, v in evaluation.items() if k != 'slices'},
      'metrics': overall[0] if overall else None,
      'training': training,  # Spans with their examples' and statistics' URIs.
      'spans': training.get('spans'),
      'code_fingerprint': training.get('trainer_code_fingerprint'),
  }


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
  non-numeric temporary name. The model card is written into the version
  before the rename, so no version is ever seen without one.
  """

  def Do(self, input_dict, output_dict, exec_properties):
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    base_dir = self._base_directory(exec_properties).rstrip('/')
    model_name = os.path.basename(base_dir)
    trail = audit.audit_dir(os.path.dirname(base_dir))
    run = {'pipeline_run': self._context.pipeline_run_id if self._context else None}
    if not self.CheckBlessing(input_dict):
      model_push.set_int_custom_property('pushed', 0)
      _mark_recorded(model_push, audit.write(
          trail, model_name, 'push', audit.SKIPPED, 'not pushed: the model is not blessed',
          blessing=_blessing_facts(input_dict), **run))
      return
    model_path = self.GetModelPath(input_dict)
    paths = _version_paths(base_dir)
    versions = sorted(paths)
    highest = paths[versions[-1]] if versions else None
    if highest and _same_saved_model(model_path, highest):
      _mark_pushed(model_push, highest, versions[-1])
      model_push.set_int_custom_property('reused_version', 1)
      card = os.path.join(highest, model_card.CARD_PATH)
      _mark_recorded(model_push, audit.write(
          trail, model_name, 'push', audit.SKIPPED,
          f'not pushed: version {versions[-1]} already holds this model',
          version=versions[-1], destination=highest, **run),
          card if fileio.exists(card) else '')
      return
    # Above every existing version, even one from a clock set ahead.
    version = max(int(time.time()), versions[-1] + 1 if versions else 0)
    final_dir = os.path.join(base_dir, str(version))
    try:
      facts = _push_facts(input_dict)
    except Exception as e:
      audit.write(trail, model_name, 'push', audit.FAILED,
                  f'failed before pushing version {version}: reading what it would push '
                  f'failed: {type(e).__name__}: {e}', version=version, **run)
      raise
    push = self._push_to_bucket if '://' in base_dir else self._push
    done = push(model_path, base_dir, final_dir, facts, trail, model_name, run)
    io_utils.copy_dir(final_dir, model_push.uri)  # TFX keeps an archive copy.
    _mark_pushed(model_push, final_dir, version)
    model_push.set_int_custom_property('reused_version', 0)
    _mark_recorded(model_push, done, done['model_card'])

  @staticmethod
  def _push(model_path, base_dir, final_dir, facts, trail, model_name, run) -> Dict:
    """Copy aside, model card, rename in: recorded as attempted, then done or failed."""
    version = int(os.path.basename(final_dir))
    staging_dir = os.path.join(base_dir, f'.{version}.incomplete')

    def left_behind():
      return {'version_dir_exists': os.path.isdir(final_dir),
              'staging_dir_removed': not os.path.exists(staging_dir)}

    with audit.recorded(trail, model_name, 'push', f'version {version} to {final_dir}',
                        left_behind=left_behind, version=version, destination=final_dir,
                        model_path=model_path, **run, **_recorded_facts(facts)) as action:
      try:
        os.makedirs(base_dir, exist_ok=True)
        shutil.rmtree(staging_dir, ignore_errors=True)
        shutil.copytree(model_path, staging_dir)
        card = model_card.write_model_card(staging_dir, {
            **action.attempted, 'version': version, 'evaluation': facts['evaluation'],
            'training': model_card.statistics_of(facts['training'])})
        os.rename(staging_dir, final_dir)
      except BaseException:
        shutil.rmtree(staging_dir, ignore_errors=True)  # TF Serving ignores it; tidy anyway.
        raise
      # Self-contained: the run report links this record.
      action.finish(audit.DONE, f'version {version} pushed to {final_dir}', version=version,
                    destination=final_dir,
                    model_card=os.path.join(final_dir, os.path.relpath(card, staging_dir)),
                    **run, **_recorded_facts(facts))
    return action.outcome

  @staticmethod
  def _push_to_bucket(model_path, base_dir, final_dir, facts, trail, model_name, run) -> Dict:
    """A bucket has no rename: everything but saved_model.pb, the model card,
    then saved_model.pb, the file TF Serving waits for before loading a
    version (as TFX's own Pusher does)."""
    version = int(os.path.basename(final_dir))
    with audit.recorded(trail, model_name, 'push', f'version {version} to {final_dir}',
                        left_behind=lambda: {'version_dir_exists': fileio.exists(final_dir)},
                        version=version, destination=final_dir, model_path=model_path,
                        **run, **_recorded_facts(facts)) as action:
      try:
        io_utils.copy_dir(model_path, final_dir, deny_regex_patterns=[r'saved_model\.pb'])
        card = model_card.write_model_card(final_dir, {
            **action.attempted, 'version': version, 'evaluation': facts['evaluation'],
            'training': model_card.statistics_of(facts['training'])})
        io_utils.copy_file(os.path.join(model_path, 'saved_model.pb'),
                           os.path.join(final_dir, 'saved_model.pb'))
      except BaseException:
        if fileio.exists(final_dir):
          fileio.rmtree(final_dir)  # Never a numeric folder without its model.
        raise
      action.finish(audit.DONE, f'version {version} pushed to {final_dir}', version=version,
                    destination=final_dir, model_card=card, **run, **_recorded_facts(facts))
    return action.outcome

  @staticmethod
  def _base_directory(exec_properties) -> str:
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
    return destination.filesystem.base_directory


class AtomicPusher(Pusher):
  """Pusher to a local, mounted or bucket serving directory, never half-written.

  Its decision depends on the serving directory, which MLMD does not see:
  runners must never take it from the cache (pipeline.NEVER_CACHED)."""
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(_AtomicPusherExecutor)
