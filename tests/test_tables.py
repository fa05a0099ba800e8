"""`ecglm tables`: the paper's Table 2 regenerated from eval JSONs (golden markdown and CSV)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ecglm import cli
from ecglm.core.errors import StageError
from ecglm.eval.tables import PAPER_LABEL, collect, write_tables

GOLDEN_MD = """\
# Zero-shot classification (the paper's Table 2)

Test-split ECGs with exactly one of the task's five classes. acc = accuracy; P / R / F1 = macro precision / recall / F1; bal. acc = balanced accuracy; AUC = macro one-vs-rest AUC. n/a = not reported or not defined. "n of m": a smoke-scale row, scored on a class-stratified subset of n of the m test ECGs (its figures are not comparable with the full rows').

| variant | mode | LLM | test ECGs (diagnostic / rhythm / form) | diagnostic acc | diagnostic P | diagnostic R | diagnostic F1 | diagnostic bal. acc | diagnostic AUC | rhythm acc | rhythm P | rhythm R | rhythm F1 | rhythm bal. acc | rhythm AUC | form acc | form P | form R | form F1 | form bal. acc | form AUC |
|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| paper (real PTB-XL, BioMedGPT-LM-7B) | - | BioMedGPT-LM-7B | - | 0.693 | 0.652 | 0.642 | 0.647 | n/a | n/a | 0.670 | 0.509 | 0.540 | 0.524 | n/a | n/a | 0.698 | 0.573 | 0.568 | 0.570 | n/a | n/a |
| full | mcq | SmolLM2-135M-Instruct, Q4_1, dequantized | 10 of 40 / n/a / n/a | 0.500 | 0.412 | 0.400 | 0.400 | 0.400 | 0.667 | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |
| majority | majority | - | n/a / 7 / n/a | n/a | n/a | n/a | n/a | n/a | n/a | 0.571 | 0.114 | 0.200 | 0.145 | 0.200 | n/a | n/a | n/a | n/a | n/a | n/a | n/a |
"""

GOLDEN_CSV = """\
variant,mode,llm,diagnostic_acc,diagnostic_precision,diagnostic_recall,diagnostic_f1,diagnostic_balanced_acc,diagnostic_macro_auc,diagnostic_n,diagnostic_of,rhythm_acc,rhythm_precision,rhythm_recall,rhythm_f1,rhythm_balanced_acc,rhythm_macro_auc,rhythm_n,rhythm_of,form_acc,form_precision,form_recall,form_f1,form_balanced_acc,form_macro_auc,form_n,form_of
"paper (real PTB-XL, BioMedGPT-LM-7B)",,BioMedGPT-LM-7B,0.693,0.652,0.642,0.647,,,,,0.670,0.509,0.540,0.524,,,,,0.698,0.573,0.568,0.570,,,,
full,mcq,"SmolLM2-135M-Instruct, Q4_1, dequantized",0.500,0.412,0.400,0.400,0.400,0.667,10,40,,,,,,,,,,,,,,,,
majority,majority,,,,,,,,,,0.571,0.114,0.200,0.145,0.200,,7,,,,,,,,,
"""


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")


@pytest.fixture()
def eval_dir(tmp_path) -> Path:
    root = tmp_path / "eval"
    # written in the order that sorting must undo: "majority" before "full"
    _write(root / "majority" / "rhythm-majority.json", {
        "task": "rhythm", "mode": "majority", "n": 7, "accuracy": 0.5714, "precision": 0.1143, "recall": 0.2,
        "f1": 0.1455, "balanced_accuracy": 0.2, "macro_auc": None,
    })  # fmt: skip
    _write(root / "full" / "diagnostic-mcq.json", {
        "task": "diagnostic", "mode": "mcq", "n": 10, "accuracy": 0.5, "precision": 0.41234, "recall": 0.4,
        "f1": 0.39951, "balanced_accuracy": 0.4, "macro_auc": 0.6666, "subset": {"n": 10, "of": 40},
        "model": {"llm": {"name_or_path": "resources/llm/gguf/x"}, "llm_label": "SmolLM2-135M-Instruct, Q4_1, dequantized"},
    })  # fmt: skip
    return root


def test_golden_markdown_and_csv(tmp_path, eval_dir):
    md, csv_path = write_tables(eval_dir, tmp_path / "tables" / "classification")
    assert md == tmp_path / "tables" / "classification.md" and csv_path == tmp_path / "tables" / "classification.csv"
    assert md.read_text(encoding="utf-8") == GOLDEN_MD
    assert csv_path.read_text(encoding="utf-8") == GOLDEN_CSV
    assert sorted(p.name for p in md.parent.iterdir()) == ["classification.csv", "classification.md"]


def test_every_number_is_finite_with_three_decimals(tmp_path, eval_dir):
    md, _ = write_tables(eval_dir, tmp_path / "t")
    rows = [line for line in md.read_text().splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert rows[0].startswith(f"| {PAPER_LABEL} |")
    numbers = [cell.strip() for row in rows for cell in row.strip("|").split("|")[4:]]
    values = [float(c) for c in numbers if c != "n/a"]
    assert len(values) == 12 + 6 + 5  # paper 12, full 6, majority 5 (AUC null)
    assert all(math.isfinite(v) for v in values)
    assert all(len(c.split(".")[1]) == 3 for c in numbers if c != "n/a")


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
    _write(eval_dir / "other" / "copy.json", {"task": "diagnostic", "mode": "mcq", "accuracy": 0.3})
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
    line = [row for row in csv_path.read_text().splitlines() if row.startswith("majority,")][0].split(",")
    assert line[-8:-1] == [f"{doc['accuracy']:.3f}", f"{doc['precision']:.3f}", f"{doc['recall']:.3f}",
                         f"{doc['f1']:.3f}", f"{doc['balanced_accuracy']:.3f}", f"{doc['macro_auc']:.3f}", str(doc["n"])]  # fmt: skip
