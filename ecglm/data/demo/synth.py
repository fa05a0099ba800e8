"""12-lead ECG synthesis from a cardiac dipole: the signals carry their records' labels.

Model. The heart is a dipole H(t) in 3-D (x: left, y: inferior, z: anterior), a sum of waves: each
wave is an asymmetric Gaussian pulse (or a smoothed plateau, for ST segments) times a fixed 3-D
vector. Per beat: two atrial P components, a QRS loop (septal, main left-ventricular, terminal, plus
whatever the conduction pattern adds), an ST plateau and an asymmetric T wave. Electrode potentials
are projections of H on per-record electrode vectors (RA, LA, LL on the Einthoven triangle, V1-V6 on
the chest with placement jitter) plus electrode noise; the 12 leads are the standard combinations,
so III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2 hold exactly before rounding, and
precordial R waves grow from V1 to V5 with the transition near V3-V4.

Labels become physiology: rhythm sets the beat times (sinus 60-100 bpm, tachycardia > 100,
bradycardia < 60, respiratory sinus arrhythmia, atrial fibrillation with irregular RR, no P and
5-8 Hz f-waves, ectopic PVC/PAC beats); MI adds pathological Q waves, R loss and stage-dependent ST
elevation / T inversion in the leads of its territory; STTC codes add ST depression, T flattening or
inversion, the scooped ST of digitalis, a long QT; CD codes widen the QRS and give RBBB (rsR' in
V1) / LBBB (broad notched R in V5-V6) morphology, fascicular axis shifts and long PR; HYP raises QRS
voltage (with strain) or changes the P wave. Every parameter spreads within its class.

Signals are generated at 500 Hz and downsampled to 100 Hz (polyphase FIR, as PTB-XL's 100 Hz set is
a downsampled copy), in integer microvolts. Each record uses its own random stream seeded by
(seed, ecg_id), so the output does not depend on the number or order of workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecglm.core.leads import LEADS
from ecglm.data.demo.labels import ELECTRODES, TERRITORY, RecordPlan, stream

FS = 500
FS_LOW = 100
SECONDS = 10
N_SAMPLES = FS * SECONDS
_PAD = 1.5  # seconds of beats simulated before and after the record (no edge effects)
_LIKELIHOOD_SEVERITY = {100.0: 1.0, 80.0: 0.9, 50.0: 0.75, 35.0: 0.6, 15.0: 0.45, 0.0: 1.0}


def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


# Territory directions (x left, y inferior, z anterior): the leads facing them show the signs.
TERRITORY_VEC = {
    "inferior": unit(0.1, 1.0, 0.0),
    "lateral": unit(1.0, -0.45, -0.1),
    "anterior": unit(0.25, 0.0, 1.0),
    "septal": unit(-0.4, 0.0, 1.0),
    "posterior": unit(0.0, 0.1, -1.0),
}
ISC_TERRITORIES = (("lateral",), ("anterior", "lateral"), ("inferior", "lateral"), ("inferior",))


@dataclass
class Wave:
    """An asymmetric Gaussian pulse of the dipole: centre c and widths sl/sr in seconds (from QRS onset)."""

    c: float
    sl: float
    sr: float
    vec: np.ndarray  # (3,) mV


@dataclass
class Plateau:
    """A smoothed plateau of the dipole from t0 to t1 (edges of width ``edge`` s): an ST shift."""

    t0: float
    t1: float
    edge: float
    vec: np.ndarray  # (3,) mV


@dataclass
class BeatShape:
    """The waves of one conducted beat type, relative to its QRS onset; T waves follow the RR."""

    p_waves: list[Wave] = field(default_factory=list)
    qrs: list[Wave] = field(default_factory=list)
    st_vec: np.ndarray = field(default_factory=lambda: np.zeros(3))
    t_vec: np.ndarray = field(default_factory=lambda: np.zeros(3))
    sag_vec: np.ndarray = field(default_factory=lambda: np.zeros(3))  # digitalis: scooped ST
    qrs_s: float = 0.09
    qtc_s: float = 0.41
    pr_s: float | None = 0.16


@dataclass
class Synthesis:
    """One record: int16 microvolt signals [12, T] at 500 and 100 Hz, and the generator's truth."""

    sig500: np.ndarray  # (12, 5000) int16
    sig100: np.ndarray  # (12, 1000) int16
    truth: dict
    lead_findings: dict[str, list[str]]  # code or finding -> leads (LEADS spelling) that show it


