#!/usr/bin/env bash
# An install that works anywhere: build the wheel, install it into a fresh virtual environment (not the
# project's .venv, whose ecglm is the editable checkout), and run real stages from a folder outside the
# repository: they must find the settings schema, the guideline rules, the glossary and the demo world's
# statement table inside the installed package. `bash scripts/wheel-check.sh` (run by .ci/run).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${ECGLM_SHARED:-$REPO/../shared}
WORK=$(mktemp -d /tmp/ecglm-wheel.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PY=${PYTHON:-python3}

"$PY" -m venv "$WORK/venv"
PIP="$WORK/venv/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q "${ECGLM_TORCH-torch==2.13.0}"
"$REPO/.venv/bin/python" -m pip wheel -q --no-deps --wheel-dir "$WORK/dist" "$REPO"
$PIP install -q -c "$REPO/scripts/pip-constraints.txt" "$WORK"/dist/ecglm-*.whl

cd "$WORK"  # outside the repository: nothing can be found through it
ECGLM="$WORK/venv/bin/ecglm"
"$WORK/venv/bin/python" - <<'PY'
import ecglm, sys
from pathlib import Path
assert "site-packages" in Path(ecglm.__file__).parts, ecglm.__file__  # the wheel, not the checkout
from ecglm.core.config import load_schema
from ecglm.text.guidelines import load_guidelines
load_schema(); load_guidelines()
print("installed ecglm at", Path(ecglm.__file__).parent)
PY
if [ -d "$SHARED/ptbxl-sample" ]; then
  SOURCE="$SHARED/ptbxl-sample"
  echo "stages on the real sample ($SOURCE)"
else
  "$ECGLM" demo-data --dest "$WORK/world" --n-records 60 --seed 1 --no-progress
  SOURCE="$WORK/world/ptb-xl/1.0.3"
  echo "stages on a small demo world (../shared absent)"
fi
"$ECGLM" translate --database "$SOURCE/ptbxl_database.csv" --out "$WORK/text/reports_en.parquet"
"$ECGLM" prepare --source "$SOURCE" --out "$WORK/data" --fs 100 --no-progress
"$ECGLM" measure --signals "$WORK/data/signals_100.npy" --records "$WORK/data/records.parquet" \
  --out "$WORK/data/features_measured.parquet" --no-progress
"$ECGLM" describe --features "$WORK/data/features_measured.parquet" --records "$WORK/data/records.parquet" \
  --out "$WORK/text/findings.parquet"
"$WORK/venv/bin/python" - "$WORK" <<'PY'
import sys
import polars as pl
work = sys.argv[1]
reports = pl.read_parquet(f"{work}/text/reports_en.parquet")
findings = pl.read_parquet(f"{work}/text/findings.parquet")
assert reports.height > 0 and reports["report_en"].null_count() < reports.height
assert findings.height > 0 and findings["general"].null_count() < findings.height
print(f"wheel check: {reports.height} reports translated, {findings.height} ECGs described, from {work}")
PY
