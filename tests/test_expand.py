"""`ecglm expand`: the lead-drop rule (property-based), the samples' spans and masks, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecglm.cli import main
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS
from ecglm.text.expand import (
    LEAD_COLUMNS,
    SCHEMA,
    Expansion,
    ShardWriter,
    choose_dropped_leads,
    ecg_rng,
    expand,
    lead_mask,
    sample_rows,
)
from ecglm.text.prompts import clean_phrase, lead_description

described_patterns = st.lists(st.booleans(), min_size=12, max_size=12)
ks = st.integers(min_value=0, max_value=11)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
ecg_ids = st.integers(min_value=1, max_value=99_999)


# ------------------------------------------------------------------------------------------- drop rule


@given(described=described_patterns, k=ks, seed=seeds, ecg_id=ecg_ids)
def test_drop_rule(described, k, seed, ecg_id):
    dropped = choose_dropped_leads(described, k, ecg_rng(seed, ecg_id))
    assert len(dropped) == k == len(set(dropped))
    assert list(dropped) == sorted(dropped) and all(0 <= i < 12 for i in dropped)
    d = sum(described)
    described_dropped = sum(described[i] for i in dropped)
    if d == 0:
        return
    # never every described lead ...
    assert described_dropped < d
    # ... but as many described leads as that allows: min(k, d - 1), undescribed ones only fill up
    assert described_dropped == min(k, d - 1)
    # same (seed, ecg_id): same choice
    assert choose_dropped_leads(described, k, ecg_rng(seed, ecg_id)) == dropped


def test_drop_rule_without_description_can_drop_any_lead():
    seen = set()
    for ecg_id in range(300):
        seen.update(choose_dropped_leads([False] * 12, 4, ecg_rng(7, ecg_id)))
    assert seen == set(range(12))


def test_drop_rule_draws_described_leads_uniformly():
    described = [lead in ("II", "V1", "V2", "V5") for lead in LEADS]  # d = 4, k = 4: 3 of the 4 go
    counts = np.zeros(12)
    for ecg_id in range(400):
        for i in choose_dropped_leads(described, 4, ecg_rng(3, ecg_id)):
            counts[i] += 1
    on = [i for i, flag in enumerate(described) if flag]
    assert counts[on].sum() == 3 * 400
    assert counts[on].min() > 0.6 * 300  # each of the 4 is dropped in ~3/4 of 400 draws
    assert counts.sum() == 4 * 400


def test_drop_rule_rejects_bad_arguments():
    rng = ecg_rng(0, 1)
    with pytest.raises(ValueError, match="k must be"):
        choose_dropped_leads([True] * 12, 12, rng)
    with pytest.raises(ValueError, match="12 values"):
        choose_dropped_leads([True] * 11, 4, rng)


@given(described=described_patterns, seed=seeds, ecg_id=ecg_ids, copies=st.integers(0, 6))
def test_expansion_plan_is_a_function_of_seed_and_ecg_id(described, seed, ecg_id, copies):
    expansion = Expansion(copies=copies, drop_k=(4, 5, 6))
    plan = expansion.plan(seed, ecg_id, described)
    assert len(plan) == copies
    assert all(len(dropped) in (4, 5, 6) for dropped in plan)
    expansion.plan(seed, ecg_id + 1, described)  # another ECG in between changes nothing
    assert expansion.plan(seed, ecg_id, described) == plan


def test_expansion_draws_every_k():
    plans = [Expansion(copies=3).plan(5, ecg_id, [False] * 12) for ecg_id in range(60)]
    assert {len(d) for plan in plans for d in plan} == {4, 5, 6}


@pytest.mark.parametrize(
    ("copies", "drop_k", "message"),
    [(-1, (4,), "--copies"), (2, (12,), "0..11"), (2, (4, 4), "distinct"), (2, (0, 4), "cannot be combined"),
     (2, (), "at least one")],
)
def test_expansion_rejects_bad_settings(copies, drop_k, message):
    with pytest.raises(StageError, match=message):
        Expansion(copies=copies, drop_k=drop_k)


def test_expansion_disabled():
    assert Expansion(copies=0).plan(1, 1, [True] * 12) == []
    assert Expansion(copies=5, drop_k=(0,)).plan(1, 1, [True] * 12) == []


# --------------------------------------------------------------------------------------------- samples

# descriptions without ":" so that "lead X:" can only come from the template
phrases = st.text(alphabet="abcdefghij QRST,.-/", min_size=0, max_size=30)
reports = st.text(alphabet="abcdefghijklmnop äöüÄ.,:;'()-0123456789", min_size=1, max_size=80).filter(
    lambda r: clean_phrase(r) != ""
)


def _row(ecg_id, split, report, general, descriptions, **patient):
    row = {"ecg_id": ecg_id, "split": split, "signal_row": ecg_id * 2, "report": report, "general": general,
           "age": 50, "age_over_89": False, "sex": "female", "height": None, "weight": None}
    row.update(patient)
    row.update({col: descriptions[i] for i, col in enumerate(LEAD_COLUMNS)})
    return row


@settings(max_examples=60, deadline=None)
@given(
    descriptions=st.lists(st.one_of(st.none(), phrases), min_size=12, max_size=12),
    report=reports,
    general=st.one_of(st.none(), phrases),
    seed=seeds,
    ecg_id=ecg_ids,
)
def test_spans_and_masks_of_expanded_samples(descriptions, report, general, seed, ecg_id):
    rows = sample_rows(_row(ecg_id, "train", report, general, descriptions), Expansion(copies=4), seed)
    assert [r["copy"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0]["dropped_k"] == 0 and rows[0]["lead_mask"] == [True] * 12
    described = [bool(clean_phrase(d)) for d in descriptions]
    leads = dict(zip(LEADS, descriptions))
    for r in rows:
        text, mask, spans = r["text"], r["lead_mask"], r["target_spans"]
        kept = [lead for lead, keep in zip(LEADS, mask) if keep]
        assert r["sample_id"] == f"{ecg_id:05d}-c{r['copy']}"
        assert mask.count(False) == r["dropped_k"]
        if r["copy"]:
            assert r["dropped_k"] in (4, 5, 6)
            if any(described):
                assert any(d and m for d, m in zip(described, mask)), "every described lead was dropped"
        # dropped leads are in neither the text nor the mask; kept ones in lead order
        assert re.findall(r"(?:, lead )(\w+): ", text) == kept
        # spans: the report, then each kept lead's description, exactly
        assert [s["kind"] for s in spans] == ["report"] + ["lead"] * len(kept)
        assert text[spans[0]["start"]:spans[0]["end"]] == clean_phrase(report)
        for s, lead in zip(spans[1:], kept):
            assert text[s["start"]:s["end"]] == lead_description(leads, lead)
            assert text[:s["start"]].endswith(f", lead {lead}: ")
        assert all(a["end"] <= b["start"] for a, b in zip(spans, spans[1:]))


def test_only_training_ecgs_are_expanded():
    for split in ("val", "test"):
        rows = sample_rows(_row(9, split, "x", None, [None] * 12), Expansion(copies=3), 1)
        assert [(r["copy"], r["dropped_k"], r["split"]) for r in rows] == [(0, 0, split)]


def test_lead_mask():
    assert lead_mask((0, 11)) == [False] + [True] * 10 + [False]


def test_shard_writer_refuses_foreign_ecgs(tmp_path):
    rows = sample_rows(_row(5, "test", "x", None, [None] * 12), Expansion(copies=0), 1)
    writer = ShardWriter(tmp_path / "train", "train", 10, allowed_ids={1, 2})
    writer.add(rows)
    with pytest.raises(StageError, match=r"refusing to write ECGs 5 into the train shards"):
        writer.close()
    assert not list(tmp_path.rglob("*.parquet"))


# ---------------------------------------------------------------------------------------- end to end

SPLIT_OF_FOLD = {**{f: "train" for f in range(1, 9)}, 9: "val", 10: "test"}


def _inputs(tmp_path: Path, n: int = 40, *, drop_report: int | None = None, drop_findings: int | None = None):
    """records/reports/findings of n ECGs with gaps in the ids, in the formats of prepare/translate/describe."""
    rng = np.random.default_rng(0)
    ids = [int(i) for i in np.sort(rng.choice(np.arange(1, 4 * n), size=n, replace=False))]
    folds = [(i % 10) + 1 for i in range(n)]
    records = pl.DataFrame(
        {
            "ecg_id": ids,
            "patient_id": [1000 + i for i in range(n)],
            "age": [None if i % 7 == 0 else 20 + i for i in range(n)],
            "age_over_89": [i % 14 == 0 for i in range(n)],
            "sex": [["male", "female", None][i % 3] for i in range(n)],
            "height": [None if i % 2 else 150.0 + i for i in range(n)],
            "weight": [None if i % 3 else 50.0 + i for i in range(n)],
            "strat_fold": folds,
            "split": [SPLIT_OF_FOLD[f] for f in folds],
            "diagnostic_superclass": [["NORM"]] * n,
            "rhythm": [["SR"]] * n,
            "form": [[]] * n,
        },
        schema_overrides={"ecg_id": pl.Int32, "patient_id": pl.Int32, "age": pl.Int16, "height": pl.Float32,
                          "weight": pl.Float32, "strat_fold": pl.Int8, "form": pl.List(pl.String)},
    )
    records.write_parquet(tmp_path / "records.parquet")
    rep_ids = [i for i in ids if i != drop_report]
    pl.DataFrame(
        {
            "ecg_id": rep_ids,
            "language": ["de"] * len(rep_ids),
            "report": [f"bericht {i}" for i in rep_ids],
            "report_en": [f"sinus rhythm, report {i}." for i in rep_ids],
            "edit_note": [None] * len(rep_ids),
            "edit_note_en": ["NORM 100, poor quality V2" if i == rep_ids[0] else None for i in rep_ids],
            "auto_unconfirmed": [False] * len(rep_ids),
            "truncated": [False] * len(rep_ids),
            "backend": ["glossary"] * len(rep_ids),
            "model": [None] * len(rep_ids),
        },
        schema_overrides={"ecg_id": pl.Int32, "edit_note": pl.String, "model": pl.String},
    ).write_parquet(tmp_path / "reports_en.parquet")
    fin_ids = [i for i in ids if i != drop_findings]
    findings = {"ecg_id": fin_ids, "general": [None if i % 2 else "sinus bradycardia" for i in fin_ids]}
    for j, col in enumerate(LEAD_COLUMNS):
        findings[col] = [f"finding {j} of {i}" if (i + j) % 5 == 0 else None for i in fin_ids]
    findings["findings"] = [["HR_LOW"]] * len(fin_ids)
    pl.DataFrame(findings, schema_overrides={"ecg_id": pl.Int32, **{c: pl.String for c in LEAD_COLUMNS}}).write_parquet(
        tmp_path / "findings.parquet"
    )
    return records


def _argv(tmp_path: Path, out: str = "pairs", *extra: str) -> list[str]:
    return ["expand", "--records", str(tmp_path / "records.parquet"), "--reports", str(tmp_path / "reports_en.parquet"),
            "--findings", str(tmp_path / "findings.parquet"), "--out", str(tmp_path / out), "--no-progress", *extra]


def _scan(out: Path, split: str) -> pl.DataFrame:
    return pl.scan_parquet(out / split / "*.parquet").collect()


def test_cli_end_to_end(tmp_path):
    records = _inputs(tmp_path)
    assert main(_argv(tmp_path, "pairs", "--copies", "3", "--shard-rows", "7", "--seed", "11")) == 0
    out = tmp_path / "pairs"
    ids = {s: set(records.filter(pl.col("split") == s)["ecg_id"].to_list()) for s in ("train", "val", "test")}
    frames = {s: _scan(out, s) for s in ids}
    manifest = json.loads((out / "manifest.json").read_text())

    # counts per split: train ECGs x (1 + copies), val/test ECGs once
    assert {s: f.height for s, f in frames.items()} == {"train": 4 * len(ids["train"]), "val": len(ids["val"]),
                                                        "test": len(ids["test"])}
    assert manifest["counts"] == {s: {"ecgs": len(ids[s]), "samples": frames[s].height} for s in ids}
    assert (manifest["seed"], manifest["copies"], manifest["drop_k"], manifest["skipped"]) == (11, 3, [4, 5, 6], 0)
    # no val/test ECG in train, every ECG in its own split
    for s, frame in frames.items():
        assert set(frame["ecg_id"].to_list()) == ids[s]
        assert set(frame["split"].to_list()) == {s}
    assert not set(frames["train"]["ecg_id"].to_list()) & (ids["val"] | ids["test"])
    # copies 0..3 per training ECG, k in 4..6, originals unmasked
    train = frames["train"]
    assert train.group_by("ecg_id").agg(pl.col("copy").sort())["copy"].to_list() == [[0, 1, 2, 3]] * len(ids["train"])
    assert set(train.filter(pl.col("copy") > 0)["dropped_k"].to_list()) <= {4, 5, 6}
    assert sum(manifest["dropped_k_counts"].values()) == 3 * len(ids["train"])
    # signal_row is the ECG's row in records.parquet
    row_of = {e: i for i, e in enumerate(records["ecg_id"].to_list())}
    for frame in frames.values():
        assert all(row_of[e] == r for e, r in zip(frame["ecg_id"], frame["signal_row"]))
    # shard sizes honoured; manifest lists the files
    for s in ids:
        files = sorted((out / s).glob("*.parquet"))
        sizes = [pl.read_parquet(f).height for f in files]
        assert all(size == 7 for size in sizes[:-1]) and 1 <= sizes[-1] <= 7
        assert manifest["shards"][s] == [f"{s}/{f.name}" for f in files]
    # the declared schema; the edit note stays out by default
    assert dict(train.schema) == SCHEMA
    assert "poor quality" not in " ".join(train["text"].to_list() + frames["val"]["text"].to_list())
    with open(out / "skipped.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["ecg_id", "reason"]]
    # no temporary folder left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.parquet", "pairs", "records.parquet",
                                                          "reports_en.parquet"]


def test_same_seed_same_output_whatever_the_shard_size(tmp_path):
    _inputs(tmp_path, n=30)
    kwargs = dict(expansion=Expansion(copies=2), seed=5, progress=False)
    args = (tmp_path / "records.parquet", tmp_path / "reports_en.parquet", tmp_path / "findings.parquet")
    expand(*args, tmp_path / "a", shard_rows=4, **kwargs)
    expand(*args, tmp_path / "b", shard_rows=1000, **kwargs)
    expand(*args, tmp_path / "c", shard_rows=4, **{**kwargs, "seed": 6})
    for split in ("train", "val", "test"):
        assert _scan(tmp_path / "a", split).equals(_scan(tmp_path / "b", split))
    a, c = _scan(tmp_path / "a", "train"), _scan(tmp_path / "c", "train")
    assert a["lead_mask"].to_list() != c["lead_mask"].to_list()
    assert a.filter(pl.col("copy") == 0).equals(c.filter(pl.col("copy") == 0))


def test_no_expansion_ablation(tmp_path):
    records = _inputs(tmp_path, n=20)
    for extra in (["--copies", "0"], ["--drop-k", "0"]):
        assert main(_argv(tmp_path, "pairs", *extra)) == 0
        train = _scan(tmp_path / "pairs", "train")
        assert train.height == records.filter(pl.col("split") == "train").height
        assert set(train["copy"].to_list()) == {0} and set(train["dropped_k"].to_list()) == {0}


def test_missing_report_or_findings_stops_naming_the_ecg(tmp_path, capsys):
    records = _inputs(tmp_path, n=20)
    gone_report, gone_findings = records["ecg_id"][3], records["ecg_id"][8]
    _inputs(tmp_path, n=20, drop_report=gone_report, drop_findings=gone_findings)
    assert main(_argv(tmp_path)) == 1
    err = capsys.readouterr().err
    assert f"no row in reports_en.parquet: ecg_id {gone_report}" in err
    assert f"no row in findings.parquet: ecg_id {gone_findings}" in err
    assert "--skip-missing" in err
    assert not (tmp_path / "pairs").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_skip_missing_lists_them(tmp_path):
    records = _inputs(tmp_path, n=20)
    gone = records["ecg_id"][5]
    _inputs(tmp_path, n=20, drop_findings=gone)
    assert main(_argv(tmp_path, "pairs", "--skip-missing")) == 0
    with open(tmp_path / "pairs" / "skipped.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == [{"ecg_id": str(gone), "reason": "no row in findings.parquet"}]
    written = pl.concat([_scan(tmp_path / "pairs", s) for s in ("train", "val", "test")])
    assert gone not in written["ecg_id"].to_list()
    assert set(written["ecg_id"].to_list()) == set(records["ecg_id"].to_list()) - {gone}
    assert json.loads((tmp_path / "pairs" / "manifest.json").read_text())["skipped"] == 1


def test_empty_report_is_missing(tmp_path):
    _inputs(tmp_path, n=10)
    reports = pl.read_parquet(tmp_path / "reports_en.parquet")
    first = reports["ecg_id"][0]
    reports.with_columns(
        pl.when(pl.col("ecg_id") == first).then(pl.lit(" . ")).otherwise(pl.col("report_en")).alias("report_en")
    ).write_parquet(tmp_path / "reports_en.parquet")
    with pytest.raises(StageError, match=f"empty report_en in reports_en.parquet: ecg_id {first}"):
        expand(tmp_path / "records.parquet", tmp_path / "reports_en.parquet", tmp_path / "findings.parquet",
               tmp_path / "pairs", progress=False)


def test_failed_run_keeps_the_previous_output(tmp_path):
    _inputs(tmp_path, n=10)
    assert main(_argv(tmp_path)) == 0
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "pairs").rglob("*") if p.is_file()}
    pl.read_parquet(tmp_path / "findings.parquet").drop("lead_V3").write_parquet(tmp_path / "findings.parquet")
    assert main(_argv(tmp_path)) == 1
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "pairs").rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_inputs_are_named(tmp_path):
    records = _inputs(tmp_path, n=10)
    args = (tmp_path / "records.parquet", tmp_path / "reports_en.parquet", tmp_path / "findings.parquet",
            tmp_path / "pairs")
    pl.read_parquet(tmp_path / "findings.parquet").drop("lead_aVL").write_parquet(tmp_path / "findings.parquet")
    with pytest.raises(StageError, match=r"findings.parquet: findings lacks column\(s\) lead_aVL"):
        expand(*args, progress=False)
    _inputs(tmp_path, n=10)
    pl.concat([records, records.head(1)]).write_parquet(tmp_path / "records.parquet")
    with pytest.raises(StageError, match=f"records holds ecg_id\\(s\\) {records['ecg_id'][0]} more than once"):
        expand(*args, progress=False)
    records.with_columns(pl.lit("holdout").alias("split")).write_parquet(tmp_path / "records.parquet")
    with pytest.raises(StageError, match="split outside train/val/test"):
        expand(*args, progress=False)
    with pytest.raises(StageError, match="not found"):
        expand(tmp_path / "nope.parquet", *args[1:], progress=False)


def test_with_edit_notes(tmp_path):
    _inputs(tmp_path, n=10)
    assert main(_argv(tmp_path, "pairs", "--with-edit-notes", "--copies", "0")) == 0
    texts = pl.concat([_scan(tmp_path / "pairs", s) for s in ("train", "val", "test")]).sort("ecg_id")
    first = texts.row(0, named=True)
    report_span = first["target_spans"][0]
    assert first["text"][report_span["start"]:report_span["end"]] == (
        f"sinus rhythm, report {first['ecg_id']}. NORM 100, poor quality V2"
    )


def test_empty_split_still_has_a_readable_shard(tmp_path):
    records = _inputs(tmp_path, n=10)
    records.with_columns(pl.lit("train").alias("split")).write_parquet(tmp_path / "records.parquet")
    manifest = expand(tmp_path / "records.parquet", tmp_path / "reports_en.parquet", tmp_path / "findings.parquet",
                      tmp_path / "pairs", expansion=Expansion(copies=1), progress=False)
    assert manifest["counts"]["val"] == {"ecgs": 0, "samples": 0}
    val = _scan(tmp_path / "pairs", "val")
    assert val.height == 0 and dict(val.schema) == SCHEMA


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["expand", "--help"])
    text = capsys.readouterr().out
    for option in ("--records", "--reports", "--findings", "--out", "--copies", "--drop-k", "--shard-rows", "--seed",
                   "--skip-missing", "--with-edit-notes", "--no-progress"):
        assert option in text
