"""What the example's task (models/features.py) decides in the model: the
output layer, the loss, the training metrics and the Tuner's objective."""

import tensorflow as tf
import tf_keras as keras

from models import features


def head(x):
  """Binary: P(class 1), [batch, 1]; multi-class: one probability per class;
  regression: one linear unit, the predicted number in the label's units."""
  if features.TASK == features.MULTICLASS:
    return keras.layers.Dense(features.NUM_CLASSES, activation='softmax',
                              name='probabilities')(x)
  if features.TASK == features.REGRESSION:
    return keras.layers.Dense(1, name='prediction')(x)
  return keras.layers.Dense(1, activation='sigmoid', name='probability')(x)


def loss():
  if features.TASK == features.MULTICLASS:
    return keras.losses.SparseCategoricalCrossentropy()
  if features.TASK == features.REGRESSION:
    # The squared error: what the RMSE that blesses the model measures.
    return keras.losses.MeanSquaredError()
  return keras.losses.BinaryCrossentropy()


def keras_metrics():
  if features.TASK == features.MULTICLASS:
    return [keras.metrics.SparseCategoricalAccuracy(name='accuracy')]
  if features.TASK == features.REGRESSION:
    return [keras.metrics.RootMeanSquaredError(name='rmse'),
            keras.metrics.MeanAbsoluteError(name='mae')]
  return [keras.metrics.AUC(name='auc'), keras.metrics.BinaryAccuracy(name='accuracy')]


def label_for_loss(y):
  """Labels as the loss wants them: class ids [batch], or 0/1 (binary) or
  the number (regression) as [batch, 1] floats."""
  if features.TASK == features.MULTICLASS:
    return tf.reshape(y, [-1])
  return tf.reshape(tf.cast(y, tf.float32), [-1, 1])


# What the Tuner optimises: a metric of keras_metrics on the eval split, and
# its direction (keras_tuner.Objective's arguments).
TUNER_OBJECTIVE = {features.BINARY: ('val_auc', 'max'),
                   features.MULTICLASS: ('val_accuracy', 'max'),
                   features.REGRESSION: ('val_rmse', 'min')}
