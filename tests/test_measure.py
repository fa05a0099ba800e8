"""`ecglm measure`: synthetic beat trains with known truth, failures, the real PTB-XL sample, the CLI."""

from __future__ import annotations

import ast
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecglm.cli import main
from ecglm.core.leads import LEADS
from ecglm.data.delineate import GLOBAL_COLUMNS, LEAD_MEASURES, DelineationError
from ecglm.data.measure import (
    FEATURE_COLUMNS,
    failures_path,
    measure_record,
    measure_signals,
    measure_signals_with_reasons,
)
from ecglm.data.wfdb_records import read_record

# ---------------------------------------------------------------------------- synthetic ECG

# Frontal-plane direction of each limb lead (degrees; +90 = aVF, down).
LIMB_ANGLES = {"I": 0.0, "II": 60.0, "III": 120.0, "aVR": -150.0, "aVL": -30.0, "aVF": 90.0}
# Boundary convention of a Gaussian wave in the synthetic truth: P and QRS begin/end at centre +- 2.5
# sigma (4% of the peak); T ends at centre + 2 sigma, where the tangent at its steepest descent meets
# the baseline (the tangent method's own definition of T end).
K, K_T = 2.5, 2.0
# Tolerances (ms): the measured P onset lies where the P wave has fallen to 20% of its peak (1.8 sigma),
# hence the wider PR tolerance.
TOL_QRS, TOL_PR, TOL_QT = 15.0, 25.0, 20.0


def _gains(axis_deg: float, precordial: list[float]) -> np.ndarray:
    """[12] lead gains of a wave whose frontal vector points at ``axis_deg`` (limb leads by projection)."""
    limb = [math.cos(math.radians(axis_deg - LIMB_ANGLES[lead])) for lead in LEADS[:6]]
    return np.array(limb + precordial)


