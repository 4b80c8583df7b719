"""The iris example: which of three species is a flower, from four sizes?

Multi-class classification with the label a plain column of class names
(scikit-learn's copy of Fisher's iris data, 150 rows, in data/iris/).
Select it with <ENV_PREFIX>_EXAMPLE=iris (e.g. TAXI_EXAMPLE=iris).
"""

from examples.description import MULTICLASS, Feature

TASK = MULTICLASS

RAW_FEATURES = {
    'sepal_length': Feature('float', 'numeric', 0.0, required=True),
    'sepal_width': Feature('float', 'numeric', 0.0, required=True),
    'petal_length': Feature('float', 'numeric', 0.0, required=True),
    'petal_width': Feature('float', 'numeric', 0.0, required=True),
}

TRAINING_ONLY = []
# The label as it is in the CSV: one of CLASS_NAMES per row.
LABEL = 'species'
CLASS_NAMES = ['setosa', 'versicolor', 'virginica']

# Where this example's files are, its quality floors and slices; everything
# else is pipeline/configs.py's default. Its own names and output roots:
# the taxi model and this one never share a pipeline or a serving directory.
CONFIG_DEFAULTS = {
    'pipeline_name': 'iris',
    'model_name': 'iris',
    'data_root': 'data/iris',
    'schema_file': 'schema/iris.pbtxt',
    'hyperparameters_file': 'examples/iris_hyperparameters.json',
    'output_root': 'tfx_output/iris',
    'serving_dir': 'serving_model/iris',
    'train_steps': 200,
    'min_accuracy': 0.85,
    'slice_features': '',
}
