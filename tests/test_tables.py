"""`ecglm tables`: the paper's Table 2 regenerated from eval JSONs (golden markdown and CSV)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ecglm import cli
from ecglm.core.errors import StageError
from ecglm.eval.protocol import code_version as real_code_version
from ecglm.eval.tables import PAPER_LABEL, collect, write_tables

GOLDEN_MD = """\
# Zero-shot classification (the paper's Table 2)

Test-split ECGs with exactly one of the task's five classes. acc = accuracy; P / R / F1 = macro precision / recall / F1; bal. acc = balanced accuracy; AUC = macro one-vs-rest AUC. Each figure is followed by its 95% percentile bootstrap interval (1,000 draws of the test patients with replacement, a patient's ECGs drawn together). Intervals that overlap do not show two rows equal, nor do they show them different: that takes a paired comparison on the same draws. The paper reports no intervals. n/a = not reported or not defined. "n of m": a smoke-scale row, scored on a class-stratified subset of n of the m test ECGs (its figures are not comparable with the full rows').

## diagnostic

| variant | mode | LLM | test ECGs | acc | P | R | F1 | bal. acc | AUC |
|---|---|---|---|---:|---:|---:|---:|---:|---:|
| paper (real PTB-XL, BioMedGPT-LM-7B) | - | BioMedGPT-LM-7B | - | 0.693 | 0.652 | 0.642 | 0.647 | n/a | n/a |
| full | mcq | SmolLM2-135M-Instruct, Q4_1, dequantized | 10 of 40 | 0.500 [0.200, 0.800] | 0.412 [0.167, 0.700] | 0.400 [0.150, 0.750] | 0.400 [0.133, 0.714] | 0.400 [0.150, 0.750] | 0.667 [0.350, 0.950] |

## rhythm

| variant | mode | LLM | test ECGs | acc | P | R | F1 | bal. acc | AUC |
|---|---|---|---|---:|---:|---:|---:|---:|---:|
| paper (real PTB-XL, BioMedGPT-LM-7B) | - | BioMedGPT-LM-7B | - | 0.670 | 0.509 | 0.540 | 0.524 | n/a | n/a |
| majority | majority | - | 7 | 0.571 [0.286, 0.857] | 0.114 [0.057, 0.171] | 0.200 [0.200, 0.200] | 0.145 [0.089, 0.185] | 0.200 [0.200, 0.200] | n/a |

## form

| variant | mode | LLM | test ECGs | acc | P | R | F1 | bal. acc | AUC |
|---|---|---|---|---:|---:|---:|---:|---:|---:|
| paper (real PTB-XL, BioMedGPT-LM-7B) | - | BioMedGPT-LM-7B | - | 0.698 | 0.573 | 0.568 | 0.570 | n/a | n/a |

## Protocol

| | |
|---|---|
| data | not recorded (the table was made without the run's config) |
| split and selection | the test split (PTB-XL's strat_fold 10); per task, the ECGs with exactly one of its five classes (ECGs with several or none are left out, counted in each JSON); a row marked "n of m" scores a class-stratified subset fixed by the seed |
| scoring | majority: the most frequent single class among the training ECGs; mcq: next-token log-probability of the option letter |
| LLMs | SmolLM2-135M-Instruct, Q4_1, dequantized (resources/llm/gguf/x) |
| seeds | run not recorded (every stage derives its seed from it); evaluation 1234 |
| intervals | 95% percentile bootstrap, 1,000 draws of the test patient_id values with replacement (a patient's ECGs drawn together) |
| config | not given (`ecglm tables --config-json`) |
| code | ecglm 0.1.0, git commit 0123456789abcdef0123456789abcdef01234567 |
"""

GOLDEN_CSV = """\
variant,mode,llm,diagnostic_acc,diagnostic_acc_low,diagnostic_acc_high,diagnostic_acc_sd,diagnostic_precision,diagnostic_precision_low,diagnostic_precision_high,diagnostic_precision_sd,diagnostic_recall,diagnostic_recall_low,diagnostic_recall_high,diagnostic_recall_sd,diagnostic_f1,diagnostic_f1_low,diagnostic_f1_high,diagnostic_f1_sd,diagnostic_balanced_acc,diagnostic_balanced_acc_low,diagnostic_balanced_acc_high,diagnostic_balanced_acc_sd,diagnostic_macro_auc,diagnostic_macro_auc_low,diagnostic_macro_auc_high,diagnostic_macro_auc_sd,diagnostic_n,diagnostic_of,rhythm_acc,rhythm_acc_low,rhythm_acc_high,rhythm_acc_sd,rhythm_precision,rhythm_precision_low,rhythm_precision_high,rhythm_precision_sd,rhythm_recall,rhythm_recall_low,rhythm_recall_high,rhythm_recall_sd,rhythm_f1,rhythm_f1_low,rhythm_f1_high,rhythm_f1_sd,rhythm_balanced_acc,rhythm_balanced_acc_low,rhythm_balanced_acc_high,rhythm_balanced_acc_sd,rhythm_macro_auc,rhythm_macro_auc_low,rhythm_macro_auc_high,rhythm_macro_auc_sd,rhythm_n,rhythm_of,form_acc,form_acc_low,form_acc_high,form_acc_sd,form_precision,form_precision_low,form_precision_high,form_precision_sd,form_recall,form_recall_low,form_recall_high,form_recall_sd,form_f1,form_f1_low,form_f1_high,form_f1_sd,form_balanced_acc,form_balanced_acc_low,form_balanced_acc_high,form_balanced_acc_sd,form_macro_auc,form_macro_auc_low,form_macro_auc_high,form_macro_auc_sd,form_n,form_of
"paper (real PTB-XL, BioMedGPT-LM-7B)",,BioMedGPT-LM-7B,0.693,,,,0.652,,,,0.642,,,,0.647,,,,,,,,,,,,,,0.670,,,,0.509,,,,0.540,,,,0.524,,,,,,,,,,,,,,0.698,,,,0.573,,,,0.568,,,,0.570,,,,,,,,,,,,,
full,mcq,"SmolLM2-135M-Instruct, Q4_1, dequantized",0.500,0.200,0.800,,0.412,0.167,0.700,,0.400,0.150,0.750,,0.400,0.133,0.714,,0.400,0.150,0.750,,0.667,0.350,0.950,,10,40,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,
majority,majority,,,,,,,,,,,,,,,,,,,,,,,,,,,,0.571,0.286,0.857,,0.114,0.057,0.171,,0.200,0.200,0.200,,0.145,0.089,0.185,,0.200,0.200,0.200,,,,,,7,,,,,,,,,,,,,,,,,,,,,,,,,,,
"""


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")


CODE = {"ecglm": "0.1.0", "git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": False}


@pytest.fixture(autouse=True)
def fixed_code_version(monkeypatch):
    """The protocol block names the code's commit; the golden files name a fixed one."""
    monkeypatch.setattr("ecglm.eval.protocol.code_version", lambda folder=".": dict(CODE))


@pytest.fixture()
def eval_dir(tmp_path) -> Path:
    root = tmp_path / "eval"
    # written in the order that sorting must undo: "majority" before "full"
    _write(root / "majority" / "rhythm-majority.json", {
        "task": "rhythm", "mode": "majority", "n": 7, "accuracy": 0.5714, "precision": 0.1143, "recall": 0.2,
        "f1": 0.1455, "balanced_accuracy": 0.2, "macro_auc": None, "split": "test", "seed": None,
        "scoring": "the most frequent single class among the training ECGs",
        "intervals": {"level": 0.95, "reps": 1000, "resampled": "patient_id", "metrics": {"accuracy": [0.2857, 0.8571], "precision": [0.0571, 0.1714], "recall": [0.2, 0.2],
                                  "f1": [0.0889, 0.1846], "balanced_accuracy": [0.2, 0.2], "macro_auc": None}},
    })  # fmt: skip
    _write(root / "full" / "diagnostic-mcq.json", {
        "task": "diagnostic", "mode": "mcq", "n": 10, "accuracy": 0.5, "precision": 0.41234, "recall": 0.4,
        "f1": 0.39951, "balanced_accuracy": 0.4, "macro_auc": 0.6666, "subset": {"n": 10, "of": 40},
        "model": {"llm": {"name_or_path": "resources/llm/gguf/x", "revision": None},
                  "llm_label": "SmolLM2-135M-Instruct, Q4_1, dequantized"},
        "split": "test", "seed": 1234, "scoring": "next-token log-probability of the option letter",
        "intervals": {"level": 0.95, "reps": 1000, "resampled": "patient_id", "metrics": {"accuracy": [0.2, 0.8], "precision": [0.1667, 0.7], "recall": [0.15, 0.75],
                                  "f1": [0.1333, 0.7143], "balanced_accuracy": [0.15, 0.75], "macro_auc": [0.35, 0.95]}},
    })  # fmt: skip
    return root


def test_golden_markdown_and_csv(tmp_path, eval_dir):
    md, csv_path = write_tables(eval_dir, tmp_path / "tables" / "classification")
    assert md == tmp_path / "tables" / "classification.md" and csv_path == tmp_path / "tables" / "classification.csv"
    assert md.read_text(encoding="utf-8") == GOLDEN_MD
    assert csv_path.read_text(encoding="utf-8") == GOLDEN_CSV
    assert sorted(p.name for p in md.parent.iterdir()) == [
        "classification.csv", "classification.md", "classification.protocol.json"]


def test_the_protocol_names_the_config_by_its_digest_and_keeps_it_beside_the_table(tmp_path, eval_dir):
    from ecglm.core.config import validate_config
    from ecglm.eval.protocol import config_digest

    config = validate_config({"run": "t"})
    assert config_digest(config) == config_digest(json.loads(json.dumps(config)))  # key order does not matter
    assert config_digest(config) != config_digest({**config, "seed": config["seed"] + 1})
    out = tmp_path / "tables" / "classification"
    assert cli.main(["tables", "--eval-dir", str(eval_dir), "--out", str(out), "--config-json", json.dumps(config)]) == 0
    md = out.with_suffix(".md").read_text()
    assert f"| config | SHA-256 {config_digest(config)[:16]} of the validated config" in md
    assert "| data | the demo world: a synthetic PTB-XL look-alike of 2000 records" in md
    assert f"| seeds | run {config['seed']} " in md and "git commit 0123456789abcdef" in md
    facts = json.loads(out.with_name("classification.protocol.json").read_text())
    assert facts["config"] == config and facts["config_sha256"] == config_digest(config)
    assert facts["llms"] == {"SmolLM2-135M-Instruct, Q4_1, dequantized": {"name_or_path": "resources/llm/gguf/x",
                                                                          "revision": None}}
    assert cli.main(["tables", "--eval-dir", str(eval_dir), "--out", str(out), "--config-json", "[1, 2"]) == 1


def test_the_code_version_is_the_checkouts_commit(repo_root):
    import subprocess

    real = real_code_version(repo_root)  # imported before the autouse fixture replaces it
    head = subprocess.run(["git", "-C", str(repo_root), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert real["git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert real["ecglm"] == __import__("ecglm").__version__
    assert real_code_version("/")["git_commit"] is None  # not a checkout: said, not guessed


def test_every_number_is_finite_with_three_decimals(tmp_path, eval_dir):
    md, _ = write_tables(eval_dir, tmp_path / "t")
    tables = md.read_text().split("## Protocol")[0]
    rows = [line for line in tables.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert rows[0].startswith(f"| {PAPER_LABEL} |")
    cells = [cell.strip() for row in rows for cell in row.strip("|").split("|")[4:]]
    figures = [c for c in cells if c != "n/a"]
    assert len(figures) == 12 + 6 + 5  # paper 12, full 6, majority 5 (AUC null)
    for cell in figures:
        value, _, interval = cell.partition(" ")
        numbers = [value] + ([] if not interval else interval.strip("[]").split(", "))
        assert all(math.isfinite(float(n)) and len(n.split(".")[1]) == 3 for n in numbers), cell
        if interval:  # every figure but the paper's has its interval, and the figure lies in it
            low, high = float(numbers[1]), float(numbers[2])
            assert low <= float(value) <= high, cell
    assert sum(" [" in c for c in figures) == 6 + 5


def test_output_is_deterministic_and_cli_writes_both_files(tmp_path, eval_dir):
    out = tmp_path / "tables" / "classification"
    assert cli.main(["tables", "--eval-dir", str(eval_dir), "--out", str(out)]) == 0
    first = (out.with_suffix(".md").read_bytes(), out.with_suffix(".csv").read_bytes())
    assert cli.main(["tables", "--eval-dir", str(eval_dir), "--out", str(out)]) == 0
    assert (out.with_suffix(".md").read_bytes(), out.with_suffix(".csv").read_bytes()) == first


def test_bad_inputs_name_the_file(tmp_path, eval_dir):
    _write(eval_dir / "other" / "diagnostic-mcq.json", {"task": "diagnostic", "mode": "mcq", "accuracy": float("nan")})
    with pytest.raises(StageError, match=r"other/diagnostic-mcq.json: accuracy"):
        collect(eval_dir)
    _write(eval_dir / "other" / "diagnostic-mcq.json", {"task": "diagnostic", "mode": "mcq", "accuracy": 0.2})
    with pytest.raises(StageError, match=r"other/diagnostic-mcq.json: no bootstrap intervals"):
        collect(eval_dir)
    intervals = {"metrics": {"accuracy": [0.1, 0.3]}}
    _write(eval_dir / "other" / "diagnostic-mcq.json", {"task": "diagnostic", "mode": "mcq", "accuracy": 0.2,
                                                        "intervals": {"metrics": {"accuracy": [0.1]}}})
    with pytest.raises(StageError, match=r"other/diagnostic-mcq.json: intervals.metrics.accuracy must be \[low, high\]"):
        collect(eval_dir)
    _write(eval_dir / "other" / "diagnostic-mcq.json", {"task": "diagnostic", "mode": "mcq", "accuracy": 0.2,
                                                        "intervals": intervals})
    _write(eval_dir / "other" / "copy.json", {"task": "diagnostic", "mode": "mcq", "accuracy": 0.3, "intervals": intervals})
    with pytest.raises(StageError, match="both hold variant other, mode mcq, task diagnostic"):
        collect(eval_dir)
    with pytest.raises(StageError, match="no evaluation JSON"):
        collect(_empty(tmp_path))
    with pytest.raises(StageError, match="no such evaluation folder"):
        collect(tmp_path / "nowhere")


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_real_evaluation_json_is_read(tmp_path):
    """A JSON as `ecglm evaluate-baseline` writes it (all keys) goes into the table unchanged."""
    from test_evaluate import write_store

    from ecglm.eval.baselines import evaluate_baseline

    paths = write_store(tmp_path / "store")
    doc = evaluate_baseline("majority", paths["records"], "form", out=tmp_path / "eval" / "majority" / "form-majority.json")
    md, csv_path = write_tables(tmp_path / "eval", tmp_path / "classification")
    import csv

    row = [r for r in csv.DictReader(csv_path.read_text().splitlines()) if r["variant"] == "majority"][0]
    for key, suffix in [("accuracy", "acc"), ("precision", "precision"), ("recall", "recall"), ("f1", "f1"),
                        ("balanced_accuracy", "balanced_acc"), ("macro_auc", "macro_auc")]:
        assert row[f"form_{suffix}"] == f"{doc[key]:.3f}"
        pair = doc["intervals"]["metrics"][key]  # None: the metric is undefined in most draws (a class missing)
        expected = ("", "") if pair is None else (f"{pair[0]:.3f}", f"{pair[1]:.3f}")
        assert (row[f"form_{suffix}_low"], row[f"form_{suffix}_high"]) == expected, key
    assert row["form_n"] == str(doc["n"])


def test_a_variant_run_with_several_seeds_gets_a_mean_row_with_its_spread_and_interval(tmp_path):
    """full and full-seed7 (seeds: [.., 7]) give a row "full (mean of 2 seeds: ...)": each metric's mean over
    the seeds, its standard deviation, and the interval of the mean over the test patients."""
    import numpy as np

    from ecglm.eval.evaluate import classification_metrics
    from ecglm.text.prompts import task_letters

    letters = task_letters("rhythm")
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=60)
    groups = np.arange(60) // 2  # two ECGs per patient
    docs = {}
    for variant, seed, hit in (("full", 1234, 0.8), ("full-seed7", 7, 0.5)):
        predicted = np.where(rng.random(60) < hit, truth, rng.integers(0, 5, size=60))
        probs = np.eye(5)[predicted] * 0.6 + 0.08
        doc = {"task": "rhythm", "mode": "mcq", "seed": seed, "n": 60, "options": {x: x for x in letters},
               **classification_metrics(truth, predicted, probs, "rhythm"),
               "intervals": {"metrics": {"accuracy": [0.1, 0.9]}},
               "predictions": {"ecg_id": list(range(60)), "group": groups.tolist(),
                               "true": [letters[i] for i in truth], "predicted": [letters[i] for i in predicted],
                               "probabilities": probs.tolist()}}  # fmt: skip
        _write(tmp_path / "eval" / variant / "rhythm-mcq.json", doc)
        docs[variant] = doc
    _, csv_path = write_tables(tmp_path / "eval", tmp_path / "t")
    import csv

    rows = {r["variant"]: r for r in csv.DictReader(csv_path.read_text().splitlines())}
    mean = rows["full (mean of 2 seeds: 1234, 7)"]
    accuracies = [docs["full"]["accuracy"], docs["full-seed7"]["accuracy"]]
    assert mean["rhythm_acc"] == f"{np.mean(accuracies):.3f}" and mean["rhythm_acc_sd"] == f"{np.std(accuracies, ddof=1):.3f}"
    low, high = float(mean["rhythm_acc_low"]), float(mean["rhythm_acc_high"])
    assert low < np.mean(accuracies) < high and high - low < 0.4
    assert rows["full"]["rhythm_acc_sd"] == "" and rows["full-seed7"]["rhythm_acc"] == f"{accuracies[1]:.3f}"
    md = (tmp_path / "t.md").read_text()
    assert f"| full (mean of 2 seeds: 1234, 7) | mcq | - | 60 | {np.mean(accuracies):.3f} ± " in md
