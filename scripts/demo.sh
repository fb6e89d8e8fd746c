#!/usr/bin/env bash
# The main job on the embedded defaults: synthetic songs -> dataset -> the three models ->
# analyses -> a short study, all logged to ./mlflow.db (MLflow) and ./optuna.journal (Optuna);
# files it makes (audio, dataset, predictions, the comparison page) go to ./demo.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export MLFLOW_DISABLE_TELEMETRY=true
export NSCNET_EXPERIMENT=${NSCNET_EXPERIMENT:-nscnet-demo}
E=(--experiment "$NSCNET_EXPERIMENT")
TIMES=()  # "seconds step" per step, printed at the end: what the demo did and where its time went
timed() { local t0=$SECONDS; "$@"; TIMES+=("$((SECONDS - t0)) s  ${STEP_NAME}"); }
step() { echo; echo "== nscnet $*"; STEP_NAME="nscnet $1"; timed nscnet_logged "$@"; }
nscnet_logged() { nscnet "$@" "${E[@]}" | tee demo/last.log; }
run_id() { sed -n 's/^run_id=//p' demo/last.log | tail -1; }
mkdir -p demo

step synth --out demo/audio --types 8 --songs 480 --zipf_s 1.0 --seed 0
step preprocess --audio demo/audio --out demo/dataset --duration_s 3 --frames 128 --n_mels 64
step basenet --data demo/dataset --k 8 --pca_dim 64 --whiten false --l2 false --truth true
BASENET=$(run_id)
step zipf --run_id "$BASENET" --bootstrap 500
step entropy --audio demo/audio
step nscnet --data demo/dataset --k 8 --epochs 3 --backbone small_cnn --truth true --num_workers 0
NSCNET=$(run_id)
step predict --run_id "$NSCNET" --data demo/dataset --out demo/predictions
step pretrain --data demo/dataset --k 8 --epochs 2 --truth true --num_workers 0
step vaenet --data demo/dataset --k 8 --epochs 3 --truth true --num_workers 0
step study --model basenet --data demo/dataset --n_trials 12 --k_min 2 --k_max 32 --params k --truth true --overrides whiten=false,l2=false,pca_dim=32 --study_name demo-basenet
echo; echo "== comparison page"
STEP_NAME="comparison page"; timed python "$SRC/dashboards/compare.py" --experiment "$NSCNET_EXPERIMENT" --out demo/comparison.html
echo; echo "== nscnet report --run_id $NSCNET --out demo/report"  # logged to that run: no --experiment
STEP_NAME="nscnet report"; timed nscnet report --run_id "$NSCNET" --out demo/report
# PNG copies of the runs' figures are rendered after each run by detached workers
# (nscnet.runs.pngjob); the demo is done when they are
echo; echo "== PNG copies of the figures"
STEP_NAME="PNG copies (waited for)"; timed python -m nscnet.runs.pngjob --wait

echo; echo "== what the demo did, seconds per step (${SECONDS} s in all)"
printf '%s\n' "${TIMES[@]}"

cat <<TXT

Demo done. Runs are in the MLflow store $(pwd)/mlflow.db (experiment "$NSCNET_EXPERIMENT"),
the study in $(pwd)/optuna.journal, the comparison page of all runs in $(pwd)/demo/comparison.html.
Open both dashboards with:

    .venv/bin/nscnet ui --experiment $NSCNET_EXPERIMENT
    # MLflow UI:        http://127.0.0.1:5000/#/experiments/<id>/runs?workflowType=machine_learning&compareRunsMode=CHART
    # Optuna dashboard: http://127.0.0.1:8080

or the MLflow UI alone: .venv/bin/mlflow ui --backend-store-uri sqlite:///$(pwd)/mlflow.db

The report of the NSCNet run (look at and listen to every cluster; offline, one file):

    $(pwd)/demo/report/report.html   (also artifact report/report.html of run $NSCNET)
TXT