def _electrode_vectors(rng: np.random.Generator, low_limb: bool) -> np.ndarray:
    """(9, 3) electrode lead vectors RA LA LL V1..V6 with per-record placement jitter and rotation."""
    frontal = np.asarray([[np.cos(np.radians(a)), np.sin(np.radians(a)), 0.0] for a in (-150, -30, 90)])
    if low_limb:
        frontal *= rng.uniform(0.3, 0.42)
    angles = np.asarray([118.0, 98.0, 70.0, 44.0, 20.0, 0.0]) + rng.normal(0, 4, 6) + rng.normal(0, 8)
    mags = np.asarray([0.95, 2.9, 2.4, 1.8, 1.2, 0.9]) * 3.6 * rng.uniform(0.88, 1.12, 6)
    rad = np.radians(angles)
    chest = np.stack([np.cos(rad), np.full(6, 0.05), np.sin(rad)], axis=1) * mags[:, None]
    return np.concatenate([frontal, chest], axis=0)


def _lead_matrix() -> np.ndarray:
    """(12, 9) matrix turning electrode potentials RA LA LL V1..V6 into the 12 leads (WCT reference)."""
    m = np.zeros((12, 9))
    ra, la, ll = 0, 1, 2
    m[0, la], m[0, ra] = 1, -1  # I
    m[1, ll], m[1, ra] = 1, -1  # II
    m[2, ll], m[2, la] = 1, -1  # III
    m[3, ra], m[3, la], m[3, ll] = 1, -0.5, -0.5  # aVR
    m[4, la], m[4, ra], m[4, ll] = 1, -0.5, -0.5  # aVL
    m[5, ll], m[5, ra], m[5, la] = 1, -0.5, -0.5  # aVF
    for k in range(6):
        m[6 + k, 3 + k] = 1
        m[6 + k, :3] = -1 / 3
    return m


LEAD_MATRIX = _lead_matrix()


def lead_vectors(electrodes: np.ndarray) -> np.ndarray:
    """(12, 3): the dipole direction each lead sees (lead = lead_vector . H)."""
    return LEAD_MATRIX @ electrodes


def leads_facing(vec: np.ndarray, electrodes: np.ndarray, threshold: float = 0.45) -> list[str]:
    """Leads whose direction lies within ~60 degrees of ``vec`` (where a change along vec shows)."""
    lv = lead_vectors(electrodes)
    cos = lv @ unit(*vec) / np.linalg.norm(lv, axis=1)
    return [LEADS[i] for i in range(12) if cos[i] > threshold and LEADS[i] != "aVR"]


def _territory_vec(names: tuple[str, ...]) -> np.ndarray:
    return unit(*np.sum([TERRITORY_VEC[n] for n in names], axis=0))


def _along(v: np.ndarray, u: np.ndarray) -> float:
    return float(v @ u)


def _set_along(v: np.ndarray, u: np.ndarray, value: float) -> np.ndarray:
    """v with its component along unit u replaced by ``value``."""
    return v - (v @ u) * u + value * u


def _direction(theta_deg: float, z: float) -> np.ndarray:
    th = np.radians(theta_deg)
    return unit(np.cos(th), np.sin(th), z)


