"""The README's figures are generated from run snapshots (scripts/readme_figures.py), never typed by hand."""

from __future__ import annotations

import json

import pytest

import scripts.readme_figures as figures

SNAP = {
    "run": "demo",
    "made_with": {"cpu": "Some CPU", "cores": 2, "git_commit": "abcdef0123456789", "git_dirty": False,
                  "config_sha256": "0123456789abcdef" * 4},
    "classification": [
        {"variant": "full", "mode": "mcq", "llm": "tiny", "diagnostic": {"value": 0.634, "low": 0.55, "high": 0.71,
                                                                        "n": 224, "of": None},
         "rhythm": None, "form": {"value": 0.5, "low": None, "high": None, "n": 10, "of": 117}},
    ],
    "ecg_check": {"full": {"n_samples": 128, "true_loss": 3.2, "shuffled_loss": 3.3, "difference": 0.1,
                           "low": 0.05, "high": 0.15}},
    "sha256": {}, "rule_seconds": {},
}  # fmt: skip


def test_every_readme_figure_block_matches_its_snapshot():
    assert figures.snapshots(), "no snapshot in docs/figures/"
    assert figures.check() == [], "run python scripts/readme_figures.py write"


def test_a_hand_edit_of_a_figure_is_caught_and_write_restores_it(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "SNAPSHOTS", tmp_path / "figures")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "demo.json").write_text(json.dumps(SNAP))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- figures:demo -->\nold\n<!-- /figures:demo -->\nend\n")
    assert figures.check(readme) == ["demo"]
    assert figures.write(readme) == ["demo"]
    text = readme.read_text()
    assert figures.check(readme) == [] and text.startswith("intro\n") and text.endswith("end\n")
    assert "| full | mcq | tiny | 224 / n/a / 10 of 117 | 0.63 [0.55-0.71] | n/a | 0.50 [n/a] |" in text
    assert "- full: 3.2000 true vs 3.3000 shuffled, difference 0.1000 [0.0500, 0.1500] (128 samples)" in text
    assert "main abcdef0, config 0123456789ab, Some CPU, 2 cores" in text
    assert "ECG-QA" not in text  # a snapshot without a QA table renders none
    readme.write_text(text.replace("0.63 [0.55-0.71]", "0.73 [0.55-0.71]"))
    assert figures.check(readme) == ["demo"]


def test_a_snapshot_needs_a_finished_run(tmp_path):
    with pytest.raises(SystemExit, match="no classification table"):
        figures.snapshot(tmp_path / "demo")


def test_the_qa_rows_of_a_snapshot_are_rendered():
    entry = {"value": 0.71, "low": 0.66, "high": 0.75}
    snap = {**SNAP, "qa": [{"model": "ECG-LM", "reading": "generate", "questions": 2186, "unparsed": 0.05,
                            "single-verify": entry, "single-choose": entry, "single-query": None, "avg": None}]}  # fmt: skip
    assert "| ECG-LM | generate | 2186 | 0.71 [0.66-0.75] | 0.71 [0.66-0.75] | n/a | n/a | 0.05 |" in figures.render(snap)


def test_the_mets_sanity_check_is_read_from_the_run_and_rendered(tmp_path):
    metrics = tmp_path / "mets-tfidf" / "metrics.json"
    metrics.parent.mkdir()
    recall = {"k": 5, "value": 0.339, "low": 0.286, "high": 0.392, "chance": 0.0189, "n_ecgs": 310, "n_reports": 264}
    metrics.write_text(json.dumps({"recall_at_5": recall, "text_encoder": {"name": "tfidf-rp", "dim": 256}}))
    check = figures.mets_recall(metrics)
    assert check["text_encoder"] == "tfidf-rp" and check["value"] == 0.339
    text = figures.render({**SNAP, "mets_recall": {"mets-tfidf": check}})
    assert "- mets-tfidf (text encoder tfidf-rp): 0.339 [0.286, 0.392], chance 0.019 (310 ECGs, 264 reports)" in text
