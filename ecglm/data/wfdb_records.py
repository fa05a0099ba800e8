"""A fast, checked reader of one PTB-XL WFDB record (header + format-16 .dat).

    from ecglm.data.wfdb_records import read_record, RecordError
    x = read_record("resources/.../records100/00000/00001_lr", fs=100)   # int16 [12, 1000], microvolts

The header is parsed here (no wfdb import: a record costs one small text read and one
``np.fromfile``), and everything the pipeline relies on is checked against it: 12 signals whose
names map (via :func:`ecglm.core.leads.canonical_lead`) onto the 12 standard leads, the sampling rate,
the length (``seconds * fs`` samples), WFDB format 16 in one interleaved .dat file of exactly the
right size, no WFDB missing value (-32768, which ``wfdb.rdsamp`` returns as NaN), and a conversion
to microvolts that is exact. Any failure raises :class:`RecordError` whose ``reason`` says what is
wrong in words a user can act on; the caller adds the record's name.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ecglm.core.leads import LEADS, canonical_lead

#: Length of every PTB-XL record, in seconds.
RECORD_SECONDS = 10
#: The WFDB "missing sample" value of format 16; wfdb.rdsamp turns it into NaN.
WFDB_MISSING_16 = -32768
#: WFDB's default sampling rate (Hz) when the header gives none.
WFDB_DEFAULT_FS = 250.0
#: WFDB's default ADC gain (units per mV) when the header gives none or 0.
WFDB_DEFAULT_GAIN = 200.0
_DEFAULT_GAIN = Fraction(200)

# microvolts per one physical unit, for the units a PTB-XL-like header may name
_UV_PER_UNIT = {"mv": Fraction(1000), "uv": Fraction(1), "µv": Fraction(1), "μv": Fraction(1)}

_FORMAT_RE = re.compile(r"^(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<offset>\d+))?$")
_GAIN_RE = re.compile(r"^(?P<gain>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\((?P<baseline>[-+]?\d+)\))?(?:/(?P<units>\S+))?$")


class RecordError(Exception):
    """A record cannot be used; ``reason`` says why (the caller names the record)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignalSpec:
    """One signal line of a WFDB header (only the fields this project uses)."""

    file_name: str
    fmt: int
    samples_per_frame: int
    skew: int
    byte_offset: int
    gain: Fraction  # ADC units per physical unit (exact decimal as written)
    baseline: int  # ADC value of 0 physical units
    units: str
    name: str  # the description field: the lead name as written (e.g. AVR)
    uv_per_step: Fraction | None = None  # microvolts per ADC step; None if the units are not a voltage


@dataclass(frozen=True)
class Header:
    """A parsed single-segment WFDB header."""

    record_name: str
    n_signals: int
    fs: float
    n_samples: int | None
    signals: tuple[SignalSpec, ...]


def parse_header(text: str) -> Header:
    """Parse the text of a WFDB header; raise RecordError with the reason if it is malformed.

    Guarantees: ``len(signals) == n_signals``; every signal has a format, a gain (WFDB's default 200
    where absent or 0), a baseline (the ADC zero where absent) and units (mV where absent).
    """
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise RecordError("header is empty")
    fields = lines[0].split()
    if len(fields) < 2:
        raise RecordError(f"header record line {lines[0]!r} lacks the number of signals")
    if "/" in fields[0]:
        raise RecordError(f"multi-segment records are not supported (record line {lines[0]!r})")
    try:
        n_signals = int(fields[1])
    except ValueError:
        raise RecordError(f"header record line {lines[0]!r}: number of signals {fields[1]!r} is not an integer") from None
    fs = WFDB_DEFAULT_FS
    if len(fields) >= 3:
        fs_text = fields[2].split("/", 1)[0].split("(", 1)[0]
        try:
            fs = float(fs_text)
        except ValueError:
            raise RecordError(f"header record line {lines[0]!r}: sampling rate {fields[2]!r} is not a number") from None
    n_samples = None
    if len(fields) >= 4:
        try:
            n_samples = int(fields[3])
        except ValueError:
            raise RecordError(f"header record line {lines[0]!r}: length {fields[3]!r} is not an integer") from None
    signal_lines = lines[1:]
    if len(signal_lines) < n_signals:
        raise RecordError(f"header announces {n_signals} signals but has {len(signal_lines)} signal lines")
    signals = tuple(_parse_signal_line(line, k) for k, line in enumerate(signal_lines[:n_signals]))
    return Header(record_name=fields[0], n_signals=n_signals, fs=fs, n_samples=n_samples, signals=signals)


@functools.lru_cache(maxsize=256)
def _format_field(text: str) -> tuple[int, int, int, int] | None:
    """(format, samples per frame, skew, byte offset) of a signal line's format field, None if malformed."""
    m = _FORMAT_RE.match(text)
    if not m:
        return None
    return int(m["fmt"]), int(m["spf"] or 1), int(m["skew"] or 0), int(m["offset"] or 0)


