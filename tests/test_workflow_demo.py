"""The whole DAG of the default config, at smoke size (config/ci.yaml), on the demo world.

Runs `snakemake` in a temporary working directory exactly as a user would, then checks what every
stage wrote, and that a second run has nothing to do.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

pytestmark = [pytest.mark.snakemake, pytest.mark.slow]

RULES = [
    "make_demo_data", "verify_demo_ptbxl", "verify_demo_ptbxl_plus", "prepare_records",
    "measure_features", "translate_reports", "describe_findings", "expand_pairs", "train_encoder",
    "build_demo_llm", "align_model/full", "evaluate_zero_shot/full-rhythm-mcq",
    "evaluate_zero_shot/shuffled-diagnostic-likelihood", "evaluate_baseline/majority-form",
    "train_supervised_encoder/rhythm", "make_tables",
]


def _snakemake(repo_root, workdir, *args):
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(repo_root / "config" / "ci.yaml"),
        "--cores", "2", *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def demo_run(repo_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo-run")
    proc = _snakemake(repo_root, workdir)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return workdir


def test_every_rule_ran_with_log_and_benchmark(demo_run):
    for rule in RULES:
        assert (demo_run / "results" / "ci" / "logs" / f"{rule}.log").is_file(), rule
        assert (demo_run / "results" / "ci" / "benchmarks" / f"{rule}.tsv").is_file(), rule


def test_the_demo_world_is_verified_like_a_download(demo_run):
    manifest = json.loads((demo_run / "resources/demo/ci/ptb-xl/1.0.3/ecglm-manifest.json").read_text())
    assert manifest["n_files"] == len(manifest["files"]) > 0
    assert any(f.startswith("records100/") for f in manifest["files"])
    assert any(f.startswith("records500/") for f in manifest["files"])


def test_the_stages_agree_row_for_row(demo_run):
    data = demo_run / "results" / "ci" / "data"
    records = pl.read_parquet(data / "records.parquet")
    signals = np.load(data / "signals_100.npy", mmap_mode="r")
    assert signals.shape == (records.height, 12, 1000)
    assert set(records["split"].unique()) == {"train", "val", "test"}

    text = demo_run / "results" / "ci" / "text"
    reports = pl.read_parquet(text / "reports_en.parquet")
    findings = pl.read_parquet(text / "findings.parquet")
    assert sorted(reports["ecg_id"]) == sorted(records["ecg_id"])
    assert sorted(findings["ecg_id"]) == sorted(records["ecg_id"])
    assert set(reports["language"].unique()) <= {"de", "en", "sv"}
    assert reports["report_en"].null_count() == 0

    pairs = pl.scan_parquet(demo_run / "results" / "ci" / "pairs" / "*" / "*.parquet").collect()
    test_ids = set(records.filter(pl.col("split") == "test")["ecg_id"])
    train = pairs.filter(pl.col("split") == "train")
    assert not test_ids & set(train["ecg_id"])
    assert train["dropped_k"].max() >= 4
    assert "<ecg>" in pairs["text"][0]


def test_the_result_table_has_every_variant_with_finite_numbers(demo_run):
    import math

    tables = demo_run / "results" / "ci" / "tables"
    rows = pl.read_csv(tables / "classification.csv")
    markdown = (tables / "classification.md").read_text()
    for variant in ("full", "ecg-only", "text-only", "shuffled", "majority", "supervised"):
        assert f"| {variant} |" in markdown
    assert "paper (real PTB-XL, BioMedGPT-LM-7B)" in markdown
    measured = rows.filter(~pl.col("variant").str.starts_with("paper"))
    numbers = [v for c in measured.columns if c.endswith(("_acc", "_f1")) for v in measured[c].to_list()]
    assert numbers and all(v is not None and math.isfinite(float(v)) for v in numbers)


def test_the_aligned_model_holds_no_llm_weights(demo_run):
    from safetensors import safe_open

    with safe_open(demo_run / "results" / "ci" / "align" / "full" / "model.safetensors", "pt") as fh:
        keys = list(fh.keys())
    assert keys and all(k.startswith(("encoder.", "projector.")) for k in keys)


def test_a_second_run_has_nothing_to_do(repo_root, demo_run):
    proc = _snakemake(repo_root, demo_run, "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_findings_name_the_rhythm_and_long_qt_labels(demo_run):
    """On the demo world, >= 90% of the records of each rhythm label and of long QT are described
    with the matching finding (scripts/findings_figures.py prints the same table)."""
    from ecglm.finding_agreement import finding_agreement

    results = demo_run / "results" / "ci"
    table = finding_agreement(
        pl.read_parquet(results / "data" / "records.parquet"),
        pl.read_parquet(results / "text" / "findings.parquet"),
    )
    assert table["n"].min() >= 20, table
    low = table.filter(pl.col("share") < 0.9)
    assert low.height == 0, low
