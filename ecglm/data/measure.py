"""`ecglm measure`: 12SL-named ECG measurements from any 12-lead signal.

Where no PTB-XL+ row exists (the demo world, a user's own ECG) the pipeline describes an ECG from
these measurements instead of GE 12SL's. The columns (:data:`FEATURE_COLUMNS`) carry 12SL's names
and units (ms, mV, bpm, degrees); ``RR_SDNN_Global`` (ms) is ours. How one record is measured, and
the conventions, are in :mod:`ecglm.data.delineate`.

    from ecglm.data.measure import measure_signals
    signals = np.load("results/demo/data/signals_100.npy", mmap_mode="r")   # int16 [N, 12, T] uV
    features = measure_signals(signals, fs=100, workers=2)                    # polars, N rows

Records are measured a chunk at a time (a memmap is never loaded whole), in a pool of worker
processes when ``workers > 1``. A record that cannot be measured (flat line, too few beats, noise)
gets null values and a reason, never an exception; the CLI lists the reasons in
``<out stem>.failures.csv`` (ecg_id, reason) beside the output.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from ecglm.core.atomic import atomic_path
from ecglm.core.errors import StageError
from ecglm.core.leads import N_LEADS
from ecglm.data.delineate import FEATURE_COLUMNS, DelineationError, measure_record
from ecglm.data.ecg_data import check_rate, check_store, open_signals, read_records
from ecglm.data.physionet import record_path

__all__ = [
    "FEATURE_COLUMNS",
    "DelineationError",
    "measure_record",
    "measure_signals",
    "measure_signals_with_reasons",
    "failures_path",
]

if TYPE_CHECKING:  # polars is imported where it is used (a fast `ecglm --help`)
    import polars as pl

log = logging.getLogger(__name__)

CHUNK_SIZE = 32  # records per unit of work sent to a worker
DATABASE = "ptbxl_database.csv"

# One item to measure: an int16 [12, T] array in microvolts, or the reason it could not be read.
_Item = Union[np.ndarray, str]
# One result: the FEATURE_COLUMNS values as float64 [F] (NaN: not measured), and the reason or None.
_Result = tuple[np.ndarray, Union[str, None]]
_N_FEATURES = len(FEATURE_COLUMNS)


# ----------------------------------------------------------------------------- measuring


def _not_measured(reason: str) -> _Result:
    return np.full(_N_FEATURES, np.nan), reason


def _measure_one(x_uv: np.ndarray, fs: float) -> _Result:
    """Measure one record given in microvolts [12, T]: (values [F] in FEATURE_COLUMNS order, reason or None)."""
    try:
        values = measure_record(np.asarray(x_uv, dtype=np.float64) / 1000.0, fs)
    except DelineationError as err:
        return _not_measured(str(err))
    except Exception as err:  # noqa: BLE001 -- one odd record must not stop a run of 21,799
        log.warning("unexpected error while measuring a record: %s: %s", type(err).__name__, err, exc_info=True)
        return _not_measured(f"unexpected error: {type(err).__name__}: {err}")
    return np.array([np.nan if values[c] is None else values[c] for c in FEATURE_COLUMNS]), None


def _measure_chunk(items: Sequence[_Item], fs: float) -> list[_Result]:
    """Measure a chunk of items (run in a worker process); one result per item, in order."""
    return [_not_measured(item) if isinstance(item, str) else _measure_one(item, fs) for item in items]


def _chunks(items: Iterable[_Item], size: int) -> Iterator[list[_Item]]:
    chunk: list[_Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _measure_stream(
    items: Iterable[_Item], total: int, fs: float, workers: int, progress: bool, chunk_size: int = CHUNK_SIZE
) -> Iterator[_Result]:
    """Results for ``items`` in order; at most ``2 * workers`` chunks are in flight (bounded memory)."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="rec", desc="measure", disable=not progress, leave=False)
    try:
        if workers <= 1:
            for chunk in _chunks(items, chunk_size):
                yield from _measure_chunk(chunk, fs)
                bar.update(len(chunk))
            return
        # spawn: the parent may hold polars/torch threads, which a fork would copy in a locked state
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            pending: deque[Future] = deque()
            for chunk in _chunks(items, chunk_size):
                pending.append(pool.submit(_measure_chunk, chunk, fs))
                while len(pending) >= 2 * workers:
                    done = pending.popleft().result()
                    bar.update(len(done))
                    yield from done
            while pending:
                done = pending.popleft().result()
                bar.update(len(done))
                yield from done
    finally:
        bar.close()


def _frame(rows: list[np.ndarray]) -> pl.DataFrame:
    """The FEATURE_COLUMNS table (Float64, null where a measure could not be made) of ``rows`` [N x [F]]."""
    import polars as pl

    values = np.stack(rows) if rows else np.empty((0, _N_FEATURES))  # [N, F], NaN = not measured
    frame = pl.DataFrame(values, schema={name: pl.Float64 for name in FEATURE_COLUMNS}, orient="row")
    return frame.with_columns(pl.all().fill_nan(None))


