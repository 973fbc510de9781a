#!/usr/bin/env bash
# One GPU host: CUDA JAX, then a config. Multi-host GPU runs start this on every host with
# JAX's distributed variables set (COORDINATOR_ADDRESS, NUM_PROCESSES, PROCESS_ID).
#   bash launch/gpu.sh experiments/qwen25_coder_05b.py workdirs/qwen25_coder_05b [--config.x=y ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1; workdir=$2; shift 2
extra=()
[[ "$config" == *15b* ]] && extra=(--with-1.5b)
bash launch/setup.sh "${extra[@]}"
. .venv/bin/activate
pip install -q "jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
python -m azr_jax.main --config="$config" --workdir="$workdir" "$@"
