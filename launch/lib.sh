# Shared by the launchers (tpu_vm.sh, gpu.sh, sweep_ablations.sh); sourced from the repository root.
# Every command a launcher runs goes through `step`: with --dry_run it is printed (one line, shell-quoted,
# ready to paste), otherwise echoed to stderr as "+ LINE" and run with eval, so what a dry run prints is
# exactly what a real run executes. Written for bash 3.2 too (macOS): no ${x@Q}, mapfile or
# associative arrays, and empty arrays expanded as ${a[@]+"${a[@]}"} under set -u.

DRY_RUN=0
REPO_ROOT=$(pwd -P)

# One word for the shell: as is when it is made of safe characters only, else in single quotes.
q() {
  local s=$1 sq="'" esc="'\\''"
  case $s in
    '') printf "''" ;;
    *[!A-Za-z0-9_@%+=:,./-]*) printf "'%s'" "${s//$sq/$esc}" ;;
    *) printf '%s' "$s" ;;
  esac
}

# The arguments as one pasteable command line.
qcmd() {
  local out="" a
  for a in "$@"; do out="$out${out:+ }$(q "$a")"; done
  printf '%s' "$out"
}

step() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%s\n' "$1"
  else
    printf '+ %s\n' "$1" >&2
    eval "$1"
  fi
}

# The comment block at the top of the running launcher (after the #! line).
usage() {
  echo "usage (launch/$(basename "$0")):" >&2
  sed -n '2,/^[^#]/p' "launch/$(basename "$0")" | sed -n 's/^# \{0,1\}//p' >&2
}

usage_error() {
  echo "$(basename "$0"): $1" >&2
  usage
  exit 2
}

# FILE's path relative to the repository root, or nothing (status 1) when it lies outside.
repo_relative() {
  local dir
  dir=$(cd "$(dirname "$1")" 2>/dev/null && pwd -P) || return 1
  case "$dir/" in
    "$REPO_ROOT"/) printf '%s' "$(basename "$1")" ;;
    "$REPO_ROOT"/*) printf '%s/%s' "${dir#"$REPO_ROOT"/}" "$(basename "$1")" ;;
    *) return 1 ;;
  esac
}

# CONFIG[:arg] -> the file part (ml_collections' config_flags takes `file.py:arg`).
config_file() {
  printf '%s' "${1%%:*}"
}
