"""Generate the whole demo world under one folder, deterministically, and verify it.

Layout under ``dest``::

    ptb-xl/1.0.3/            PTB-XL look-alike (ecglm.data.demo.ptbxl)
    ptb-xl-plus/1.0.1/       PTB-XL+ look-alike, features measured by ecglm.data.measure
    ecg-qa/ptbxl/            ECG-QA 1.0.2 look-alike (ecglm.data.demo.ecgqa)
    healthcaremagic/HealthCareMagic-100k.json
    truth.csv                the generator's truth per record (tests and bench only)

Everything is first written to a staging folder beside it and moved into place at the end, so an
interrupted run never leaves a mixed world; each file is written atomically as well. Records are
made in a process pool; each record's randomness comes from (seed, ecg_id), so the files are
byte-identical whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator

import numpy as np

from ecglm.core.atomic import write_text_atomic
from ecglm.core.errors import StageError
from ecglm.data.demo import ptbxl
from ecglm.data.demo.conversations import write_conversations
from ecglm.data.demo.ecgqa import EcgFacts, noise_leads, numeric_levels, write_ecgqa
from ecglm.data.demo.labels import RecordPlan, sample_world_plans
from ecglm.data.demo.reports import make_report
from ecglm.data.demo.synth import heart_axis_label, synthesize
from ecglm.data.download import verify_project
from ecglm.data.physionet import write_checksums

log = logging.getLogger(__name__)

DEFAULT_RECORDS = 2000
DEFAULT_MIN_PER_CLASS = 20
CHUNK = 16  # records per task sent to a worker
CONVERSATIONS_FILE = Path("healthcaremagic") / "HealthCareMagic-100k.json"
ECGQA_DIR = Path("ecg-qa") / "ptbxl"
TRUTH_FILE = "truth.csv"
TOP_LEVEL = (ptbxl.PTBXL_DIR.parts[0], ptbxl.PTBXL_PLUS_DIR.parts[0], ECGQA_DIR.parts[0],
             CONVERSATIONS_FILE.parts[0], TRUTH_FILE)
_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
TRUTH_COLUMNS = ("ecg_id", "patient_id", "strat_fold", "oversampled", "rhythm", "superclasses", "true_codes",
                 "label_noise", "hr_bpm", "rr_ms", "rr_cv", "pr_ms", "p_dur_ms", "qrs_ms", "qt_ms", "qtc_ms",
                 "axis_deg", "heart_axis", "n_beats", "n_pvc", "n_pac", "f_wave_hz", "language", "lead_findings")


@dataclass
class WorldSummary:
    """What was written: counts for the user and the tests."""

    dest: Path
    seed: int
    n_base: int
    n_records: int
    n_oversampled: int
    n_gaps: int
    max_ecg_id: int
    n_features: int
    n_unmeasured: int
    qa_counts: dict[str, int]
    n_conversations: int
    seconds: float

    def describe(self) -> str:
        qa = " / ".join(f"{k} {v:,}" for k, v in self.qa_counts.items())
        return "\n".join([
            f"demo world written to {self.dest} (seed {self.seed}, {self.seconds:.0f} s):",
            f"  {ptbxl.PTBXL_DIR.as_posix()}: {self.n_records:,} records ({self.n_base:,} drawn + "
            f"{self.n_oversampled:,} oversampled), ecg_id 1-{self.max_ecg_id:,} with {self.n_gaps} gaps, 100 Hz and 500 Hz",
            f"  {ptbxl.PTBXL_PLUS_DIR.as_posix()}/{ptbxl.FEATURES_CSV}: {self.n_records:,} rows, {self.n_features} features"
            f" ({self.n_unmeasured} records not measurable)",
            f"  {ECGQA_DIR.as_posix()}: {qa} questions",
            f"  {CONVERSATIONS_FILE.as_posix()}: {self.n_conversations:,} conversations",
            f"  {TRUTH_FILE}: the generator's truth per record",
        ])


def make_record(plan: RecordPlan, seed: int, ptbxl_root: Path) -> dict:
    """Synthesise one record, write its WFDB files, and return its row, truth and 500 Hz signal."""
    syn = synthesize(plan, seed)
    ptbxl.write_wfdb(ptbxl_root, plan.ecg_id, 500, syn.sig500)
    ptbxl.write_wfdb(ptbxl_root, plan.ecg_id, 100, syn.sig100)
    axis = heart_axis_label(syn.truth["axis_deg"])
    report = make_report(plan, axis, syn.truth["hr_bpm"], syn.lead_findings, seed)
    return {"ecg_id": plan.ecg_id, "row": ptbxl.database_row(plan, report, axis), "truth": syn.truth,
            "heart_axis": axis, "findings": syn.lead_findings, "sig500": syn.sig500}


def _make_chunk(plans: list[RecordPlan], seed: int, ptbxl_root: str) -> list[dict]:
    return [make_record(p, seed, Path(ptbxl_root)) for p in plans]


def _records(plans: list[RecordPlan], seed: int, ptbxl_root: Path, workers: int, progress: bool) -> list[dict]:
    """Make every record, in ecg_id order, in a pool of ``workers`` processes."""
    from tqdm import tqdm

    chunks = [plans[i:i + CHUNK] for i in range(0, len(plans), CHUNK)]
    out: list[dict] = []
    with tqdm(total=len(plans), desc="demo records", unit="rec", disable=not progress) as bar:
        if workers <= 1:
            for chunk in chunks:
                out += _make_chunk(chunk, seed, str(ptbxl_root))
                bar.update(len(chunk))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_make_chunk, chunk, seed, str(ptbxl_root)) for chunk in chunks]
                for fut, chunk in zip(futures, chunks):
                    out += fut.result()
                    bar.update(len(chunk))
    return out


def _measure(records: list[dict], workers: int, progress: bool):
    """The 12SL-named features measured from the 500 Hz signals (polars, with ecg_id)."""
    import polars as pl

    from ecglm.data.measure import measure_signals_with_reasons

    signals = np.stack([r.pop("sig500") for r in records])  # (N, 12, 5000) int16 uV
    table, reasons = measure_signals_with_reasons(signals, 500, workers=workers, progress=progress)
    table = table.with_columns(pl.Series("ecg_id", [r["ecg_id"] for r in records], dtype=pl.Int64))
    return table, sum(r is not None for r in reasons)


def _truth_csv(path: Path, plans: dict[int, RecordPlan], records: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TRUTH_COLUMNS)
    for r in records:
        plan, t = plans[r["ecg_id"]], r["truth"]
        values = {
            "ecg_id": plan.ecg_id, "patient_id": plan.patient_id, "strat_fold": plan.strat_fold,
            "oversampled": plan.oversampled, "rhythm": plan.rhythm or "", "superclasses": "|".join(plan.superclasses),
            "true_codes": ptbxl.scp_codes_text(plan.true_codes), "label_noise": plan.label_noise,
            "heart_axis": r["heart_axis"], "language": plan.language,
            "lead_findings": json.dumps(r["findings"], sort_keys=True),
        }
        writer.writerow(["" if (v := values.get(c, t.get(c))) is None else v for c in TRUTH_COLUMNS])
    write_text_atomic(path, buf.getvalue())


def _qa_facts(plans: list[RecordPlan], by_id: dict[int, dict], features: dict[int, dict]) -> list[EcgFacts]:
    """What ECG-QA may ask about each ECG; removed duplicates (ID gaps) answer like their original."""
    facts = []
    for plan in plans:
        src = plan.duplicate_of or plan.ecg_id
        rec = by_id[src]
        extra = []
        if plan.n_pvc or plan.n_pac:
            extra.append("extrasystoles")
        if plan.n_pvc:
            extra.append("ventricular extrasystoles")
        if plan.n_pac:
            extra.append("supraventricular extrasystoles")
        noise = {"baseline drift": noise_leads(plan.noise.baseline_drift), "static noise": noise_leads(plan.noise.static_noise),
                 "burst noise": noise_leads(plan.noise.burst_noise),
                 "electrodes problems": noise_leads(plan.noise.electrodes_problems)}
        facts.append(EcgFacts(
            ecg_id=plan.ecg_id, patient_id=plan.patient_id, recording_date=plan.recording_date, codes=plan.codes,
            heart_axis=rec["heart_axis"] if plan.show_axis else "", stadium=plan.stadium1,
            noise={k: v for k, v in noise.items() if v}, extra=extra, numeric=numeric_levels(features[src]),
            lead_findings=rec["findings"]))
    return facts


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """One BLAS thread here and in the worker processes started meanwhile (they inherit the variables).

    The signals are built from many small matrix products; multi-threaded OpenBLAS spins on them and
    costs about 4x the CPU time on a busy 2-core machine. The environment is restored afterwards.
    """
    from threadpoolctl import threadpool_limits

    saved = {k: os.environ.get(k) for k in _BLAS_THREAD_VARS}
    os.environ.update({k: "1" for k in _BLAS_THREAD_VARS})
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def generate_world(dest: str | os.PathLike, n_records: int = DEFAULT_RECORDS, seed: int = 1234,
                   min_per_class: int = DEFAULT_MIN_PER_CLASS, workers: int = 1, progress: bool = True,
                   n_conversations: int | None = None) -> WorldSummary:
    """Write the demo world under ``dest`` (replacing a previous one there) and verify its checksums.

    Guarantees: the same (n_records, seed, min_per_class) give byte-identical files whatever
    ``workers``; both PhysioNet trees pass :func:`ecglm.data.download.verify_project` (the same check as a download); on failure, ``dest``
    keeps its previous content. Raises StageError for unusable arguments or an unwritable ``dest``.
    """
    if n_records < 10:
        raise StageError(f"--n-records {n_records}: the demo world needs at least 10 records")
    if min_per_class < 0:
        raise StageError(f"--min-per-class {min_per_class}: must be 0 or more")
    start = time.monotonic()
    dest = Path(dest)
    stage = dest / f".demo-data.{os.getpid()}.tmp"
    try:
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
    except OSError as err:
        raise StageError(f"{dest}: cannot create the output folder ({err.strerror})") from err
    try:
        with single_threaded_blas():
            summary = _generate(stage, dest, n_records, seed, min_per_class, max(1, workers), progress, n_conversations)
        _swap_in(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    summary.seconds = time.monotonic() - start
    return summary


def _generate(stage: Path, dest: Path, n_records: int, seed: int, min_per_class: int, workers: int, progress: bool,
              n_conversations: int | None) -> WorldSummary:
    all_plans = sample_world_plans(n_records, seed, min_per_class)
    plans = [p for p in all_plans if not p.duplicate_of]
    log.info("demo world: %d records (%d oversampled), %d id gaps", len(plans),
             sum(bool(p.oversampled) for p in plans), len(all_plans) - len(plans))
    ptbxl_root, plus_root = stage / ptbxl.PTBXL_DIR, stage / ptbxl.PTBXL_PLUS_DIR
    records = _records(plans, seed, ptbxl_root, workers, progress)
    table, n_unmeasured = _measure(records, workers, progress)
    ptbxl.write_database(ptbxl_root, [r["row"] for r in records])
    ptbxl.write_records_list(ptbxl_root, [p.ecg_id for p in plans])
    ptbxl.write_static_files(ptbxl_root, plus_root)
    ptbxl.write_features(plus_root, table, seed)
    ptbxl.write_plus_labels(plus_root, plans)
    ptbxl.write_plus_records(plus_root)
    write_checksums(ptbxl_root)
    write_checksums(plus_root)
    verify_project("ptbxl", ptbxl_root, rates=(100, 500), progress=False)
    verify_project("ptbxl_plus", plus_root, progress=False)
    by_plan = {p.ecg_id: p for p in plans}
    _truth_csv(stage / TRUTH_FILE, by_plan, records)
    by_id = {r["ecg_id"]: r for r in records}
    features = {int(row["ecg_id"]): row for row in table.iter_rows(named=True)}
    qa_counts = write_ecgqa(stage / ECGQA_DIR, _qa_facts(all_plans, by_id, features), seed)
    n_conv = n_conversations if n_conversations is not None else max(200, len(plans) // 2)
    write_conversations(stage / CONVERSATIONS_FILE, plans, seed, n_conv)
    return WorldSummary(dest=dest, seed=seed, n_base=sum(not p.oversampled for p in plans), n_records=len(plans),
                        n_oversampled=sum(bool(p.oversampled) for p in plans), n_gaps=len(all_plans) - len(plans),
                        max_ecg_id=max(p.ecg_id for p in plans), n_features=len(table.columns) - 1 - len(ptbxl.NOT_12SL),
                        n_unmeasured=n_unmeasured, qa_counts=qa_counts, n_conversations=n_conv, seconds=0.0)


def _swap_in(stage: Path, dest: Path) -> None:
    """Replace dest's world entries by the staged ones (old ones removed only after the new are in)."""
    for name in TOP_LEVEL:
        new, old = stage / name, dest / name
        trash = dest / f".{name}.{os.getpid()}.old"
        if old.exists():
            os.replace(old, trash)
        os.replace(new, old)
        if trash.is_dir():
            shutil.rmtree(trash)
        elif trash.exists():
            trash.unlink()
