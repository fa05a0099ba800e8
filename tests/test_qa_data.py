"""`ecglm qa-data`: ECG-QA's single questions joined to the prepared store, on the real sample and the demo world."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from ecglm import cli
from ecglm.core.errors import StageError
from ecglm.data.qa import prepare_qa


def records_for(path, ecg_ids, splits=None, patients=True):
    """A records.parquet holding ``ecg_ids`` (split train unless ``splits`` says otherwise)."""
    data = {"ecg_id": list(ecg_ids), "split": [(splits or {}).get(e, "train") for e in ecg_ids]}
    if patients:
        data["patient_id"] = [float(e // 3) for e in ecg_ids]
    pl.DataFrame(data).write_parquet(path)
    return path


def test_the_real_sample_keeps_the_single_questions_and_counts_the_rest(ecgqa_sample, tmp_path, caplog):
    chunk = json.loads((ecgqa_sample / "ptbxl" / "paraphrased" / "train" / "120000.json").read_text())
    ids = sorted({q["ecg_id"][0] for q in chunk})
    absent = ids[:3]  # three ECGs the store lacks: their questions are listed, not lost
    records = records_for(tmp_path / "records.parquet", ids[3:], splits={ids[5]: "test"})
    caplog.set_level("INFO")
    summary = prepare_qa(ecgqa_sample, records, tmp_path / "qa")
    train = summary["splits"]["train"]
    n_absent = sum(q["ecg_id"][0] in absent for q in chunk)
    assert train["questions"] == 10_000 + 7_539 and train["kept"]["single-verify"] == 10_000 - n_absent
    assert train["dropped_by_type"] == {"comparison_irrelevant-query": 7_539}
    assert train["ecg_missing"] == {"questions": n_absent, "ecgs": 3}
    assert summary["splits"]["valid"]["dropped_by_type"] == {"comparison_irrelevant-query": 4_663}
    assert summary["splits"]["valid"]["kept_total"] == 0 and summary["splits"]["test"]["files"] == 0
    assert "the valid split holds no single question" in caplog.text and "the test split is empty" in caplog.text
    table = pl.read_parquet(tmp_path / "qa" / "train.parquet")
    assert table.height == 10_000 - n_absent and set(table["question_type"]) == {"single-verify"}
    first = table.row(0, named=True)
    source = next(q for q in chunk if q["sample_id"] == first["sample_id"])
    assert first["answer"] == source["answer"] and first["question"] == source["question"]
    assert first["valid_answers"] in (["no", "not sure", "yes"], ["no", "yes"])
    stored = pl.read_parquet(records)
    assert stored["ecg_id"][first["row"]] == first["ecg_id"]  # the row is the store's row of that ECG
    assert table.filter(pl.col("ecg_id") == ids[5])["seen_in_alignment"].to_list() == [False] * int(
        (table["ecg_id"] == ids[5]).sum())
    missing = pl.read_csv(tmp_path / "qa" / "missing_ecgs.csv")
    assert missing.height == n_absent and set(missing["ecg_id"]) == set(absent)


def test_template_wording_reads_the_template_folder(ecgqa_sample, tmp_path):
    chunk = json.loads((ecgqa_sample / "ptbxl" / "template" / "valid" / "60000.json").read_text())
    records = records_for(tmp_path / "r.parquet", sorted({e for q in chunk for e in q["ecg_id"]}))
    summary = prepare_qa(ecgqa_sample, records, tmp_path / "qa", wording="template")
    assert summary["splits"]["valid"]["questions"] == len(chunk) and summary["splits"]["train"]["files"] == 0


def test_a_malformed_question_names_the_file_and_question_and_writes_nothing(ecgqa_sample, tmp_path):
    root = tmp_path / "ecgqa" / "ptbxl"
    shutil.copytree(ecgqa_sample / "ptbxl", root, ignore=shutil.ignore_patterns("260000.json", "60000.json"))
    path = root / "paraphrased" / "train" / "120000.json"
    chunk = json.loads(path.read_text())
    chunk[7]["answer"] = "yes"  # not a list
    path.write_text(json.dumps(chunk))
    records = records_for(tmp_path / "r.parquet", [1, 2])
    with pytest.raises(StageError, match=rf"120000.json: question_id {chunk[7]['question_id']}: field 'answer' must be a list"):
        prepare_qa(tmp_path / "ecgqa", records, tmp_path / "qa")
    assert not (tmp_path / "qa").exists()
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(StageError, match="elsewhere: not an ECG-QA folder"):
        prepare_qa(tmp_path / "elsewhere", records, tmp_path / "qa")


def test_the_demo_worlds_questions_through_the_cli(demo_world, tmp_path):
    from ecglm.data.prepare import prepare

    prepared = tmp_path / "prepared"
    prepare(demo_world / "ptb-xl" / "1.0.3", prepared, fs=100, workers=2, progress=False)
    out = tmp_path / "qa"
    assert cli.main(["qa-data", "--ecgqa", str(demo_world / "ecg-qa"), "--records", str(prepared / "records.parquet"),
                     "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    for split in ("train", "valid", "test"):
        kept = summary["splits"][split]["kept"]
        assert all(kept[t] > 0 for t in ("single-verify", "single-choose", "single-query")), (split, kept)
    test = pl.read_parquet(out / "test.parquet")
    assert 0 < test["seen_in_alignment"].sum() < test.height  # ECG-QA's split is not PTB-XL's folds
    assert test["patient_id"].null_count() == 0
