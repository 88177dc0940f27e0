"""MLflow tracking: store creation, runs (parent/child, resume), naming, sweep points and the
files a sweep leaves for them. The sweep's own Hydra callback is sweepers/mlflow_callback.py."""
