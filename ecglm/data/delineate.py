"""Measure one 12-lead ECG the way GE's 12SL reports it: from a median beat, delineated globally.

The steps, all numpy/scipy (no neurokit2, which is slow):

1. Filters: zero-phase 0.5 Hz high-pass (baseline wander), 50/60 Hz notches and a 150 Hz low-pass
   where the sampling rate allows, all with ``sosfiltfilt`` so that no wave is shifted in time.
2. R peaks on a multi-lead QRS energy signal (5-20 Hz band, squared slope summed over the 8
   independent leads, 80 ms moving average), with an adaptive threshold and a search-back for missed
   beats; every peak is then re-aligned on the beat template by cross-correlation.
3. The RR series: heart rate, mean RR and the RR standard deviation (SDNN).
4. A median beat per lead over the beats of the dominant morphology (ectopic beats are left out),
   upsampled to at least 500 Hz so that intervals are resolved to 2 ms even from 100 Hz records.
5. Delineation of the median beat: QRS onset and offset from the spatial velocity of the 8
   independent leads (low-passed at 40 Hz whatever the sampling rate): a core above 15% of its
   peak, then outwards to where it falls below 2% (onset) or below 5% / stops falling (offset, the
   J point; a pause on the S wave's upstroke, still in the core, does not end it); T end by the
   tangent method on each lead's T wave (its last steep descending limb, so that an ST segment
   ending before the T peak is not taken for it), the 75th percentile of the
   leads with a clear T wave; P onset and offset by the tangent method on the magnitude in the P loop's
   plane, the P wave being accepted only if it repeats from beat to beat and, in an irregular
   rhythm, keeps a fixed PR interval (so that atrial fibrillation gives no P wave, not a guess).
6. Per-lead amplitudes from the median beat relative to the isoelectric level just before QRS onset
   (the PR segment), and frontal axes from the net areas of QRS, P and T in leads I and aVF.

Conventions (those of 12SL where it has one, ours where stated):
- Q and S amplitudes are negative (0 when the wave is absent); T and P amplitudes are signed (the
  extreme deviation from the PR baseline, negative = inverted); R amplitude is the peak of the first
  positive deflection (0 when absent). A QRS that never goes positive (QS) is reported as a Q wave
  spanning the negative deflection. Deflections smaller than 25 uV are not counted as waves.
- ST_Amp is the ST level at the J point (J = the global QRS offset), relative to the PR baseline: where
  the fourth universal definition of MI reads ST elevation and depression. ST60_Amp is OURS (not a 12SL
  name): the level 60 ms after J, so that ST60_Amp - ST_Amp tells a horizontal or downsloping ST
  segment from an upsloping one.
- Axes are in degrees in (-180, 180]: 0 = lead I, +90 = lead aVF.
- RR_SDNN_Global is OURS (not a 12SL name): the standard deviation of the RR intervals in ms, the
  measure that tells atrial fibrillation from sinus rhythm.
- QT corrections: Bazett QT/sqrt(RR), Fridericia QT/RR^(1/3), Framingham QT + 154 (1 - RR), RR in s.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np

from ecglm.core.leads import LEADS

# I, II, V1..V6: the 8 leads that carry independent information (III, aVR, aVL, aVF are sums of I, II)
INDEPENDENT = (0, 1, 6, 7, 8, 9, 10, 11)
I_IDX, AVF_IDX = LEADS.index("I"), LEADS.index("aVF")

MIN_WAVE_MV = 0.025  # smaller deflections are not counted as Q/R/S waves
FLAT_LEAD_MV = 0.02  # a lead whose filtered peak-to-peak stays below this is flat (electrode off)
MIN_BEATS = 3
# QRS core: (level, bridged gap in s): samples above this fraction of the peak spatial velocity,
# gaps up to this long bridged; the first level whose core stays clear of the P and T waves is used
CORE_LEVELS = ((0.15, 0.05), (0.25, 0.03), (0.4, 0.02))
# a pause of the velocity in the QRS core is the S wave's upstroke, not the J point, when the velocity
# falls on to half its height within this long (s)
J_PAUSE_S = 0.024
INTERNAL_FS = 500  # the median beat is delineated at >= this rate
P_MIN_CORRELATION = 0.7  # a P wave must repeat from beat to beat this well (AF's f waves do not)
# in an irregular rhythm (RR coefficient of variation above P_IRREGULAR_CV) a P wave must also keep
# a fixed PR: at least this share of beats matching the P template best within 10 ms of one another
P_IRREGULAR_CV = 0.06
P_MIN_FIXED_PR = 0.65
# T end: the tangent is drawn at the last local maximum of the T wave's fall rate that is at least
# 25% of the steepest and lies at least this share of the T height above the TP level (not in the tail)
T_DIP_LEVEL = 0.2
# the global T end: this quantile of the leads' T ends (the late leads end the T wave; one cannot)
T_END_QUANTILE = 0.75

GLOBAL_COLUMNS: tuple[str, ...] = (
    "HR__Global",
    "RR_Mean_Global",
    "RR_SDNN_Global",  # ours: SD of RR intervals (ms), not a 12SL name
    "PR_Int_Global",
    "QRS_Dur_Global",
    "QT_Int_Global",
    "QT_IntBazett_Global",
    "QT_IntFridericia_Global",
    "QT_IntFramingham_Global",
    "P_Dur_Global",
    "R_AxisFrontal_Global",
    "P_AxisFront_Global",
    "T_AxisFront_Global",
)
LEAD_MEASURES: tuple[str, ...] = ("P_Amp", "Q_Amp", "R_Amp", "S_Amp", "T_Amp", "ST_Amp", "ST60_Amp", "Q_Dur", "R_Dur",
                                  "S_Dur")
LEAD_COLUMNS: tuple[str, ...] = tuple(f"{m}_{lead}" for m in LEAD_MEASURES for lead in LEADS)
FEATURE_COLUMNS: list[str] = [*GLOBAL_COLUMNS, *LEAD_COLUMNS]


class DelineationError(ValueError):
    """The record cannot be measured; ``str(err)`` is the reason (flat line, too few beats, noise...)."""


@dataclass(frozen=True)
class _Filters:
    measure: list  # sos sections applied to the signal that is measured
    qrs: np.ndarray  # sos of the 5-20 Hz QRS band used for beat detection


@functools.lru_cache(maxsize=8)
def _filters(fs: float) -> _Filters:
    from scipy import signal

    sections = [signal.butter(2, 0.5, btype="highpass", fs=fs, output="sos")]
    for mains in (50.0, 60.0):
        if fs > 2.5 * mains:
            b, a = signal.iirnotch(mains, 30.0, fs=fs)
            sections.append(signal.tf2sos(b, a))
    if fs > 400:
        sections.append(signal.butter(4, 150.0, btype="lowpass", fs=fs, output="sos"))
    qrs_high = min(20.0, 0.45 * fs)
    qrs = signal.butter(2, [5.0, qrs_high], btype="bandpass", fs=fs, output="sos")
    return _Filters(measure=sections, qrs=qrs)


@functools.lru_cache(maxsize=8)
def _delineation_lowpass(fs: float) -> np.ndarray:
    from scipy import signal

    return signal.butter(2, 40.0, btype="lowpass", fs=fs, output="sos")


def _ms(n_samples: float, fs: float) -> float:
    return 1000.0 * n_samples / fs


def _moving_average(x: np.ndarray, n: int) -> np.ndarray:
    """Centred moving average over ``n`` samples along the last axis (same shape; edges repeat)."""
    if n <= 1:
        return x
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(x, n, axis=-1, mode="nearest")


def _runs_below(mask: np.ndarray, n: int) -> np.ndarray:
    """Boolean [len(mask)]: True at i when mask[i : i + n] are all True (a quiet run starting at i)."""
    if n <= 1:
        return mask.copy()
    c = np.concatenate(([0], np.cumsum(mask.astype(np.int64))))
    out = np.zeros(mask.shape, dtype=bool)
    if len(mask) >= n:
        out[: len(mask) - n + 1] = (c[n:] - c[:-n]) == n
    return out


# ----------------------------------------------------------------------------------------- beats


def detect_r_peaks(qrs_band: np.ndarray, fs: float) -> np.ndarray:
    """R-peak sample indices (sorted, >= 250 ms apart) from the QRS-band signal ``qrs_band`` [L, T].

    The detector function is the squared slope summed over leads, averaged over 80 ms; peaks above
    30% of its 90th-percentile peak height count, and gaps longer than 1.66 median RR are searched
    again at half that threshold.
    """
    from scipy.signal import find_peaks

    slope = np.diff(qrs_band, axis=-1, prepend=qrs_band[:, :1])  # [L, T]
    energy = _moving_average((slope**2).sum(axis=0), max(1, int(round(0.08 * fs))))  # [T]
    distance = max(1, int(round(0.25 * fs)))
    candidates, _ = find_peaks(energy, distance=distance)
    if len(candidates) == 0:
        return candidates
    ref = float(np.percentile(energy[candidates], 90))
    if ref <= 0:
        return candidates[:0]
    thr = 0.3 * ref
    peaks = candidates[energy[candidates] >= thr]
    if len(peaks) >= 3:
        rr = np.diff(peaks)
        med = float(np.median(rr))
        extra = []
        for a, b in zip(peaks[:-1], peaks[1:]):
            if b - a > 1.66 * med:
                inside = candidates[(candidates > a + distance) & (candidates < b - distance)]
                inside = inside[energy[inside] >= 0.5 * thr]
                if len(inside):
                    extra.append(inside[np.argmax(energy[inside])])
        if extra:
            peaks = np.sort(np.concatenate([peaks, np.asarray(extra)]))
    return peaks


def _beat_matrix(x: np.ndarray, centres: np.ndarray, pre: int, post: int) -> np.ndarray:
    """Beats cut from ``x`` [L, T] around ``centres``: [L, B, pre + post + 1], NaN outside the record."""
    n_leads, n = x.shape
    padded = np.full((n_leads, n + pre + post), np.nan, dtype=np.float64)
    padded[:, pre : pre + n] = x
    idx = centres[:, None] + np.arange(pre + post + 1)[None, :]  # [B, W] in padded coordinates
    return padded[:, idx]


def _correlations(beats: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Pearson correlation of each beat [L, B, W] with ``template`` [L, W] over all leads (NaN-safe)."""
    # each lead's segment is centred on its own mean, so that lead offsets do not count as shape
    beats = beats - np.nanmean(beats, axis=-1, keepdims=True)
    template = template - np.nanmean(template, axis=-1, keepdims=True)
    b = beats.transpose(1, 0, 2).reshape(beats.shape[1], -1)  # [B, L*W]
    t = template.reshape(-1)  # [L*W]
    ok = np.isfinite(b) & np.isfinite(t)[None, :]
    out = np.full(b.shape[0], np.nan)
    for i in range(b.shape[0]):
        bi, ti = b[i, ok[i]], t[ok[i]]
        if bi.size < 3:
            continue
        bi, ti = bi - bi.mean(), ti - ti.mean()
        den = math.sqrt(float(bi @ bi) * float(ti @ ti))
        out[i] = float(bi @ ti) / den if den > 0 else np.nan
    return out


