#!/usr/bin/env bash
# A TPU VM slice: copy the repo to every worker, set it up, start the same command on all of them.
#   bash launch/tpu_vm.sh TPU_NAME ZONE experiments/azr_7b.py gs://BUCKET/azr/azr_7b [--config.x=y ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tpu=$1; zone=$2; config=$3; workdir=$4; shift 4
repo=azr_jax
gcloud compute tpus tpu-vm scp --recurse --zone "$zone" --worker=all \
  azr_jax experiments launch requirements*.txt pyproject.toml "$tpu:~/$repo/"
overrides=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e; cd ~/$repo && bash launch/setup.sh && . .venv/bin/activate &&
  pip install -q 'jax[tpu]=='\$(python -c 'import jax; print(jax.__version__)') &&
  python -m azr_jax.main --config=$config --workdir=$workdir$overrides"