def _check_signals(signals: np.ndarray) -> None:
    if signals.ndim != 3 or signals.shape[1] != N_LEADS:
        raise ValueError(f"signals must be an array [N, {N_LEADS}, T] in microvolts, got shape {signals.shape}")


def measure_signals_with_reasons(
    signals: np.ndarray, fs: float, workers: int = 1, progress: bool = True
) -> tuple[pl.DataFrame, list[str | None]]:
    """Measure every record of ``signals`` [N, 12, T] (int16 microvolts, lead order LEADS).

    Returns (features, reasons): ``features`` has the FEATURE_COLUMNS (Float64) and N rows, row i
    measured from record i; ``reasons[i]`` is None where record i was measured and otherwise why it
    was not (its row is then all null). ``signals`` may be a memmap: it is read a chunk at a time.
    """

    _check_signals(signals)
    n = signals.shape[0]

    def items() -> Iterator[np.ndarray]:
        for start in range(0, n, CHUNK_SIZE):
            block = np.asarray(signals[start : start + CHUNK_SIZE])  # [c, 12, T], only this chunk is read
            yield from block

    rows, reasons = [], []
    for values, reason in _measure_stream(items(), n, fs, workers, progress):
        rows.append(values)
        reasons.append(reason)
    _log_failures(reasons)
    return _frame(rows), reasons


def measure_signals(signals: np.ndarray, fs: float, workers: int = 1, progress: bool = True) -> pl.DataFrame:
    """The FEATURE_COLUMNS of every record of ``signals`` [N, 12, T] (int16 uV), one row per record.

    Row i belongs to record i; a record that cannot be measured has an all-null row (the reasons
    are logged; :func:`measure_signals_with_reasons` returns them).
    """
    return measure_signals_with_reasons(signals, fs, workers=workers, progress=progress)[0]


def _log_failures(reasons: Sequence[str | None]) -> None:
    failed = [r for r in reasons if r is not None]
    if not failed:
        return
    kinds = Counter(r.split(":", 1)[0] for r in failed)
    log.warning(
        "%d of %d records could not be measured (%s)",
        len(failed), len(reasons), ", ".join(f"{k}: {v}" for k, v in kinds.most_common()),
    )  # fmt: skip


# ----------------------------------------------------------------------------- inputs


def _source_records(source: Path, fs: int) -> tuple[list[int], list[Path]]:
    """(ecg_ids, record base paths) of the records of ``source``'s database present at ``fs`` Hz."""
    import polars as pl

    database = source / DATABASE
    if not database.is_file():
        raise StageError(f"{database}: not found (--source must be a PTB-XL-shaped folder with {DATABASE})")
    try:
        table = pl.read_csv(database, infer_schema_length=0)
    except Exception as err:  # noqa: BLE001 -- polars raises several kinds for a malformed CSV
        raise StageError(f"{database}: cannot be read as CSV ({err})") from None
    if "ecg_id" not in table.columns:
        raise StageError(f"{database}: no ecg_id column")
    name_column = "filename_lr" if fs == 100 else "filename_hr"
    ids, bases, bases_tried, absent = [], [], [], 0
    for row in table.iter_rows(named=True):
        try:
            ecg_id = int(float(row["ecg_id"]))
        except (TypeError, ValueError):
            raise StageError(f"{database}: ecg_id {row['ecg_id']!r} is not a number") from None
        rel = row.get(name_column) or record_path(ecg_id, fs)
        base = source / rel
        bases_tried.append(base)
        if not (base.with_name(base.name + ".hea").exists() or base.with_name(base.name + ".dat").exists()):
            absent += 1
            continue
        ids.append(ecg_id)
        bases.append(base)
    if table.height == 0:
        raise StageError(f"{database}: no records listed")
    if not ids:
        raise StageError(f"{source}: none of the {table.height} records of {DATABASE} is present at {fs} Hz "
                         f"(looked for {name_column} paths, e.g. {bases_tried[0]}.hea)")  # fmt: skip
    if absent:
        log.info("%s: %d of %d listed records are not present at %d Hz; measuring the %d present",
                 source, absent, table.height, fs, len(ids))  # fmt: skip
    return ids, bases


def _read_items(bases: Sequence[Path], fs: int) -> Iterator[_Item]:
    """Each record as int16 [12, T] microvolts, or the reason it cannot be read."""
    from ecglm.data.wfdb_records import RecordError, read_record

    for base in bases:
        try:
            yield read_record(base, fs)
        except RecordError as err:
            yield f"unreadable record {base.name}: {err.reason}"


# ----------------------------------------------------------------------------- outputs


def failures_path(out: Path) -> Path:
    """Where the failures of ``out`` are listed: ``<out stem>.failures.csv`` beside it."""
    return out.with_name(f"{out.stem}.failures.csv")


def _write_table(frame: pl.DataFrame, out: Path) -> None:
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".parquet":
            frame.write_parquet(tmp)
        else:
            frame.write_csv(tmp)


