"""What the Evaluator computes and what blesses a model: the task's metrics
(models/features.py) and the thresholds of pipeline/configs.py."""

from typing import List, Optional

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis import constants as tfma_constants

from models import features
from pipeline.configs import ENV_PREFIX, ConfigError, PipelineConfig


def _overall_only(threshold):
  # Thresholds judge the whole eval split; slices are reported, not gated
  # (a slice of three examples has no meaningful AUC or RMSE).
  return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]


def _floor(value: float, max_drop: Optional[float] = None):
  """At least value; with max_drop, also at most max_drop below the baseline's."""
  threshold = tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(lower_bound={'value': value}))
  if max_drop is not None:
    threshold.change_threshold.CopyFrom(tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={'value': -max_drop}))
  return threshold


def _binary_metrics_specs(config: PipelineConfig) -> List[tfma.MetricsSpec]:
  # AUC and accuracy gate the blessing; the rest are reported.
  auc_threshold = _floor(config.min_auc, config.max_auc_drop)
  metrics = [
      tfma.MetricConfig(class_name='ExampleCount'),
      tfma.MetricConfig(class_name='AUC', per_slice_thresholds=_overall_only(auc_threshold)),
      tfma.MetricConfig(class_name='BinaryAccuracy',
                        per_slice_thresholds=_overall_only(_floor(config.min_accuracy))),
      tfma.MetricConfig(class_name='Precision'),
      tfma.MetricConfig(class_name='Recall'),
      tfma.MetricConfig(class_name='AUCPrecisionRecall'),
      tfma.MetricConfig(class_name='Calibration'),
      tfma.MetricConfig(class_name='MeanLabel'),
      tfma.MetricConfig(class_name='MeanPrediction'),
  ]
  if config.eval_plots:
    metrics += [tfma.MetricConfig(class_name='CalibrationPlot'),
                tfma.MetricConfig(class_name='ConfusionMatrixPlot')]
  return [tfma.MetricsSpec(metrics=metrics)]


def _multiclass_metrics_specs(config: PipelineConfig) -> List[tfma.MetricsSpec]:
  # Accuracy gates the blessing (a floor, and no drop below the baseline's
  # by more than max_accuracy_drop); per-class precision and recall (one
  # class against the rest) are reported.
  accuracy_threshold = _floor(config.min_accuracy, config.max_accuracy_drop)
  overall = [
      tfma.MetricConfig(class_name='ExampleCount'),
      # A Keras metric by name: TFMA computes it on the labels and predictions.
      tfma.MetricConfig(class_name='SparseCategoricalAccuracy', config='{"name": "accuracy"}',
                        per_slice_thresholds=_overall_only(accuracy_threshold)),
  ]
  if config.eval_plots:
    overall.append(tfma.MetricConfig(class_name='MultiClassConfusionMatrixPlot'))
  per_class = [tfma.MetricConfig(class_name='Precision'),
               tfma.MetricConfig(class_name='Recall')]
  return [tfma.MetricsSpec(metrics=overall),
          tfma.MetricsSpec(metrics=per_class, binarize=tfma.BinarizationOptions(
              class_ids={'values': list(range(features.NUM_CLASSES))}))]


def _ceiling(value: float, max_increase: float):
  """At most value; and at most max_increase (a fraction) above the baseline's."""
  threshold = tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(upper_bound={'value': value}))
  threshold.change_threshold.CopyFrom(tfma.GenericChangeThreshold(
      direction=tfma.MetricDirection.LOWER_IS_BETTER, relative={'value': max_increase}))
  return threshold


def _regression_metrics_specs(config: PipelineConfig) -> List[tfma.MetricsSpec]:
  # RMSE gates the blessing (a ceiling in the label's units, and no increase
  # over the baseline's by more than a fraction); the rest are reported.
  if config.max_rmse <= 0:
    raise ConfigError(
        f'max_rmse is {config.max_rmse}: a regression is blessed on its RMSE, in the label\'s '
        f'units, so state the largest acceptable one in examples/{features.EXAMPLE_NAME}.py\'s '
        f'CONFIG_DEFAULTS or {ENV_PREFIX}MAX_RMSE')
  rmse_threshold = _ceiling(config.max_rmse, config.max_rmse_increase)
  metrics = [
      tfma.MetricConfig(class_name='ExampleCount'),
      # A Keras metric by name (TFMA has no RMSE of its own).
      tfma.MetricConfig(class_name='RootMeanSquaredError', config='{"name": "rmse"}',
                        per_slice_thresholds=_overall_only(rmse_threshold)),
      tfma.MetricConfig(class_name='MeanAbsoluteError'),
      tfma.MetricConfig(class_name='MeanSquaredError'),
      tfma.MetricConfig(class_name='MeanLabel'),
      tfma.MetricConfig(class_name='MeanPrediction'),
  ]
  return [tfma.MetricsSpec(metrics=metrics)]


METRICS_SPECS = {features.BINARY: _binary_metrics_specs,
                 features.MULTICLASS: _multiclass_metrics_specs,
                 features.REGRESSION: _regression_metrics_specs}


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
  """What the Evaluator computes and what it blesses on: the task's metrics."""
  slices = [tfma.SlicingSpec()] + [
      tfma.SlicingSpec(feature_keys=[f]) for f in config.slices]
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(
          # Said, not guessed: TFMA would load the model with Keras to find
          # out, and a generic SavedModel loads faster than a Keras one.
          model_type=tfma_constants.TF_GENERIC,
          signature_name='serving_default',
          prediction_key=features.PREDICTION_KEY,
          label_key=features.LABEL_KEY,
          preprocessing_function_names=['transform_features'])],
      slicing_specs=slices,
      metrics_specs=METRICS_SPECS[features.TASK](config))
