#!/usr/bin/env bash
# A TPU VM slice: copy the repository to every worker (into ~/azr_jax), set each up, and start the same
# command on all of them at once (`gcloud ... ssh --worker=all`; JAX finds the other workers itself). The
# ssh stays attached, gcloud prefixes each line with its worker; run it inside tmux/screen.
#   bash launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...] [--dry_run] [-- MAIN_FLAGS ...]
# CONFIG is a file of this repository; relative paths are relative to the repository root. WORKDIR should
# be gs:// on a multi-worker slice (every worker writes there). The weights, model.checkpoint of the config
# or of a --config.model.checkpoint=... override: gs:// is read by every worker as is; a local directory
# is copied to every worker (~/azr_jax/checkpoints/NAME, on each launch) and model.checkpoint pointed at
# the copy; anything else is passed as is (it must then exist on every worker).
# --dry_run prints the commands (one per line, shell-quoted) and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. launch/lib.sh

positional=(); overrides=(); passthrough=()
while [ $# -gt 0 ]; do
  case $1 in
    --dry_run) DRY_RUN=1 ;;
    --) shift; passthrough=("$@"); break ;;
    --config.*) overrides+=("$1") ;;
    -*) usage_error "unknown option $1" ;;
    *) positional+=("$1") ;;
  esac
  shift
done
[ ${#positional[@]} -eq 4 ] || usage_error "expected TPU_NAME ZONE CONFIG WORKDIR, got ${#positional[@]} arguments (overrides are --config.x=y)"
tpu=${positional[0]}; zone=${positional[1]}; config=${positional[2]}; workdir=${positional[3]}
[ -n "$tpu" ] && [ -n "$zone" ] && [ -n "$workdir" ] || usage_error "TPU_NAME, ZONE and WORKDIR must not be empty"

dest=azr_jax  # on every worker, under the home directory
code=(azr_jax experiments launch third_party README.md pyproject.toml)
for f in requirements*.txt; do [ -e "$f" ] && code+=("$f"); done

cfg_file=$(config_file "$config")
[ -f "$cfg_file" ] || usage_error "no config file $cfg_file"
cfg_rel=$(repo_relative "$cfg_file") || usage_error "$cfg_file is outside the repository (only the repository is copied to the workers)"
case " ${code[*]} " in
  *" ${cfg_rel%%/*} "*) ;;
  *) usage_error "$cfg_rel is not copied to the workers (only ${code[*]} are)" ;;
esac
[ "$cfg_file" = "$config" ] && config=$cfg_rel || config=$cfg_rel:${config#*:}

# Where the weights are: the last --config.model.checkpoint=... wins (as in absl), else the config's.
kept=(); ckpt=""; ckpt_given=0
for o in ${overrides[@]+"${overrides[@]}"}; do
  case $o in
    --config.model.checkpoint=*) ckpt=${o#*=}; ckpt_given=1 ;;
    --config.model.checkpoint) usage_error "give the checkpoint as --config.model.checkpoint=PATH" ;;
    *) kept+=("$o") ;;
  esac
done
if [ "$ckpt_given" = 0 ]; then
  py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python
  # Loads the config file as config_flags would (the repository on sys.path, get_config(arg) for file:arg).
  read_checkpoint='
import importlib.util, sys
sys.path.insert(0, ".")
path, sep, arg = sys.argv[1].partition(":")
spec = importlib.util.spec_from_file_location("azr_launch_config", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
c = module.get_config(arg) if sep else module.get_config()
print("checkpoint=" + str(getattr(getattr(c, "model", None), "checkpoint", "") or ""))'
  if ! ckpt=$("$py" -c "$read_checkpoint" "$config"); then
    echo "tpu_vm.sh: could not read model.checkpoint from $config with $py (run bash launch/setup.sh," \
      "or give --config.model.checkpoint=PATH)" >&2
    exit 1
  fi
  ckpt=$(printf '%s\n' "$ckpt" | sed -n 's/^checkpoint=//p' | tail -n 1)
fi

ckpt_flag=()   # the override main gets, already quoted for the workers' shell
copy_ckpt=""
case $ckpt in
  "") [ "$ckpt_given" = 1 ] && ckpt_flag=("$(q "--config.model.checkpoint=")") ;;
  gs://*) [ "$ckpt_given" = 1 ] && ckpt_flag=("$(q "--config.model.checkpoint=$ckpt")") ;;
  *)
    if [ -d "$ckpt" ]; then
      copy_ckpt=${ckpt%/}; [ -n "$copy_ckpt" ] || copy_ckpt=/
      name=$(basename "$copy_ckpt")
      case $name in .|..|/) copy_ckpt=$(cd "$ckpt" && pwd -P); name=$(basename "$copy_ckpt") ;; esac
      ckpt_flag=("--config.model.checkpoint=\"\$HOME\"/$dest/checkpoints/$(q "$name")")
    else
      echo "tpu_vm.sh: model.checkpoint $ckpt is neither gs:// nor a local directory; passed as is (it must" \
        "exist on every worker)" >&2
      [ "$ckpt_given" = 1 ] && ckpt_flag=("$(q "--config.model.checkpoint=$ckpt")")
    fi
    ;;
esac
case $workdir in
  gs://*) ;;
  *) echo "tpu_vm.sh: WORKDIR $workdir is not gs://: on a multi-worker slice every worker writes its own" \
       "local copy (use gs:// there)" >&2 ;;
esac

gcloud_ssh=(gcloud compute tpus tpu-vm ssh "$tpu" "--zone=$zone" --worker=all)
gcloud_scp=(gcloud compute tpus tpu-vm scp --recurse "--zone=$zone" --worker=all)

step "cd $(q "$REPO_ROOT")"
# Fresh code on every worker (its .venv and checkpoints/ stay), then the weights when they are local.
step "$(qcmd "${gcloud_ssh[@]}" "--command=rm -rf $dest/azr_jax $dest/experiments $dest/launch $dest/third_party && mkdir -p $dest/checkpoints")"
step "$(qcmd "${gcloud_scp[@]}" "${code[@]}" "$tpu:$dest/")"
[ -n "$copy_ckpt" ] && step "$(qcmd "${gcloud_scp[@]}" "$copy_ckpt" "$tpu:$dest/checkpoints/")"

main="python -m azr_jax.main $(qcmd "--config=$config" "--workdir=$workdir" ${kept[@]+"${kept[@]}"})"
[ ${#ckpt_flag[@]} -gt 0 ] && main="$main ${ckpt_flag[0]}"
[ ${#passthrough[@]} -gt 0 ] && main="$main $(qcmd "${passthrough[@]}")"
remote="cd $dest && bash launch/setup.sh && . .venv/bin/activate && \
pip install -q \"jax[tpu]==\$(python -c 'import jax; print(jax.__version__)')\" && $main"
step "$(qcmd "${gcloud_ssh[@]}" "--command=$remote")"
