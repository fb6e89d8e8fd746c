"""The run platform: MLflow tracking (the only MLflow importer), run names and notes, locks, console output."""