def _align(x: np.ndarray, peaks: np.ndarray, fs: float) -> np.ndarray:
    """Peaks shifted (by up to 40 ms) to best match the median QRS of all beats (cross-correlation)."""
    half = max(2, int(round(0.06 * fs)))
    shift = max(1, int(round(0.04 * fs)))
    wide = _beat_matrix(x, peaks, half + shift, half + shift)  # [L, B, 2*(half+shift)+1]
    template = np.nanmedian(wide[:, :, shift : shift + 2 * half + 1], axis=1)  # [L, 2*half+1]
    best = np.zeros(len(peaks), dtype=np.int64)
    best_score = np.full(len(peaks), -np.inf)
    for s in range(-shift, shift + 1):
        seg = wide[:, :, shift + s : shift + s + 2 * half + 1]  # [L, B, 2*half+1]
        score = np.nansum(seg * template[:, None, :], axis=(0, 2))  # [B]
        better = score > best_score
        best[better], best_score[better] = s, score[better]
    return np.clip(peaks + best, 0, x.shape[-1] - 1)


# ----------------------------------------------------------------------------- delineation


def _qrs_bounds(velocity: np.ndarray, r0: int, fs: float) -> tuple[int, int]:
    """QRS onset and offset (indices into the median beat) from the spatial velocity [W].

    Levels are fractions of the velocity's QRS peak above its floor (5th percentile over the beat).
    The QRS core is the stretch of samples above 15% around the velocity peak, within 200 ms of the
    fiducial ``r0``, gaps up to 50 ms bridged (notches inside a wide QRS do not end it); where that
    stretch reaches a steep P or T wave (it runs to the window's edge) the stricter levels of
    CORE_LEVELS are tried in turn. Onset: from the core's start back (at most 50 ms) until the
    velocity drops below 2%. Offset (J point): from the core's last prominent velocity peak along
    its falling edge (at most 120 ms) until the velocity drops below 5% or, past half of that peak,
    stops falling (by less than 1% per 4 ms: the knee into an ST segment that may slope, as after a
    bundle branch block) -- unless that pause is the S wave's upstroke (``_s_wave_pause``: still in
    the core, and the velocity falls on to half within 24 ms).
    """
    lo, hi = max(1, r0 - int(0.2 * fs)), min(len(velocity) - 2, r0 + int(0.2 * fs))
    core_lo, core_hi = max(0, r0 - int(0.06 * fs)), min(len(velocity), r0 + int(0.06 * fs) + 1)
    pk = core_lo + int(np.argmax(velocity[core_lo:core_hi]))
    floor = float(np.percentile(velocity, 5))
    span = float(velocity[pk]) - floor
    if not span > 0:
        raise DelineationError("QRS delineation failed: no QRS complex in the median beat")
    for level, bridge in CORE_LEVELS:
        above = lo + np.flatnonzero(velocity[lo : hi + 1] > floor + level * span)  # includes pk
        parts = np.split(above, np.flatnonzero(np.diff(above) > int(bridge * fs)) + 1)
        core = next(part for part in parts if part[0] <= pk <= part[-1])
        onset, offset = int(core[0]), int(core[-1])
        if lo < onset and offset < hi:
            break
    else:
        raise DelineationError("QRS delineation failed: no quiet segment around the QRS complex")
    thr_low, thr_end = floor + 0.02 * span, floor + 0.05 * span
    step = max(1, int(round(0.004 * fs)))
    for _ in range(int(0.05 * fs)):  # back to the PR segment
        if onset <= lo or velocity[onset] < thr_low:
            break
        onset -= 1
    # the J point: from the core's last prominent velocity peak (a terminal QRS deflection counts,
    # a sloping ST segment after it does not) down its falling edge to the knee
    from scipy.signal import find_peaks

    bumps, _ = find_peaks(velocity[onset : hi + 1], prominence=0.05 * span)  # prominence seen to hi
    bumps = onset + bumps[onset + bumps <= offset]  # peaks inside the core
    offset = max(pk, int(bumps[-1])) if len(bumps) else pk
    top = float(velocity[offset])
    for _ in range(int(0.12 * fs)):
        v = velocity[offset]
        if offset + step >= hi or v < thr_end:
            break
        knee = v < floor + 0.5 * (top - floor) and v - velocity[offset + step] < 0.01 * span
        if knee and not _s_wave_pause(velocity, offset, floor, span, fs):
            break  # the knee: the velocity no longer falls (by less than 1% per 4 ms)
        offset += 1
    return onset, offset