def synthetic_ecg(
    fs: int,
    hr: float = 72.0,
    pr: float = 160.0,
    qrs: float = 90.0,
    qt: float = 400.0,
    axis: float = 60.0,
    p_axis: float | None = None,
    t_axis: float | None = None,
    seconds: float = 10.0,
    noise_mv: float = 0.0,
    atrial_fibrillation: bool = False,
    seed: int = 0,
    f_wave_mv: float = 0.03,
    rr_jitter: float = 0.0,
    st_plateau_mv: float = 0.0,
    s_upstroke: float = 1.0,
) -> np.ndarray:
    """A 12-lead beat train [12, fs * seconds] in mV of Gaussian P, Q, R, S and T waves.

    Truth (with the boundary conventions K, K_T): QRS onset = Q centre - K sigma_Q, QRS offset = S centre
    + K sigma_S (so QRS duration = ``qrs``); P onset = QRS onset - ``pr``; T end = T centre + K_T sigma_T
    = QRS onset + ``qt``.
    The limb leads are projections of one frontal vector per wave, so they obey Einthoven's law.
    With ``atrial_fibrillation`` there is no P wave, the RR intervals are random (mean 60000/hr ms)
    and 4-8 Hz fibrillatory waves (``f_wave_mv`` per sine) run through the whole record. ``rr_jitter``
    makes a sinus rhythm irregular (each RR drawn uniformly within +- that fraction; P waves kept at
    their PR). ``st_plateau_mv`` adds an ST segment at that level (gains of the T wave) from the QRS
    offset to T peak - 0.4 sigma_T, with 12 ms ramps: it ends before the T peak, as in the demo world,
    so that the steepest fall of the ST-T is the plateau's end, not the T wave's descending limb.
    ``s_upstroke`` widens the S wave's rising half (sigma times that) and staggers its nadir across
    V1-V6 over ``s_upstroke`` x 8 ms (the limb leads at the middle), the QRS offset staying at ``qrs``:
    the S wave of many normal ECGs falls fast and rises slowly, and the spatial velocity pauses (but
    does not stop) at the S nadirs before the upstroke's own fall to the ST segment.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs * 1000.0  # [T] ms
    x = np.zeros((len(LEADS), len(t)))  # [12, T] mV
    s_q = s_s = qrs / 11.0
    s_r = qrs / 9.0
    stagger = 8.0 * (s_upstroke - 1.0) * np.array([0.5] * 6 + [k / 5 for k in range(6)])  # [12] ms
    c_q, c_s = K * s_q, qrs - K * s_s * s_upstroke - stagger.max() + stagger  # c_s [12]
    s_p, s_t = 20.0, 40.0
    p_axis = axis if p_axis is None else p_axis
    t_axis = axis if t_axis is None else t_axis
    waves = [  # (centre relative to QRS onset in ms, sigma in ms, gains [12] in mV)
        (c_q, s_q, -0.12 * _gains(axis, [0.0, 0.0, 0.0, 0.2, 0.5, 0.6])),
        ((c_q + c_s.min()) / 2, s_r, 1.2 * _gains(axis, [0.3, 0.6, 0.8, 1.2, 1.3, 1.0])),
        (c_s, (s_s, s_s * s_upstroke), -0.35 * _gains(axis, [1.5, 2.0, 1.2, 0.6, 0.3, 0.2])),
        (qt - K_T * s_t, s_t, 0.3 * _gains(t_axis, [0.2, 0.6, 0.8, 0.9, 0.8, 0.6])),
    ]
    if not atrial_fibrillation:
        waves.append((-pr + K * s_p, s_p, 0.15 * _gains(p_axis, [0.5, 0.4, 0.3, 0.3, 0.3, 0.3])))
    rr = 60000.0 / hr
    st_gain = st_plateau_mv * _gains(t_axis, [0.2, 0.6, 0.8, 0.9, 0.8, 0.6])  # [12]
    st_end = qt - K_T * s_t - 0.4 * s_t
    onset = 400.0
    while onset < t[-1] - 400.0:
        for centre, sigma, gain in waves:
            d = t[None, :] - onset - np.reshape(centre, (-1, 1))  # [1 or 12, T] ms
            if isinstance(sigma, tuple):  # (falling half, rising half)
                sigma = np.where(d < 0, *sigma)
            x += gain[:, None] * np.exp(-0.5 * (d / sigma) ** 2)
        if st_plateau_mv:
            rise = np.clip((t - onset - qrs) / 12.0, 0.0, 1.0) * np.clip((onset + st_end - t) / 12.0, 0.0, 1.0)
            x += st_gain[:, None] * rise[None, :]
        if atrial_fibrillation:
            onset += rng.uniform(0.6, 1.4) * rr
        else:
            onset += rng.uniform(1.0 - rr_jitter, 1.0 + rr_jitter) * rr if rr_jitter else rr
    if atrial_fibrillation:
        f = sum(np.sin(2 * np.pi * (fr * t / 1000.0) + rng.uniform(0, 2 * np.pi)) for fr in rng.uniform(4, 8, 4))
        x += f_wave_mv * _gains(80.0, [0.8, 0.5, 0.3, 0.2, 0.1, 0.1])[:, None] * f[None, :]
    return x + noise_mv * rng.standard_normal(x.shape)


def _uv(x_mv: np.ndarray) -> np.ndarray:
    return np.round(x_mv * 1000.0).astype(np.int16)


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


# ---------------------------------------------------------------------------- columns


def test_feature_columns_are_the_12sl_names():
    assert FEATURE_COLUMNS[:3] == ["HR__Global", "RR_Mean_Global", "RR_SDNN_Global"]
    assert len(FEATURE_COLUMNS) == len(set(FEATURE_COLUMNS)) == len(GLOBAL_COLUMNS) + 10 * 12
    for name in ("QT_IntFramingham_Global", "P_AxisFront_Global", "T_Amp_V2", "Q_Dur_III", "ST_Amp_aVR", "S_Amp_aVF"):
        assert name in FEATURE_COLUMNS
    # ST60_Amp is ours (the ST level 60 ms after J), the rest PTB-XL+'s 12SL names
    assert set(LEAD_MEASURES) == {"P_Amp", "Q_Amp", "R_Amp", "S_Amp", "T_Amp", "ST_Amp", "ST60_Amp", "Q_Dur", "R_Dur",
                                  "S_Dur"}
    assert not any("AVR" in c or "AVL" in c or "AVF" in c for c in FEATURE_COLUMNS)  # PTB-XL+ spelling


# ---------------------------------------------------------------------------- synthetic truth

CASES = [  # fs, hr, pr, qrs, qt
    (500, 72, 160, 90, 400),
    (500, 50, 200, 120, 440),
    (500, 110, 140, 80, 320),
    (100, 72, 160, 90, 400),
    (100, 150, 120, 100, 260),
    (100, 60, 240, 150, 480),
]


@pytest.mark.parametrize(("fs", "hr", "pr", "qrs", "qt"), CASES)
def test_synthetic_intervals_match_the_truth(fs, hr, pr, qrs, qt):
    m = measure_record(synthetic_ecg(fs, hr=hr, pr=pr, qrs=qrs, qt=qt, noise_mv=0.01), fs)
    assert set(m) == set(FEATURE_COLUMNS)
    assert abs(m["HR__Global"] - hr) <= 2.0
    assert abs(m["RR_Mean_Global"] - 60000.0 / hr) <= 10.0
    assert abs(m["QRS_Dur_Global"] - qrs) <= TOL_QRS
    assert abs(m["PR_Int_Global"] - pr) <= TOL_PR
    assert abs(m["QT_Int_Global"] - qt) <= TOL_QT
    rr_s = 60.0 / hr
    rr_mean_s = m["RR_Mean_Global"] / 1000.0
    assert m["QT_IntBazett_Global"] == pytest.approx(m["QT_Int_Global"] / math.sqrt(rr_mean_s), abs=0.01)
    assert m["QT_IntFridericia_Global"] == pytest.approx(m["QT_Int_Global"] / rr_s ** (1 / 3), rel=0.01)
    assert m["QT_IntFramingham_Global"] == pytest.approx(m["QT_Int_Global"] + 154 * (1 - rr_s), abs=2.0)
    assert 60.0 <= m["P_Dur_Global"] <= 110.0  # truth 5 sigma = 100 ms
    assert m["RR_SDNN_Global"] <= 1000.0 / fs  # a perfectly regular rhythm, up to one sample


def test_synthetic_amplitudes_and_signs():
    m = measure_record(synthetic_ecg(500, axis=60.0, noise_mv=0.005), 500)
    # lead II lies along the axis: R peak ~1.2 mV (overlap with Q and S lowers it a little)
    assert 0.9 <= m["R_Amp_II"] <= 1.25
    assert m["Q_Amp_II"] < 0 and m["S_Amp_II"] < 0  # 12SL convention: Q and S negative
    assert m["Q_Dur_II"] > 0 and m["R_Dur_II"] > m["Q_Dur_II"]
    assert m["T_Amp_II"] == pytest.approx(0.3, abs=0.05)
    assert m["P_Amp_II"] == pytest.approx(0.15, abs=0.03)
    # aVR looks from the opposite side: inverted P and T, a QRS that is mostly negative
    assert m["T_Amp_aVR"] < -0.2 and m["P_Amp_aVR"] < -0.1
    assert m["R_Amp_aVR"] < abs(m["S_Amp_aVR"]) + abs(m["Q_Amp_aVR"])
    # V1 has no Q wave in the synthetic beat: 0, not null
    assert m["Q_Amp_V1"] == 0.0 and m["Q_Dur_V1"] == 0.0
    # no ST deviation in the synthetic beat (its T wave starts well after J + 60 ms): ST sits on the PR
    # baseline at the J point and 60 ms later
    assert abs(m["ST_Amp_V3"]) < 0.03 and abs(m["ST60_Amp_V3"]) < 0.03
    # aVL is perpendicular to a 60 degree axis: a flat lead, whose values cannot be measured
    assert all(m[f"{w}_aVL"] is None for w in LEAD_MEASURES)
    for lead in (lead for lead in LEADS if lead != "aVL"):
        assert m[f"Q_Amp_{lead}"] <= 0 and m[f"S_Amp_{lead}"] <= 0 and m[f"R_Amp_{lead}"] >= 0


@pytest.mark.parametrize("axis", [-75.0, -30.0, 0.0, 45.0, 100.0, 160.0])
def test_frontal_axis_of_a_known_vector(axis):
    x = synthetic_ecg(500, axis=axis, p_axis=50.0, t_axis=axis + 20.0, noise_mv=0.01, seed=3)
    # the construction obeys Einthoven's law, so the test data is consistent limb-lead data
    i, ii, iii = (LEADS.index(n) for n in ("I", "II", "III"))
    np.testing.assert_allclose(x[ii], x[i] + x[iii], atol=0.1)
    m = measure_record(x, 500)
    assert _angle_diff(m["R_AxisFrontal_Global"], axis) <= 10.0
    assert _angle_diff(m["T_AxisFront_Global"], axis + 20.0) <= 10.0
    assert _angle_diff(m["P_AxisFront_Global"], 50.0) <= 15.0
    assert -180.0 < m["R_AxisFrontal_Global"] <= 180.0


def test_atrial_fibrillation_has_no_p_wave_and_irregular_rr():
    af = measure_record(synthetic_ecg(500, hr=90, atrial_fibrillation=True, noise_mv=0.01, seed=7), 500)
    sr = measure_record(synthetic_ecg(500, hr=90, noise_mv=0.01, seed=7), 500)
    for name in ["PR_Int_Global", "P_Dur_Global", "P_AxisFront_Global"] + [f"P_Amp_{lead}" for lead in LEADS]:
        assert af[name] is None, name  # cannot be measured: null, not 0 and not a guess
    assert af["QRS_Dur_Global"] is not None and af["HR__Global"] is not None
    assert af["RR_SDNN_Global"] > 60.0 > 10.0 > sr["RR_SDNN_Global"]


# ---------------------------------------------------------------------------- failures


def test_flat_and_noise_give_null_rows_with_reasons():
    fs = 100
    rng = np.random.default_rng(11)
    good = _uv(synthetic_ecg(fs))
    flat = np.zeros_like(good)
    noise = _uv(0.3 * rng.standard_normal(good.shape))
    short = np.zeros_like(good)
    short[:, :50] = good[:, :50]  # 0.5 s of signal, then a flat line
    signals = np.stack([good, flat, noise, good, short])  # [5, 12, 1000]
    frame, reasons = measure_signals_with_reasons(signals, fs, progress=False)
    assert frame.columns == FEATURE_COLUMNS and frame.height == 5
    assert reasons[0] is None and reasons[3] is None
    assert "flat" in reasons[1]
    assert "noise" in reasons[2] or "beats" in reasons[2]
    assert reasons[4] is not None
    for row in (1, 2, 4):
        assert all(v is None for v in frame.row(row)), reasons[row]
    assert frame["HR__Global"][0] == pytest.approx(72.0, abs=2.0)
    assert frame.row(0) == frame.row(3)  # the same record gives the same row


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fs=st.sampled_from([100, 250, 500]),
    seconds=st.floats(2.0, 6.0),
    kind=st.sampled_from(["ecg", "noise", "spikes", "drift", "dropout"]),
    hr=st.floats(25.0, 220.0),
    noise=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_any_input_gives_values_or_a_reason_never_a_crash(fs, seconds, kind, hr, noise, seed):
    rng = np.random.default_rng(seed)
    n = int(seconds * fs)
    if kind == "ecg":
        x = synthetic_ecg(fs, hr=hr, qt=min(400.0, 0.8 * 60000.0 / hr + 100), seconds=seconds, noise_mv=noise,
                          seed=seed)  # fmt: skip
    elif kind == "noise":
        x = noise * rng.standard_normal((12, n))
    elif kind == "spikes":
        x = np.zeros((12, n))
        x[:, rng.integers(0, n, 4)] = rng.uniform(-5.0, 5.0, (12, 4))
    elif kind == "drift":
        x = np.cumsum(rng.standard_normal((12, n)), axis=1) * 0.05
    else:
        x = synthetic_ecg(fs, hr=hr, seconds=seconds, seed=seed)
        x[rng.integers(0, 12, 6)] = 0.0
    try:
        m = measure_record(x, fs)
    except DelineationError as err:
        assert str(err)
        return
    assert set(m) == set(FEATURE_COLUMNS)
    assert all(v is None or math.isfinite(v) for v in m.values())
    assert 20.0 <= m["HR__Global"] <= 300.0


def test_measure_record_raises_the_reason_for_a_flat_line():
    with pytest.raises(DelineationError, match="flat"):
        measure_record(np.zeros((12, 1000)), 100)
    with pytest.raises(DelineationError, match="non-finite"):
        measure_record(np.full((12, 1000), np.nan), 100)


def test_a_flat_lead_gives_null_values_for_that_lead_only():
    x = synthetic_ecg(500, noise_mv=0.005)
    x[LEADS.index("V4")] = 0.0  # electrode off
    m = measure_record(x, 500)
    assert all(m[f"{w}_V4"] is None for w in LEAD_MEASURES)
    assert m["R_Amp_V5"] > 0 and m["QRS_Dur_Global"] is not None


def test_workers_give_the_same_rows_as_one_process():
    fs = 100
    signals = np.stack([_uv(synthetic_ecg(fs, hr=hr, seed=hr)) for hr in (55, 65, 75, 85, 95)] * 8)  # [40, 12, T]
    serial = measure_signals(signals, fs, workers=1, progress=False)
    parallel = measure_signals(signals, fs, workers=2, progress=False)
    assert serial.equals(parallel)
    np.testing.assert_allclose(serial["HR__Global"].to_numpy()[:5], [55, 65, 75, 85, 95], atol=2.0)


def test_measure_signals_reads_a_memmap(tmp_path):
    fs = 100
    path = tmp_path / "signals_100.npy"
    np.save(path, np.stack([_uv(synthetic_ecg(fs, hr=hr)) for hr in (60, 80, 100)]))
    frame = measure_signals(np.load(path, mmap_mode="r"), fs, progress=False)
    np.testing.assert_allclose(frame["HR__Global"].to_numpy(), [60, 80, 100], atol=2.0)
    with pytest.raises(ValueError, match=r"\[N, 12, T\]"):
        measure_signals(np.zeros((2, 8, 1000), dtype=np.int16), fs)


# ---------------------------------------------------------------------------- the real PTB-XL sample


def _rhythms(sample: Path, ids: list[int]) -> dict[int, set[str]]:
    db = pl.read_csv(sample / "ptbxl_database.csv", columns=["ecg_id", "scp_codes"])
    codes = {int(i): set(ast.literal_eval(s)) for i, s in db.iter_rows()}
    return {i: codes[i] for i in ids}


def _real(sample: Path, fs: int, ids: range) -> tuple[list[int], pl.DataFrame, list[str | None]]:
    suffix = "lr" if fs == 100 else "hr"
    signals = np.stack([read_record(sample / f"records{fs}/00000/{i:05d}_{suffix}", fs) for i in ids])
    frame, reasons = measure_signals_with_reasons(signals, fs, progress=False)
    return list(ids), frame, reasons


@pytest.fixture(scope="module")
def real100(ptbxl_sample):
    return _real(ptbxl_sample, 100, range(1, 301))


@pytest.fixture(scope="module")
def real500(ptbxl_sample):
    return _real(ptbxl_sample, 500, range(1, 101))


def _by_label(ids, frame, labels, column):
    return {
        code: frame[column].to_numpy()[[k for k, i in enumerate(ids) if code in labels[i]]]
        for code in ("SR", "SBRAD", "STACH", "AFIB")
    }


def test_real_100hz_rhythm_labels(ptbxl_sample, real100):
    ids, frame, reasons = real100
    labels = _rhythms(ptbxl_sample, ids)
    assert sum(r is not None for r in reasons) <= 0.05 * len(ids), [r for r in reasons if r]
    hr = _by_label(ids, frame, labels, "HR__Global")
    assert len(hr["SBRAD"]) >= 5 and len(hr["STACH"]) >= 3 and len(hr["AFIB"]) >= 2
    assert np.nanmedian(hr["SBRAD"]) < 60.0
    assert np.nanmedian(hr["STACH"]) > 100.0
    assert 60.0 <= np.nanmedian(hr["SR"]) <= 100.0
    sdnn = _by_label(ids, frame, labels, "RR_SDNN_Global")
    assert np.nanmedian(sdnn["AFIB"]) > np.nanmedian(sdnn["SR"])
    # plausible adult values in sinus rhythm (12SL's population medians: PR ~155, QRS ~95, QT ~390)
    sr = [k for k, i in enumerate(ids) if "SR" in labels[i]]
    for column, low, high in (("PR_Int_Global", 120, 200), ("QRS_Dur_Global", 80, 115), ("QT_Int_Global", 340, 440),
                              ("P_Dur_Global", 80, 130), ("R_AxisFrontal_Global", -30, 90)):  # fmt: skip
        med = float(np.nanmedian(frame[column].to_numpy()[sr]))
        assert low <= med <= high, (column, med)
    no_p = np.isnan(frame["PR_Int_Global"].to_numpy()[sr])
    assert no_p.sum() <= 0.05 * len(sr)  # a P wave is found in sinus rhythm


def test_real_500hz_agrees_with_100hz(ptbxl_sample, real100, real500):
    ids, frame, reasons = real500
    labels = _rhythms(ptbxl_sample, ids)
    assert sum(r is not None for r in reasons) <= 0.05 * len(ids), [r for r in reasons if r]
    hr = _by_label(ids, frame, labels, "HR__Global")
    assert np.nanmedian(hr["SBRAD"]) < 60.0
    low = real100[1][:100]  # the same records at 100 Hz (ids 1-100)
    tolerances = {"HR__Global": 1.0, "QRS_Dur_Global": 15.0, "QT_Int_Global": 20.0, "PR_Int_Global": 20.0}
    for column, tol in tolerances.items():
        diff = np.abs(frame[column].to_numpy() - low[column].to_numpy())
        assert np.nanmedian(diff) <= tol, (column, np.nanmedian(diff))


# ---------------------------------------------------------------------------- the CLI


def test_cli_source_writes_every_column(ptbxl_sample, tmp_path):
    out = tmp_path / "measured.csv"
    assert main(["measure", "--source", str(ptbxl_sample), "--out", str(out), "--fs", "500", "--no-progress"]) == 0
    table = pl.read_csv(out)
    assert table.columns == ["ecg_id", *FEATURE_COLUMNS]
    assert table["ecg_id"].to_list() == list(range(1, 101))  # the 100 records present at 500 Hz
    assert table["HR__Global"].null_count() <= 5
    failures = pl.read_csv(failures_path(out))
    assert failures.columns == ["ecg_id", "reason"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary file left behind


def _write_ptbxl_folder(root: Path, fs: int = 100) -> None:
    """A PTB-XL-shaped folder of synthetic records (WFDB format 16, PTB-XL's names and gain)."""
    import wfdb

    folder = root / f"records{fs}" / "00000"
    folder.mkdir(parents=True)
    names = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    rows = ["ecg_id,patient_id,filename_lr,filename_hr"]
    for ecg_id, hr in ((3, 58), (7, 75), (12, 104), (15, 80), (21, 70)):
        rec = f"{ecg_id:05d}_lr"
        rows.append(f"{ecg_id},1.0,records{fs}/00000/{rec},records500/00000/{ecg_id:05d}_hr")
        if ecg_id == 21:
            continue  # listed but absent: not part of the folder
        x = synthetic_ecg(fs, hr=hr, seed=ecg_id).T  # [T, 12] mV
        wfdb.wrsamp(rec, fs=fs, units=["mV"] * 12, sig_name=names, p_signal=x, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))  # fmt: skip
    (folder / "00015_lr.dat").write_bytes((folder / "00015_lr.dat").read_bytes()[:1000])  # truncated
    (root / "ptbxl_database.csv").write_text("\n".join(rows) + "\n")


