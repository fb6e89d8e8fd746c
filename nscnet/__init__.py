"""nscnet: deep clustering of bird songs, every step tracked in MLflow, every sweep an Optuna study."""

__version__ = "0.1.0"
