"""ECG signals from the prepared store as a torch Dataset, plus the label and lead-mask helpers.

The store (``ecglm prepare``): ``signals_{fs}.npy``, int16 ``[N, 12, T]`` microvolts in
``ecglm.core.leads.LEADS`` order, row i = row i of ``records.parquet``. It is memory-mapped, never loaded
whole: :class:`EcgDataset` opens it lazily in each process (DataLoader workers included) and reads
one row per item.

:class:`EcgDataset` maps item i to a signals row (``rows[i]``), with an optional lead mask per item
(e.g. ``lead_mask`` of the ``ecglm expand`` samples) and optional targets, so the encoder training
(records.parquet rows + multi-hot labels) and the alignment stage (pairs' ``signal_row`` +
``lead_mask``) share it.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS, N_LEADS
from ecglm.data.wfdb_records import RECORD_SECONDS

log = logging.getLogger(__name__)


def rate_from_name(path: str | os.PathLike) -> int | None:
    """The sampling rate that a ``signals_<fs>.npy`` file name states (None for another name)."""
    m = re.fullmatch(r"signals_(\d+)\.npy", Path(path).name)
    return int(m.group(1)) if m else None


def _recorded_rate(records_path: str | os.PathLike | None) -> int | None:
    """The rate that ``ecglm prepare`` recorded in a records.parquet's metadata (None where there is none)."""
    if records_path is None:
        return None
    from ecglm.data.prepare import read_table_metadata

    try:
        fs = read_table_metadata(records_path).get("fs")
    except (StageError, OSError, ValueError):
        return None
    return int(fs) if fs is not None else None


def check_rate(
    path: str | os.PathLike,
    n_samples: int,
    fs: int | None = None,
    records_path: str | os.PathLike | None = None,
    seconds: int = RECORD_SECONDS,
) -> int | None:
    """The one check of a signals array against its sampling rate; returns the rate (None if nothing states one).

    The rate may be stated three ways: ``fs`` (a stage's ``--fs``), the file name ``signals_<fs>.npy``,
    and the ``fs`` that ``ecglm prepare`` recorded in ``records_path``'s metadata. All that are stated
    must agree, and the array's ``n_samples`` per lead must be ``seconds x fs`` (PTB-XL records are
    10 s). A mismatch raises StageError with both figures: a 100 Hz array read as 500 Hz would
    otherwise be measured as a heart rate five times too high, with no error.
    """
    path = Path(path)
    stated = {"--fs": fs, "its file name": rate_from_name(path), f"{records_path} (ecglm prepare)": _recorded_rate(records_path)}
    stated = {where: int(rate) for where, rate in stated.items() if rate is not None}
    rates = set(stated.values())
    if len(rates) > 1:
        said = ", ".join(f"{rate} Hz by {where}" for where, rate in stated.items())
        raise StageError(f"{path}: the sampling rate is stated as {said}: they must agree")
    if not rates:
        return None
    rate = rates.pop()
    where = next(iter(stated))
    if n_samples != seconds * rate:
        fits = f" (it fits {n_samples // seconds} Hz)" if n_samples % seconds == 0 else ""
        raise StageError(
            f"{path}: {n_samples} samples per lead is {n_samples / rate:g} s at {rate} Hz (the rate given by "
            f"{where}), but the records are {seconds} s long, so {seconds * rate} samples were expected{fits}: "
            "the array and its sampling rate do not go together"
        )
    return rate


def open_signals(path: str | os.PathLike, fs: int | None = None) -> np.ndarray:
    """Memory-map a prepared signals array; guarantees int16 ``[N, 12, T]`` or raises StageError.

    Where the rate is known (``fs``, or the name ``signals_<fs>.npy``), ``T`` must be 10 s of it
    (:func:`check_rate`)."""
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise StageError(f"{path}: signals file not found (run `ecglm prepare` first)") from None
    except (OSError, ValueError) as err:
        raise StageError(f"{path}: not a readable .npy signals array ({err})") from err
    if arr.dtype != np.int16 or arr.ndim != 3 or arr.shape[1] != N_LEADS:
        raise StageError(
            f"{path}: expected int16 signals [N, {N_LEADS}, T] (microvolts, as written by ecglm prepare), "
            f"got {arr.dtype} {list(arr.shape)}"
        )
    check_rate(path, arr.shape[2], fs)
    return arr


def check_store(records_path: str | os.PathLike, n_records: int, signals_path: str | os.PathLike) -> tuple[int, int]:
    """Check that a records table of ``n_records`` rows goes with the signals array; return (N, T).

    Where records.parquet carries ``ecglm prepare``'s metadata, its lead order and shape must match too.
    """
    signals = open_signals(signals_path)
    n, _, t = signals.shape
    check_rate(signals_path, t, records_path=records_path)
    if n != n_records:
        raise StageError(
            f"{signals_path} has {n} rows but {records_path} has {n_records}: they must come from the same "
            "`ecglm prepare` run (row i of the signals = row i of the records)"
        )
    try:
        from ecglm.data.prepare import read_table_metadata

        meta = read_table_metadata(records_path)
    except StageError:
        log.debug("%s carries no ecglm prepare metadata; lead order assumed to be %s", records_path, LEADS)
        return n, t
    if list(meta.get("leads", LEADS)) != list(LEADS):
        raise StageError(f"{records_path}: signals lead order {meta.get('leads')} is not {list(LEADS)}")
    shape = meta.get("shape")
    if shape is not None and list(shape) != [n, N_LEADS, t]:
        raise StageError(f"{records_path} describes signals {shape}, but {signals_path} holds {[n, N_LEADS, t]}")
    return n, t


