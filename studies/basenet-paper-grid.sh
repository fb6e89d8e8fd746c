#!/usr/bin/env bash
# BASENet over the paper's grid, then K by binary search. Usage: studies/basenet-paper-grid.sh DATASET [extra args]
set -euo pipefail
data=${1:?dataset folder written by nscnet preprocess}; shift
nscnet study --model basenet --data "$data" --k-min 64 --k-max 2048 --n-trials 110 "$@"