def test_cli_source_lists_unreadable_records(tmp_path):
    _write_ptbxl_folder(tmp_path / "ptbxl")
    out = tmp_path / "out" / "features.parquet"
    assert main(["measure", "--source", str(tmp_path / "ptbxl"), "--out", str(out), "--no-progress"]) == 0
    table = pl.read_parquet(out)
    assert table["ecg_id"].to_list() == [3, 7, 12, 15]
    np.testing.assert_allclose(table["HR__Global"].to_numpy()[:3], [58, 75, 104], atol=2.0)
    assert table.filter(pl.col("ecg_id") == 15).drop("ecg_id").null_count().sum_horizontal()[0] == len(FEATURE_COLUMNS)
    failures = pl.read_csv(out.with_name("features.failures.csv"))
    assert failures["ecg_id"].to_list() == [15]
    assert "00015_lr" in failures["reason"][0] and "truncated" in failures["reason"][0]


def test_cli_pipeline_form_is_row_aligned(tmp_path):
    fs = 100
    signals = np.stack([_uv(synthetic_ecg(fs, hr=90)), np.zeros((12, 1000), np.int16), _uv(synthetic_ecg(fs, hr=50))])
    np.save(tmp_path / "signals_100.npy", signals)
    pl.DataFrame({"ecg_id": [41, 17, 5], "report": ["a", "b", "c"]}).write_parquet(tmp_path / "records.parquet")
    out = tmp_path / "features_measured.parquet"
    argv = ["measure", "--signals", str(tmp_path / "signals_100.npy"), "--records", str(tmp_path / "records.parquet"),
            "--out", str(out), "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    table = pl.read_parquet(out)
    assert table.columns == ["ecg_id", *FEATURE_COLUMNS]
    assert table["ecg_id"].to_list() == [41, 17, 5]
    assert table["HR__Global"][0] == pytest.approx(90, abs=2) and table["HR__Global"][2] == pytest.approx(50, abs=2)
    assert table["HR__Global"][1] is None
    failures = pl.read_csv(tmp_path / "features_measured.failures.csv")
    assert failures["ecg_id"].to_list() == [17] and "flat" in failures["reason"][0]


def test_cli_errors_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "signals_100.npy", np.zeros((3, 12, 1000), np.int16))
    pl.DataFrame({"ecg_id": [1, 2]}).write_parquet(tmp_path / "records.parquet")
    argv = ["measure", "--signals", str(tmp_path / "signals_100.npy"), "--records", str(tmp_path / "records.parquet"),
            "--out", str(tmp_path / "f.parquet"), "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "same `ecglm prepare` run" in err and "records.parquet" in err
    assert not (tmp_path / "f.parquet").exists()
    assert main(["measure", "--source", str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 1
    assert "ptbxl_database.csv" in capsys.readouterr().err


def test_cli_help_is_reachable():
    proc = subprocess.run([sys.executable, "-m", "ecglm", "measure", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120"}, check=True)  # fmt: skip
    for option in ("--source", "--signals", "--records", "--out", "--fs", "--workers"):
        assert option in proc.stdout


# ---------------------------------------------------------------------------- regressions (demo world)


@pytest.mark.parametrize("fs", [100, 500])
@pytest.mark.parametrize(("hr", "qt", "st_mv"), [(60, 540, 0.0), (58, 580, 0.2), (75, 500, 0.2)])
def test_long_qt_t_end_is_on_the_t_waves_descending_limb(fs, hr, qt, st_mv):
    # an ST plateau that ends before the T peak makes the steepest fall of the ST-T a cliff on the T
    # wave's rising side; the old spatial-magnitude tangent took it and cut a 580 ms QT to ~530 ms
    m = measure_record(synthetic_ecg(fs, hr=hr, qt=qt, st_plateau_mv=st_mv, noise_mv=0.01), fs)
    assert abs(m["QT_Int_Global"] - qt) <= TOL_QT
    assert m["QT_IntFramingham_Global"] > 470  # long QT by the 450/460 ms limits


# (fs, hr, f-wave mV, seed): atrial fibrillation records in which the P-wave test without a fixed PR
# accepted the median of the f waves as a P wave (P amplitude 0.03-0.1 mV, which hides the AF).
# Not yet caught: (100, 60, 0.05, 9), whose P window ends just before the QRS (PR 116 ms).
AF_FALSE_P = [(100, 60, 0.05, 3), (100, 60, 0.1, 3), (100, 90, 0.1, 0), (500, 60, 0.02, 2), (500, 120, 0.05, 8)]


@pytest.mark.parametrize(("fs", "hr", "f_mv", "seed"), AF_FALSE_P)
def test_atrial_fibrillation_f_waves_are_not_a_p_wave(fs, hr, f_mv, seed):
    x = synthetic_ecg(fs, hr=hr, atrial_fibrillation=True, f_wave_mv=f_mv, noise_mv=0.01, seed=seed)
    m = measure_record(x, fs)
    assert m["P_Amp_II"] is None and m["PR_Int_Global"] is None and m["P_Dur_Global"] is None


@pytest.mark.parametrize("fs", [100, 500])
def test_sinus_arrhythmia_keeps_its_p_wave(fs):
    # RR +-25%: irregular enough for the fixed-PR test to apply; the P wave keeps its PR, so it is found
    for seed in range(4):
        m = measure_record(synthetic_ecg(fs, hr=75, pr=170, rr_jitter=0.25, noise_mv=0.01, seed=seed), fs)
        assert m["RR_SDNN_Global"] / m["RR_Mean_Global"] > 0.06
        assert m["P_Amp_II"] == pytest.approx(0.15, abs=0.04) and abs(m["PR_Int_Global"] - 170) <= TOL_PR


# ---------------------------------------------------------------------------- issue 21: ST at the J point


@pytest.mark.parametrize("fs", [100, 500])
def test_st_is_read_at_the_j_point_and_60_ms_later(fs):
    # a horizontal 0.2 mV ST plateau (gains of the T wave, 12 ms ramp from the QRS offset, which the J
    # point lies at the end of): the same level at the J point and 60 ms later; none without it
    flat = measure_record(synthetic_ecg(fs, hr=60, qt=440, noise_mv=0.005), fs)
    raised = measure_record(synthetic_ecg(fs, hr=60, qt=440, st_plateau_mv=0.2, noise_mv=0.005), fs)
    assert abs(flat["ST60_Amp_V4"]) < 0.03 and abs(flat["ST_Amp_V4"]) < 0.03
    # lead V4: plateau gain 0.2 mV x 0.9
    assert raised["ST_Amp_V4"] == pytest.approx(0.18, abs=0.04)
    assert raised["ST60_Amp_V4"] == pytest.approx(raised["ST_Amp_V4"], abs=0.03)  # horizontal


@pytest.mark.parametrize(("fs", "qrs"), [(100, 90), (100, 100), (500, 90), (500, 100)])
def test_the_j_point_is_not_a_pause_on_the_s_wave_upstroke(fs, qrs):
    # The S wave falls fast and rises slowly (as in many normal ECGs): the spatial velocity pauses at the
    # S nadirs before the upstroke falls to the ST segment. A J point on that pause ended the QRS ~30 ms
    # early (60-66 ms here) and read the ST level on the S wave (-0.4 mV in V2), and on real NORM-only
    # records on the R wave's downstroke: ST elevation in 10% of them (issue 21).
    from ecglm.text.describe import describe
    from ecglm.text.guidelines import load_guidelines

    m = measure_record(synthetic_ecg(fs, hr=60, qrs=qrs, qt=400, noise_mv=0.005, s_upstroke=2.0, seed=fs), fs)
    assert abs(m["QRS_Dur_Global"] - qrs) <= TOL_QRS
    assert all(abs(m[f"ST_Amp_{lead}"]) < 0.06 for lead in LEADS), {k: v for k, v in m.items() if "ST_Amp" in k}
    features = pl.DataFrame([{"ecg_id": 1, **m}], schema={"ecg_id": pl.Int64, **{c: pl.Float64 for c in m}})
    patients = pl.DataFrame({"ecg_id": [1], "sex": ["male"], "age": [50]})
    findings = describe(features, patients, load_guidelines())["findings"][0].to_list()
    assert not {"st_elevation", "st_depression"} & set(findings), findings


# ---------------------------------------------------------------------------- issue 21: QT must not read short


# With 20 uV of noise at 100 Hz the measured QT is 390 ms: the tangent-method T end (the 75th
# percentile of the leads' ends) runs early, the cause issue 21 found for short QT in 47% of the real
# NORM-only sample records. strict: this case fails the suite once the T end is fixed, so the mark goes.
# (A T end at the knee, by the trapezium-area method, passes it and halves short QT on the real sample,
# but raises long QT against LNGQT and loses the demo world's LNGQT figure: not shipped, see README.)
QT_RUNS_SHORT = pytest.mark.xfail(strict=True, reason="issue 21: T end found early (QT 390 ms, not 400)")


@pytest.mark.parametrize(("fs", "noise_mv"), [(100, 0.005), (500, 0.005), (500, 0.02),
                                              pytest.param(100, 0.02, marks=QT_RUNS_SHORT)])
def test_qt_of_400_ms_at_60_bpm_does_not_read_short(fs, noise_mv):
    # a normal QT (400 ms at 60 bpm: every rate correction gives 400 ms) must be neither measured
    # short nor described as a short QT interval (AHA/ACCF/HRS 2009 part IV: QTc <= 390 ms)
    from ecglm.text.describe import describe
    from ecglm.text.guidelines import load_guidelines

    m = measure_record(synthetic_ecg(fs, hr=60, qt=400, noise_mv=noise_mv, seed=fs), fs)
    assert abs(m["QT_Int_Global"] - 400) <= TOL_QT
    assert m["QT_IntFramingham_Global"] > 390
    features = pl.DataFrame([{"ecg_id": 1, **m}], schema={"ecg_id": pl.Int64, **{c: pl.Float64 for c in m}})
    patients = pl.DataFrame({"ecg_id": [1], "sex": ["female"], "age": [50]})
    findings = describe(features, patients, load_guidelines())["findings"][0].to_list()
    assert "short_qt" not in findings and "long_qt" not in findings
    assert "sinus_rhythm" in findings