def _s_wave_pause(velocity: np.ndarray, i: int, floor: float, span: float, fs: float) -> bool:
    """Whether the velocity's pause at ``i`` lies inside the QRS: a pause of the S wave's upstroke.

    The S wave of many normal ECGs falls fast and rises slowly, so the spatial velocity pauses at the
    S nadir (or on a shoulder) before the upstroke's own fall to the ST segment. Such a pause lies in
    the QRS core (above its first level, CORE_LEVELS[0]) and the velocity falls on to half its height
    above the floor within J_PAUSE_S. A knee into an ST segment does not do both: it lies low, or (a
    sloping ST segment, as after a bundle branch block) the velocity falls on slowly. Taking the pause
    for the J point ends the QRS ~25 ms early and reads the ST level on the S wave's upstroke or the R
    wave's downstroke (issue 21).
    """
    level = float(velocity[i]) - floor
    if level < CORE_LEVELS[0][0] * span:
        return False
    ahead = velocity[i : min(len(velocity), i + int(round(J_PAUSE_S * fs)) + 1)] - floor
    return bool(ahead.min() < 0.5 * level)


def _tangent_end(z: np.ndarray, start: int, stop: int, fs: float) -> tuple[float, float] | None:
    """(T end, T amplitude) by the tangent method on one lead's T wave ``z`` [W] turned positive, or None.

    ``z`` is relative to the PR baseline. The T wave peaks at the curve's largest value in
    [start, stop) and has ended where the curve first falls below 15% of that peak, or at its first
    trough below half the peak from which it rises again (None when neither: the lead does not come
    back to its baseline), so that a U wave or the next beat's P wave is not taken for it. Its descending limb is the last stretch of steep fall before that (a local maximum
    of the fall rate, at least 25% of the steepest, at least T_DIP_LEVEL of the height above the TP
    level): an ST plateau that ends before the T peak makes a cliff before it, which is not the T
    wave's limb. The tangent at that point meets the lowest level of the 40 ms after the T wave has
    ended (the TP segment). The amplitude returned is the peak's height above that level.
    """
    if stop - start < int(0.06 * fs):
        return None
    peak = start + int(np.argmax(z[start:stop]))
    amp = float(z[peak])
    if stop - peak < 3 or not amp > 0:
        return None
    from scipy.signal import find_peaks

    low = np.flatnonzero(z[peak:stop] < 0.15 * amp)
    # a trough below half the peak from which the curve rises again (into a U wave) also ends it
    troughs, _ = find_peaks(-z[peak:stop], prominence=0.03 * amp)
    troughs = troughs[z[peak + troughs] < 0.5 * amp]
    ends = [int(v[0]) for v in (low, troughs) if len(v)]
    if not ends:  # the lead never comes back to the baseline: no T end to be seen in it
        return None
    done = peak + min(ends)  # the T wave has ended here
    floor = float(np.min(z[done : min(len(z), done + int(0.04 * fs) + 1)]))
    if done - peak < 3:
        return None
    slope = np.gradient(z)
    fall = -slope[peak : done + 1]  # [n] how fast the curve falls
    steepest = float(fall.max())
    if not steepest > 0:
        return None
    # the T wave's own limb is the last stretch of steep fall: a plateau's cliff comes before it
    dips, _ = find_peaks(fall, height=0.25 * steepest)
    dips = dips[z[peak + dips] - floor >= T_DIP_LEVEL * (amp - floor)]  # on the limb, not in the tail
    steep = peak + (int(dips[-1]) if len(dips) else int(np.argmax(fall)))
    return steep + (float(z[steep]) - floor) / (-float(slope[steep])), amp - floor


