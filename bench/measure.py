"""Benchmark `ecglm measure` on the real PTB-XL sample and, where it exists, on the demo world.

    python bench/measure.py                          # the 300 real records at 100 Hz
    python bench/measure.py --fs 500 --workers 2     # the 100 real records at 500 Hz, 2 processes
    python bench/measure.py --demo resources/demo        # a world from `ecglm demo-data`

Prints, for the real records (../shared/ptbxl-sample, or $ECGLM_SHARED/ptbxl-sample):
- the measured heart rate by rhythm label (SBRAD, SR, STACH, AFIB: median, IQR, n), with the RR
  standard deviation (RR_SDNN_Global) that tells atrial fibrillation from sinus rhythm;
- medians of PR, QRS, QT, P duration and the QRS axis in sinus rhythm (to compare with 12SL's
  population values: PR ~155 ms, QRS ~95 ms, QT ~390 ms);
- the share of records whose measurement failed, and records per second (measuring only, and
  reading + measuring).
Then, on the demo world (a folder written by `ecglm demo-data --dest`, with the generator's truth in
``truth.csv``; without one, a small world is generated in a temp folder): the share of records whose
measured heart rate lies within 5 bpm of the generated one, and PR, QRS and QT within 20 ms. Where
no demo world can be had the demo part says why it was skipped.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path(os.environ.get("ECGLM_SHARED", REPO_ROOT.parent / "shared")) / "ptbxl-sample"
DEMO_ROOT = REPO_ROOT / "resources" / "demo"
RHYTHMS = ("SBRAD", "SR", "STACH", "AFIB")
# generator truth column -> (measured column, tolerance, unit); the first truth name found is used
TRUTH = {
    "heart rate": (("hr_bpm", "HR__Global", "hr"), "HR__Global", 5.0, "bpm"),
    "PR": (("pr_ms", "PR_Int_Global", "pr"), "PR_Int_Global", 20.0, "ms"),
    "QRS": (("qrs_ms", "QRS_Dur_Global", "qrs"), "QRS_Dur_Global", 20.0, "ms"),
    "QT": (("qt_ms", "QT_Int_Global", "qt"), "QT_Int_Global", 20.0, "ms"),
}


def _quantiles(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return "n=0"
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return f"median {med:6.1f}  IQR {q1:6.1f}-{q3:6.1f}  n={v.size}"


def bench_real(sample: Path, fs: int, workers: int) -> None:
    from ecglm.data.measure import measure_signals_with_reasons
    from ecglm.data.physionet import record_path
    from ecglm.data.wfdb_records import read_record

    db = pl.read_csv(sample / "ptbxl_database.csv", columns=["ecg_id", "scp_codes"], infer_schema_length=0)
    ids, codes = [], []
    for ecg_id, scp in db.iter_rows():
        eid = int(float(ecg_id))
        if (sample / f"{record_path(eid, fs)}.hea").exists():
            ids.append(eid)
            codes.append(set(ast.literal_eval(scp)))
    import scipy.ndimage  # noqa: F401 -- imported once here, not inside the timing
    import scipy.signal  # noqa: F401

    t0 = time.perf_counter()
    signals = np.stack([read_record(sample / record_path(i, fs), fs) for i in ids])  # [N, 12, T] int16 uV
    t1 = time.perf_counter()
    frame, reasons = measure_signals_with_reasons(signals, fs, workers=workers, progress=False)
    t2 = time.perf_counter()

    n = len(ids)
    print(f"== real PTB-XL sample: {n} records at {fs} Hz ({sample})")
    hr = frame["HR__Global"].to_numpy()
    sdnn = frame["RR_SDNN_Global"].to_numpy()
    print("measured heart rate (bpm) by rhythm label (scp_codes):")
    for code in RHYTHMS:
        rows = [k for k, c in enumerate(codes) if code in c]
        sd = float(np.nanmedian(sdnn[rows])) if rows else float("nan")
        print(f"  {code:6s} HR {_quantiles(hr[rows])}   RR SDNN (ms) median {sd:6.1f}")
    sr = [k for k, c in enumerate(codes) if "SR" in c]
    print("medians in sinus rhythm (SR):", ", ".join(
        f"{name} {np.nanmedian(frame[col].to_numpy()[sr]):.0f}"
        for name, col in (("PR", "PR_Int_Global"), ("QRS", "QRS_Dur_Global"), ("QT", "QT_Int_Global"),
                          ("QTc Bazett", "QT_IntBazett_Global"), ("P dur", "P_Dur_Global"),
                          ("QRS axis", "R_AxisFrontal_Global"))))  # fmt: skip
    no_p = [k for k in sr if np.isnan(frame["PR_Int_Global"].to_numpy()[k])]
    afib = [k for k, c in enumerate(codes) if "AFIB" in c]
    print(f"no P wave found: {len(no_p)} of {len(sr)} SR records, "
          f"{int(np.isnan(frame['PR_Int_Global'].to_numpy()[afib]).sum())} of {len(afib)} AFIB records")  # fmt: skip
    failed = [(ids[k], r) for k, r in enumerate(reasons) if r is not None]
    print(f"measurement failed: {len(failed)} of {n} records ({100.0 * len(failed) / n:.1f}%)")
    for eid, reason in failed[:10]:
        print(f"  ecg_id {eid}: {reason}")
    print(f"speed: {n / (t2 - t1):.0f} records/s measuring ({workers} worker(s)), "
          f"{n / (t2 - t0):.0f} records/s reading + measuring")  # fmt: skip


def _demo_data_exists() -> bool:
    from ecglm.cli import build_parser

    parser = build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return any("demo-data" in a.choices for a in subs)


def _generate_demo(dest: Path, n_records: int, workers: int) -> None:
    cmd = [sys.executable, "-m", "ecglm", "demo-data", "--dest", str(dest), "--n-records", str(n_records),
           "--min-per-class", "0", "--workers", str(workers), "--no-progress"]  # fmt: skip
    print(f"== demo world: generating {n_records} records: {' '.join(cmd[2:])}")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def bench_demo(demo: Path | None, n_records: int, fs: int, workers: int) -> None:
    """Measured vs generated HR, PR, QRS, QT on a demo world (``demo``: a `demo-data --dest` folder)."""
    from ecglm.data.measure import failures_path, measure_source

    with tempfile.TemporaryDirectory() as tmp:
        if demo is None:
            if (DEMO_ROOT / "truth.csv").is_file():
                demo = DEMO_ROOT
            elif _demo_data_exists():
                demo = Path(tmp) / "demo"
                _generate_demo(demo, n_records, max(workers, 2))
            else:
                print("== demo world: skipped: `ecglm demo-data` does not exist yet (not registered in ecglm/cli.py)")
                return
        if not (demo / "truth.csv").is_file():
            print(f"== demo world: skipped: {demo / 'truth.csv'} does not exist (pass a `demo-data --dest` folder)")
            return
        databases = sorted(demo.rglob("ptbxl_database.csv"))
        if not databases:
            print(f"== demo world: skipped: no ptbxl_database.csv under {demo}")
            return
        folder = databases[0].parent
        truth = pl.read_csv(demo / "truth.csv", infer_schema_length=10000)
        out = Path(tmp) / "measured.csv"
        t0 = time.perf_counter()
        measure_source(folder, out, fs=fs, workers=workers, progress=False)
        elapsed = time.perf_counter() - t0
        measured = pl.read_csv(out)
        failures = pl.read_csv(failures_path(out))
    joined = truth.join(measured, on="ecg_id", how="inner", suffix="_measured")
    print(f"== demo world: {measured.height} records at {fs} Hz ({folder}), {joined.height} with truth, "
          f"{failures.height} failed, {measured.height / elapsed:.0f} records/s")  # fmt: skip
    for name, (candidates, column, tol, unit) in TRUTH.items():
        true_col = next((c for c in candidates if c in truth.columns), None)
        if true_col is None:
            print(f"  {name}: truth.csv has none of {candidates}")
            continue
        got = joined[column if column != true_col else f"{column}_measured"].cast(pl.Float64).to_numpy()
        want = joined[true_col].cast(pl.Float64).to_numpy()
        both = np.isfinite(got) & np.isfinite(want)
        diff = got[both] - want[both]
        within = float(np.mean(np.abs(diff) <= tol)) if both.any() else float("nan")
        print(f"  {name:10s} within {tol:g} {unit}: {100 * within:5.1f}% of {int(both.sum())}   "
              f"median diff {np.median(diff) if both.any() else float('nan'):+6.1f} {unit}   "
              f"null where truth has a value: {int((~np.isfinite(got) & np.isfinite(want)).sum())}, "
              f"measured where truth is null: {int((np.isfinite(got) & ~np.isfinite(want)).sum())}")  # fmt: skip
    if "rhythm" in truth.columns:
        print("  RR SDNN (ms) by generated rhythm:", ", ".join(
            f"{r} median {joined.filter(pl.col('rhythm') == r)['RR_SDNN_Global'].median():.0f} "
            f"(n={joined.filter(pl.col('rhythm') == r).height})"
            for r in ("SR", "SBRAD", "STACH", "SARRH", "AFIB") if joined.filter(pl.col("rhythm") == r).height))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", type=Path, default=SAMPLE, help=f"the real PTB-XL sample folder (default: {SAMPLE})")
    p.add_argument("--fs", type=int, choices=(100, 500), default=100, help="sampling rate (default: 100)")
    p.add_argument("--workers", type=int, default=1, help="measuring processes (default: 1)")
    p.add_argument(
        "--demo", type=Path, default=None,
        help=f"a `ecglm demo-data --dest` folder (truth.csv + ptb-xl/...); default: {DEMO_ROOT} if it holds "
        "truth.csv, else a small world generated in a temp folder",
    )  # fmt: skip
    p.add_argument(
        "--demo-records", type=int, default=300,
        help="without --demo or resources/demo/truth.csv: size of the demo world generated in a temp folder",
    )  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(REPO_ROOT))
    if (args.sample / "ptbxl_database.csv").is_file():
        bench_real(args.sample, args.fs, args.workers)
    else:
        print(f"== real PTB-XL sample: skipped: {args.sample}/ptbxl_database.csv not found")
    bench_demo(args.demo, args.demo_records, args.fs, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
