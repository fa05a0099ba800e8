"""The same loaders and checks on the real PTB-XL sample and on the demo world.

The demo world is only useful if every stage reads it exactly as it reads the real data: these tests
are written once and parametrised over both folders (fixture ``ptbxl_tree``).
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import wfdb

from ecglm.core.leads import LEADS
from ecglm.data.labels import SUPERCLASSES, load_scp_statements, parse_scp_codes
from ecglm.data.measure import measure_signals
from ecglm.data.prepare import prepare
from ecglm.data.wfdb_records import read_record
from ecglm.text.translate.langdetect import detect_language


def _rows(tree: Path) -> list[dict[str, str]]:
    with open(tree / "ptbxl_database.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def prepared(ptbxl_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare(ptbxl_tree, out, fs=100, workers=2, progress=False)
    return out


def test_database_has_the_real_columns_and_quirks(ptbxl_tree):
    with open(ptbxl_tree / "ptbxl_database.csv", encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    assert len(header) == 28 and header[0] == "ecg_id" and header[-2:] == ["filename_lr", "filename_hr"]
    rows = _rows(ptbxl_tree)
    assert all(r["patient_id"].endswith(".0") for r in rows)  # float ids
    assert {r["sex"] for r in rows} <= {"0", "1"}
    for r in rows:
        codes = ast.literal_eval(r["scp_codes"])
        assert isinstance(codes, dict) and all(isinstance(v, float) for v in codes.values())


def test_scp_statements_know_every_code(ptbxl_tree):
    statements = load_scp_statements(ptbxl_tree / "scp_statements.csv")
    for r in _rows(ptbxl_tree):
        assert set(parse_scp_codes(r["scp_codes"])) <= set(statements)


def test_records_read_with_wfdb_and_with_ours_alike(ptbxl_tree):
    for r in _rows(ptbxl_tree)[:25]:
        base = ptbxl_tree / r["filename_lr"]
        signal, fields = wfdb.rdsamp(str(base))
        assert [n.upper() for n in fields["sig_name"]] == [n.upper() for n in LEADS]
        assert fields["fs"] == 100 and signal.shape == (1000, 12)
        ours = read_record(base, 100)
        np.testing.assert_array_equal(ours, np.rint(signal.T * 1000).astype(np.int16))


def test_prepare_gives_typed_rows_and_labels(prepared):
    records = pl.read_parquet(prepared / "records.parquet")
    signals = np.load(prepared / "signals_100.npy", mmap_mode="r")
    assert signals.shape == (records.height, 12, 1000) and signals.dtype == np.int16
    assert records["ecg_id"].dtype == pl.Int32 and records["ecg_id"].is_sorted()
    assert set(records["sex"].drop_nulls().unique()) <= {"male", "female"}
    assert set(records["split"].unique()) <= {"train", "val", "test"}
    superclasses = set(records["diagnostic_superclass"].explode().drop_nulls().unique())
    assert superclasses <= set(SUPERCLASSES) and len(superclasses) >= 4
    assert records.filter(pl.col("rhythm").list.len() > 0).height > 0.8 * records.height


def test_measurement_separates_the_rhythms(prepared):
    records = pl.read_parquet(prepared / "records.parquet")
    signals = np.load(prepared / "signals_100.npy", mmap_mode="r")
    features = measure_signals(signals, 100, workers=2, progress=False)
    assert features["HR__Global"].null_count() <= 0.05 * records.height
    table = pl.concat([records.select("rhythm"), features], how="horizontal")

    def median_hr(code):
        sel = table.filter(pl.col("rhythm").list.contains(code))
        return sel["HR__Global"].median(), sel.height

    for code, check in (("SBRAD", lambda hr: hr < 60), ("STACH", lambda hr: hr > 100)):
        hr, n = median_hr(code)
        if n:  # the real sample holds 9 SBRAD and 5 STACH records
            assert check(hr), (code, hr)
    afib = table.filter(pl.col("rhythm").list.contains("AFIB"))["RR_SDNN_Global"].median()
    sr = table.filter(pl.col("rhythm").list.contains("SR"))["RR_SDNN_Global"].median()
    assert afib > 2 * sr


def test_report_languages_are_detected_from_the_text(ptbxl_tree):
    languages = {detect_language(r["report"]) for r in _rows(ptbxl_tree)}
    assert languages <= {"de", "en", "sv"} and "de" in languages
