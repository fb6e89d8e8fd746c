#!/usr/bin/env bash
# K only, by powers of two then binary search; post-processing fixed by --overrides.
# Usage: studies/basenet-k.sh DATASET K_MIN K_MAX [extra args]
set -euo pipefail
data=${1:?dataset folder}; k_min=${2:-2}; k_max=${3:-64}; shift $(( $# < 3 ? $# : 3 ))
nscnet study --model basenet --data "$data" --params k --k-min "$k_min" --k-max "$k_max" \
  --overrides pca_dim=128,whiten=false,l2=false --n-trials 30 "$@"
