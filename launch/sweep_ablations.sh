#!/usr/bin/env bash
# The paper's ablations (docs/algorithm.md section 10) on one TPU slice, one after another.
#   bash launch/sweep_ablations.sh TPU_NAME ZONE gs://BUCKET/azr [--config.x=y ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tpu=$1; zone=$2; root=$3; shift 3
for config in experiments/azr_7b.py experiments/ablation_*.py; do
  name=$(basename "$config" .py)
  echo "=== $name"
  bash launch/tpu_vm.sh "$tpu" "$zone" "$config" "$root/$name" "$@"
done
