#!/usr/bin/env bash
# GPU hosts: set up .venv with CUDA JAX (launch/setup.sh, then jax[cuda12]) and run CONFIG, one process per host.
#   bash launch/gpu.sh CONFIG WORKDIR [--config.x=y ...] [--dry_run] [-- MAIN_FLAGS ...]         # this host
#   bash launch/gpu.sh CONFIG WORKDIR --hosts=h1,h2,... [--port=1234] [--remote_dir=DIR] [...]  # over ssh
#   bash launch/gpu.sh CONFIG WORKDIR [--slurm [--nodes=N]] [...]                               # under SLURM
# One host unless told otherwise (relative paths are relative to the repository root). Under SLURM
# (SLURM_NTASKS > 1, or --slurm; N = --nodes or the allocation's node count) it sets up once here, then
# `srun` starts one task per node with --coordinator_address (the first node) --num_processes --process_id
# and SLURM_LOCALID unset: JAX's own SLURM detection would give each process only GPU SLURM_LOCALID.
# --hosts: ssh to each host in turn for the set-up (--setup_only), then starts every host at once
# (--no_setup) with --coordinator_address=h1:PORT --num_processes=N --process_id=I, output
# prefixed [host]; exit status non-zero if any host failed. Each host needs the repository at --remote_dir
# (default: this one's path) and the weights at the same path (a shared filesystem, or gs://); user@host
# works. --single_host ignores SLURM; --setup_only / --no_setup do only / skip the set-up.
# --dry_run prints the commands (one per line, shell-quoted) and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. launch/lib.sh

positional=(); overrides=(); passthrough=()
hosts=""; hosts_given=0; port=""; remote_dir=""; slurm=0; nodes=""; single=0; setup_only=0; no_setup=0
while [ $# -gt 0 ]; do
  case $1 in
    --dry_run) DRY_RUN=1 ;;
    --hosts=*) hosts=${1#*=}; hosts_given=1 ;;
    --port=*) port=${1#*=} ;;
    --remote_dir=*) remote_dir=${1#*=} ;;
    --slurm) slurm=1 ;;
    --nodes=*) nodes=${1#*=} ;;
    --single_host) single=1 ;;
    --setup_only) setup_only=1; single=1 ;;
    --no_setup) no_setup=1; single=1 ;;
    --) shift; passthrough=("$@"); break ;;
    --config.*) overrides+=("$1") ;;
    -*) usage_error "unknown option $1 (options take their value as --name=value)" ;;
    *) positional+=("$1") ;;
  esac
  shift
done
[ ${#positional[@]} -eq 2 ] || usage_error "expected CONFIG WORKDIR, got ${#positional[@]} arguments (overrides are --config.x=y)"
config=${positional[0]}; workdir=${positional[1]}
[ -n "$workdir" ] || usage_error "WORKDIR must not be empty"
[ -f "$(config_file "$config")" ] || usage_error "no config file $(config_file "$config")"
[ "$setup_only" = 1 ] && [ "$no_setup" = 1 ] && usage_error "--setup_only and --no_setup exclude each other"

if [ "$hosts_given" = 1 ]; then
  mode=hosts
  [ "$slurm" = 0 ] && [ "$single" = 0 ] && [ -z "$nodes" ] || usage_error "--hosts goes with none of --slurm, --nodes, --single_host, --setup_only, --no_setup"
  host_list=()
  IFS=, read -r -a host_list <<< "$hosts"
  [ ${#host_list[@]} -gt 0 ] || usage_error "--hosts needs at least one host"
  for h in "${host_list[@]}"; do
    case $h in ''|*[!A-Za-z0-9_.@:-]*) usage_error "bad host '$h' in --hosts" ;; esac
  done
  case $hosts in *,) usage_error "bad host '' in --hosts" ;; esac
elif [ "$single" = 1 ]; then
  mode=single
  [ "$slurm" = 0 ] && [ -z "$nodes" ] || usage_error "--single_host, --setup_only and --no_setup go without --slurm and --nodes"
elif [ "$slurm" = 1 ] || [ "${SLURM_NTASKS:-1}" -gt 1 ] 2>/dev/null; then
  mode=slurm
  nodes=${nodes:-${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-}}}
  [ -n "$nodes" ] || usage_error "--slurm outside an allocation needs --nodes=N"
  case $nodes in ''|*[!0-9]*|0) usage_error "bad node count '$nodes'" ;; esac
