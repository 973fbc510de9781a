#!/usr/bin/env bash
# The test command: sets up .venv (with the test-only packages and the embedded models), then runs pytest.
#   bash launch/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --test
. .venv/bin/activate
exec python -m pytest -q "$@"
