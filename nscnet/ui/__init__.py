"""The dashboards: MLflow UI and Optuna dashboard behind one command, their access control."""
