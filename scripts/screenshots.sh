#!/usr/bin/env bash
# The README's dashboard screenshots, taken from the store of `make demo` in this folder:
# starts `nscnet ui` on loopback, shoots the MLflow UI address it prints and the Optuna
# dashboard with headless Chromium, stops the UI. Usage: scripts/screenshots.sh [OUT_DIR]
set -euo pipefail
out=${1:-docs}
bin=$(dirname "$0")/../.venv/bin
command -v chromium >/dev/null || { echo "screenshots: needs chromium (apt-get install chromium)" >&2; exit 1; }
log=$(mktemp)
setsid "$bin/nscnet" ui --experiment "${NSCNET_EXPERIMENT:-nscnet-demo}" --mlflow_port 5077 --dashboard_port 8077 >"$log" 2>&1 &
ui=$!
trap 'kill -TERM -- -$ui 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 240); do grep -q "Press Ctrl-C" "$log" && break; sleep 0.5; done
mlflow_url=$(sed -n 's/^MLflow UI: *//p' "$log" | head -1)
optuna_url=$(sed -n 's/^Optuna dashboard: *\([^ ]*\).*/\1/p' "$log" | head -1)
[ -n "$mlflow_url" ] || { cat "$log" >&2; exit 1; }
shoot() {  # URL FILE
  profile=$(mktemp -d)
  chromium --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$profile" \
    --window-size=1400,900 --virtual-time-budget=20000 --screenshot="$2" "$1" >/dev/null 2>&1
  rm -rf "$profile"
  echo "$2"
}
shoot "$mlflow_url" "$out/mlflow-ui.png"
shoot "$optuna_url" "$out/optuna-dashboard.png"