def _t_end(rel: np.ndarray, j: int, stop: int, fs: float) -> int | None:
    """T end (index into the median beat) from the ST-T of the leads ``rel`` [L, W]; None when none ends.

    Each lead (smoothed over 20 ms, turned so that its T wave is positive) is delineated by the
    tangent method on its T wave's descending limb (see ``_tangent_end``); the global T end is the
    T_END_QUANTILE quantile of the ends of the leads whose T wave reaches at least 30% of the
    largest (late leads end the T wave; one lead's noise cannot move it). None when the tangent
    reaches the baseline only after ``stop`` (where the next P wave could start).
    """
    start = j + int(0.06 * fs)
    if stop - start < int(0.06 * fs):
        return None
    seg = _moving_average(rel, max(1, int(round(0.02 * fs))))  # [L, W]
    found = []  # (end, amplitude)
    for y in seg:
        window = y[start:stop]
        if window.size == 0:
            continue
        sign = 1.0 if window[int(np.argmax(np.abs(window)))] >= 0 else -1.0
        r = _tangent_end(sign * y, start, stop, fs)
        if r is not None:
            found.append(r)
    if not found:
        return None
    top = max(a for _, a in found)
    ends = sorted(e for e, a in found if a >= 0.3 * top)
    end = float(np.quantile(ends, T_END_QUANTILE))
    if end > stop:
        return None
    return int(round(end))


