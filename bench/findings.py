"""Agreement of the guideline findings with the cardiologists' labels, on the real PTB-XL sample.

Measures the real sample records with `ecglm measure` (no PTB-XL+ row is used: this is the path of
the demo world, of every record without a PTB-XL+ row and of every recording a user brings to the
chat), describes them with `ecglm describe` and ecglm/text/guidelines.yaml, and prints

1. for every finding, its rate among the records whose only diagnostic superclass is NORM (with a
   95% Wilson interval) and among all records;
2. for every finding with a PTB-XL statement to compare against (scp_codes, or the heart_axis
   column for the axis), the 2x2 table and the sensitivity and specificity with 95% Wilson
   intervals. A label counts when its code is present, whatever its likelihood (the PTB-XL
   benchmark's aggregation).

    python bench/findings.py                               # the 300 real records at 100 Hz
    python bench/findings.py --fs 500 --workers 2          # the 100 real records at 500 Hz
    python bench/findings.py --save-features f.parquet     # keep the measurement ...
    python bench/findings.py --features f.parquet          # ... and describe it again (rules only)

The sample holds few records of some labels (STE_ none, LNGQT 2, AFIB 3): an interval says how
little such a figure can tell.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from ecglm.core.stats import wilson

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path(os.environ.get("ECGLM_SHARED", REPO_ROOT.parent / "shared")) / "ptbxl-sample"

MI_CODES = ("IMI", "ASMI", "ILMI", "AMI", "ALMI", "INJAS", "LMI", "INJAL", "IPLMI", "IPMI", "INJIN", "INJLA",
            "PMI", "INJIL")  # fmt: skip
# finding id -> [(label name, the codes (or heart_axis values, prefixed "axis:") any of which makes it positive)]
COMPARISONS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "sinus_rhythm": [("SR", ("SR",))],
    "sinus_bradycardia": [("SBRAD", ("SBRAD",))],
    "sinus_tachycardia": [("STACH", ("STACH",))],
    "atrial_fibrillation": [("AFIB", ("AFIB",)), ("AFIB/AFLT", ("AFIB", "AFLT"))],
    "sinus_arrhythmia": [("SARRH", ("SARRH",))],
    "first_degree_av_block": [("1AVB/LPR", ("1AVB", "LPR"))],
    "wide_qrs": [("CLBBB/CRBBB", ("CLBBB", "CRBBB"))],
    "intraventricular_conduction_delay": [("IRBBB/ILBBB/IVCD", ("IRBBB", "ILBBB", "IVCD"))],
    "left_axis_deviation": [("axis LAD/ALAD", ("axis:LAD", "axis:ALAD")), ("LAFB", ("LAFB",))],
    "right_axis_deviation": [("axis RAD/ARAD/AXR", ("axis:RAD", "axis:ARAD", "axis:AXR"))],
    "long_qt": [("LNGQT", ("LNGQT",))],
    "prolonged_p_wave": [("LAO/LAE", ("LAO/LAE",))],
    "p_pulmonale": [("RAO/RAE", ("RAO/RAE",))],
    "lvh_voltage": [("LVH/VCLVH", ("LVH", "VCLVH"))],
    "low_voltage_limb": [("LVOLT", ("LVOLT",))],
    "low_voltage_precordial": [("LVOLT", ("LVOLT",))],
    "pathological_q": [("QWAVE/MI", ("QWAVE", *MI_CODES))],
    "st_elevation": [("STE_", ("STE_",)), ("STE_/MI", ("STE_", *MI_CODES))],
    "st_depression": [("STD_/NST_", ("STD_", "NST_")), ("STD_/NST_/ISC", ("STD_", "NST_", "ISC_", "ISCAL", "ISCIN",
                      "ISCIL", "ISCAS", "ISCLA", "ISCAN"))],  # fmt: skip
    "t_inversion": [("INVT/TAB_/NT_", ("INVT", "TAB_", "NT_"))],
    "deep_t_inversion": [("INVT", ("INVT",))],
}
# statements about rate and rhythm: the targets of issue 21 exempt them (a normal ECG is in sinus rhythm)
RATE_AND_RHYTHM = ("sinus_rhythm", "sinus_bradycardia", "sinus_tachycardia", "sinus_arrhythmia")


def _fmt(k: int, n: int) -> str:
    if n == 0:
        return f"{'-':>6} {'':13} (0/0)"
    lo, hi = wilson(k, n)
    return f"{k / n:6.1%} [{lo:4.0%}-{hi:4.0%}] ({k}/{n})"


def load_sample(sample: Path, fs: int) -> pl.DataFrame:
    """ecg_id, sex, age, age_over_89, codes, superclasses, heart_axis of the sample records present at ``fs``."""
    from ecglm.data.labels import aggregate_labels, load_scp_statements, parse_scp_codes
    from ecglm.data.physionet import record_path

    statements = load_scp_statements(sample / "scp_statements.csv")
    db = pl.read_csv(sample / "ptbxl_database.csv", infer_schema_length=0)
    rows = []
    for row in db.iter_rows(named=True):
        eid = int(float(row["ecg_id"]))
        if not (sample / f"{record_path(eid, fs)}.hea").exists():
            continue
        codes = list(parse_scp_codes(row["scp_codes"]))
        age = float(row["age"]) if row["age"] else None
        rows.append({
            "ecg_id": eid,
            "sex": {"0": "male", "1": "female"}.get(str(int(float(row["sex"])))) if row["sex"] else None,
            "age": None if age is None or age >= 300 else int(age),
            "age_over_89": age is not None and age >= 300,
            "codes": codes,
            "superclasses": aggregate_labels(codes, statements)["diagnostic_superclass"],
            "heart_axis": row["heart_axis"] or "",
        })  # fmt: skip
    return pl.DataFrame(rows, schema_overrides={"ecg_id": pl.Int64, "age": pl.Int16})


def measure_sample(sample: Path, table: pl.DataFrame, fs: int, workers: int) -> pl.DataFrame:
    from ecglm.data.measure import measure_signals_with_reasons
    from ecglm.data.physionet import record_path
    from ecglm.data.wfdb_records import read_record

    ids = table["ecg_id"].to_list()
    signals = np.stack([read_record(sample / record_path(i, fs), fs) for i in ids])  # [N, 12, T] int16 uV
    t0 = time.perf_counter()
    frame, reasons = measure_signals_with_reasons(signals, fs, workers=workers, progress=False)
    failed = [(i, r) for i, r in zip(ids, reasons) if r is not None]
    print(f"measured {len(ids)} records at {fs} Hz in {time.perf_counter() - t0:.0f} s; {len(failed)} failed"
          + "".join(f"\n  ecg_id {i}: {r}" for i, r in failed[:10]))  # fmt: skip
    return pl.concat([pl.DataFrame({"ecg_id": pl.Series(ids, dtype=pl.Int64)}), frame], how="horizontal")


def agreement(table: pl.DataFrame, findings: pl.DataFrame) -> tuple[list[dict], list[dict]]:
    """(NORM-only rates per finding, sensitivity/specificity per comparison) of ``findings`` against ``table``."""
    joined = table.join(findings.select("ecg_id", "findings"), on="ecg_id", how="left")
    fired = [set(f or []) for f in joined["findings"].to_list()]
    labels = [set(c) | {f"axis:{a}" for a in [ax] if a} for c, ax in zip(joined["codes"].to_list(),
                                                                         joined["heart_axis"].to_list())]  # fmt: skip
    norm_only = [s == ["NORM"] for s in joined["superclasses"].to_list()]
    all_findings = sorted({f for s in fired for f in s} | set(COMPARISONS))
    rates = []
    n_norm = sum(norm_only)
    for f in all_findings:
        k_norm = sum(1 for s, nm in zip(fired, norm_only) if nm and f in s)
        k_all = sum(1 for s in fired if f in s)
        rates.append({"finding": f, "norm_k": k_norm, "norm_n": n_norm, "all_k": k_all, "all_n": len(fired)})
    comps = []
    for f, targets in COMPARISONS.items():
        for name, codes in targets:
            pos = [bool(lab & set(codes)) for lab in labels]
            hit = [f in s for s in fired]
            tp = sum(p and h for p, h in zip(pos, hit))
            fn = sum(p and not h for p, h in zip(pos, hit))
            fp = sum(h and not p for p, h in zip(pos, hit))
            tn = sum(not p and not h for p, h in zip(pos, hit))
            comps.append({"finding": f, "label": name, "tp": tp, "fn": fn, "fp": fp, "tn": tn})
    return rates, comps


def report(rates: list[dict], comps: list[dict]) -> None:
    n_norm = rates[0]["norm_n"] if rates else 0
    print(f"\nfinding rates among the {n_norm} NORM-only records (95% Wilson interval) and among all records")
    print(f"{'finding':<34} {'NORM-only':>30}   {'all':>30}")
    for r in sorted(rates, key=lambda r: -r["norm_k"]):
        print(f"{r['finding']:<34} {_fmt(r['norm_k'], r['norm_n']):>30}   {_fmt(r['all_k'], r['all_n']):>30}")
    print("\nagreement with the PTB-XL statements: sensitivity and specificity (95% Wilson intervals)")
    print(f"{'finding':<34} {'label':<17} {'TP':>4} {'FN':>4} {'FP':>4} {'TN':>4}  {'sensitivity':>30}  "
          f"{'specificity':>30}")  # fmt: skip
    for c in comps:
        print(f"{c['finding']:<34} {c['label']:<17} {c['tp']:>4} {c['fn']:>4} {c['fp']:>4} {c['tn']:>4}  "
              f"{_fmt(c['tp'], c['tp'] + c['fn']):>30}  {_fmt(c['tn'], c['tn'] + c['fp']):>30}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", type=Path, default=SAMPLE, help=f"the real PTB-XL sample folder (default: {SAMPLE})")
    p.add_argument("--fs", type=int, choices=(100, 500), default=100, help="sampling rate (default: 100)")
    p.add_argument("--workers", type=int, default=1, help="measuring processes (default: 1)")
    p.add_argument("--guidelines", type=Path, default=None, help="guidelines YAML (default: ecglm/text/guidelines.yaml)")
    p.add_argument("--features", type=Path, default=None, help="a table saved by --save-features: skip measuring")
    p.add_argument("--save-features", type=Path, default=None, help="write the measured features here (.parquet)")
    args = p.parse_args(argv)
    from ecglm.text.describe import describe
    from ecglm.text.guidelines import DEFAULT_GUIDELINES, load_guidelines

    if not (args.sample / "ptbxl_database.csv").is_file():
        print(f"skipped: {args.sample}/ptbxl_database.csv not found")
        return 1
    table = load_sample(args.sample, args.fs)
    if args.features is not None:
        features = pl.read_parquet(args.features).join(table.select("ecg_id"), on="ecg_id", how="semi")
        print(f"features read from {args.features}: {features.height} records")
    else:
        features = measure_sample(args.sample, table, args.fs, args.workers)
        if args.save_features is not None:
            features.write_parquet(args.save_features)
    guidelines = load_guidelines(args.guidelines or DEFAULT_GUIDELINES)
    findings = describe(features, table.select("ecg_id", "sex", "age", "age_over_89"), guidelines)
    rates, comps = agreement(table, findings)
    report(rates, comps)
    worst = [r for r in rates if r["finding"] not in RATE_AND_RHYTHM and r["norm_n"]]
    over = [f"{r['finding']} {r['norm_k'] / r['norm_n']:.0%}" for r in worst
            if r["norm_k"] / r["norm_n"] > (0.05 if r["finding"] in ("short_qt", "st_elevation") else 0.10)]
    print("\nissue 21 targets on the NORM-only records (short QT and ST elevation <= 5%, any other finding "
          "except rate and rhythm <= 10%): " + ("met" if not over else "NOT met: " + ", ".join(over)))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    raise SystemExit(main())