def multi_hot(label_lists: Sequence[Sequence[str] | None], classes: Sequence[str]) -> tuple[np.ndarray, Counter]:
    """Multi-hot targets float32 ``[N, C]`` (column j = ``classes[j]``) from per-record label lists.

    Labels outside ``classes`` are not encoded; they are returned as a Counter so the caller can report them.
    A missing list (None) counts as no label.
    """
    index = {c: j for j, c in enumerate(classes)}
    out = np.zeros((len(label_lists), len(classes)), dtype=np.float32)
    ignored: Counter = Counter()
    for i, labels in enumerate(label_lists):
        for label in labels or ():
            j = index.get(label)
            if j is None:
                ignored[label] += 1
            else:
                out[i, j] = 1.0
    return out, ignored


def random_lead_masks(batch: int, p: float, k_range: tuple[int, int], generator: Any) -> Any:
    """Training lead masks ``[batch, 12]`` bool: each row, with probability ``p``, drops k leads.

    k is uniform in ``k_range`` (inclusive; at most 11, so a row always keeps a lead), the dropped
    leads uniform without replacement. Rows not chosen keep all 12. Uses only ``generator`` (CPU).
    """
    import torch

    k_lo, k_hi = k_range
    if not 0 <= k_lo <= k_hi <= N_LEADS - 1:
        raise ValueError(f"lead dropout k range must satisfy 0 <= lo <= hi <= {N_LEADS - 1}, got {k_range}")
    chosen = torch.rand(batch, generator=generator) < p  # [B]
    k = torch.randint(k_lo, k_hi + 1, (batch,), generator=generator)  # [B]
    rank = torch.rand(batch, N_LEADS, generator=generator).argsort(dim=1).argsort(dim=1)  # [B, 12] random ranks
    dropped = (rank < k[:, None]) & chosen[:, None]  # [B, 12]
    return ~dropped


class EcgDataset:
    """A map-style torch Dataset: item i = signals row ``rows[i]`` with its lead mask and target.

    Item: ``{"index": i, "row": rows[i], "signal": int16 [12, T], "lead_mask": bool [12]}`` plus
    ``"target": float32 [C]`` when ``targets`` is given. The signals are memory-mapped lazily per
    process, so the dataset pickles cheaply into DataLoader workers.
    """

    def __init__(
        self,
        signals_path: str | os.PathLike,
        rows: Sequence[int] | np.ndarray,
        targets: np.ndarray | None = None,
        lead_masks: np.ndarray | None = None,
    ) -> None:
        self.signals_path = Path(signals_path)
        self.rows = np.asarray(rows, dtype=np.int64)  # [M]
        n_total = open_signals(self.signals_path).shape[0]
        if self.rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {self.rows.shape}")
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= n_total):
            bad = int(self.rows[(self.rows < 0) | (self.rows >= n_total)][0])
            raise StageError(f"{self.signals_path}: row {bad} is out of range (the array has {n_total} rows)")
        if targets is not None and len(targets) != len(self.rows):
            raise ValueError(f"{len(targets)} targets for {len(self.rows)} rows")
        if lead_masks is not None:
            lead_masks = np.asarray(lead_masks, dtype=bool)
            if lead_masks.shape != (len(self.rows), N_LEADS):
                raise ValueError(f"lead_masks must be [{len(self.rows)}, {N_LEADS}], got {list(lead_masks.shape)}")
            empty = np.flatnonzero(~lead_masks.any(axis=1))
            if len(empty):
                raise StageError(f"signals row {int(self.rows[empty[0]])}: its lead mask keeps no lead")
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)  # [M, C]
        self.lead_masks = lead_masks  # [M, 12] or None (all leads)
        self._signals: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_signals"] = None  # each worker maps the file itself
        return state

    @property
    def signals(self) -> np.ndarray:
        if self._signals is None:
            self._signals = open_signals(self.signals_path)
        return self._signals

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        row = int(self.rows[i])
        item: dict[str, Any] = {
            "index": i,
            "row": row,
            "signal": torch.from_numpy(np.array(self.signals[row], dtype=np.int16)),  # [12, T]
            "lead_mask": torch.ones(N_LEADS, dtype=torch.bool)
            if self.lead_masks is None
            else torch.from_numpy(self.lead_masks[i].copy()),  # [12]
        }
        if self.targets is not None:
            item["target"] = torch.from_numpy(self.targets[i])  # [C]
        return item


#: Columns of records.parquet the prompts read (all optional except ecg_id and split).
PATIENT_COLUMNS = ("age", "age_over_89", "sex", "height", "weight")


def read_records_schema(records: Path) -> dict:
    """The column names and types of records.parquet, or a StageError naming the file."""
    import polars as pl

    try:
        return dict(pl.read_parquet_schema(records))
    except FileNotFoundError:
        raise StageError(f"{records}: records table not found (run `ecglm prepare` first)") from None
    except Exception as err:  # polars raises several types for a corrupt file
        raise StageError(f"{records}: not a readable Parquet table ({err})") from err


def read_records(records: Path, columns: Sequence[str], *, patients: bool = True):
    """The ``columns`` of records.parquet (plus, with ``patients``, the patient columns it holds), or a
    StageError naming the file when it is missing, unreadable or lacks a column. The one reader of the
    records table for the stages after ``prepare``."""
    import polars as pl

    schema = read_records_schema(records)
    missing = [c for c in columns if c not in schema]
    if missing:
        raise StageError(f"{records}: missing column(s) {', '.join(missing)} (written by `ecglm prepare`)")
    wanted = list(columns) + [c for c in PATIENT_COLUMNS if patients and c in schema and c not in columns]
    try:
        return pl.read_parquet(records, columns=wanted)
    except Exception as err:  # a readable footer over corrupt pages
        raise StageError(f"{records}: not a readable Parquet table ({err})") from err
