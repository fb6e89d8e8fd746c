#!/usr/bin/env bash
# NSCNet over its grid (ArcFace, epoch length, lr, post-processing, K). Long: use several workers
# (studies/workers.sh) and a GPU. Usage: studies/nscnet-paper-grid.sh DATASET [extra args]
set -euo pipefail
data=${1:?dataset folder}; shift
nscnet study --model nscnet --data "$data" --k-min 64 --k-max 1024 --n-trials 200 --objective silhouette "$@"
