"""How often the guideline findings name a record's own label: the check that the text the model
learns from says what the labels say (rhythm labels and long QT, per label)."""

from __future__ import annotations

import polars as pl

# label (column, code) -> the finding id of ecglm/text/guidelines.yaml that should name it
LABEL_FINDINGS: dict[tuple[str, str], str] = {
    ("rhythm", "SR"): "sinus_rhythm",
    ("rhythm", "STACH"): "sinus_tachycardia",
    ("rhythm", "SBRAD"): "sinus_bradycardia",
    ("rhythm", "AFIB"): "atrial_fibrillation",
    ("rhythm", "SARRH"): "sinus_arrhythmia",
    ("form", "LNGQT"): "long_qt",
}


def finding_agreement(records: pl.DataFrame, findings: pl.DataFrame) -> pl.DataFrame:
    """One row per label: n records carrying it, how many are described with its finding, the share.

    ``records``: ecg_id + the label list columns (records.parquet); ``findings``: ecg_id + findings
    (findings.parquet). Records are matched on ecg_id; a record without a findings row counts as
    not described.
    """
    table = records.join(findings.select("ecg_id", "findings"), on="ecg_id", how="left")
    rows = []
    for (column, code), finding in LABEL_FINDINGS.items():
        labelled = table.filter(pl.col(column).list.contains(code))
        described = labelled.filter(pl.col("findings").list.contains(finding).fill_null(False)).height
        rows.append({
            "label": code,
            "finding": finding,
            "n": labelled.height,
            "described": described,
            "share": described / labelled.height if labelled.height else None,
        })
    return pl.DataFrame(rows, schema={"label": pl.Utf8, "finding": pl.Utf8, "n": pl.Int64,
                                      "described": pl.Int64, "share": pl.Float64})