def _p_wave(rel: np.ndarray, start: int, qrs_on: int, fs: float) -> tuple[int, int, int] | None:
    """(onset, peak, offset) of the P wave in [start, qrs_on) of the median beat ``rel`` [L, W], or None.

    Each lead is smoothed (20 ms) and referred to the straight line joining its level at ``start``
    (the TP segment) and just before QRS onset (the PR segment), so that a slow baseline shift does
    not count as P wave. The P wave peaks where the spatial magnitude is largest; its boundaries come
    from the magnitude in the P loop's plane (the leads' two principal directions within 60 ms of
    the peak), by the tangent method at its steepest rise and fall.
    """
    stop = qrs_on - int(0.02 * fs)
    if stop - start < int(0.06 * fs):
        return None
    n = max(1, int(round(0.01 * fs)))
    gap = max(1, int(round(0.004 * fs)))  # the PR level is read 4-14 ms before QRS onset
    seg = _moving_average(rel[:, start : qrs_on + 1], max(1, int(round(0.02 * fs))))  # [L, w]
    a, b = seg[:, n : 2 * n].mean(axis=-1), seg[:, -n - gap : -gap].mean(axis=-1)  # [L] end levels
    frac = np.linspace(0.0, 1.0, seg.shape[1])[None, :]
    detrended = seg - (a[:, None] + frac * (b - a)[:, None])  # [L, w]
    m = np.sqrt((detrended**2).sum(axis=0))  # [w]
    last = stop - start
    edge = int(0.02 * fs)
    peak = edge + int(np.argmax(m[edge:last]))
    if peak <= edge + int(0.01 * fs):  # a tail falling from the previous beat, not a P wave
        return None
    amp = float(m[peak])
    if amp < 0.04:
        return None
    # the P loop's own plane: the two principal directions of the leads around the peak; its
    # magnitude follows a P vector that turns (right, then left atrium) with the noise of 2 leads, not 8
    half = int(0.06 * fs)
    u, _, _ = np.linalg.svd(detrended[:, max(0, peak - half) : peak + half], full_matrices=False)
    plane = u[:, :2].T @ detrended  # [2, w]
    m2 = np.sqrt((plane**2).sum(axis=0))  # [w]
    # boundaries by the tangent method: the tangent at the steepest rise (fall) before (after) the
    # peak meets the lowest level within 100 ms on that side (a slow TP-segment drift does not count)
    reach = int(0.1 * fs)
    slope = np.gradient(m2)
    lo_side = max(0, peak - reach)
    rise = lo_side + int(np.argmax(slope[lo_side:peak])) if peak > lo_side else peak
    fall = peak + int(np.argmin(slope[peak : min(len(m2), peak + reach)]))
    if slope[rise] <= 0 or slope[fall] >= 0:
        return None
    floor_before = float(m2[lo_side : peak + 1].min())
    floor_after = float(m2[peak : min(len(m2), peak + reach)].min())
    onset = start + int(round(rise - (m2[rise] - floor_before) / slope[rise]))
    offset = start + int(round(fall + (m2[fall] - floor_after) / -slope[fall]))
    onset, offset = max(onset, start), min(offset, qrs_on)
    if _ms(offset - onset, fs) < 30:
        return None
    return onset, start + peak, offset


