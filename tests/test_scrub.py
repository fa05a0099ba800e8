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


def test_recall_per_kind_and_clinical_terms_on_the_hand_written_test_set():
    from bench.scrub_pii import measure

    items = json.loads(TESTSET.read_text())["items"]
    counts = Counter(kind for item in items for kind, values in item["pii"].items() for _ in values)
    assert all(counts[kind] >= 10 for kind in KINDS), counts
    figures = measure(TESTSET)  # a name is found only when every word of it is gone
    print(figures)
    assert all(figures[kind][0] >= 0.9 * figures[kind][1] for kind in KINDS), figures
    kept, eponyms = figures["clinical terms"], figures["eponyms"]
    assert kept[0] >= 0.95 * kept[1] and eponyms[0] == eponyms[1]


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


def test_ordinary_clinical_english_is_not_taken_for_personal_data():
    """Phrases a review found misread: each must come out unchanged."""
    for text in ("Report said. Atrial Fibrillation", "The 6 Minute Walk Test was normal.",
                 "furosemide 40 via IV, then 20 via NG tube", "Beta Blockade 2 weeks ago.",
                 "ECG at 2023-05-12 10:30 showed AF.", "Vitals: 120 80 72 98", "My BP numbers were 138 88 76",
                 "a number of PVCs 1200-1500 a day", "Is Concor safe? I take a drug named Concor 5 mg."):  # fmt: skip
        assert scrub_text(text, Counter()) == text, text


def test_a_surname_that_is_also_an_eponym_goes_after_a_title_or_an_introduction():
    assert scrub_text("Dr. Johnson said the Holter was fine.", Counter()) == "Dr. [NAME] said the Holter was fine."
    assert scrub_text("I am Sarah Williams, 40.", Counter()) == "I am [NAME], 40."
    assert scrub_text("Hi, Holter showed 1,200 ectopics.", Counter()) == "Hi, Holter showed 1,200 ectopics."
    counts = Counter()
    item = scrub_item({"input": "Take Aspirin? My question.", "output": "Rest well. Take Care"}, counts)
    assert item["input"] == "Take Aspirin? My question." and not counts["NAME"]


def test_a_long_text_without_punctuation_is_scrubbed_in_linear_time():
    text = "chat doctor " + "word " * 20_000  # quadratic matching would take seconds to minutes
    assert scrub_text(text, Counter()) == ""
