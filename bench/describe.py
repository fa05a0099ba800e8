"""Benchmark `ecglm describe`: the vectorised polars engine against a row-by-row pandas implementation.

Builds a PTB-XL-sized 12SL feature table (21,799 rows, 783 columns like PTB-XL+'s: the columns the
rules read plus extras, realistic random values, some empty cells, rows unsorted, ecg_id mid-table),
runs :func:`ecglm.text.describe.describe` and a straightforward pandas ``iterrows`` implementation of the
SAME rules (written here, independently of the engine), checks that both give the same phrases and
findings for every row, and prints rows/second of each and the ratio.

    python bench/describe.py [--rows 21799] [--seed 0] [--guidelines ecglm/text/guidelines.yaml]

``reference_describe`` is also used by tests/test_describe.py as an independent oracle.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from ecglm.core.leads import LEADS
from ecglm.text.describe import LEAD_COLUMNS_OUT, describe
from ecglm.text.guidelines import (
    DEFAULT_GUIDELINES,
    KNOWN_COLUMNS,
    LIMB_LEADS,
    PRECORDIAL_LEADS,
    Guidelines,
    Level,
    Rule,
    load_guidelines,
)

PTBXL_ROWS = 21_799
PTBXL_PLUS_COLUMNS = 783


# ------------------------------------------------------------------------------------ synthetic table


def make_features(n: int = PTBXL_ROWS, seed: int = 0, null_fraction: float = 0.02) -> pl.DataFrame:
    """A 12SL-shaped feature table: ``n`` unsorted rows, ecg_id mid-table, 783 columns, some nulls.

    Values follow adult ECG distributions in ms / mV / bpm / degrees, with enough spread that every
    rule of ecglm/text/guidelines.yaml fires on some rows.
    """
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    af = rng.random(n) < 0.08
    hr = np.clip(rng.normal(74, 17, n), 32, 190)
    rr = 60000.0 / hr
    cols["HR__Global"] = hr
    cols["RR_Mean_Global"] = rr
    cols["RR_SDNN_Global"] = np.where(af, rng.uniform(0.08, 0.3, n), np.abs(rng.normal(0.035, 0.02, n))) * rr
    cols["PR_Int_Global"] = np.where(af, np.nan, rng.normal(162, 30, n))
    cols["QRS_Dur_Global"] = np.abs(rng.normal(98, 17, n))
    qt = np.clip(rng.normal(395, 40, n), 250, 620)
    rr_s = rr / 1000.0
    cols["QT_Int_Global"] = qt
    cols["QT_IntBazett_Global"] = qt / np.sqrt(rr_s)
    cols["QT_IntFridericia_Global"] = qt / np.cbrt(rr_s)
    cols["QT_IntFramingham_Global"] = qt + 154.0 * (1.0 - rr_s)
    cols["P_Dur_Global"] = np.where(af, np.nan, rng.normal(108, 15, n))
    axis = rng.normal(35, 50, n)
    cols["R_AxisFrontal_Global"] = np.where(axis < -90, axis + 360, axis)  # 12SL-like: some in (180, 270]
    cols["P_AxisFront_Global"] = rng.normal(50, 25, n)
    cols["T_AxisFront_Global"] = rng.normal(40, 40, n)
    for lead in LEADS:
        cols[f"P_Amp_{lead}"] = np.where(af, np.nan, rng.normal(0.11, 0.07, n))
        has_q = rng.random(n) < 0.35
        cols[f"Q_Amp_{lead}"] = np.where(has_q, -np.abs(rng.normal(0.08, 0.12, n)), 0.0)
        cols[f"Q_Dur_{lead}"] = np.where(has_q, np.abs(rng.normal(24, 12, n)), 0.0)
        cols[f"R_Amp_{lead}"] = np.abs(rng.normal(0.8, 0.55, n))
        cols[f"R_Dur_{lead}"] = np.abs(rng.normal(40, 12, n))
        cols[f"S_Amp_{lead}"] = -np.abs(rng.normal(0.45, 0.5, n))
        cols[f"S_Dur_{lead}"] = np.abs(rng.normal(35, 12, n))
        cols[f"T_Amp_{lead}"] = rng.normal(0.2, 0.22, n)
        cols[f"ST_Amp_{lead}"] = rng.normal(0.02, 0.07, n)
        cols[f"ST60_Amp_{lead}"] = cols[f"ST_Amp_{lead}"] + rng.normal(0.03, 0.05, n)
    # extras PTB-XL+ also has (areas, onsets/offsets, ...), up to its 783 columns
    extra_names = [f"{w}_Area_{lead}" for w in ("P", "QRS", "T") for lead in LEADS]
    extra_names += [f"{w}_{edge}_Global" for w in ("P", "QRS", "T") for edge in ("On", "Off")]
    i = 0
    while len(cols) + len(extra_names) + 1 < PTBXL_PLUS_COLUMNS:
        extra_names.append(f"X{i}_Misc_{LEADS[i % 12]}")
        i += 1
    for name in extra_names:
        cols[name] = rng.normal(0, 1, n)
    # empty cells
    for name, values in cols.items():
        values = values.astype(np.float64)
        values[rng.random(n) < null_fraction] = np.nan
        cols[name] = values
    # ids with gaps (PTB-XL 1.0.3 has 21,799 of 21,837), rows unsorted
    ids = np.sort(rng.choice(np.arange(1, int(n * 1.0018) + 2), size=n, replace=False)).astype(np.int64)
    order = rng.permutation(n)
    names = list(cols)
    mid = len(names) // 2
    data = {name: pl.Series(name, cols[name][order]).fill_nan(None) for name in names[:mid]}
    data["ecg_id"] = pl.Series("ecg_id", ids[order])
    data.update({name: pl.Series(name, cols[name][order]).fill_nan(None) for name in names[mid:]})
    return pl.DataFrame(data)


def make_patients(ids: np.ndarray, seed: int = 0) -> pl.DataFrame:
    """records.parquet-like patients: sex male/female/null, age (Int16, some null, some 'over 89')."""
    rng = np.random.default_rng(seed + 1)
    n = len(ids)
    sex = np.where(rng.random(n) < 0.52, "male", "female").astype(object)
    sex[rng.random(n) < 0.02] = None
    age = np.clip(rng.normal(60, 17, n), 18, 89).round()
    over = rng.random(n) < 0.01
    unknown = rng.random(n) < 0.03
    return pl.DataFrame(
        {
            "ecg_id": pl.Series(ids, dtype=pl.Int32),
            "sex": pl.Series(sex.tolist(), dtype=pl.String),
            "age": pl.Series([None if (o or u) else int(a) for a, o, u in zip(age, over, unknown)], dtype=pl.Int16),
            "age_over_89": pl.Series(over.tolist(), dtype=pl.Boolean),
        }
    )


# ------------------------------------------------------------------------------------ row-by-row reference


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _raw(row: pd.Series, name: str) -> float | None:
    v = _num(row[name]) if name in row.index else None
    if v is not None and "_Axis" in name:
        while v > 180:
            v -= 360
        while v <= -180:
            v += 360
    return v


def _pp(row: pd.Series, lead: str) -> float | None:
    r, q, s = _raw(row, f"R_Amp_{lead}"), _raw(row, f"Q_Amp_{lead}"), _raw(row, f"S_Amp_{lead}")
    if r is None or q is None or s is None:
        return None
    return max(r, 0.0) + max(-q, -s, 0.0)


def ref_value(row: pd.Series, name: str) -> float | None:
    """A feature of one row, computed plainly in Python (None where unknown)."""
    if name in KNOWN_COLUMNS:
        return _raw(row, name)
    if name == "sokolow_lyon":
        s1, r5, r6 = _raw(row, "S_Amp_V1"), _raw(row, "R_Amp_V5"), _raw(row, "R_Amp_V6")
        return None if None in (s1, r5, r6) else abs(s1) + max(r5, r6)
    if name == "cornell_voltage":
        r, s = _raw(row, "R_Amp_aVL"), _raw(row, "S_Amp_V3")
        return None if None in (r, s) else r + abs(s)
    if name == "rr_cv":
        sd, mean = _raw(row, "RR_SDNN_Global"), _raw(row, "RR_Mean_Global")
        return None if sd is None or mean is None or mean <= 0 else sd / mean
    if name in ("limb_qrs_max_pp", "precordial_qrs_max_pp"):
        pps = [_pp(row, lead) for lead in (LIMB_LEADS if name.startswith("limb") else PRECORDIAL_LEADS)]
        return None if None in pps else max(pps)
    base, _, lead = name.rpartition("_")
    if base == "qrs_pp":
        return _pp(row, lead)
    if base == "qrs_net":
        vals = [_raw(row, f"{w}_Amp_{lead}") for w in ("R", "Q", "S")]
        return None if None in vals else sum(vals)
    if base == "st_rise":
        st60, st = _raw(row, f"ST60_Amp_{lead}"), _raw(row, f"ST_Amp_{lead}")
        return None if st60 is None or st is None else st60 - st
    if base == "q_r_ratio":
        q, r = _raw(row, f"Q_Amp_{lead}"), _raw(row, f"R_Amp_{lead}")
        return None if q is None or r is None or r <= 0 else abs(q) / r
    raise KeyError(name)


def _cmp(x: float, op: str, t: float) -> bool:
    return {"lt": x < t, "le": x <= t, "gt": x > t, "ge": x >= t}[op]


def _cases(level: Level, sex: str | None, age: float | None) -> list:
    return [
        c for c in level.threshold.cases
        if (c.sex is None or sex is None or c.sex == sex)
        and (c.age_min is None or age is None or age >= c.age_min)
        and (c.age_max is None or age is None or age <= c.age_max)
    ]


def _certain(x: float | None, level: Level, sex: str | None, age: float | None) -> bool:
    cases = _cases(level, sex, age)
    return x is not None and bool(cases) and all(_cmp(x, level.op, c.value) for c in cases)


def _possible(x: float | None, level: Level, sex: str | None, age: float | None) -> bool:
    return x is not None and any(_cmp(x, level.op, c.value) for c in _cases(level, sex, age))


def ref_rule(rule: Rule, lead: str | None, row: pd.Series, sex: str | None, age: float | None) -> list[tuple[str, str]]:
    """(finding, words) that ``rule`` writes in ``lead`` for one row."""
    for gate, name in zip(rule.when, rule.gate_features(lead)):
        v = ref_value(row, name)
        if v is None:
            if not gate.null_passes:
                return []
        elif not _cmp(v, gate.op, gate.value):
            return []
    x = ref_value(row, rule.feature_name(lead))
    if x is None:
        return []
    out = []
    for side in (rule.below, rule.above):
        fired = [lvl for lvl in side if _certain(x, lvl, sex, age)]
        if fired:
            out.append((fired[-1].finding, fired[-1].words))  # levels are mildest first
    if rule.within is not None and not any(side and _possible(x, side[0], sex, age) for side in (rule.below, rule.above)):
        out.append((rule.within.finding, rule.within.words))
    return out


def reference_describe(features: pd.DataFrame, patients: pd.DataFrame, guidelines: Guidelines) -> pd.DataFrame:
    """The same rules, one row at a time with ``iterrows`` (rules whose columns are absent are skipped)."""
    merged = features.merge(patients, on="ecg_id", how="left")
    have = set(features.columns)
    runnable = [(r, lead) for r in guidelines.rules for lead in r.scopes() if set(r.input_columns(lead)) <= have]
    # the documented order: a phrase / finding id sits where it first appears in the rule list
    order: dict[str, int] = {}
    for rule, lead in runnable:
        column = "general" if lead is None else f"lead_{lead}"
        items = [(lvl.finding, lvl.words) for lvl in rule.below + rule.above]
        if rule.within is not None:
            items.append((rule.within.finding, rule.within.words))
        for finding, words in items:
            order.setdefault(("finding", finding), len(order))
            order.setdefault((column, words), len(order))
            if rule.contiguous is not None:  # its general words sit where the finding first appears
                order.setdefault(("general", words), len(order))
    rows = []
    for _, row in merged.iterrows():
        sex = row.get("sex")
        sex = sex if isinstance(sex, str) else None
        age = _num(row.get("age"))
        if age is None and row.get("age_over_89") is True:
            age = 90.0
        phrases: dict[str, list[str]] = {c: [] for c in ("general", *LEAD_COLUMNS_OUT)}
        findings: list[str] = []
        # a finding that needs contiguous leads: finding -> (its rule's contiguous, its words, the leads where it holds)
        contiguous: dict[str, tuple[Any, str, set[str]]] = {}
        for rule, lead in runnable:
            column = "general" if lead is None else f"lead_{lead}"
            if rule.contiguous is not None:
                for lvl in rule.below + rule.above:
                    contiguous.setdefault(lvl.finding, (rule.contiguous, lvl.words, set()))
            for finding, words in ref_rule(rule, lead, row, sex, age):
                if words not in phrases[column]:
                    phrases[column].append(words)
                if rule.contiguous is not None:
                    contiguous[finding][2].add(lead)
                elif finding not in findings:
                    findings.append(finding)
        for finding, (spec, words, leads) in contiguous.items():
            if any(len(leads & set(group)) >= spec.min_leads for group in spec.groups):
                findings.append(finding)
                if words not in phrases["general"]:
                    phrases["general"].append(words)
        out = {"ecg_id": int(row["ecg_id"])}
        out.update({c: (", ".join(sorted(p, key=lambda w: order[(c, w)])) if p else None) for c, p in phrases.items()})
        out["findings"] = sorted(findings, key=lambda f: order[("finding", f)])
        rows.append(out)
    return pd.DataFrame(rows)


def compare(fast: pl.DataFrame, ref: pd.DataFrame) -> list[str]:
    """Differences between the engine's output and the reference's, as readable lines (empty: equal)."""
    # pandas >= 3 stores a missing string as NaN (its string dtype): None again, as the engine gives
    ref_by_id = {r["ecg_id"]: {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
                 for r in ref.to_dict("records")}
    diffs = []
    for row in fast.iter_rows(named=True):
        other = ref_by_id.get(row["ecg_id"])
        if other is None:
            diffs.append(f"ecg_id {row['ecg_id']}: missing in the reference")
            continue
        for col in ("general", *LEAD_COLUMNS_OUT):
            if row[col] != other[col]:
                diffs.append(f"ecg_id {row['ecg_id']} {col}: engine {row[col]!r} != reference {other[col]!r}")
        if list(row["findings"] or []) != list(other["findings"]):
            diffs.append(f"ecg_id {row['ecg_id']} findings: engine {row['findings']} != reference {other['findings']}")
    if len(ref_by_id) != fast.height:
        diffs.append(f"row counts differ: engine {fast.height}, reference {len(ref_by_id)}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=PTBXL_ROWS, help="rows of the synthetic table (PTB-XL: 21,799)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the synthetic table")
    parser.add_argument("--guidelines", type=Path, default=DEFAULT_GUIDELINES, help="guidelines YAML")
    args = parser.parse_args(argv)

    guidelines = load_guidelines(args.guidelines)
    features = make_features(args.rows, args.seed)
    patients = make_patients(features["ecg_id"].to_numpy(), args.seed)
    print(f"table: {features.height} rows x {features.width} columns (ecg_id at column {features.columns.index('ecg_id')}), "
          f"{sum(features[c].null_count() for c in features.columns)} empty cells")

    describe(features.head(100), patients, guidelines)  # warm-up (expression building, thread pool)
    t0 = time.perf_counter()
    fast = describe(features, patients, guidelines)
    t_fast = time.perf_counter() - t0

    features_pd, patients_pd = features.to_pandas(), patients.to_pandas()
    t0 = time.perf_counter()
    ref = reference_describe(features_pd, patients_pd, guidelines)
    t_ref = time.perf_counter() - t0

    diffs = compare(fast, ref)
    fired = fast["findings"].explode().drop_nulls().value_counts(sort=True)
    print(f"findings fired: {fired.height} distinct, {fast['findings'].list.len().sum()} in all; "
          f"rows with a general phrase: {fast['general'].is_not_null().sum()}")
    print(f"polars describe (vectorised): {t_fast:.3f} s, {features.height / t_fast:,.0f} rows/s")
    print(f"pandas iterrows (row by row): {t_ref:.3f} s, {features.height / t_ref:,.0f} rows/s")
    print(f"speed-up: {t_ref / t_fast:,.1f}x")
    if diffs:
        print(f"MISMATCH: {len(diffs)} difference(s), first ones:", *diffs[:10], sep="\n  ")
        return 1
    print(f"same findings and phrases for all {features.height} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
