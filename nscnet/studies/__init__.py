"""Optuna studies over the model entry points (`nscnet study <model>`).

- `space`: search spaces derived from the model config dataclasses, the grid, the K bisection;
- `storage`: journal file or database storage with heartbeats, password masking;
- `worker`: the ask/claim/run/tell loop shared by every worker process;
- `study`: `run_study(cfg)`, the entry point (MLflow parent run, feature reuse, summary).
"""

from nscnet.studies.study import run_study

__all__ = ["run_study"]
