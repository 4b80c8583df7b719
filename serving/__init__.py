"""A local, drop-in replacement for tensorflow_model_server, its clients and
the deployment files for the official tensorflow/serving image."""
