#!/usr/bin/env bash
# The paper's ablations (docs/algorithm.md section 10): experiments/azr_7b.py and every experiments/ablation_*.py,
# each into ROOT/NAME, through launch/tpu_vm.sh.
#   bash launch/sweep_ablations.sh TPU_NAME ZONE ROOT [--config.x=y ...] [--dry_run] [-- MAIN_FLAGS ...]
#   bash launch/sweep_ablations.sh --tpus=NAME1,NAME2,... ZONE ROOT [--config.x=y ...] [--dry_run] [...]
# One slice: the configs one after another, stopping at the first failure. --tpus: the slices (all in ZONE)
# in parallel, config i on slice i mod K (one config each when K >= the number of configs; a slice with
# several runs them one after another), output prefixed [NAME]; exit status non-zero if any slice failed.
# ROOT is gs://BUCKET/PATH for multi-worker slices.
# --dry_run prints the commands (one per line, shell-quoted) and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. launch/lib.sh

positional=(); extra=(); tpus=""; tpus_given=0
while [ $# -gt 0 ]; do
  case $1 in
    --dry_run) DRY_RUN=1 ;;
    --tpus=*) tpus=${1#*=}; tpus_given=1 ;;
    --) extra+=("$@"); break ;;
    --config.*) extra+=("$1") ;;
    -*) usage_error "unknown option $1" ;;
    *) positional+=("$1") ;;
  esac
  shift
done

if [ "$tpus_given" = 1 ]; then
  [ ${#positional[@]} -eq 2 ] || usage_error "with --tpus: expected ZONE ROOT, got ${#positional[@]} arguments"
  zone=${positional[0]}; root=${positional[1]}
  slices=()
  IFS=, read -r -a slices <<< "$tpus"
  case ",$tpus," in *,,*) usage_error "bad --tpus=$tpus" ;; esac
  [ ${#slices[@]} -gt 0 ] || usage_error "--tpus needs at least one name"
else
  [ ${#positional[@]} -eq 3 ] || usage_error "expected TPU_NAME ZONE ROOT, got ${#positional[@]} arguments (overrides are --config.x=y)"
  slices=("${positional[0]}"); zone=${positional[1]}; root=${positional[2]}
fi
for t in "${slices[@]}"; do
  case $t in ''|*[!A-Za-z0-9_.-]*) usage_error "bad TPU name '$t'" ;; esac
done
[ -n "$zone" ] && [ -n "$root" ] || usage_error "ZONE and ROOT must not be empty"
root=${root%/}

configs=(experiments/azr_7b.py)
for f in experiments/ablation_*.py; do [ -f "$f" ] && configs+=("$f"); done

# The launch of config number $1 on slice $2.
launch() {
  qcmd bash launch/tpu_vm.sh "$2" "$zone" "${configs[$1]}" "$root/$(basename "${configs[$1]}" .py)" ${extra[@]+"${extra[@]}"}
}

step "cd $(q "$REPO_ROOT")"
if [ "$tpus_given" = 0 ]; then
  for i in "${!configs[@]}"; do
    step "$(launch "$i" "${slices[0]}")"
  done
  exit 0
fi

k=${#slices[@]}
[ "$k" -le "${#configs[@]}" ] || echo "sweep_ablations.sh: ${#configs[@]} configs for $k slices; slices from ${slices[${#configs[@]}]} on stay idle" >&2
pids=(); names=()
for ((s = 0; s < k && s < ${#configs[@]}; s++)); do
  chain=""
  for ((i = s; i < ${#configs[@]}; i += k)); do
    chain="$chain${chain:+ && }$(launch "$i" "${slices[$s]}")"
  done
  [ $((s + k)) -lt ${#configs[@]} ] && chain="{ $chain; }"
  step "$chain 2>&1 | awk $(q "{ print \"[${slices[$s]}] \" \$0; fflush() }") &"
  [ "$DRY_RUN" = 1 ] || pids+=("$!")
  names+=("${slices[$s]}")
done
if [ "$DRY_RUN" = 1 ]; then
  step wait
  exit 0
fi
trap 'kill $(jobs -p) 2>/dev/null; exit 130' INT TERM
failed=0
for s in "${!pids[@]}"; do
  if ! wait "${pids[$s]}"; then echo "sweep_ablations.sh: slice ${names[$s]} failed" >&2; failed=1; fi
done
exit $failed
