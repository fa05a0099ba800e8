"""A person's own recording, read for the chat: WFDB, CSV or NumPy, any rate, 12 leads or a subset.

    from ecglm.chat.recording import read_recording
    rec = read_recording("my_ecg.csv", fs=500)            # Recording: mV [12, T], the leads present, fs
    signal, mask = rec.model_input(fs=100, samples=1000)   # int16 uV [12, 1000], bool [12]

Formats (by the file's suffix):

- **WFDB**: ``NAME.hea`` (or the record's path without a suffix) with its signal file(s) beside it; any
  sampling rate and WFDB format that ``wfdb`` reads. Signals whose names are not standard leads (a respiration
  channel, say) are left out and listed. A header that names a signal file outside its own folder is refused.
- **CSV**: a header row of lead names (any case: ``i, ii, avr, v1``), one column per lead, values in
  millivolts (``units="uV"`` for microvolts). An optional ``time`` column (seconds) gives the rate; without
  one, ``fs`` must be given.
- **NumPy** ``.npy``: a float or integer array ``[12, T]`` in ``LEADS`` order (read without pickle); a row
  that is all NaN is a lead not recorded. ``fs`` must be given.

Every reader checks what the chat relies on and raises :class:`RecordingError` naming the file and the
reason: an unreadable file, no standard lead, a repeated lead, NaN inside a recorded lead, values outside a
plausible ECG range (a sign of wrong units), fewer than ``min_seconds`` or more than ``max_seconds``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS, N_LEADS, canonical_lead

#: Larger absolute values (in mV, after the units are applied) are not an ECG: wrong units, most likely.
MAX_ABS_MV = 25.0
#: The longest recording the chat reads (a longer one is refused before its samples are read).
MAX_SECONDS = 60.0
#: Column names a CSV may use for the time in seconds.
TIME_COLUMNS = ("time", "t", "time_s", "seconds", "sec", "s")
#: Units a recording may be given in, and millivolts per unit.
UNITS = {"mV": 1.0, "uV": 1e-3}


class RecordingError(StageError):
    """A recording the chat cannot use; the message names the file and the reason."""


@dataclass(frozen=True)
class Recording:
    """One ECG: ``signal_mv [12, T]`` float64 in ``LEADS`` order (zeros where a lead was not recorded)."""

    signal_mv: np.ndarray
    present: tuple[bool, ...]  # [12] which leads were recorded
    fs: float
    source: str  # the file it came from (for messages)
    ignored: tuple[str, ...] = ()  # channels that are not standard leads

    @property
    def leads(self) -> list[str]:
        """The recorded leads, in ``LEADS`` order."""
        return [lead for lead, ok in zip(LEADS, self.present) if ok]

    @property
    def seconds(self) -> float:
        return self.signal_mv.shape[1] / self.fs

    def window(self, seconds: float) -> "Recording":
        """The first ``seconds`` of the recording (all of it when shorter)."""
        n = min(self.signal_mv.shape[1], int(round(seconds * self.fs)))
        return Recording(self.signal_mv[:, :n], self.present, self.fs, self.source, self.ignored)

    def resampled(self, fs: float) -> np.ndarray:
        """The signal at ``fs`` Hz: float64 mV ``[12, T']`` (polyphase resampling; unchanged at the same rate)."""
        if abs(fs - self.fs) < 1e-9:
            return self.signal_mv
        from scipy import signal

        ratio = Fraction(fs / self.fs).limit_denominator(1000)
        return signal.resample_poly(self.signal_mv, ratio.numerator, ratio.denominator, axis=-1)

    def model_input(self, fs: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
        """What the encoder takes: int16 microvolts ``[12, samples]`` at ``fs`` (the first ``samples``) and the
        lead mask ``[12]`` (False where a lead was not recorded). Raises RecordingError when shorter."""
        x = self.resampled(float(fs))  # [12, T'] mV
        if x.shape[1] < samples:
            raise RecordingError(
                f"{self.source}: {self.seconds:.1f} s recorded; the model reads {samples / fs:g} s windows "
                f"({samples} samples at {fs} Hz)"
            )
        uv = np.clip(np.rint(x[:, :samples] * 1000.0), -32767, 32767).astype(np.int16)  # [12, samples]
        mask = np.asarray(self.present, dtype=bool)
        uv[~mask] = 0
        return uv, mask


def read_recording(path: str | os.PathLike, *, fs: float | None = None, units: str = "mV",
                   min_seconds: float = 2.0, max_seconds: float = MAX_SECONDS) -> Recording:  # fmt: skip
    """Read the recording at ``path`` (see the module docstring); ``fs`` is required for CSV without a time
    column and for ``.npy``, and must agree with a WFDB header where both are given."""
    if units not in UNITS:
        raise RecordingError(f"units must be one of {sorted(UNITS)}, got {units!r}")
    if fs is not None and not fs > 0:
        raise RecordingError(f"the sampling rate must be positive, got {fs!r}")
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists() and not path.with_suffix(".hea").exists():
        raise RecordingError(f"{path}: no such file")
    if suffix == ".csv":
        rec = _read_csv(path, fs, UNITS[units])
    elif suffix == ".npy":
        rec = _read_npy(path, fs, UNITS[units])
    elif suffix in (".hea", ".dat", "") or path.with_suffix(".hea").exists():
        rec = _read_wfdb(path.with_suffix("") if suffix in (".hea", ".dat") else path, fs, max_seconds)
    else:
        raise RecordingError(f"{path}: unknown recording format {suffix!r} (expected a WFDB .hea, a .csv or a .npy)")
    return _checked(rec, min_seconds, max_seconds)


def _checked(rec: Recording, min_seconds: float, max_seconds: float) -> Recording:
    if not any(rec.present):
        raise RecordingError(f"{rec.source}: no standard lead recorded (expected some of {', '.join(LEADS)})")
    if rec.seconds < min_seconds:
        raise RecordingError(f"{rec.source}: too short: {rec.seconds:.2f} s (at least {min_seconds:g} s)")
    if rec.seconds > max_seconds:
        raise RecordingError(f"{rec.source}: too long: {rec.seconds:.1f} s (at most {max_seconds:g} s; crop it)")
    x = rec.signal_mv[np.asarray(rec.present)]
    if not np.all(np.isfinite(x)):
        bad = [lead for lead, row in zip(rec.leads, x) if not np.all(np.isfinite(row))]
        raise RecordingError(f"{rec.source}: NaN or infinite samples in lead(s) {', '.join(bad)}")
    peak = float(np.abs(x).max())
    if peak > MAX_ABS_MV:
        raise RecordingError(
            f"{rec.source}: values up to {peak:g} mV are not an ECG's (at most {MAX_ABS_MV:g} mV): are they in "
            "microvolts? (--units uV)"
        )
    return rec


def _assemble(columns: dict[str, np.ndarray], names: list[str], source: str, fs: float,
              ignored: tuple[str, ...] = ()) -> Recording:  # fmt: skip
    """``columns``: {name as written: [T] mV}; ``names`` in file order. Maps names onto LEADS."""
    out = np.zeros((N_LEADS, len(next(iter(columns.values())))), dtype=np.float64)
    present = [False] * N_LEADS
    for name in names:
        lead = canonical_lead(name)
        i = LEADS.index(lead)
        if present[i]:
            raise RecordingError(f"{source}: lead {lead} appears twice")
        present[i] = True
        out[i] = columns[name]
    return Recording(out, tuple(present), float(fs), source, ignored)


def _is_lead(name: str) -> bool:
    try:
        canonical_lead(name)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, fs: float | None, mv_per_unit: float) -> Recording:
    import polars as pl

    try:
        frame = pl.read_csv(path, infer_schema_length=10_000)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise RecordingError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from err
    time_cols = [c for c in frame.columns if c.strip().lower() in TIME_COLUMNS]
    others = [c for c in frame.columns if c not in time_cols]
    unknown = [c for c in others if not _is_lead(c)]
    if unknown:
        raise RecordingError(
            f"{path}: column(s) {', '.join(map(repr, unknown))} are not lead names (expected a header of leads such "
            f"as {', '.join(LEADS)}, any case, and optionally a time column in seconds)"
        )
    if not others:
        raise RecordingError(f"{path}: no lead column (expected a header of leads such as {', '.join(LEADS)})")
    columns = {}
    for c in others:
        try:
            columns[c] = frame[c].cast(pl.Float64, strict=True).to_numpy() * mv_per_unit
        except pl.exceptions.PolarsError:
            raise RecordingError(f"{path}: column {c!r} holds values that are not numbers") from None
    if time_cols:
        t = frame[time_cols[0]].cast(pl.Float64, strict=False).to_numpy()
        steps = np.diff(t)
        if len(t) < 2 or not np.all(np.isfinite(steps)) or not np.all(steps > 0):
            raise RecordingError(f"{path}: time column {time_cols[0]!r} does not increase steadily")
        from_time = 1.0 / float(np.median(steps))
        if fs is not None and abs(from_time - fs) > 0.01 * fs:
            raise RecordingError(f"{path}: the time column says {from_time:g} Hz, --fs says {fs:g} Hz")
        fs = fs or round(from_time, 6)
    if fs is None:
        raise RecordingError(f"{path}: give the sampling rate (--fs): the CSV has no time column")
    return _assemble(columns, others, str(path), fs)


def _read_npy(path: Path, fs: float | None, mv_per_unit: float) -> Recording:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise RecordingError(f"{path}: not a readable .npy array without pickled objects ({err})") from err
    if arr.ndim != 2 or arr.shape[0] != N_LEADS or not np.issubdtype(arr.dtype, np.number):
        raise RecordingError(
            f"{path}: expected a numeric array [12, T] in the lead order {', '.join(LEADS)}, got {arr.dtype} "
            f"{list(arr.shape)}"
        )
    if fs is None:
        raise RecordingError(f"{path}: give the sampling rate (--fs): a .npy array does not carry one")
    x = arr.astype(np.float64) * mv_per_unit  # [12, T] mV
    present = tuple(bool(np.any(~np.isnan(row))) for row in x)  # a row all NaN: not recorded
    x[~np.asarray(present)] = 0.0
    return Recording(x, present, float(fs), str(path))


def _read_wfdb(base: Path, fs: float | None, max_seconds: float) -> Recording:
    """A WFDB record, its header checked before any signal file is opened."""
    from ecglm.data.wfdb_records import RecordError, read_header

    source = f"{base}.hea"
    try:
        header = read_header(base)
    except RecordError as err:
        raise RecordingError(f"{source}: {err.reason}") from None
    for spec in header.signals:
        name = spec.file_name
        if name != os.path.basename(name) or name in ("", ".", ".."):
            raise RecordingError(f"{source}: signal file {name!r} is not beside the header (refused)")
    if header.n_samples is None:
        raise RecordingError(f"{source}: the header gives no length")
    if header.n_samples / header.fs > max_seconds:
        raise RecordingError(f"{source}: declares {header.n_samples / header.fs:.1f} s (at most {max_seconds:g} s)")
    if fs is not None and abs(fs - header.fs) > 1e-6:
        raise RecordingError(f"{source}: the header says {header.fs:g} Hz, --fs says {fs:g} Hz")
    leads = [s.name for s in header.signals if _is_lead(s.name)]
    ignored = tuple(s.name for s in header.signals if not _is_lead(s.name))
    if not leads:
        names = ", ".join(s.name for s in header.signals)
        raise RecordingError(f"{source}: no standard lead among its signals ({names})")
    import wfdb

    try:
        record = wfdb.rdrecord(str(base), physical=True)
    except Exception as err:  # wfdb raises many kinds (ValueError, OSError, struct errors) on a broken record
        raise RecordingError(f"{source}: cannot read the record ({type(err).__name__}: {err})") from err
    columns = {}
    for k, name in enumerate(record.sig_name):
        if name not in leads:
            continue
        per_unit = UNITS.get({"mv": "mV", "uv": "uV", "µv": "uV", "μv": "uV"}.get(str(record.units[k]).lower(), ""))
        if per_unit is None:
            raise RecordingError(f"{source}: lead {name}: units {record.units[k]!r} are not a voltage (mV or uV)")
        columns[name] = record.p_signal[:, k].astype(np.float64) * per_unit
    return _assemble(columns, leads, source, header.fs, ignored)