def write_measurements(ecg_ids: Sequence[int], rows: pl.DataFrame, reasons: Sequence[str | None], out: Path) -> None:
    """Write ``ecg_id`` + FEATURE_COLUMNS to ``out`` (.csv or .parquet) and the failures beside it, atomically."""
    import polars as pl

    table = pl.concat([pl.DataFrame({"ecg_id": pl.Series("ecg_id", list(ecg_ids), dtype=pl.Int64)}), rows],
                      how="horizontal")  # fmt: skip
    failures = pl.DataFrame(
        {
            "ecg_id": pl.Series("ecg_id", [i for i, r in zip(ecg_ids, reasons) if r is not None], dtype=pl.Int64),
            "reason": pl.Series("reason", [r for r in reasons if r is not None], dtype=pl.Utf8),
        }
    )
    _write_table(failures, failures_path(out))
    _write_table(table, out)
    log.info("measured %d records (%d failed, listed in %s) -> %s",
             table.height, failures.height, failures_path(out), out)  # fmt: skip


def measure_source(source: Path, out: Path, fs: int = 100, workers: int = 1, progress: bool = True) -> None:
    """Measure the records of a PTB-XL-shaped folder present at ``fs`` Hz; write ``out`` and its failures."""
    ids, bases = _source_records(source, fs)
    rows, reasons = [], []
    for values, reason in _measure_stream(_read_items(bases, fs), len(ids), fs, workers, progress):
        rows.append(values)
        reasons.append(reason)
    _log_failures(reasons)
    write_measurements(ids, _frame(rows), reasons, out)


def measure_array(
    signals_path: Path, records_path: Path, out: Path, fs: int | None = None, workers: int = 1, progress: bool = True
) -> None:
    """Measure ``signals_{fs}.npy`` (int16 [N, 12, T] uV) row-aligned with ``records.parquet``'s ecg_id."""
    import polars as pl

    signals = open_signals(signals_path, fs)
    ids = read_records(records_path, ["ecg_id"], patients=False)["ecg_id"].cast(pl.Int64).to_list()
    check_store(records_path, len(ids), signals_path)
    fs = check_rate(signals_path, signals.shape[2], fs, records_path)
    if fs is None:
        raise StageError(f"{signals_path}: give --fs (the name does not say the rate, as signals_<fs>.npy would)")
    rows, reasons = measure_signals_with_reasons(signals, fs, workers=workers, progress=progress)
    write_measurements(ids, rows, reasons, out)


# ----------------------------------------------------------------------------- the CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``measure`` subcommand."""
    p = subparsers.add_parser(
        "measure",
        help="12SL-named ECG measurements (HR, PR, QRS, QT, axes, per-lead amplitudes) from the signals",
        description=(
            "Measure every ECG the way GE's 12SL reports it, under the same column names and units (ms, mV, "
            "bpm, degrees): heart rate, RR, PR, QRS, QT and its corrections, P duration, frontal axes, and per "
            "lead P/Q/R/S/T/ST amplitudes and Q/R/S durations, from a median beat; plus RR_SDNN_Global (ours, "
            "ms), the RR standard deviation that tells atrial fibrillation from sinus rhythm. Either from a "
            "PTB-XL-shaped folder (--source: ptbxl_database.csv + records100/ or records500/; the listed records "
            "that are present) or from the pipeline's arrays (--signals + --records). Writes ecg_id + the "
            "feature columns to --out (.csv or .parquet) and, beside it, <out stem>.failures.csv (ecg_id, "
            "reason) for records that could not be measured (their values are null). Outputs are atomic."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", type=Path, metavar="DIR", help="a PTB-XL-shaped folder to measure")
    src.add_argument(
        "--signals", type=Path, metavar="NPY",
        help="signals_{fs}.npy from `ecglm prepare` (int16 [N, 12, T] microvolts; memory-mapped)",
    )  # fmt: skip
    p.add_argument(
        "--records", type=Path, metavar="PARQUET",
        help="records.parquet from `ecglm prepare`, row-aligned with --signals (its ecg_id column is used)",
    )  # fmt: skip
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="output table, .csv or .parquet")
    p.add_argument(
        "--fs", type=int, choices=(100, 500), default=None,
        help="sampling rate in Hz (default: 100 with --source; with --signals, read from the name signals_<fs>.npy)",
    )  # fmt: skip
    p.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="processes measuring records in parallel (default: 1, in this process)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise StageError(f"--workers must be at least 1, got {args.workers}")
    if args.out.suffix.lower() not in (".csv", ".parquet"):
        raise StageError(f"--out {args.out}: the name must end in .csv or .parquet")
    progress = not args.no_progress
    if args.source is not None:
        if args.records is not None:
            raise StageError("--records goes with --signals, not with --source")
        measure_source(args.source, args.out, fs=args.fs or 100, workers=args.workers, progress=progress)
    else:
        if args.records is None:
            raise StageError("--signals needs --records (the records.parquet row-aligned with it)")
        measure_array(args.signals, args.records, args.out, fs=args.fs, workers=args.workers, progress=progress)
    return 0