@functools.lru_cache(maxsize=256)
def _gain_field(text: str) -> tuple[Fraction, int | None, str, Fraction | None] | None:
    """(gain, baseline or None, units, uV per ADC step or None) of a field like ``1000.0(0)/mV``.

    None if malformed. The gain is exact (Fraction of the decimal as written); 0 becomes WFDB's
    default 200. uV per step is None when the units are not a voltage.
    """
    g = _GAIN_RE.match(text)
    if not g:
        return None
    gain = Fraction(g["gain"]) or _DEFAULT_GAIN
    units = g["units"] or "mV"
    baseline = int(g["baseline"]) if g["baseline"] is not None else None
    return gain, baseline, units, _uv_per_step(units, gain)


def _parse_signal_line(line: str, k: int) -> SignalSpec:
    parts = line.split(maxsplit=8)
    if len(parts) < 2:
        raise RecordError(f"signal line {k + 1} {line!r} lacks a format")
    fmt = _format_field(parts[1])
    if fmt is None:
        raise RecordError(f"signal line {k + 1}: format {parts[1]!r} is not understood")
    gain, baseline, units, uv_per_step = _DEFAULT_GAIN_FIELD
    if len(parts) >= 3:
        fields = _gain_field(parts[2])
        if fields is None:
            raise RecordError(f"signal line {k + 1}: gain field {parts[2]!r} is not understood")
        gain, baseline, units, uv_per_step = fields
    adc_zero = 0
    if len(parts) >= 5:
        try:
            adc_zero = int(parts[4])
        except ValueError:
            raise RecordError(f"signal line {k + 1}: ADC zero {parts[4]!r} is not an integer") from None
    name = parts[8].strip() if len(parts) >= 9 else ""
    if not name:
        raise RecordError(f"signal line {k + 1} has no signal name (lead)")
    return SignalSpec(
        file_name=parts[0],
        fmt=fmt[0],
        samples_per_frame=fmt[1],
        skew=fmt[2],
        byte_offset=fmt[3],
        gain=gain,
        baseline=adc_zero if baseline is None else baseline,
        units=units,
        name=name,
        uv_per_step=uv_per_step,
    )


def read_header(base: str | os.PathLike) -> Header:
    """Read and parse ``<base>.hea``; RecordError if it is missing, unreadable or malformed."""
    path = f"{os.fspath(base)}.hea"
    try:
        with open(path, encoding="latin-1") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise RecordError(f"missing header file {os.path.basename(path)}") from None
    except OSError as err:
        raise RecordError(f"cannot read header file {os.path.basename(path)} ({err.strerror})") from None
    return parse_header(text)


def lead_order(header: Header) -> list[int]:
    """Indices into the header's signals that give ``LEADS`` order; RecordError unless they are exactly the 12 leads."""
    if header.n_signals != len(LEADS):
        names = ", ".join(s.name for s in header.signals)
        raise RecordError(f"expected {len(LEADS)} signals, header has {header.n_signals} ({names})")
    canonical = []
    for spec in header.signals:
        try:
            canonical.append(canonical_lead(spec.name))
        except ValueError:
            raise RecordError(f"unknown lead name {spec.name!r} in header (expected {', '.join(LEADS)})") from None
    if sorted(canonical) != sorted(LEADS):
        missing = [lead for lead in LEADS if lead not in canonical]
        dup = sorted({c for c in canonical if canonical.count(c) > 1})
        raise RecordError(f"wrong lead set: missing {missing}, repeated {dup}")
    return [canonical.index(lead) for lead in LEADS]


def _uv_per_step(units: str, gain: Fraction) -> Fraction | None:
    per_unit = _UV_PER_UNIT.get(units.lower())
    return None if per_unit is None else per_unit / gain


# the gain field of a signal line that has none: WFDB's defaults
_DEFAULT_GAIN_FIELD = (_DEFAULT_GAIN, None, "mV", _uv_per_step("mV", _DEFAULT_GAIN))


