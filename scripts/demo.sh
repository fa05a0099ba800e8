#!/usr/bin/env bash
# Set up and run the whole pipeline on the default config: `./scripts/demo.sh [snakemake args]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
snakemake --cores "${CORES:-2}" "$@"
