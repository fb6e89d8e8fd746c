#!/usr/bin/env bash
# The main job on the embedded defaults: synthetic songs -> dataset -> the three models ->
# analyses -> a short study, all logged to ./mlflow.db (MLflow) and ./optuna.journal (Optuna);
# files it makes (audio, dataset, predictions, the comparison page) go to ./demo.
# The steps are nscnet/demo.py:TASKS, each the `nscnet ...` command it prints, run in a few
# long-lived worker processes (imports paid once each), independent steps side by side, one per
# core; it ends with the seconds of every step. Options: --jobs N (steps at a time).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export MLFLOW_DISABLE_TELEMETRY=true
export NSCNET_EXPERIMENT=${NSCNET_EXPERIMENT:-nscnet-demo}
# the python of the `nscnet` on PATH (make demo: .venv/bin), this checkout's package unless
# PYTHONPATH already names one
PY=$(dirname "$(command -v nscnet || command -v python3)")/python
[ -x "$PY" ] || PY=python3
export PYTHONPATH=${PYTHONPATH:-$SRC}
exec "$PY" -m nscnet.demo "$@"