def check_header(header: Header, fs: int, seconds: float = RECORD_SECONDS) -> list[int]:
    """Check the header against what the pipeline expects; return the lead order (see lead_order).

    Checks: 12 standard leads, sampling rate ``fs``, ``seconds * fs`` samples, format 16 with one
    sample per frame and no skew, all signals interleaved in one .dat file at one byte offset.
    """
    order = lead_order(header)
    if abs(header.fs - fs) > 1e-6:
        raise RecordError(f"sampling rate is {header.fs:g} Hz, expected {fs} Hz")
    expected = int(round(seconds * fs))
    if header.n_samples != expected:
        raise RecordError(f"length is {header.n_samples} samples, expected {expected} ({seconds:g} s at {fs} Hz)")
    for spec in header.signals:
        if spec.uv_per_step is None:
            raise RecordError(f"lead {spec.name}: units {spec.units!r} are not a voltage (expected mV or uV)")
        if spec.fmt != 16:
            raise RecordError(f"lead {spec.name}: WFDB format {spec.fmt}, expected 16")
        if spec.samples_per_frame != 1 or spec.skew != 0:
            raise RecordError(f"lead {spec.name}: multi-frequency or skewed signals are not supported")
    files = {s.file_name for s in header.signals}
    offsets = {s.byte_offset for s in header.signals}
    if len(files) != 1 or len(offsets) != 1:
        raise RecordError(f"signals are spread over several files or offsets ({sorted(files)}), expected one .dat")
    if os.path.basename(header.signals[0].file_name) != header.signals[0].file_name:
        raise RecordError(f"signal file {header.signals[0].file_name!r} must lie beside the header")
    return order


def read_record(base: str | os.PathLike, fs: int, seconds: float = RECORD_SECONDS) -> np.ndarray:
    """Read one record as int16 microvolts, shape [12, T] with T = seconds * fs, rows in ``LEADS`` order.

    ``base`` is the record's path without extension (``.../00001_lr``). Guarantees: the values are
    exactly ``(adc - baseline) / gain`` in microvolts (for PTB-XL, gain 1000/mV and baseline 0, the
    stored integers themselves); raises RecordError (reason only) for a missing, truncated or
    oversized .dat, a malformed header, a wrong lead set, sampling rate or length, a format other
    than 16, a WFDB missing value (-32768), or a gain/baseline whose conversion to microvolts would
    not be exact or would not fit in int16.
    """
    header = read_header(base)
    order = check_header(header, fs, seconds)
    n_sig, n_samp = header.n_signals, header.n_samples
    assert n_samp is not None  # check_header guarantees it
    dat_name = header.signals[0].file_name
    dat = os.path.join(os.path.dirname(os.fspath(base)), dat_name)
    offset = header.signals[0].byte_offset
    want = n_sig * n_samp * 2
    try:
        size = os.stat(dat).st_size
    except FileNotFoundError:
        raise RecordError(f"missing signal file {dat_name}") from None
    except OSError as err:
        raise RecordError(f"cannot read signal file {dat_name} ({err.strerror})") from None
    if size - offset < want:
        raise RecordError(f"truncated signal file {dat_name}: {size} bytes, expected {want + offset}")
    if size - offset > want:
        raise RecordError(f"signal file {dat_name} has {size} bytes, expected {want + offset} (header and data disagree)")
    try:
        raw = np.fromfile(dat, dtype="<i2", count=n_sig * n_samp, offset=offset)  # [T * 12] interleaved
    except OSError as err:
        raise RecordError(f"cannot read signal file {dat_name} ({err})") from None
    if raw.size != n_sig * n_samp:
        raise RecordError(f"truncated signal file {dat_name}: read {raw.size} of {n_sig * n_samp} samples")
    frames = raw.reshape(n_samp, n_sig)  # [T, n_sig]
    missing = frames == WFDB_MISSING_16
    if missing.any():
        cols = np.flatnonzero(missing.any(axis=0))
        leads = ", ".join(header.signals[c].name for c in cols)
        raise RecordError(
            f"{int(missing.sum())} missing samples (WFDB value -32768, NaN in wfdb.rdsamp) in lead(s) {leads}"
        )
    out = np.ascontiguousarray(frames[:, order].T)  # [12, T] int16, LEADS order
    for row, sig in enumerate(order):
        spec = header.signals[sig]
        factor = spec.uv_per_step
        assert factor is not None  # check_header guarantees it
        if spec.baseline == 0 and factor == 1:
            continue  # PTB-XL: 1 ADC step = 1 uV
        out[row] = _to_microvolts(out[row], spec, factor)
    return out


def _to_microvolts(adc: np.ndarray, spec: SignalSpec, factor: Fraction) -> np.ndarray:
    """(adc - baseline) * factor as int16, or RecordError if any value is not an exact int16."""
    num = (adc.astype(np.int64) - spec.baseline) * factor.numerator  # [T]
    if factor.denominator != 1 and np.any(num % factor.denominator):
        raise RecordError(
            f"lead {spec.name}: gain {float(spec.gain):g}/{spec.units} with baseline {spec.baseline} "
            "does not convert to whole microvolts (the conversion would not be exact)"
        )
    uv = num // factor.denominator
    if uv.min(initial=0) <= WFDB_MISSING_16 or uv.max(initial=0) > np.iinfo(np.int16).max:
        raise RecordError(f"lead {spec.name}: values in microvolts do not fit in int16 (gain {float(spec.gain):g})")
    return uv.astype(np.int16)