def build_beat(plan: RecordPlan, rng: np.random.Generator, findings: dict[str, list[str]],
               electrodes: np.ndarray) -> BeatShape:
    """The conducted beat of a record from its TRUE codes; fills ``findings`` (code -> leads showing it)."""
    codes = plan.true_codes
    sev_of = {c: _LIKELIHOOD_SEVERITY.get(v, 1.0) * rng.uniform(0.75, 1.2) for c, v in codes.items()}
    has = codes.__contains__
    body = float(np.exp(rng.normal(0, 0.15))) * (0.92 if plan.sex == 1 else 1.0) * (1.05 - 0.002 * max(plan.true_age - 40, 0))
    # frontal QRS axis and the conduction-specific QRS duration
    if has("LAFB"):
        axis = rng.uniform(-78, -45)
    elif has("LPFB") or has("RVH"):
        axis = rng.uniform(100, 145)
    else:
        axis = float(np.clip(rng.normal(42, 26), -28, 98)) - (10 if has("LVH") else 0)
    if has("CLBBB"):
        q = rng.uniform(0.13, 0.175)
    elif has("CRBBB"):
        q = rng.uniform(0.124, 0.165)
    elif has("IVCD"):
        q = rng.uniform(0.11, 0.135)
    elif has("ILBBB"):
        q = rng.uniform(0.106, 0.119)
    elif has("IRBBB"):
        q = rng.uniform(0.1, 0.118)
    elif has("NORM") and len([c for c in codes if c in TERRITORY or c in ("LVH", "ABQRS")]) == 0:
        q = float(np.clip(rng.normal(0.083, 0.008), 0.066, 0.1))
    else:
        q = float(np.clip(rng.normal(0.087, 0.009), 0.068, 0.106))
    if has("LAFB"):
        q += rng.uniform(0.0, 0.012)
    if has("LVH"):
        q += rng.uniform(0.0, 0.01)
    # QRS loop
    a_r = 0.62 * body * rng.uniform(0.8, 1.2)
    a_s = 0.12 * body * rng.uniform(0.6, 1.4)
    a_sep = 0.075 * body * rng.uniform(0.6, 1.4)
    z_main = rng.uniform(-0.28, -0.05)
    if has("LVH"):
        a_r *= rng.uniform(1.45, 2.0)
        a_s *= rng.uniform(1.4, 2.0)
        z_main -= 0.12
    main = _direction(axis, z_main)
    sep_dir = unit(-0.3, 0.8, 0.4) if has("LAFB") else unit(-0.4, 0.3, 0.85)
    if has("SEHYP"):
        a_sep *= 2.6
    qn = 0.62 * q if (has("CRBBB") or has("IRBBB")) and not has("CLBBB") else q
    if has("IRBBB"):
        qn = min(0.8 * q, 0.095)
    qrs: list[Wave] = []
    if has("CLBBB") or has("ILBBB"):
        full = has("CLBBB")
        left = _direction(axis - 10, -0.55 if full else -0.4)
        qrs.append(Wave(0.12 * q, 0.07 * q, 0.07 * q, 0.06 * body * unit(0.8, 0.2, -0.2)))
        qrs.append(Wave(0.36 * q, 0.14 * q, 0.13 * q, a_r * 1.1 * left))
        qrs.append(Wave(0.68 * q, 0.13 * q, 0.13 * q, a_r * (0.95 if full else 0.5) * _direction(axis - 25, -0.35)))
    else:
        qrs.append(Wave(0.17 * qn, 0.06 * qn, 0.07 * qn, a_sep * sep_dir))
        qrs.append(Wave(0.47 * qn, 0.12 * qn, 0.11 * qn, a_r * main))
        qrs.append(Wave(0.75 * qn, 0.07 * qn, 0.07 * qn, a_s * unit(-0.2, -0.85, -0.45)))
    if has("CRBBB") or has("IRBBB"):
        amp = rng.uniform(0.35, 0.6) if has("CRBBB") else rng.uniform(0.15, 0.3)
        rprime = unit(-0.6, 0.0, 0.8)
        qrs.append(Wave(max(0.78 * q, qn + 0.02), 0.1 * q, 0.09 * q, amp * body * rprime))
        findings["RBBB"] = ["V1", "V2"]
    if has("IVCD"):
        for w in qrs:
            w.sl *= 1.15
            w.sr *= 1.15
        qrs.append(Wave(0.6 * q, 0.05 * q, 0.05 * q, 0.12 * body * _direction(axis + 120, 0.2)))
    if has("RVH"):
        qrs[1].vec *= 0.75
        qrs.append(Wave(0.6 * qn, 0.12 * qn, 0.12 * qn, rng.uniform(0.35, 0.55) * body * unit(-0.5, 0.3, 0.8)))
    if has("ABQRS") and not any(c in TERRITORY and not c.startswith(("INJ", "ISC")) for c in codes):
        qrs.append(Wave(rng.uniform(0.3, 0.7) * qn, 0.012, 0.012, 0.18 * body * unit(*rng.normal(0, 1, 3))))
        q += 0.008
    # T wave, ST plateau
    t_dir = _direction(float(np.clip(axis, -10, 80)) + rng.normal(-3, 10), 0.3)
    t_vec = rng.uniform(0.12, 0.21) * body ** 0.5 * t_dir
    st_vec = 0.012 * unit(0.0, 0.0, 1.0)
    sag_vec = np.zeros(3)
    qtc = float(np.clip(rng.normal(0.41, 0.016), 0.365, 0.445))
    if has("CLBBB"):
        t_vec = -rng.uniform(0.2, 0.35) * unit(*qrs[1].vec)
        st_vec = -0.08 * unit(*qrs[1].vec)
        findings["LBBB"] = leads_facing(qrs[1].vec, electrodes)
    if has("CRBBB"):
        t_vec = t_vec - 0.12 * unit(-0.6, 0.0, 0.8)
    if has("LVH"):
        findings["VCLVH"] = ["V1", "V2", "V5", "V6"]
        strain = any(c in codes for c in ("ISC_", "ISCAL", "ISCLA", "STD_")) or rng.random() < 0.3
        if strain:
            lat = _territory_vec(("lateral",))
            st_vec = st_vec - rng.uniform(0.04, 0.09) * lat
            t_vec = _set_along(t_vec, lat, -rng.uniform(0.05, 0.15))
            findings.setdefault("STD_", []).extend(leads_facing(lat, electrodes))
    # MI: Q waves and R loss in the territory, stage-dependent ST-T
    for code in codes:
        if code not in TERRITORY or code.startswith("ISC"):
            continue
        u = _territory_vec(TERRITORY[code])
        sev = sev_of[code]
        facing = leads_facing(u, electrodes)
        if code.startswith("INJ"):  # subendocardial injury: ST depression, T inversion, no Q
            st_vec = st_vec - rng.uniform(0.08, 0.16) * sev * u
            t_vec = _set_along(t_vec, u, -rng.uniform(0.06, 0.18) * sev)
            findings.setdefault(code, []).extend(facing)
            continue
        qrs.append(Wave(0.22 * qn, 0.085 * qn, 0.08 * qn, -0.42 * sev * body * u))
        main_w = qrs[1]
        along = _along(main_w.vec, u)
        if along > 0:
            main_w.vec = main_w.vec - 0.55 * sev * along * u
        stage = plan.stadium1
        if stage == "Stadium I":
            st_vec = st_vec + rng.uniform(0.1, 0.2) * sev * u
            t_vec = t_vec + 0.12 * sev * u
        elif stage in ("Stadium II", "Stadium II-III"):
            st_vec = st_vec + 0.03 * sev * u
            t_vec = _set_along(t_vec, u, -rng.uniform(0.08, 0.2) * sev)
        else:
            t_vec = _set_along(t_vec, u, _along(t_vec, u) * rng.uniform(-0.4, 0.6))
        findings.setdefault(code, []).extend(facing)
        findings.setdefault("QWAVE", []).extend(facing)
    # STTC: ischaemia, non-specific ST / T changes, digitalis, long QT
    for code in codes:
        if not code.startswith("ISC"):
            continue
        terr = TERRITORY.get(code) or ISC_TERRITORIES[int(rng.integers(len(ISC_TERRITORIES)))]
        u = _territory_vec(terr)
        sev = sev_of[code]
        st_vec = st_vec - rng.uniform(0.06, 0.15) * sev * u
        t_vec = _set_along(t_vec, u, -rng.uniform(0.05, 0.2) * sev)
        findings.setdefault(code, []).extend(leads_facing(u, electrodes))
    if has("NDT") or has("NT_") or has("LOWT") or has("INVT") or has("TAB_"):
        terr = ISC_TERRITORIES[int(rng.integers(len(ISC_TERRITORIES)))]
        u = _territory_vec(terr)
        low = -0.12 if has("INVT") else -0.07
        t_vec = _set_along(t_vec, u, rng.uniform(low, 0.04) * sev_of.get("NDT", 1.0))
        if has("LOWT"):
            t_vec = t_vec * 0.45
        findings.setdefault("NDT", []).extend(leads_facing(u, electrodes))
    if has("NST_") or has("STD_"):
        terr = ISC_TERRITORIES[int(rng.integers(len(ISC_TERRITORIES)))]
        u = _territory_vec(terr)
        sign = -1.0 if (has("STD_") or rng.random() < 0.7) else 1.0
        st_vec = st_vec + sign * rng.uniform(0.04, 0.08) * u
        findings.setdefault("NST_" if has("NST_") else "STD_", []).extend(leads_facing(sign * u, electrodes))
    if has("DIG"):
        sag_vec = -rng.uniform(0.09, 0.16) * unit(*t_dir)
        t_vec = t_vec * rng.uniform(0.35, 0.6)
        qtc = rng.uniform(0.34, 0.385)
        findings["DIG"] = leads_facing(t_dir, electrodes)
    if has("LNGQT"):
        qtc = rng.uniform(0.51, 0.60)  # Bazett-scaled: the Framingham QTc then clears 450/460 ms up to ~100 bpm
    # P wave, PR
    pr = None if plan.rhythm == "AFIB" else float(np.clip(rng.normal(0.155, 0.022), 0.118, 0.205))
    if has("1AVB"):
        pr = rng.uniform(0.215, 0.33)
    p_dur = float(np.clip(rng.normal(0.108, 0.012), 0.08, 0.13))
    a_p = 0.055 * body ** 0.5 * rng.uniform(0.5, 1.7)
    ra_amp, la_sep, la_z = 1.0, 0.55, -0.35
    if has("LAO/LAE"):
        p_dur = rng.uniform(0.12, 0.15)
        la_sep, la_z = 0.66, -0.75
    if has("RAO/RAE"):
        ra_amp = rng.uniform(1.7, 2.2)
    p_waves: list[Wave] = []
    if pr is not None:
        p_waves = [
            Wave(-pr + 0.27 * p_dur, 0.13 * p_dur, 0.13 * p_dur, a_p * ra_amp * unit(0.25, 1.0, 0.45)),
            Wave(-pr + la_sep * p_dur, 0.13 * p_dur, 0.13 * p_dur, a_p * unit(1.0, 0.6, la_z)),
        ]
    return BeatShape(p_waves=p_waves, qrs=qrs, st_vec=st_vec, t_vec=t_vec, sag_vec=sag_vec,
                     qrs_s=float(q), qtc_s=float(qtc), pr_s=pr)


