"""The diabetes example: how far will a patient's diabetes progress in a year?

Regression with the label a plain numeric column: scikit-learn's copy of the
diabetes data of Efron et al. (2004), 442 patients, ten baseline
measurements and a quantitative measure of disease progression one year
later (25 to 346), in data/diabetes/. Written once from
sklearn/datasets/data/diabetes_{data_raw,target}.csv.gz, the unscaled
values, with the column names of scikit-learn's description.
Select it with <ENV_PREFIX>_EXAMPLE=diabetes (e.g. TAXI_EXAMPLE=diabetes).
"""

from examples.description import REGRESSION, Feature

TASK = REGRESSION

# Order is the CSV header order. The types are the ones CsvExampleGen infers
# from the file (a column of whole numbers is an int).
RAW_FEATURES = {
    'age': Feature('int', 'numeric', 0, required=True),  # Years.
    'sex': Feature('int', 'categorical', 0, num_buckets=3, required=True),  # 1 or 2.
    'bmi': Feature('float', 'numeric', 0.0, required=True),  # Body mass index.
    'bp': Feature('float', 'numeric', 0.0, required=True),  # Mean blood pressure.
    # Six blood serum measurements.
    'tc': Feature('int', 'numeric', 0, required=True),  # Total cholesterol.
    'ldl': Feature('float', 'numeric', 0.0, required=True),  # Low-density lipoproteins.
    'hdl': Feature('float', 'numeric', 0.0, required=True),  # High-density lipoproteins.
    'tch': Feature('float', 'numeric', 0.0, required=True),  # Total cholesterol / HDL.
    'ltg': Feature('float', 'numeric', 0.0, required=True),  # Log of serum triglycerides.
    'glu': Feature('int', 'numeric', 0, required=True),  # Blood sugar level.
}

TRAINING_ONLY = []
# The label as it is in the CSV: a number per row.
LABEL = 'progression'

# Its own names, files and output roots, and its quality gates in the
# label's units: the eval split's RMSE must stay below MAX_RMSE, about
# 0.85 of the label's standard deviation (77), so a model that learnt less
# than a quarter of the variance is not blessed.
CONFIG_DEFAULTS = {
    'pipeline_name': 'diabetes',
    'model_name': 'diabetes',
    'data_root': 'data/diabetes',
    'schema_file': 'schema/diabetes.pbtxt',
    'hyperparameters_file': 'examples/diabetes_hyperparameters.json',
    'output_root': 'tfx_output/diabetes',
    'serving_dir': 'serving_model/diabetes',
    'train_steps': 300,
    'max_rmse': 65.0,
    'slice_features': 'sex',
}
