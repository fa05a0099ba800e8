"""`ecglm report-figures`: the HTML report's SVG figures from a run's outputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ecglm import cli
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS
from ecglm.eval.evaluate import classification_metrics
from ecglm.eval.report_figures import pick_ecgs, write_report_figures
from ecglm.text.prompts import task_classes, task_letters


def _eval_doc(task: str, ids: list[int], truth: list[int], predicted: list[int]) -> dict:
    letters = task_letters(task)
    probs = np.eye(5)[predicted] * 0.6 + 0.08
    metrics = classification_metrics(np.array(truth), np.array(predicted), probs, task)
    return {"task": task, "mode": "mcq", "options": dict(zip(letters, task_classes(task))), **metrics,
            "predictions": {"ecg_id": ids, "true": [letters[i] for i in truth],
                            "predicted": [letters[i] for i in predicted], "probabilities": probs.tolist()}}  # fmt: skip


@pytest.fixture()
def run_dir(tmp_path) -> dict:
    ids = [5, 3, 9, 7]
    pl.DataFrame({"ecg_id": ids, "split": ["test"] * 4}).write_parquet(tmp_path / "records.parquet")
    t = np.arange(1000) / 100.0
    signals = (np.sin(2 * np.pi * 1.2 * t)[None, None, :] * 800 * np.ones((4, 12, 1))).astype(np.int16)
    np.save(tmp_path / "signals.npy", signals)
    pl.DataFrame({"ecg_id": ids, "general": ["sinus rhythm", "sinus rhythm, ST <elevation>", None, "x"],
                  **{f"lead_{lead}": ["ST elevation" if lead == "V2" else None] * 4 for lead in LEADS}}
                 ).write_parquet(tmp_path / "findings.parquet")  # fmt: skip
    docs = {"diagnostic": _eval_doc("diagnostic", [5, 3, 9, 7], [1, 0, 0, 2], [1, 0, 2, 2]),
            "rhythm": _eval_doc("rhythm", [5, 3, 9], [0, 0, 1], [0, 3, 1])}  # fmt: skip
    paths = []
    for task, doc in docs.items():
        paths.append(tmp_path / f"{task}-mcq.json")
        paths[-1].write_text(json.dumps(doc))
    (tmp_path / "encoder.json").write_text(
        json.dumps({"train_loss": [0.9, 0.5, 0.4], "val_macro_auc_per_epoch": [0.6, 0.8, 0.85]})
    )
    (tmp_path / "align").mkdir()
    (tmp_path / "align" / "metrics.json").write_text("{}")
    (tmp_path / "align" / "log.jsonl").write_text("".join(
        json.dumps({"step": s, "train_loss": 1.0 / s, **({"val_loss": 0.5} if s % 20 == 0 else {})}) + "\n"
        for s in range(1, 41)))  # fmt: skip
    return {"records": tmp_path / "records.parquet", "signals": tmp_path / "signals.npy", "fs": 100.0,
            "findings": tmp_path / "findings.parquet", "encoder_metrics": tmp_path / "encoder.json",
            "align_metrics": {"full": tmp_path / "align" / "metrics.json"}, "eval_docs": paths,
            "variant": "full", "mode": "mcq", "out": tmp_path / "report"}  # fmt: skip


def test_three_valid_svg_files_with_the_curves_matrices_and_ecgs(run_dir):
    paths = write_report_figures(**run_dir)
    assert [p.name for p in paths] == ["curves.svg", "confusion.svg", "ecgs.svg"]
    for p in paths:
        ET.fromstring(p.read_text())  # well-formed: the "<elevation>" of a finding is escaped
    curves = paths[0].read_text()
    assert "encoder pretraining: training loss" in curves and "alignment of full" in curves
    assert "training (20-step mean)" in curves and "validation" in curves
    confusion = paths[1].read_text()
    assert ">diagnostic (4 ECGs)<" in confusion and ">rhythm (3 ECGs)<" in confusion
    ecgs = paths[2].read_text()
    # the first test ECG (by ecg_id) of each diagnostic class: NORM 3, MI 5, STTC 7
    assert [int(x) for x in __import__("re").findall(r">ECG (\d+):", ecgs)] == [3, 5, 7]
    assert ecgs.count("<polyline") == 3 * 12 and "ST &lt;elevation&gt;" in ecgs and ">ST elevation<" in ecgs
    assert "rhythm: true SR; full (mcq) answered AFIB: wrong" in ecgs  # ECG 3
    assert "diagnostic: true MI; full (mcq) answered MI: right" in ecgs  # ECG 5
    again = write_report_figures(**run_dir)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]  # the same bytes


def test_pick_ecgs_takes_the_first_of_each_class():
    docs = {"rhythm": {"predictions": {"ecg_id": [9, 2, 4, 1], "true": ["B", "B", "A", "C"]}}}
    assert pick_ecgs(docs) == [4, 2, 1] and pick_ecgs(docs, n=2) == [4, 2]


def test_bad_inputs_name_the_file(run_dir, tmp_path, capsys):
    (run_dir["align_metrics"]["full"].parent / "log.jsonl").unlink()
    with pytest.raises(StageError, match="log.jsonl: not a readable alignment log"):
        write_report_figures(**run_dir)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"task": "rhythm"}))
    with pytest.raises(StageError, match="bad.json: not an evaluation JSON"):
        write_report_figures(**{**run_dir, "align_metrics": {}, "eval_docs": [bad]})
    assert cli.main(["report-figures", "--records", "r", "--signals", "s", "--fs", "100", "--findings", "f",
                     "--align", "nopath", "--variant", "full", "--mode", "mcq", "--out", str(tmp_path / "o")]) != 0  # fmt: skip
    assert "--align 'nopath': expected NAME=PATH/metrics.json" in capsys.readouterr().err


def test_the_cli_writes_the_figures(run_dir):
    args = ["report-figures", "--records", str(run_dir["records"]), "--signals", str(run_dir["signals"]), "--fs", "100",
            "--findings", str(run_dir["findings"]), "--encoder-metrics", str(run_dir["encoder_metrics"]),
            "--align", f"full={run_dir['align_metrics']['full']}", "--variant", "full", "--mode", "mcq",
            "--out", str(run_dir["out"])]  # fmt: skip
    for path in run_dir["eval_docs"]:
        args += ["--eval", str(path)]
    assert cli.main(args) == 0
    assert sorted(p.name for p in Path(run_dir["out"]).iterdir()) == ["confusion.svg", "curves.svg", "ecgs.svg"]