def _pvc_shape(rng: np.random.Generator, body: float) -> BeatShape:
    """A premature ventricular beat: no P, wide bizarre QRS, discordant T."""
    q = rng.uniform(0.13, 0.17)
    d = unit(*rng.normal(0, 1, 3))
    qrs = [Wave(0.35 * q, 0.17 * q, 0.15 * q, 1.1 * body * d), Wave(0.75 * q, 0.12 * q, 0.12 * q, 0.4 * body * unit(*rng.normal(0, 1, 3)))]
    return BeatShape(p_waves=[], qrs=qrs, st_vec=-0.06 * d, t_vec=-0.35 * d, qrs_s=q, qtc_s=0.44, pr_s=None)


def _beat_times(plan: RecordPlan, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """QRS onsets (s, spanning the record and its padding), per-beat kind (0 sinus/AF, 1 PVC, 2 PAC), breathing."""
    rhythm = plan.rhythm
    if rhythm == "STACH":
        hr = float(np.clip(100 + rng.gamma(2.0, 8.0), 100.5, 165))
    elif rhythm == "SBRAD":
        hr = float(np.clip(59.5 - rng.gamma(2.0, 3.0), 38, 59.5))
    elif rhythm == "AFIB":
        hr = float(np.clip(rng.normal(92, 22), 50, 160))
    elif rhythm == "SARRH":
        hr = float(np.clip(rng.normal(72, 11), 55, 98))
    else:
        hr = float(np.clip(rng.normal(71, 10), 60.5, 99.5))
    rr0 = 60.0 / hr
    f_resp = rng.uniform(0.15, 0.33)
    phase = rng.uniform(0, 2 * np.pi)
    resp_amp = rng.uniform(0.12, 0.2) if rhythm == "SARRH" else rng.uniform(0.01, 0.045)  # SARRH: RR CV ~ 0.08-0.14
    jitter = rng.uniform(0.008, 0.02)
    af_cv = rng.uniform(0.12, 0.28)
    times = [-_PAD - rng.uniform(0, rr0)]
    while times[-1] < SECONDS + _PAD:
        t = times[-1]
        if rhythm == "AFIB":
            rr = rr0 * float(np.exp(rng.normal(0, af_cv)))
            rr = max(rr, 0.3)
        else:
            rr = rr0 * (1 + resp_amp * np.sin(2 * np.pi * f_resp * t + phase)) * (1 + rng.normal(0, jitter))
        times.append(t + rr)
    onsets = np.asarray(times)
    kinds = np.zeros(len(onsets), dtype=int)
    inside = np.flatnonzero((onsets > 0.6) & (onsets < SECONDS - 0.6))
    if plan.n_pvc and len(inside) > 2:
        for i in rng.choice(inside[1:], size=min(plan.n_pvc, len(inside) - 1), replace=False):
            if kinds[i - 1] == 0 and kinds[i] == 0:
                kinds[i] = 1
                onsets[i] = onsets[i - 1] + rng.uniform(0.5, 0.65) * (onsets[i] - onsets[i - 1])
    if plan.n_pac and len(inside) > 2:
        for i in rng.choice(inside[1:], size=min(plan.n_pac, len(inside) - 1), replace=False):
            if kinds[i - 1] == 0 and kinds[i] == 0 and (i + 1 >= len(kinds) or kinds[i + 1] == 0):
                shift = rng.uniform(0.25, 0.35) * (onsets[i] - onsets[i - 1])
                kinds[i] = 2
                onsets[i:] -= shift
    return onsets, kinds, {"f_resp": f_resp, "resp_phase": phase}


def _gauss(tloc: np.ndarray, waves: list[Wave]) -> tuple[np.ndarray, np.ndarray]:
    """(n_waves, L) pulse matrix and (n_waves, 3) vectors."""
    c = np.asarray([w.c for w in waves])[:, None]
    s = np.where(tloc[None, :] < c, np.asarray([w.sl for w in waves])[:, None], np.asarray([w.sr for w in waves])[:, None])
    return np.exp(-0.5 * ((tloc[None, :] - c) / s) ** 2), np.stack([w.vec for w in waves])


def _plateau(tloc: np.ndarray, p: Plateau) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(tloc - p.t0) / p.edge)) - 1.0 / (1.0 + np.exp(-(tloc - p.t1) / p.edge))


