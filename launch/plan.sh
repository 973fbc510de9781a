#!/usr/bin/env bash
# Will CONFIG fit TOPOLOGY? Compiles one self-play step ahead of time for the slice (abstract weights, no
# checkpoint needed) and prints per-chip memory; exit status 0 only when it fits. Runs on any machine.
#   bash launch/plan.sh experiments/azr_14b.py v5p:2x4x4 [--config.optimizer.microbatch_size=16 ...]
#   bash launch/plan.sh experiments/tiny.py cpu:8
# TPU topologies (v5p:2x4x4, v4:4x4x4, v5e:4x8, v6e:4x8) need libtpu: installed once into .venv-libtpu (200 MB),
# seen only by this command.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: bash launch/plan.sh CONFIG TOPOLOGY [extra absl flags]" >&2
  exit 2
fi
config=$1; topology=$2; shift 2
if [[ "$topology" != cpu:* ]]; then
  bash launch/setup.sh --libtpu >/dev/null
else
  bash launch/setup.sh >/dev/null
fi
. .venv/bin/activate
if [[ "$topology" != cpu:* ]]; then
  # The compiler runs here; no TPU is opened (JAX_PLATFORMS=cpu), libtpu only describes and compiles for the slice.
  export PYTHONPATH="$PWD/.venv-libtpu${PYTHONPATH:+:$PYTHONPATH}" JAX_PLATFORMS=cpu TPU_SKIP_MDS_QUERY=1
  # Quiets libtpu's start-up probing for a real TPU VM (the slice itself comes from --topology).
  export TPU_ACCELERATOR_TYPE="${TPU_ACCELERATOR_TYPE:-${topology%%:*}-8}" TPU_WORKER_HOSTNAMES="${TPU_WORKER_HOSTNAMES:-localhost}"
fi
exec python -m azr_jax.plan --config="$config" --topology="$topology" "$@"
