#!/usr/bin/env bash
# Start N workers of one study and wait for them. Every worker runs trials until the study has
# --n-trials complete trials. Usage: studies/workers.sh N nscnet-study-args...
#   studies/workers.sh 2 --data demo/dataset --n-trials 40                      # one machine, journal file
#   studies/workers.sh 4 --data /shared/ds --storage postgresql://user:pw@db/optuna  # on each machine
set -euo pipefail
n=${1:?number of workers}; shift
pids=()
for i in $(seq "$n"); do
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} nscnet study "$@" > "study-worker-$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