def _qrs_waves(y: np.ndarray, fs: float) -> tuple[float, float, float, float, float, float]:
    """(Q_Amp, R_Amp, S_Amp, Q_Dur, R_Dur, S_Dur) of one lead's QRS ``y`` [n] relative to baseline."""
    sign = np.sign(y)
    # runs of constant sign: boundaries where the sign changes
    change = np.flatnonzero(np.diff(sign) != 0) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(y)]))
    waves = []  # (sign, extreme, duration in samples)
    for a, b in zip(starts, ends):
        s = sign[a]
        if s == 0:
            continue
        seg = y[a:b]
        ext = float(seg.max() if s > 0 else seg.min())
        if abs(ext) >= MIN_WAVE_MV:
            waves.append((int(s), ext, b - a))
    q = r = s_ = (0.0, 0.0)
    first_pos = next((i for i, w in enumerate(waves) if w[0] > 0), None)
    if first_pos is None:  # QS complex: one negative deflection reported as Q
        if waves:
            neg = [w for w in waves if w[0] < 0]
            q = (min(w[1] for w in neg), _ms(sum(w[2] for w in neg), fs))
    else:
        if first_pos > 0:
            q = (min(w[1] for w in waves[:first_pos]), _ms(sum(w[2] for w in waves[:first_pos]), fs))
        r = (waves[first_pos][1], _ms(waves[first_pos][2], fs))
        after = next((w for w in waves[first_pos + 1 :] if w[0] < 0), None)
        if after is not None:
            s_ = (after[1], _ms(after[2], fs))
    return q[0], r[0], s_[0], q[1], r[1], s_[1]


def _axis(area_i: float, area_avf: float) -> float | None:
    """Frontal axis in degrees (-180, 180] from net areas in I and aVF; None when both are ~0."""
    if abs(area_i) < 1e-9 and abs(area_avf) < 1e-9:
        return None
    deg = math.degrees(math.atan2(area_avf, area_i))
    return 180.0 if deg == -180.0 else deg


# ---------------------------------------------------------------------------------- record


