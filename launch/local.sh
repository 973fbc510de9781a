#!/usr/bin/env bash
# The README's main command: set up (or reuse) .venv and the embedded Qwen2.5-Coder-0.5B-Instruct, then
# run seeding and one self-play step on this machine's CPU (experiments/qwen25_coder_05b_cpu.py).
#   bash launch/local.sh [experiments/CONFIG.py] [WORKDIR] [--config.x=y ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-experiments/qwen25_coder_05b_cpu.py}
workdir=${2:-workdirs/$(basename "$config" .py)}
shift $(( $# > 2 ? 2 : $# ))
bash launch/setup.sh
. .venv/bin/activate
python -m azr_jax.main --config="$config" --workdir="$workdir" "$@"
echo
echo "Metrics: $workdir/metrics.jsonl; samples: $workdir/samples.jsonl"
echo "(tensorboard is not a dependency: pip install tensorboard)"
