#!/usr/bin/env bash
# Set up and run the tests: `./scripts/test.sh [pytest args]` (e.g. -m "not slow" for a quick pass).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest "$@"
