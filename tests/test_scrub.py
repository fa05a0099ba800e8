"""`ecglm scrub-pii`: measured on the hand-written test set (tests/data/pii_testset.json, committed before the
scrubber), offline, and without touching clinical content or generated conversations that hold no personal data."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import pytest

from ecglm import cli
from ecglm.core.errors import StageError
from ecglm.text.scrub import KINDS, scrub_file, scrub_item, scrub_text

TESTSET = Path(__file__).parent / "data" / "pii_testset.json"


def score(items: list[dict]) -> tuple[dict[str, float], float, float]:
    """Recall per kind (the string is gone and the kind's placeholder is there), the share of clinical terms
    kept verbatim, and the share of eponyms kept."""
    found, total = Counter(), Counter()
    kept = [0, 0]
    eponyms = [0, 0]
    for item in items:
        out = scrub_item({"input": item["text"]}, Counter())["input"]
        for kind, values in item["pii"].items():
            for value in values:
                total[kind] += 1
                found[kind] += value not in out and f"[{kind}]" in out
        kept[0] += sum(term in out for term in item["keep"])
        kept[1] += len(item["keep"])
        eponyms[0] += sum(term in out for term in item["eponyms"])
        eponyms[1] += len(item["eponyms"])
    return {kind: found[kind] / total[kind] for kind in KINDS}, kept[0] / kept[1], eponyms[0] / eponyms[1]


def test_recall_per_kind_and_clinical_terms_on_the_hand_written_test_set():
    items = json.loads(TESTSET.read_text())["items"]
    counts = Counter(kind for item in items for kind, values in item["pii"].items() for _ in values)
    assert all(counts[kind] >= 10 for kind in KINDS), counts
    recall, kept, eponyms = score(items)
    print(f"recall {recall}; clinical terms kept {kept:.3f}; eponyms kept {eponyms:.3f}")
    assert all(r >= 0.9 for r in recall.values()), recall
    assert kept >= 0.95 and eponyms == 1.0


def test_it_runs_with_the_network_blocked(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("scrub-pii tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    src = tmp_path / "in.json"
    src.write_text(json.dumps([{"instruction": "x", "input": "Hi, I am Tamsin Achebe, call +1 (415) 555-0132.",
                                "output": "Dear Tamsin, the QTc is 470 ms."}]))  # fmt: skip
    summary = scrub_file(src, tmp_path / "out.json")
    out = json.loads((tmp_path / "out.json").read_text())[0]
    assert "Tamsin" not in out["input"] + out["output"] and "[PHONE]" in out["input"]
    assert out["output"] == "Dear [NAME], the QTc is 470 ms."  # a name found in one field goes in all
    assert summary["replaced"]["NAME"] == 2 and summary["replaced"]["PHONE"] == 1
    assert json.loads((tmp_path / "out.json.counts.json").read_text()) == summary


def test_chatdoctor_artefacts_go_and_other_keys_stay(tmp_path):
    counts = Counter()
    item = {"instruction": "If you are a doctor, please answer the medical questions based on the patient's description.",
            "input": "My heart races at night.",
            "output": "Hi, thanks for using Chat Doctor. Your ECG is normal. Thanks for using ChatDoctor.",
            "source": "hcm-17"}  # fmt: skip
    out = scrub_item(item, counts)
    assert out["output"] == "Your ECG is normal." and out["source"] == "hcm-17"
    assert out["instruction"] == item["instruction"] and counts["artefact"] == 1


def test_clinical_text_is_left_alone():
    text = ("QTc 440 ms by Bazett, PR 210 ms, QRS 124 ms, HR 52 bpm, BP 150/95 mmHg, a 63-year-old on metoprolol "
            "50 mg; ST elevation in II, III and aVF with reciprocal depression in I and aVL; Sokolow-Lyon 38 mm; "
            "Mobitz II; Wenckebach; Brugada type 1; Wolff-Parkinson-White; a Holter for 24 h; K 5.9 mmol/L; "
            "troponin 0.04 ng/mL on 12.05.2023; take 2 tablets 3 times a day.")  # fmt: skip
    assert scrub_text(text, Counter()) == text


def test_generated_conversations_that_hold_no_personal_data_are_unchanged(chatdoctor_sample, tmp_path):
    summary = scrub_file(chatdoctor_sample / "genmedgpt-300.json", tmp_path / "out.json")
    assert summary["items"] == 300 and summary["items_changed"] == 0, summary


def test_bad_input_names_the_file_and_leaves_no_output(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"input": "not an array"}')
    with pytest.raises(StageError, match=r"bad.json: expected a JSON array"):
        scrub_file(bad, tmp_path / "out.json")
    bad.write_text('[{"input": "ok"}, 7]')
    with pytest.raises(StageError, match=r"bad.json: item 1 is not an object"):
        scrub_file(bad, tmp_path / "out.json")
    bad.write_text("[{")
    with pytest.raises(StageError, match="bad.json: not a readable JSON file"):
        scrub_file(bad, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_the_cli(tmp_path, capsys):
    src = tmp_path / "c.json"
    src.write_text(json.dumps([{"instruction": "", "input": "Email me at a.person@example.org", "output": ""}]))
    assert cli.main(["scrub-pii", "--in", str(src), "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads(capsys.readouterr().out)["EMAIL"] == 1
    assert cli.main(["scrub-pii", "--in", str(tmp_path / "missing.json"), "--out", str(tmp_path / "s.json")]) == 1
