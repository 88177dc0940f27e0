"""MLflow tracking: store creation, runs (parent/child, resume), naming, Hydra sweep callback."""