else
  mode=single
  [ -z "$nodes" ] || usage_error "--nodes goes with --slurm"
fi
if [ -n "$port" ]; then
  case $mode in hosts|slurm) ;; *) usage_error "--port goes with --hosts or --slurm" ;; esac
  case $port in *[!0-9]*|'') usage_error "bad port '$port'" ;; esac
  [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || usage_error "bad port '$port'"
fi
port=${port:-1234}
[ -z "$remote_dir" ] || [ "$mode" = hosts ] || usage_error "--remote_dir goes with --hosts"

setup=(bash launch/setup.sh)
case $(config_file "$config") in *15b*) setup+=(--with-1.5b) ;; esac
# main's arguments, quoted: the config, the workdir, the overrides, then what came after --.
main_args=$(qcmd "--config=$config" "--workdir=$workdir" ${overrides[@]+"${overrides[@]}"} ${passthrough[@]+"${passthrough[@]}"})
jax_cuda="pip install -q \"jax[cuda12]==\$(python -c 'import jax; print(jax.__version__)')\""
mem_fraction=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}

step "cd $(q "$REPO_ROOT")"
case $mode in
  single)
    if [ "$no_setup" = 0 ]; then
      step "$(qcmd "${setup[@]}")"
      step ". .venv/bin/activate"
      step "$jax_cuda"
    else
      step ". .venv/bin/activate"
    fi
    if [ "$setup_only" = 0 ]; then
      step "export XLA_PYTHON_CLIENT_MEM_FRACTION=$(q "$mem_fraction")"
      step "python -m azr_jax.main $main_args"
    fi
    ;;

  slurm)
    step "$(qcmd "${setup[@]}")"   # once, here: the nodes share this .venv (run in parallel, pip would race)
    step ". .venv/bin/activate"
    step "$jax_cuda"
    task="unset SLURM_LOCALID; export XLA_PYTHON_CLIENT_MEM_FRACTION=$(q "$mem_fraction"); \
exec .venv/bin/python -m azr_jax.main $main_args \
--coordinator_address=\"\$(scontrol show hostnames \"\$SLURM_STEP_NODELIST\" | head -n 1)\":$port \
--num_processes=\"\$SLURM_NTASKS\" --process_id=\"\$SLURM_PROCID\""
    step "$(qcmd srun "--nodes=$nodes" "--ntasks=$nodes" --ntasks-per-node=1 bash -c "$task")"
    ;;

  hosts)
    dir=${remote_dir:-$REPO_ROOT}
    case $dir in
      "~") cd_dir="~" ;;
      "~/"*) cd_dir="~/$(q "${dir#"~/"}")" ;;
      *) cd_dir=$(q "$dir") ;;
    esac
    coordinator=${host_list[0]#*@}:$port
    n=${#host_list[@]}
    # The set-up one host after another (a shared filesystem means a shared .venv), then all at once.
    for h in "${host_list[@]}"; do
      step "$(qcmd ssh -o BatchMode=yes "$h" "cd $cd_dir && bash launch/gpu.sh --setup_only $(qcmd "$config" "$workdir")")"
    done
    pids=()
    i=0
    for h in "${host_list[@]}"; do
      remote="cd $cd_dir && bash launch/gpu.sh --no_setup $(qcmd "$config" "$workdir" ${overrides[@]+"${overrides[@]}"}) \
-- $(qcmd ${passthrough[@]+"${passthrough[@]}"} "--coordinator_address=$coordinator" "--num_processes=$n" "--process_id=$i")"
      step "$(qcmd ssh -o BatchMode=yes "$h" "$remote") 2>&1 | awk $(q "{ print \"[$h] \" \$0; fflush() }") &"
      [ "$DRY_RUN" = 1 ] || pids+=("$!")
      i=$((i + 1))
    done
    if [ "$DRY_RUN" = 1 ]; then
      step wait
    else
      trap 'kill $(jobs -p) 2>/dev/null; exit 130' INT TERM
      failed=0; i=0
      for pid in "${pids[@]}"; do
        if ! wait "$pid"; then echo "gpu.sh: ${host_list[$i]} (process $i) failed" >&2; failed=1; fi
        i=$((i + 1))
      done
      exit $failed
    fi
    ;;
esac