def measure_record(x: np.ndarray, fs: float) -> dict[str, float | None]:
    """Measure one ECG ``x`` [12, T] in mV (lead order LEADS, at least 2 s) sampled at ``fs`` Hz.

    Returns {column: value} for every name in FEATURE_COLUMNS (ms, mV, bpm, degrees), rounded to
    4 decimals; a measure that cannot be made (no P wave in atrial fibrillation, a flat lead, no T
    end) is None. Raises DelineationError, whose message is the reason, when the record as a whole
    cannot be measured (non-finite samples, flat line, too few beats, noise, failed QRS delineation).
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of beats cut at the edges
        return _measure(np.asarray(x, dtype=np.float64), float(fs))


def _measure(x: np.ndarray, fs: float) -> dict[str, float | None]:
    from scipy import signal

    if x.ndim != 2 or x.shape[0] != len(LEADS):
        raise DelineationError(f"expected an array [12, T], got shape {x.shape}")
    if x.shape[1] < int(2 * fs):
        raise DelineationError(f"record too short: {x.shape[1]} samples at {fs:g} Hz")
    if not np.all(np.isfinite(x)):
        raise DelineationError("non-finite samples (NaN or inf) in the signal")
    f = _filters(float(fs))
    y = x
    for sos in f.measure:
        y = signal.sosfiltfilt(sos, y, axis=-1)  # [12, T] mV
    ptp = np.percentile(y, 99.5, axis=-1) - np.percentile(y, 0.5, axis=-1)  # [12]
    flat = ptp < FLAT_LEAD_MV
    if flat[list(INDEPENDENT)].all():
        raise DelineationError(f"flat line: no lead varies by more than {FLAT_LEAD_MV} mV")
    live = [i for i in INDEPENDENT if not flat[i]]

    band = signal.sosfiltfilt(f.qrs, x[live], axis=-1)  # [L, T]
    peaks = detect_r_peaks(band, fs)
    if len(peaks) < MIN_BEATS:
        raise DelineationError(f"too few beats: {len(peaks)} R peaks detected (need {MIN_BEATS})")
    peaks = _align(y[live], peaks, fs)
    rr = np.diff(peaks) * 1000.0 / fs  # [B-1] ms
    rr_mean = float(rr.mean())
    hr = 60000.0 / rr_mean
    if not 20.0 <= hr <= 300.0:
        raise DelineationError(f"implausible heart rate: {hr:.0f} bpm from {len(peaks)} detected beats")

    # --- median beat of the dominant morphology
    pre, post = int(round(0.6 * fs)), int(round(0.8 * fs))
    beats = _beat_matrix(y, peaks, pre, post)  # [12, B, W]
    qrs_half = max(2, int(round(0.06 * fs)))
    qrs_sl = slice(pre - qrs_half, pre + qrs_half + 1)
    ind = list(INDEPENDENT)
    template = np.nanmedian(beats[ind, :, qrs_sl], axis=1)  # [8, Wq]
    corr = _correlations(beats[ind, :, qrs_sl], template)  # [B]
    med_corr = float(np.nanmedian(corr)) if np.isfinite(corr).any() else float("nan")
    if not med_corr >= 0.6:
        raise DelineationError(f"noise: beats do not repeat (median QRS correlation {med_corr:.2f})")
    dominant = np.flatnonzero(corr >= max(0.8, med_corr - 0.15))
    if len(dominant) < 2:
        dominant = np.flatnonzero(corr >= med_corr)
    median = np.nanmedian(beats[:, dominant, :], axis=1)  # [12, W]
    if not np.all(np.isfinite(median)):
        median = np.where(np.isfinite(median), median, 0.0)

    # --- upsample the median beat so that intervals are resolved to <= 2 ms
    up = max(1, int(math.ceil(INTERNAL_FS / fs)))
    fi = fs * up
    mb = signal.resample_poly(median, up, 1, axis=-1) if up > 1 else median  # [12, Wi]
    r0 = pre * up
    rr_i = rr_mean / 1000.0 * fi  # mean RR in internal samples

    # QRS boundaries from the spatial velocity of the median beat low-passed at 40 Hz (the same band
    # whatever the sampling rate, and free of the high-frequency noise a derivative amplifies)
    smooth = signal.sosfiltfilt(_delineation_lowpass(fi), mb[ind], axis=-1)  # [8, Wi]
    deriv = np.gradient(smooth, axis=-1) * fi  # [8, Wi] mV/s
    velocity = np.sqrt((deriv**2).sum(axis=0))  # [Wi]
    qrs_on, qrs_off = _qrs_bounds(velocity, r0, fi)
    qrs_dur = _ms(qrs_off - qrs_on, fi)
    if not 40.0 <= qrs_dur <= 250.0:
        raise DelineationError(f"QRS delineation failed: implausible QRS duration {qrs_dur:.0f} ms")

    base_n, gap = max(1, int(round(0.01 * fi))), max(1, int(round(0.004 * fi)))
    baseline = mb[:, max(0, qrs_on - base_n - gap) : qrs_on - gap].mean(axis=-1)  # [12] PR level
    rel = mb - baseline[:, None]  # [12, Wi] relative to the PR baseline

    t_stop = min(mb.shape[1] - 1, r0 + int(min(0.7 * rr_i, 0.65 * fi)))
    t_end = _t_end(rel[ind], qrs_off, t_stop, fi)

    # P wave: between the previous beat's T end (or 320 ms before QRS onset) and QRS onset
    prev_t = (t_end - rr_i) if t_end is not None else (r0 - 0.6 * rr_i)
    p_start = int(max(0, qrs_on - 0.32 * fi, prev_t))
    p = _p_wave(rel[ind], p_start, qrs_on, fi)
    irregular = len(rr) > 1 and float(rr.std(ddof=1)) / rr_mean > P_IRREGULAR_CV
    if p is not None and not _p_repeats(beats[ind], (*p, qrs_on), pre, up, fs, irregular):
        p = None

    out: dict[str, float | None] = dict.fromkeys(FEATURE_COLUMNS)
    rr_s = rr_mean / 1000.0
    out["HR__Global"] = hr
    out["RR_Mean_Global"] = rr_mean
    out["RR_SDNN_Global"] = float(rr.std(ddof=1)) if len(rr) > 1 else None
    out["QRS_Dur_Global"] = qrs_dur
    if t_end is not None:
        qt = _ms(t_end - qrs_on, fi)
        out["QT_Int_Global"] = qt
        out["QT_IntBazett_Global"] = qt / math.sqrt(rr_s)
        out["QT_IntFridericia_Global"] = qt / rr_s ** (1.0 / 3.0)
        out["QT_IntFramingham_Global"] = qt + 154.0 * (1.0 - rr_s)
    if p is not None:
        p_on, _, p_off = p
        out["PR_Int_Global"] = _ms(qrs_on - p_on, fi)
        out["P_Dur_Global"] = _ms(p_off - p_on, fi)

    limb_ok = not (flat[I_IDX] or flat[AVF_IDX])
    if limb_ok:
        area = lambda lo, hi: rel[[I_IDX, AVF_IDX], lo : hi + 1].sum(axis=-1) / fi * 1000.0  # noqa: E731
        out["R_AxisFrontal_Global"] = _axis(*area(qrs_on, qrs_off))
        if p is not None:
            out["P_AxisFront_Global"] = _axis(*area(p[0], p[2]))
        if t_end is not None:
            out["T_AxisFront_Global"] = _axis(*area(qrs_off, t_end))

    # ST levels (mean of +-4 ms): at the J point, where the MI criteria read it (Thygesen 2018), and
    # 60 ms later, which says whether the segment is horizontal, downsloping or upsloping
    st_n = max(1, int(round(0.004 * fi)))
    st60_at = min(rel.shape[1] - 1, qrs_off + int(round(0.06 * fi)))
    for li, lead in enumerate(LEADS):
        if flat[li]:
            continue
        q_amp, r_amp, s_amp, q_dur, r_dur, s_dur = _qrs_waves(rel[li, qrs_on : qrs_off + 1], fi)
        out[f"Q_Amp_{lead}"], out[f"R_Amp_{lead}"], out[f"S_Amp_{lead}"] = q_amp, r_amp, s_amp
        out[f"Q_Dur_{lead}"], out[f"R_Dur_{lead}"], out[f"S_Dur_{lead}"] = q_dur, r_dur, s_dur
        out[f"ST_Amp_{lead}"] = float(rel[li, max(0, qrs_off - st_n) : qrs_off + st_n + 1].mean())
        out[f"ST60_Amp_{lead}"] = float(rel[li, max(0, st60_at - st_n) : st60_at + st_n + 1].mean())
        if t_end is not None:
            t_lo = qrs_off + int(0.25 * (t_end - qrs_off))
            seg = rel[li, t_lo : t_end + 1]
            out[f"T_Amp_{lead}"] = float(seg[np.argmax(np.abs(seg))])
        if p is not None:
            seg = rel[li, p[0] : p[2] + 1]
            out[f"P_Amp_{lead}"] = float(seg[np.argmax(np.abs(seg))])
    return {k: (None if v is None or not math.isfinite(v) else round(float(v), 4)) for k, v in out.items()}


def _p_repeats(beats: np.ndarray, p: tuple[int, int, int, int], pre: int, up: int, fs: float,
               irregular: bool = False) -> bool:
    """Whether the P wave found in the median beat repeats in the single beats [L, B, W] (native rate).

    ``p`` is (onset, peak, offset, QRS onset) in median-beat samples at ``up`` times the native rate.
    In atrial fibrillation the median of the fibrillatory waves can leave a small bump; it does not
    correlate with the individual beats, a real P wave does (median correlation >= P_MIN_CORRELATION,
    each beat smoothed over 20 ms, the window never reaching into the QRS). When the rhythm is
    ``irregular`` the P wave must also keep a fixed PR interval (``_stable_pr``): f waves, or the
    previous beat's T wave, line up with each QRS by chance only.
    """
    pad = max(1, int(round(0.02 * fs)))
    lo, hi = max(0, p[0] // up - pad), min(p[2] // up + 1, p[3] // up - pad)  # never into the QRS
    if hi - lo < 3:
        return False
    smooth = _moving_average(beats, max(1, int(round(0.02 * fs))))  # [L, B, W] 20 ms smoothed
    seg = smooth[:, :, lo:hi]  # [L, B, w]
    template = np.nanmedian(seg, axis=1)  # [L, w]
    corr = _correlations(seg, template)
    if not (np.isfinite(corr).any() and np.nanmedian(corr) >= P_MIN_CORRELATION):
        return False
    return _stable_pr(smooth, template, lo, p[3] // up, fs) if irregular else True


def _stable_pr(smooth: np.ndarray, template: np.ndarray, lo: int, qrs_on: int, fs: float) -> bool:
    """Whether the P template [L, w] sits at a fixed distance before every QRS of ``smooth`` [L, B, W].

    Each beat is matched to the template (Pearson correlation over all leads, each lead's mean
    removed) at shifts up to 40 ms either way, the window never reaching the QRS onset ``qrs_on``.
    A P wave that conducts keeps its PR interval: at least P_MIN_FIXED_PR of the beats match best
    within 10 ms of the median shift. f waves, or a previous T wave, drift against the QRS.
    """
    w = template.shape[-1]
    tc = template - template.mean(axis=-1, keepdims=True)  # [L, w]
    energy = float((tc**2).sum())
    if not energy > 0:
        return False
    reach, tol = max(1, int(round(0.04 * fs))), max(1, int(round(0.01 * fs)))
    shifts = [s for s in range(-reach, reach + 1) if lo + s >= 0 and lo + s + w <= qrs_on]
    best = []  # per beat: the best-matching shift
    for b in range(smooth.shape[1]):
        scores = []
        for s in shifts:
            x = smooth[:, b, lo + s : lo + s + w]  # [L, w]
            if not np.all(np.isfinite(x)):
                continue
            xc = x - x.mean(axis=-1, keepdims=True)
            den = math.sqrt(float((xc**2).sum()) * energy)
            scores.append((float((xc * tc).sum()) / den if den > 0 else -1.0, s))
        if scores:
            best.append(max(scores)[1])
    if len(best) < MIN_BEATS:
        return False
    lags = np.asarray(best)
    return float(np.mean(np.abs(lags - np.median(lags)) <= tol)) >= P_MIN_FIXED_PR