def dipole(t: np.ndarray, onsets: np.ndarray, kinds: np.ndarray, normal: BeatShape, pvc: BeatShape,
           pac_p: list[Wave], amp_mod: np.ndarray) -> np.ndarray:
    """H(t): (T, 3) dipole of all beats; each beat's T wave follows its preceding RR (QT = QTc sqrt(RR))."""
    h = np.zeros((len(t), 3))
    dt = t[1] - t[0]
    for i, onset in enumerate(onsets):
        shape = pvc if kinds[i] == 1 else normal
        rr_prev = onsets[i] - onsets[i - 1] if i > 0 else onsets[1] - onsets[0]
        qt = shape.qtc_s * np.sqrt(np.clip(rr_prev, 0.3, 2.0))
        qt = max(qt, shape.qrs_s + 0.12)
        t_sr = 0.11 * qt
        t_sl = 0.17 * qt
        t_c = qt - 2.3 * t_sr
        waves = list(shape.qrs) + [Wave(t_c, t_sl, t_sr, shape.t_vec)]
        if np.any(shape.sag_vec):
            waves.append(Wave(shape.qrs_s + 0.45 * (t_c - shape.qrs_s), 0.06, 0.09, shape.sag_vec))
        if kinds[i] == 2:
            waves += pac_p
        elif kinds[i] == 0:
            waves += shape.p_waves
        lo = onset + min(w.c - 4 * w.sl for w in waves)
        hi = onset + max(w.c + 4 * w.sr for w in waves)
        s0 = max(int(np.floor((lo - t[0]) / dt)), 0)
        s1 = min(int(np.ceil((hi - t[0]) / dt)) + 1, len(t))
        if s1 <= s0:
            continue
        tloc = t[s0:s1] - onset
        g, v = _gauss(tloc, waves)
        seg = g.T @ v
        st = Plateau(shape.qrs_s - 0.005, t_c - 0.4 * t_sl, 0.012, shape.st_vec)
        seg += _plateau(tloc, st)[:, None] * st.vec[None, :]
        h[s0:s1] += seg * amp_mod[i]
    return h


