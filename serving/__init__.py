"""A local, drop-in replacement for tensorflow_model_server, and the deployment
files for the official tensorflow/serving image. Imports nothing of the
project but compat/ (tests/test_layout.py checks it)."""
