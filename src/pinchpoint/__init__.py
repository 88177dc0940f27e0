"""pinchpoint: declarative experiment sweeps for the MLPerf Training workloads."""
__version__ = "0.1.0"
