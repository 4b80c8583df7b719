"""The hyperparameters models/model.py reads: the one list of their keys.

models/hyperparameters.json (and the tuned copy `local_runner.py --tune`
saves) may hold only these keys; pipeline/configs.py refuses any other when
the pipeline is built, since model.py would silently ignore it. A key added
to model.py goes here too (tests/test_configs.py checks the two agree).
This module imports nothing heavy: configs.load() reads it on every run.
"""

from typing import List

# Key: what model.py does with it.
KNOWN_KEYS = {
    'batch_size': 'examples per training step (run_fn, tuner_fn)',
    'crosses': "feature crosses of the wide part, 'a*b,c*d' (build_model)",
    'cross_bins': 'hash bins of each cross, default 256 (build_model)',
    'dropout': 'dropout rate after each hidden layer (build_model)',
    'early_stopping_patience': ('scorings of the eval split without a better Tuner objective '
                                'before training stops, 0 for never; default 4 (train)'),
    'embedding_dim': 'embedding size of each categorical feature (build_model)',
    'eval_every': ('training steps between scorings of the eval split, whose best weights '
                   'are exported; 0 scores after the last step only; default 25 (train)'),
    'hidden_units': "sizes of the hidden layers, '128,64' (build_model)",
    'learning_rate': 'Adam learning rate (build_model)',
    'numeric_buckets': 'one-hot bins of each numeric feature, 0 for none (build_model)',
    'numeric_bins': ("how the wide part and the crosses bin numbers: 'even' (numeric_buckets "
                     "bins over +-2.5 standard deviations, the default) or 'quantile' "
                     "(Transform's QUANTILE_BUCKETS quantiles; numeric_buckets then only "
                     'switches the one-hot bins on or off) (build_model)'),
    'bucket_values': ("the deep part also reads each 'bucket' feature's z-scored value, "
                      'default false (build_model)'),
    'seed': 'training seed: initial weights, dropout, shuffling; default 42 (run_fn)',
    # The gradient-boosted trees family (models/trees.py, its own
    # models/trees_hyperparameters.json); 'seed' is its random_seed too.
    'num_trees': 'most trees grown; early stopping on eval may stop sooner (trees)',
    'max_depth': 'depth of each tree (trees)',
    'shrinkage': "learning rate of the boosting, TF-DF's 'shrinkage' (trees)",
    'min_examples': 'fewest examples in a leaf (trees)',
    'subsample': 'fraction of the train split each tree sees, default 1 (trees)',
    'l2_regularization': 'L2 penalty on leaf values, default 0 (trees)',
    'early_stopping_num_trees_look_ahead':
        'trees grown past the best eval loss before stopping (trees)',
}


def parse_crosses(text) -> List[List[str]]:
  """'a*b,c*d' -> [['a', 'b'], ['c', 'd']], split exactly as model.py splits it."""
  return [c.split('*') for c in str(text or '').split(',') if c]
