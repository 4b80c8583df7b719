"""Where training and serving run: on the pipeline's own workers, or on Vertex AI.

pipeline.py asks these functions for its Trainer, Tuner and Pusher(s); the
knobs are in pipeline/configs.py ('Google Cloud'). With the defaults every
function returns exactly the local component, under the same id. The Vertex
variants are TFX's own extensions (tfx.extensions.google_cloud_ai_platform):
same inputs, same outputs, the work done by a Vertex AI custom job or
endpoint that runs the pipeline image.
"""

from typing import Dict, Optional

from tfx.components import Trainer, Tuner
from tfx.proto import pusher_pb2, tuner_pb2

from pipeline.components.pusher import AtomicPusher
from pipeline.configs import PipelineConfig


def _vertex():
  # Imported only when used: Google Cloud's client libraries take seconds to load.
  from tfx.v1.extensions import google_cloud_ai_platform
  return google_cloud_ai_platform


def _job_args(config: PipelineConfig) -> Dict:
  """A Vertex AI CustomJob running this pipeline's image on one machine."""
  job_spec = {'worker_pool_specs': [{
      'machine_spec': {'machine_type': config.vertex_training_machine_type},
      'replica_count': 1,
      'container_spec': {'image_uri': config.pipeline_image},
  }]}
  if config.gcp_service_account:
    job_spec['service_account'] = config.gcp_service_account
  # The executor pops 'project'; the rest is the CustomJob.
  return {'project': config.gcp_project, 'job_spec': job_spec}


def _vertex_config(config: PipelineConfig, custom_config: Optional[Dict], **extra) -> Dict:
  # The local custom_config (hyperparameters, code fingerprint) is kept:
  # run_fn and tuner_fn read it, and it is part of the cache key.
  vertex = _vertex()
  return {**(custom_config or {}),
          vertex.ENABLE_VERTEX_KEY: True,
          vertex.VERTEX_REGION_KEY: config.gcp_region,
          **extra}


def trainer(config: PipelineConfig, **kwargs):
  """tfx Trainer arguments in; the Trainer that config.vertex_training picks out."""
  if not config.vertex_training:
    return Trainer(**kwargs).with_id('Trainer')
  vertex = _vertex()
  custom_config = _vertex_config(config, kwargs.pop('custom_config', None),
                                 **{vertex.TRAINING_ARGS_KEY: _job_args(config)})
  return vertex.Trainer(custom_config=custom_config, **kwargs).with_id('Trainer')


def tuner(config: PipelineConfig, **kwargs):
  """tfx Tuner arguments in; trials run in one Vertex job when vertex_training."""
  if not config.vertex_training:
    return Tuner(**kwargs).with_id('Tuner')
  from tfx.extensions.google_cloud_ai_platform.tuner import executor as vertex_tuner
  custom_config = _vertex_config(
      config, kwargs.pop('custom_config', None),
      **{vertex_tuner.TUNING_ARGS_KEY: _job_args(config),
         # Where parallel trials share their state.
         vertex_tuner.REMOTE_TRIALS_WORKING_DIR_KEY: f'gs://{config.gcs_bucket}/tuner-trials'})
  kwargs.setdefault('tune_args', tuner_pb2.TuneArgs(
      num_parallel_trials=config.vertex_tuner_parallel_trials))
  return _vertex().Tuner(custom_config=custom_config, **kwargs).with_id('Tuner')


def pusher(config: PipelineConfig, **kwargs):
  """The filesystem push TF Serving reads from: a local folder or a bucket.

  AtomicPusher in both: locally it renames the version in (never
  half-written); a bucket has no rename, so there it copies saved_model.pb
  last (TF Serving loads no version before that file appears). Either way
  it records the push in the audit trail and writes the model card.
  """
  destination = pusher_pb2.PushDestination(
      filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=config.push_dir))
  return AtomicPusher(push_destination=destination, **kwargs).with_id('Pusher')


def vertex_pusher(config: PipelineConfig, **kwargs):
  """With vertex_serving, a second Pusher deploying to a Vertex AI endpoint; else None."""
  if not config.vertex_serving:
    return None
  serving_args = {
      'project_id': config.gcp_project,
      'endpoint_name': config.vertex_endpoint_name,
      'machine_type': config.vertex_serving_machine_type,
      'min_replica_count': 1,
      'max_replica_count': config.vertex_serving_max_replicas,
  }
  if config.gcp_service_account:
    serving_args['service_account'] = config.gcp_service_account
  vertex = _vertex()
  custom_config = _vertex_config(config, None, **{
      vertex.VERTEX_CONTAINER_IMAGE_URI_KEY: config.vertex_serving_image,
      vertex.SERVING_ARGS_KEY: serving_args,
  })
  return vertex.Pusher(custom_config=custom_config, **kwargs).with_id('VertexPusher')