def _f_waves(t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Atrial fibrillation f-waves: (T, 3), 5-8 Hz with slow frequency and amplitude drift."""
    f0 = rng.uniform(5.0, 8.0)
    freq = f0 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 6.3))
    phase = 2 * np.pi * np.cumsum(freq) * (t[1] - t[0])
    wave = np.sin(phase) + 0.3 * np.sin(2 * phase + 1.0)
    amp = rng.uniform(0.02, 0.05) * (0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3)))
    return (amp * wave)[:, None] * unit(-0.2, 0.9, 0.35)[None, :], f0


def _electrode_noise(plan: RecordPlan, rng: np.random.Generator, t: np.ndarray, f_resp: float) -> np.ndarray:
    """(T, 9) noise per electrode: baseline wander, mains hum, EMG, and the record's stated artefacts."""
    n = len(t)
    noise = np.zeros((n, 9))
    resp = rng.uniform(0.01, 0.05) * np.sin(2 * np.pi * f_resp * t + rng.uniform(0, 6.3))
    strong_hum = rng.random() < 0.12
    for e, name in enumerate(ELECTRODES):
        drift_amp = rng.uniform(0.15, 0.45) if name in plan.noise.drift_electrodes else rng.uniform(0.005, 0.04)
        for _ in range(2):
            noise[:, e] += drift_amp * np.sin(2 * np.pi * rng.uniform(0.05, 0.45) * t + rng.uniform(0, 6.3))
        noise[:, e] += resp * rng.uniform(0.5, 1.5)
        hum = rng.uniform(0.01, 0.04) if strong_hum else rng.uniform(0.0, 0.006)
        noise[:, e] += hum * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 6.3))
        emg = rng.uniform(0.003, 0.01)
        if name in plan.noise.static_electrodes:
            emg *= rng.uniform(3.0, 6.0) * plan.noise.static_level
        white = rng.normal(0, emg, n)
        noise[:, e] += np.convolve(white, np.ones(3) / np.sqrt(3), mode="same")
    for name in plan.noise.burst_electrodes:
        e = ELECTRODES.index(name)
        for _ in range(int(rng.integers(1, 4))):
            start = int(rng.integers(0, n - FS // 2))
            length = int(rng.uniform(0.2, 1.0) * FS)
            stop = min(n, start + length)
            noise[start:stop, e] += rng.normal(0, rng.uniform(0.08, 0.25), stop - start)
    for name in plan.noise.problem_electrodes:
        e = ELECTRODES.index(name)
        start = int(rng.integers(0, n - 2 * FS))
        stop = min(n, start + int(rng.uniform(1.0, 3.0) * FS))
        noise[start:stop, e] += rng.choice([-1, 1]) * rng.uniform(0.5, 1.5) + rng.normal(0, 0.05, stop - start)
    return noise


def _span(waves: list[Wave], electrodes: np.ndarray, frac: float) -> tuple[float, float]:
    """First and last time (s) where the waves' largest lead exceeds ``frac`` of its peak (clean model)."""
    tt = np.arange(-0.4, 0.4, 0.0005)
    g, v = _gauss(tt, waves)
    leads = np.abs((g.T @ v) @ lead_vectors(electrodes).T)  # (L, 12)
    env = leads.max(axis=1)
    above = np.flatnonzero(env > frac * env.max())
    return float(tt[above[0]]), float(tt[above[-1]])


def clean_intervals(shape: BeatShape, electrodes: np.ndarray, rr_s: float) -> dict:
    """PR, P duration, QRS and QT (ms) of the noise-free beat at RR ``rr_s``, as a careful reader sees them."""
    q0, q1 = _span(shape.qrs, electrodes, 0.012)
    qt = max(shape.qtc_s * np.sqrt(np.clip(rr_s, 0.3, 2.0)), shape.qrs_s + 0.12)
    out = {"qrs_ms": (q1 - q0) * 1000, "qt_ms": (qt - q0) * 1000, "pr_ms": None, "p_dur_ms": None}
    if shape.p_waves:
        p0, p1 = _span(shape.p_waves, electrodes, 0.05)
        out["pr_ms"] = (q0 - p0) * 1000
        out["p_dur_ms"] = (p1 - p0) * 1000
    return out


def _frontal_axis(waves: list[Wave]) -> float:
    """Net frontal QRS axis (degrees) from the QRS waves' areas: atan2 of the y and x area."""
    area = np.sum([w.vec * (w.sl + w.sr) / 2 for w in waves], axis=0)
    return float(np.degrees(np.arctan2(area[1], area[0])))


def to_int16_uv(mv: np.ndarray) -> np.ndarray:
    return np.clip(np.round(mv * 1000.0), -32768, 32767).astype(np.int16)


def downsample(sig500: np.ndarray) -> np.ndarray:
    """500 Hz -> 100 Hz along the last axis (polyphase anti-alias FIR), float in, float out."""
    from scipy.signal import resample_poly

    return resample_poly(sig500, 1, FS // FS_LOW, axis=-1)


def synthesize(plan: RecordPlan, seed: int) -> Synthesis:
    """The record's signals and the generator's truth; deterministic in (seed, plan.ecg_id)."""
    rng = stream(seed, 10, plan.ecg_id)
    electrodes = _electrode_vectors(rng, low_limb="LVOLT" in plan.true_codes)
    findings: dict[str, list[str]] = {}
    normal = build_beat(plan, rng, findings, electrodes)
    body = float(np.linalg.norm(normal.qrs[1].vec)) / 0.62
    pvc = _pvc_shape(rng, max(body, 0.5))
    pac_p = [Wave(-0.13, 0.014, 0.014, 0.07 * unit(0.4, -0.6, 0.5)), Wave(-0.1, 0.014, 0.014, 0.05 * unit(1, 0.2, -0.3))]
    onsets, kinds, rfacts = _beat_times(plan, rng)
    t = np.arange(N_SAMPLES) / FS
    amp_mod = 1.0 + rng.uniform(0.02, 0.06) * np.sin(2 * np.pi * rfacts["f_resp"] * onsets + rfacts["resp_phase"])
    h = dipole(t, onsets, kinds, normal, pvc, pac_p, amp_mod)
    f0 = None
    if plan.rhythm == "AFIB":
        fw, f0 = _f_waves(t, rng)
        h += fw
    clean = h @ electrodes.T  # (T, 9) electrode potentials
    noisy = clean + _electrode_noise(plan, rng, t, rfacts["f_resp"])
    leads500 = (LEAD_MATRIX @ noisy.T)  # (12, T) mV
    sig500 = to_int16_uv(leads500)
    sig100 = to_int16_uv(downsample(leads500))
    inside = onsets[(onsets >= 0) & (onsets < SECONDS)]
    rr = np.diff(inside)
    iv = clean_intervals(normal, electrodes, float(rr.mean()))
    axis = _frontal_axis(normal.qrs)
    for key in findings:
        findings[key] = [ld for ld in LEADS if ld in set(findings[key])]
    truth = {
        "ecg_id": plan.ecg_id,
        "hr_bpm": round(60.0 / float(rr.mean()), 2),
        "rr_ms": round(float(rr.mean()) * 1000, 1),
        "rr_cv": round(float(rr.std() / rr.mean()), 4),
        "pr_ms": None if iv["pr_ms"] is None else round(iv["pr_ms"], 1),
        "p_dur_ms": None if iv["p_dur_ms"] is None else round(iv["p_dur_ms"], 1),
        "qrs_ms": round(iv["qrs_ms"], 1),
        "qt_ms": round(iv["qt_ms"], 1),
        "qtc_ms": round(normal.qtc_s * 1000, 1),
        "axis_deg": round(axis, 1),
        "n_beats": int(len(inside)),
        "n_pvc": int(np.sum(kinds[(onsets >= 0) & (onsets < SECONDS)] == 1)),
        "n_pac": int(np.sum(kinds[(onsets >= 0) & (onsets < SECONDS)] == 2)),
        "f_wave_hz": None if f0 is None else round(f0, 2),
    }
    return Synthesis(sig500=sig500, sig100=sig100, truth=truth, lead_findings=findings)


def heart_axis_label(axis_deg: float) -> str:
    """PTB-XL's heart_axis value for a frontal axis (German Lagetyp boundaries)."""
    a = (axis_deg + 180.0) % 360.0 - 180.0
    if -30 <= a < 30:
        return "LAD"
    if 30 <= a < 90:
        return "MID"
    if 90 <= a < 120:
        return "RAD"
    if 120 <= a <= 180:
        return "ARAD"
    if -90 <= a < -30:
        return "ALAD"
    return "AXR"
