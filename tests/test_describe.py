"""`ecglm describe`: guideline findings from 12SL features (ecglm.text.describe, ecglm.text.guidelines).

The case table below is written from the guideline sources (AHA/ACC/HRS 2007-2009 parts II-V, ESC 2018
fourth universal definition of MI, Minnesota Code, Sokolow-Lyon 1949, Casale 1985), not generated from
ecglm/text/guidelines.yaml: each case gives the features of one ECG, the patient's sex and age and the
whole expected description (every column not named must be null).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import polars as pl
import pytest

from ecglm.cli import main as ecglm_main
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS
from ecglm.text.describe import LEAD_COLUMNS_OUT, OUTPUT_SCHEMA, describe, missing_features_path, read_feature_table
from ecglm.text.guidelines import DEFAULT_GUIDELINES, load_guidelines, parse_guidelines

NAN = math.nan

GUIDELINES = load_guidelines()

# The finding id each phrase stands for (checked against the findings column).
PHRASE_FINDING = {
    "sinus rhythm": "sinus_rhythm",
    "sinus bradycardia": "sinus_bradycardia",
    "sinus tachycardia": "sinus_tachycardia",
    "atrial fibrillation": "atrial_fibrillation",
    "sinus arrhythmia": "sinus_arrhythmia",
    "short PR interval": "short_pr",
    "first-degree AV block": "first_degree_av_block",
    "intraventricular conduction delay": "intraventricular_conduction_delay",
    "wide QRS complex": "wide_qrs",
    "left axis deviation": "left_axis_deviation",
    "extreme axis deviation": "extreme_axis_deviation",
    "right axis deviation": "right_axis_deviation",
    "prolonged QT interval": "long_qt",
    "short QT interval": "short_qt",
    "prolonged P wave": "prolonged_p_wave",
    "P pulmonale": "p_pulmonale",
    "left ventricular hypertrophy by voltage criteria": "lvh_voltage",
    "low QRS voltage in the limb leads": "low_voltage_limb",
    "low QRS voltage in the precordial leads": "low_voltage_precordial",
    "pathological Q wave": "pathological_q",
    "ST elevation": "st_elevation",
    "ST depression": "st_depression",
    "T-wave inversion": "t_inversion",
    "deep T-wave inversion": "deep_t_inversion",
}


def limb(r: float, q: float, s: float) -> dict:
    return {f"{w}_Amp_{lead}": v for lead in LEADS[:6] for w, v in (("R", r), ("Q", q), ("S", s))}


def precordial(r: float, q: float, s: float) -> dict:
    return {f"{w}_Amp_{lead}": v for lead in LEADS[6:] for w, v in (("R", r), ("Q", q), ("S", s))}


CONTIGUOUS_FINDINGS = {"st_elevation", "st_depression"}
SINUS_P = {"P_Amp_II": 0.12}
RR_800 = {"RR_Mean_Global": 800.0, "HR__Global": 75.0}

# (name, features, sex, age, expected {output column: phrase}); unnamed output columns must be null.
CASES: list[tuple[str, dict, str | None, int | None, dict]] = [
    # --- rate and rhythm: sinus bradycardia < 60, tachycardia > 100 bpm (AHA/ACC/HRS 2007 part II)
    ("hr 59.9 sinus", {"HR__Global": 59.9, **SINUS_P}, "male", 50, {"general": "sinus bradycardia"}),
    ("hr 60 sinus", {"HR__Global": 60.0, **SINUS_P}, "male", 50, {"general": "sinus rhythm"}),
    ("hr 100 sinus", {"HR__Global": 100.0, **SINUS_P}, "female", 50, {"general": "sinus rhythm"}),
    ("hr 100.1 sinus", {"HR__Global": 100.1, **SINUS_P}, "female", 50, {"general": "sinus tachycardia"}),
    ("hr 130 no upright P", {"HR__Global": 130.0, "P_Amp_II": 0.02}, "male", 50, {}),
    ("hr 75, P 0.025", {"HR__Global": 75.0, "P_Amp_II": 0.025}, "male", 50, {"general": "sinus rhythm"}),
    ("hr 75, P 0.024", {"HR__Global": 75.0, "P_Amp_II": 0.024}, "male", 50, {}),
    ("hr 75, inverted P", {"HR__Global": 75.0, "P_Amp_II": -0.1}, "male", 50, {}),
    ("hr null", {"HR__Global": None, **SINUS_P}, "male", 50, {}),
    ("P null, RR unknown", {"HR__Global": 75.0, "P_Amp_II": None}, "male", 50, {}),
    # --- atrial fibrillation: irregular RR, no P wave (ESC 2020); sinus arrhythmia: sinus + RR variation
    ("af: cv 0.15, no P", {**RR_800, "RR_SDNN_Global": 120.0, "P_Amp_II": None}, "male", 70,
     {"general": "atrial fibrillation"}),
    ("af: cv 0.15, P 0.02", {**RR_800, "RR_SDNN_Global": 120.0, "P_Amp_II": 0.02}, "male", 70,
     {"general": "atrial fibrillation"}),
    ("cv 0.10, no P", {**RR_800, "RR_SDNN_Global": 80.0, "P_Amp_II": None}, "male", 70, {}),
    ("sinus arrhythmia cv 0.08", {**RR_800, "RR_SDNN_Global": 64.0, **SINUS_P}, "female", 20,
     {"general": "sinus rhythm, sinus arrhythmia"}),
    ("sinus, cv 0.075", {**RR_800, "RR_SDNN_Global": 60.0, **SINUS_P}, "female", 20, {"general": "sinus rhythm"}),
    ("irregular with P is not af", {**RR_800, "RR_SDNN_Global": 120.0, **SINUS_P}, "female", 20,
     {"general": "sinus rhythm, sinus arrhythmia"}),
    # --- PR 120-200 ms (AHA 2007 part II / 2009 part III)
    ("pr 119", {"PR_Int_Global": 119.0}, "male", 50, {"general": "short PR interval"}),
    ("pr 120", {"PR_Int_Global": 120.0}, "male", 50, {}),
    ("pr 200", {"PR_Int_Global": 200.0}, "male", 50, {}),
    ("pr 201", {"PR_Int_Global": 201.0}, "male", 50, {"general": "first-degree AV block"}),
    # --- QRS duration: >= 120 complete BBB range, 110-119 incomplete / IVCD (AHA 2009 part III)
    ("qrs 109", {"QRS_Dur_Global": 109.0}, "male", 50, {}),
    ("qrs 110", {"QRS_Dur_Global": 110.0}, "male", 50, {"general": "intraventricular conduction delay"}),
    ("qrs 119", {"QRS_Dur_Global": 119.0}, "male", 50, {"general": "intraventricular conduction delay"}),
    ("qrs 120", {"QRS_Dur_Global": 120.0}, "male", 50, {"general": "wide QRS complex"}),
    # --- frontal QRS axis: normal -30..+90 (AHA 2009 part III), extreme -90..-180 (Minnesota 2-4)
    ("axis -30", {"R_AxisFrontal_Global": -30.0}, "male", 50, {}),
    ("axis -31", {"R_AxisFrontal_Global": -31.0}, "male", 50, {"general": "left axis deviation"}),
    ("axis -90", {"R_AxisFrontal_Global": -90.0}, "male", 50, {"general": "left axis deviation"}),
    ("axis -91", {"R_AxisFrontal_Global": -91.0}, "male", 50, {"general": "extreme axis deviation"}),
    ("axis 90", {"R_AxisFrontal_Global": 90.0}, "male", 50, {}),
    ("axis 91", {"R_AxisFrontal_Global": 91.0}, "male", 50, {"general": "right axis deviation"}),
    ("axis 180", {"R_AxisFrontal_Global": 180.0}, "male", 50, {"general": "right axis deviation"}),
    ("axis 270 = -90", {"R_AxisFrontal_Global": 270.0}, "male", 50, {"general": "left axis deviation"}),
    ("axis 200 = -160", {"R_AxisFrontal_Global": 200.0}, "male", 50, {"general": "extreme axis deviation"}),
    # --- QTc: prolonged above 450 ms men / 460 ms women, short <= 390 ms (AHA 2009 part IV)
    ("qtc male 450", {"QT_IntFramingham_Global": 450.0}, "male", 50, {}),
    ("qtc male 451", {"QT_IntFramingham_Global": 451.0}, "male", 50, {"general": "prolonged QT interval"}),
    ("qtc female 460", {"QT_IntFramingham_Global": 460.0}, "female", 50, {}),
    ("qtc female 461", {"QT_IntFramingham_Global": 461.0}, "female", 50, {"general": "prolonged QT interval"}),
    ("qtc female 455", {"QT_IntFramingham_Global": 455.0}, "female", 50, {}),
    ("qtc sex unknown 455", {"QT_IntFramingham_Global": 455.0}, None, 50, {}),
    ("qtc sex unknown 461", {"QT_IntFramingham_Global": 461.0}, None, 50, {"general": "prolonged QT interval"}),
    ("qtc 390", {"QT_IntFramingham_Global": 390.0}, "female", 50, {"general": "short QT interval"}),
    ("qtc 391", {"QT_IntFramingham_Global": 391.0}, "female", 50, {}),
    ("qtc NaN", {"QT_IntFramingham_Global": NAN}, "female", 50, {}),
    # --- P wave: duration > 120 ms, amplitude in II > 0.25 mV (AHA 2009 part V)
    ("p dur 120", {"P_Dur_Global": 120.0}, "male", 50, {}),
    ("p dur 121", {"P_Dur_Global": 121.0}, "male", 50, {"general": "prolonged P wave"}),
    ("p II 0.25", {"P_Amp_II": 0.25}, "male", 50, {}),
    ("p II 0.26", {"P_Amp_II": 0.26}, "male", 50, {"lead_II": "P pulmonale"}),
    ("p III 0.4 (II only)", {"P_Amp_III": 0.4}, "male", 50, {}),
    # --- voltage: Sokolow-Lyon SV1 + RV5/6 > 3.5 mV; Cornell RaVL + SV3 > 2.8 mV men / 2.0 mV women
    ("sokolow 3.5", {"S_Amp_V1": -1.5, "R_Amp_V5": 2.0, "R_Amp_V6": 1.75}, "male", 50, {}),
    ("sokolow 3.6 via V6", {"S_Amp_V1": -1.6, "R_Amp_V5": 1.5, "R_Amp_V6": 2.0}, "male", 50,
     {"general": "left ventricular hypertrophy by voltage criteria"}),
    ("sokolow R_V6 null", {"S_Amp_V1": -2.0, "R_Amp_V5": 2.0, "R_Amp_V6": None}, "male", 50, {}),
    ("cornell male 2.79", {"R_Amp_aVL": 1.0, "S_Amp_V3": -1.79}, "male", 50, {}),
    ("cornell male 2.81", {"R_Amp_aVL": 1.0, "S_Amp_V3": -1.81}, "male", 50,
     {"general": "left ventricular hypertrophy by voltage criteria"}),
    ("cornell female 2.01", {"R_Amp_aVL": 0.5, "S_Amp_V3": -1.51}, "female", 50,
     {"general": "left ventricular hypertrophy by voltage criteria"}),
    ("cornell female 1.99", {"R_Amp_aVL": 0.5, "S_Amp_V3": -1.49}, "female", 50, {}),
    ("cornell sex unknown 2.5", {"R_Amp_aVL": 1.0, "S_Amp_V3": -1.5}, None, 50, {}),
    ("cornell sex unknown 2.9", {"R_Amp_aVL": 1.0, "S_Amp_V3": -1.9}, None, 50,
     {"general": "left ventricular hypertrophy by voltage criteria"}),
    # --- low voltage: peak-to-peak < 0.5 mV in every limb lead / < 1.0 mV in every precordial lead
    ("limb pp 0.45", limb(0.25, 0.0, -0.2), "male", 50, {"general": "low QRS voltage in the limb leads"}),
    ("limb pp 0.5", limb(0.25, 0.0, -0.25), "male", 50, {}),
    ("limb pp 0.45, one 0.5", {**limb(0.25, 0.0, -0.2), "R_Amp_aVL": 0.3}, "male", 50, {}),
    ("limb pp 0.45, one null", {**limb(0.25, 0.0, -0.2), "S_Amp_III": None}, "male", 50, {}),
    ("precordial pp 0.9", precordial(0.5, 0.0, -0.4), "male", 50,
     {"general": "low QRS voltage in the precordial leads"}),
    ("precordial pp 0.9, V3 1.0", {**precordial(0.5, 0.0, -0.4), "S_Amp_V3": -0.5}, "male", 50, {}),
    # --- Q waves (Minnesota Code 1: >= 40 ms, >= 0.1 mV deep; ESC athlete criteria: >= 25 % of R)
    ("q II 40 ms", {"Q_Dur_II": 40.0, "Q_Amp_II": -0.15, "R_Amp_II": 1.0}, "male", 50,
     {"lead_II": "pathological Q wave"}),
    ("q II 39 ms", {"Q_Dur_II": 39.0, "Q_Amp_II": -0.15, "R_Amp_II": 1.0}, "male", 50, {}),
    ("q II 25 % of R", {"Q_Dur_II": 30.0, "Q_Amp_II": -0.25, "R_Amp_II": 1.0}, "male", 50,
     {"lead_II": "pathological Q wave"}),
    ("q II 24 % of R", {"Q_Dur_II": 30.0, "Q_Amp_II": -0.24, "R_Amp_II": 1.0}, "male", 50, {}),
    ("q II 45 ms but 0.09 mV", {"Q_Dur_II": 45.0, "Q_Amp_II": -0.09, "R_Amp_II": 0.2}, "male", 50, {}),
    ("q aVR", {"Q_Dur_aVR": 60.0, "Q_Amp_aVR": -0.5, "R_Amp_aVR": 0.1}, "male", 50, {}),
    ("q V1 alone", {"Q_Dur_V1": 50.0, "Q_Amp_V1": -0.6, "R_Amp_V1": 0.2}, "male", 50, {}),
    ("q III alone", {"Q_Dur_III": 45.0, "Q_Amp_III": -0.3, "R_Amp_III": 0.5, "Q_Amp_aVF": 0.0}, "male", 50, {}),
    ("q III with aVF Q", {"Q_Dur_III": 45.0, "Q_Amp_III": -0.3, "R_Amp_III": 0.5,
                          "Q_Dur_aVF": 20.0, "Q_Amp_aVF": -0.12, "R_Amp_aVF": 1.0}, "male", 50,
     {"lead_III": "pathological Q wave"}),
    ("q aVL, R 0.2", {"Q_Dur_aVL": 40.0, "Q_Amp_aVL": -0.15, "R_Amp_aVL": 0.2}, "male", 50, {}),
    ("q aVL, R 0.3", {"Q_Dur_aVL": 40.0, "Q_Amp_aVL": -0.15, "R_Amp_aVL": 0.3}, "male", 50,
     {"lead_aVL": "pathological Q wave"}),
    # --- ST elevation (ESC 2018 4th UDMI): V2-V3 >= 0.2 mV men >= 40, >= 0.25 men < 40, >= 0.15 women
    ("ste V2 male 45 0.2", {"ST_Amp_V2": 0.2}, "male", 45, {"lead_V2": "ST elevation"}),
    ("ste V2 male 45 0.19", {"ST_Amp_V2": 0.19}, "male", 45, {}),
    ("ste V2 male 40 0.2", {"ST_Amp_V2": 0.2}, "male", 40, {"lead_V2": "ST elevation"}),
    ("ste V2 male 39 0.2", {"ST_Amp_V2": 0.2}, "male", 39, {}),
    ("ste V2 male 35 0.25", {"ST_Amp_V2": 0.25}, "male", 35, {"lead_V2": "ST elevation"}),
    ("ste V3 male 35 0.24", {"ST_Amp_V3": 0.24}, "male", 35, {}),
    ("ste V2 female 0.15", {"ST_Amp_V2": 0.15}, "female", 70, {"lead_V2": "ST elevation"}),
    ("ste V3 female 0.14", {"ST_Amp_V3": 0.14}, "female", 25, {}),
    ("ste V2 male age unknown 0.2", {"ST_Amp_V2": 0.2}, "male", None, {}),
    ("ste V2 male age unknown 0.25", {"ST_Amp_V2": 0.25}, "male", None, {"lead_V2": "ST elevation"}),
    ("ste V2 sex unknown age 30 0.2", {"ST_Amp_V2": 0.2}, None, 30, {}),
    ("ste V2 sex unknown age 50 0.2", {"ST_Amp_V2": 0.2}, None, 50, {"lead_V2": "ST elevation"}),
    ("ste V2 sex unknown 0.25", {"ST_Amp_V2": 0.25}, None, None, {"lead_V2": "ST elevation"}),
    # other leads >= 0.1 mV
    ("ste V5 0.1", {"ST_Amp_V5": 0.1}, "female", 50, {"lead_V5": "ST elevation"}),
    ("ste V5 0.09", {"ST_Amp_V5": 0.09}, "female", 50, {}),
    ("ste aVR 0.1", {"ST_Amp_aVR": 0.1}, "male", 30, {"lead_aVR": "ST elevation"}),
    ("ste III 0.12", {"ST_Amp_III": 0.12}, "male", 30, {"lead_III": "ST elevation"}),
    ("ste II III 0.12", {"ST_Amp_II": 0.12, "ST_Amp_III": 0.12}, "male", 30,
     {"lead_II": "ST elevation", "lead_III": "ST elevation", "general": "ST elevation"}),
    ("ste V2 0.25 V3 0.2 male 35", {"ST_Amp_V2": 0.25, "ST_Amp_V3": 0.2}, "male", 35, {"lead_V2": "ST elevation"}),
    ("ste V1 0.1 V2 0.2 male 45", {"ST_Amp_V1": 0.1, "ST_Amp_V2": 0.2}, "male", 45,
     {"lead_V1": "ST elevation", "lead_V2": "ST elevation", "general": "ST elevation"}),
    ("ste aVR 0.2 III 0.2 (aVR in no group)", {"ST_Amp_aVR": 0.2, "ST_Amp_III": 0.2}, "male", 50,
     {"lead_aVR": "ST elevation", "lead_III": "ST elevation"}),
    # --- ST depression >= 0.05 mV (ESC 2018), leads of Minnesota Code 4 (not III, not aVR)
    ("std V5 -0.05", {"ST_Amp_V5": -0.05, "ST60_Amp_V5": -0.05}, "male", 50, {"lead_V5": "ST depression"}),
    # two contiguous leads (anterior V1-V6, inferior II III aVF, lateral I aVL): the finding and the general text
    ("std V5 V6 -0.05", {"ST_Amp_V5": -0.05, "ST60_Amp_V5": -0.05, "ST_Amp_V6": -0.06, "ST60_Amp_V6": -0.08},
     "male", 50, {"lead_V5": "ST depression", "lead_V6": "ST depression", "general": "ST depression"}),
    ("std V5 V6 upsloping", {"ST_Amp_V5": -0.1, "ST60_Amp_V5": -0.02, "ST_Amp_V6": -0.1, "ST60_Amp_V6": 0.0},
     "male", 50, {}),
    ("std V5 downsloping, V6 upsloping", {"ST_Amp_V5": -0.1, "ST60_Amp_V5": -0.15, "ST_Amp_V6": -0.1,
                                          "ST60_Amp_V6": 0.0}, "male", 50, {"lead_V5": "ST depression"}),
    ("std I V5 -0.1 (not one group)", {"ST_Amp_I": -0.1, "ST60_Amp_I": -0.1, "ST_Amp_V5": -0.1, "ST60_Amp_V5": -0.1},
     "male", 50, {"lead_I": "ST depression", "lead_V5": "ST depression"}),
    ("std V5 -0.04", {"ST_Amp_V5": -0.04, "ST60_Amp_V5": -0.04}, "male", 50, {}),
    ("std III -0.2", {"ST_Amp_III": -0.2, "ST60_Amp_III": -0.2}, "male", 50, {}),
    ("std aVR -0.2", {"ST_Amp_aVR": -0.2, "ST60_Amp_aVR": -0.2}, "male", 50, {}),
    # --- T inversion (Minnesota 5-2 / 5-1): <= -0.1 mV, deep <= -0.5 mV in I, II, V2-V6; aVL if R >= 0.5 mV;
    #     aVF if QRS mainly upright; never in aVR, III, V1
    ("t V4 -0.1", {"T_Amp_V4": -0.1}, "male", 50, {"lead_V4": "T-wave inversion"}),
    ("t V4 -0.09", {"T_Amp_V4": -0.09}, "male", 50, {}),
    ("t V4 -0.5", {"T_Amp_V4": -0.5}, "male", 50, {"lead_V4": "deep T-wave inversion"}),
    ("t I -0.3", {"T_Amp_I": -0.3}, "male", 50, {"lead_I": "T-wave inversion"}),
    ("t V1 -0.3", {"T_Amp_V1": -0.3}, "male", 50, {}),
    ("t III -0.3", {"T_Amp_III": -0.3}, "male", 50, {}),
    ("t aVR -0.3", {"T_Amp_aVR": -0.3}, "male", 50, {}),
    ("t aVL -0.2, R 0.5", {"T_Amp_aVL": -0.2, "R_Amp_aVL": 0.5}, "male", 50, {"lead_aVL": "T-wave inversion"}),
    ("t aVL -0.2, R 0.4", {"T_Amp_aVL": -0.2, "R_Amp_aVL": 0.4}, "male", 50, {}),
    ("t aVF -0.2, QRS upright", {"T_Amp_aVF": -0.2, "R_Amp_aVF": 0.8, "Q_Amp_aVF": 0.0, "S_Amp_aVF": -0.2},
     "male", 50, {"lead_aVF": "T-wave inversion"}),
    ("t aVF -0.2, QRS negative", {"T_Amp_aVF": -0.2, "R_Amp_aVF": 0.2, "Q_Amp_aVF": 0.0, "S_Amp_aVF": -0.5},
     "male", 50, {}),
    ("t V4 NaN", {"T_Amp_V4": NAN}, "male", 50, {}),
    # --- several findings in one ECG, each phrase once per lead
    ("anterior MI pattern V2", {"Q_Dur_V2": 40.0, "Q_Amp_V2": -0.2, "R_Amp_V2": 0.5, "ST_Amp_V2": 0.3,
                                "T_Amp_V2": -0.2}, "male", 50,
     {"lead_V2": "pathological Q wave, ST elevation, T-wave inversion"}),
    ("brady + 1AVB + long QT", {"HR__Global": 50.0, **SINUS_P, "PR_Int_Global": 240.0,
                                "QT_IntFramingham_Global": 480.0}, "female", 60,
     {"general": "sinus bradycardia, first-degree AV block, prolonged QT interval"}),
]


def _case_frames(cases):
    columns = sorted({c for _, feats, *_ in cases for c in feats})
    rows = []
    for i, (_, feats, _, _, _) in enumerate(cases):
        rows.append({"ecg_id": 1000 + i, **{c: feats.get(c) for c in columns}})
    features = pl.DataFrame(rows, schema={"ecg_id": pl.Int64, **{c: pl.Float64 for c in columns}}, strict=False)
    patients = pl.DataFrame(
        {
            "ecg_id": [1000 + i for i in range(len(cases))],
            "sex": [c[2] for c in cases],
            "age": [c[3] for c in cases],
        },
        schema={"ecg_id": pl.Int32, "sex": pl.String, "age": pl.Int16},
    )
    return features, patients


def test_case_table_is_large_enough():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES), "case names are unique"


@pytest.fixture(scope="module")
def case_results() -> dict[int, dict]:
    features, patients = _case_frames(CASES)
    out = describe(features, patients, GUIDELINES)
    assert out.schema == pl.Schema(OUTPUT_SCHEMA)
    return {row["ecg_id"]: row for row in out.iter_rows(named=True)}


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_guideline_case(case_results, index):
    name, _, _, _, expected = CASES[index]
    row = case_results[1000 + index]
    for col in ("general", *LEAD_COLUMNS_OUT):
        assert row[col] == expected.get(col), f"{name}: {col}"
    # a finding that needs two contiguous leads (ST elevation, ST depression) is a finding only where the
    # general text states it; each lead's text says what that lead shows
    want = {PHRASE_FINDING[p] for col, phrase in expected.items() for p in phrase.split(", ")
            if col == "general" or PHRASE_FINDING[p] not in CONTIGUOUS_FINDINGS}
    assert set(row["findings"]) == want, name
    assert len(row["findings"]) == len(set(row["findings"])), "each finding once"


def test_findings_follow_rule_order():
    features = pl.DataFrame({"ecg_id": [7], "ST_Amp_V5": [0.3], "T_Amp_V5": [-0.3], "ST_Amp_V2": [0.3],
                             "T_Amp_I": [-0.6]})
    patients = pl.DataFrame({"ecg_id": [7], "sex": ["male"], "age": [60]})
    row = describe(features, patients, GUIDELINES).row(0, named=True)
    assert row["findings"] == ["st_elevation", "t_inversion", "deep_t_inversion"]
    assert row["lead_V5"] == "ST elevation, T-wave inversion"
    assert row["lead_I"] == "deep T-wave inversion"


def test_age_over_89_counts_as_older_than_40():
    features = pl.DataFrame({"ecg_id": [1, 2], "ST_Amp_V2": [0.2, 0.2]})
    patients = pl.DataFrame(
        {"ecg_id": [1, 2], "sex": ["male", "male"], "age": [None, None], "age_over_89": [True, False]},
        schema={"ecg_id": pl.Int32, "sex": pl.String, "age": pl.Int16, "age_over_89": pl.Boolean},
    )
    out = describe(features, patients, GUIDELINES)
    assert out["lead_V2"].to_list() == ["ST elevation", None]


def test_feature_row_without_patient_row_is_described_with_sex_unknown():
    features = pl.DataFrame({"ecg_id": [5, 6], "QT_IntFramingham_Global": [455.0, 470.0]})
    patients = pl.DataFrame({"ecg_id": [99], "sex": ["male"], "age": [50]})
    out = describe(features, patients, GUIDELINES)
    assert out["general"].to_list() == [None, "prolonged QT interval"]


def test_bad_sex_value_is_an_error():
    features = pl.DataFrame({"ecg_id": [1], "HR__Global": [70.0]})
    patients = pl.DataFrame({"ecg_id": [1], "sex": ["m"], "age": [50]})
    with pytest.raises(StageError, match="sex must be 'male', 'female' or null"):
        describe(features, patients, GUIDELINES)


def test_missing_column_is_reported_and_its_rules_skipped(caplog):
    features = pl.DataFrame({"ecg_id": [1], "HR__Global": [120.0], "P_Amp_II": [0.1]})
    patients = pl.DataFrame({"ecg_id": [1], "sex": ["male"], "age": [50]})
    with caplog.at_level(logging.WARNING, logger="ecglm.text.describe"):
        out = describe(features, patients, GUIDELINES, source="feat.csv")
    assert out["general"].to_list() == ["sinus tachycardia"]
    text = caplog.text
    assert "feat.csv" in text and "QRS_Dur_Global" in text and "qrs_duration" in text
    assert "st_elevation (I, II, III, aVR, aVL, aVF, V1, V4, V5, V6)" in text


def test_no_duplicate_feature_rows():
    features = pl.DataFrame({"ecg_id": [1, 1], "HR__Global": [70.0, 80.0]})
    patients = pl.DataFrame({"ecg_id": [1], "sex": ["male"], "age": [50]})
    with pytest.raises(StageError, match="ecg_id 1 has more than one feature row"):
        describe(features, patients, GUIDELINES)


def test_engine_matches_row_by_row_reference():
    """The vectorised engine and bench/describe.py's iterrows implementation agree on random tables."""
    spec = importlib.util.spec_from_file_location("bench_describe", Path(__file__).parent.parent / "bench" / "describe.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    features = bench.make_features(600, seed=3, null_fraction=0.1)
    patients = bench.make_patients(features["ecg_id"].to_numpy(), seed=3)
    fast = describe(features, patients, GUIDELINES)
    ref = bench.reference_describe(features.to_pandas(), patients.to_pandas(), GUIDELINES)
    assert bench.compare(fast, ref) == []
    assert fast["findings"].explode().drop_nulls().n_unique() >= 15, "the random table exercises most rules"


# ------------------------------------------------------------------------------------ the CLI and files


def _write_records(path: Path, ids, sex, age) -> Path:
    pl.DataFrame(
        {"ecg_id": ids, "sex": sex, "age": age, "age_over_89": [False] * len(ids)},
        schema={"ecg_id": pl.Int32, "sex": pl.String, "age": pl.Int16, "age_over_89": pl.Boolean},
    ).write_parquet(path)
    return path


def _write_ptbxl_plus_like_csv(path: Path) -> Path:
    """A 12SL-like CSV: ecg_id mid-table, rows unsorted, extra columns, empty cells."""
    header = ["P_Area_I", "HR__Global", "QRS_Area_V1", "ecg_id", "P_Amp_II", "QT_IntFramingham_Global",
              "ST_Amp_V2", "T_Amp_V4", "P_On_Global"]
    rows = [
        ["0.4", "52.0", "1.0", "30", "0.11", "470", "0.16", "-0.2", "12"],   # female: brady, long QT, STE V2, TWI V4
        ["0.3", "72", "", "10", "0.10", "", "", "", "9"],                     # sinus rhythm, the rest empty
        ["", "110.5", "2.0", "20", "0.09", "445", "0.16", "0.1", ""],         # male 30: tachy; QTc, STE below his limits
    ]
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_cli_unsorted_csv_with_mid_table_id_and_missing_records(tmp_path, caplog):
    feats = _write_ptbxl_plus_like_csv(tmp_path / "12sl_features.csv")
    records = _write_records(tmp_path / "records.parquet", [10, 20, 30, 40], ["male", "male", "female", None],
                             [50, 30, 60, None])
    out = tmp_path / "text" / "findings.parquet"
    with caplog.at_level(logging.WARNING):
        rc = ecglm_main(["describe", "--features", str(feats), "--records", str(records), "--out", str(out)])
    assert rc == 0
    df = pl.read_parquet(out)
    assert df.schema == pl.Schema(OUTPUT_SCHEMA)
    assert df["ecg_id"].to_list() == [10, 20, 30, 40], "records order, no record dropped"
    rows = {r["ecg_id"]: r for r in df.iter_rows(named=True)}
    assert rows[10]["general"] == "sinus rhythm"
    assert rows[20]["general"] == "sinus tachycardia" and rows[20]["lead_V2"] is None
    assert rows[30]["general"] == "sinus bradycardia, prolonged QT interval"
    assert rows[30]["lead_V2"] == "ST elevation" and rows[30]["lead_V4"] == "T-wave inversion"
    assert all(v is None for k, v in rows[40].items() if k != "ecg_id"), "no feature row: all null"
    missing = pl.read_csv(missing_features_path(out))
    assert missing["ecg_id"].to_list() == [40]
    assert "no feature row" in missing["reason"][0]
    assert "1 record(s) have no feature row" in caplog.text
    assert "QRS_Dur_Global" in caplog.text, "missing columns are reported"
    assert not list(out.parent.glob(".*.tmp")), "no temporary files left"


def test_cli_parquet_and_second_table_fill_gaps(tmp_path):
    first = pl.DataFrame({"HR__Global": [75.0, None], "ecg_id": [2, 1], "P_Amp_II": [0.1, 0.1]})
    second = pl.DataFrame({"ecg_id": [1, 3], "HR__Global": [40.0, 130.0], "P_Amp_II": [0.1, 0.1],
                           "RR_Mean_Global": [1500.0, 460.0], "RR_SDNN_Global": [20.0, 10.0]})
    first.write_parquet(tmp_path / "a.parquet")
    second.write_parquet(tmp_path / "b.parquet")
    records = _write_records(tmp_path / "records.parquet", [1, 2, 3], ["male"] * 3, [50] * 3)
    out = tmp_path / "findings.parquet"
    rc = ecglm_main(["describe", "--features", str(tmp_path / "a.parquet"), "--features", str(tmp_path / "b.parquet"),
                     "--records", str(records), "--out", str(out)])
    assert rc == 0
    df = pl.read_parquet(out)
    assert df["general"].to_list() == ["sinus bradycardia", "sinus rhythm", "sinus tachycardia"]
    assert pl.read_csv(missing_features_path(out)).height == 0


def test_unit_check_names_the_column(tmp_path):
    # heart rate written in Hz, amplitudes in microvolts: both clearly wrong units
    pl.DataFrame({"ecg_id": list(range(10)), "HR__Global": [1.2] * 10}).write_csv(tmp_path / "hz.csv")
    with pytest.raises(StageError, match=r"hz\.csv: column HR__Global does not look like bpm"):
        read_feature_table(tmp_path / "hz.csv")
    pl.DataFrame({"ecg_id": list(range(10)), "R_Amp_V5": [1200.0] * 10}).write_csv(tmp_path / "uv.csv")
    with pytest.raises(StageError, match="column R_Amp_V5 does not look like mV"):
        read_feature_table(tmp_path / "uv.csv")
    pl.DataFrame({"ecg_id": list(range(10)), "QRS_Dur_Global": [0.09] * 10}).write_csv(tmp_path / "s.csv")
    with pytest.raises(StageError, match="column QRS_Dur_Global does not look like ms"):
        read_feature_table(tmp_path / "s.csv")


def test_feature_table_errors(tmp_path):
    (tmp_path / "noid.csv").write_text("HR__Global\n70\n", encoding="utf-8")
    with pytest.raises(StageError, match="no 'ecg_id' column"):
        read_feature_table(tmp_path / "noid.csv")
    (tmp_path / "text.csv").write_text("ecg_id,HR__Global\n1,70\n2,fast\n", encoding="utf-8")
    with pytest.raises(StageError, match=r"column HR__Global holds 'fast' \(ecg_id 2\)"):
        read_feature_table(tmp_path / "text.csv")
    (tmp_path / "dup.csv").write_text("ecg_id,HR__Global\n1,70\n1.0,71\n", encoding="utf-8")
    with pytest.raises(StageError, match="ecg_id 1 has more than one row"):
        read_feature_table(tmp_path / "dup.csv")
    with pytest.raises(StageError, match=r"\.csv or \.parquet"):
        (tmp_path / "f.txt").write_text("x", encoding="utf-8")
        read_feature_table(tmp_path / "f.txt")


def test_cli_error_is_one_line(tmp_path, capsys):
    records = _write_records(tmp_path / "records.parquet", [1], ["male"], [50])
    rc = ecglm_main(["describe", "--features", str(tmp_path / "nope.csv"), "--records", str(records),
                     "--out", str(tmp_path / "f.parquet")])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ecglm describe: error:") and "nope.csv" in err[-1]
    assert not (tmp_path / "f.parquet").exists()


# ------------------------------------------------------------------------------------ guidelines.yaml


def test_default_guidelines_cover_the_required_findings():
    assert GUIDELINES.path == str(DEFAULT_GUIDELINES)
    findings = {lvl.finding for r in GUIDELINES.rules for lvl in r.levels()}
    findings |= {r.within.finding for r in GUIDELINES.rules if r.within}
    assert set(PHRASE_FINDING.values()) <= findings
    assert all(r.source for r in GUIDELINES.rules)


def _doc(**rule) -> dict:
    base = {"id": "r", "feature": "HR__Global", "leads": "global", "above": {"gt": 100, "finding": "f", "words": "w"},
            "source": "somewhere"}
    base.update(rule)
    return {"version": 1, "rules": [{k: v for k, v in base.items() if v is not None}]}


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"source": None}, r"rule 1 \(r\): no source given"),
        ({"source": "  "}, r"rule 1 \(r\): no source given"),
        ({"feature": "HR_Global"}, r"unknown feature 'HR_Global'"),
        ({"feature": "T_Ampl_{lead}", "leads": ["V1"]}, r"unknown feature 'T_Ampl_\{lead\}'"),
        ({"feature": "T_Amp_V1", "leads": ["V1"]}, r"must hold \{lead\}"),
        ({"feature": "T_Amp_{lead}"}, r"holds \{lead\} but the rule is global"),
        ({"feature": "T_Amp_{lead}", "leads": ["V7"]}, r"unknown lead or lead group 'V7'"),
        ({"leads": None}, r"no leads given"),
        ({"above": None}, r"says nothing"),
        ({"above": {"lt": 100, "finding": "f", "words": "w"}}, r"exactly one comparison among gt/ge"),
        ({"above": {"gt": 100, "finding": "f"}}, r"non-empty words"),
        ({"above": {"gt": {"male": 450}, "finding": "f", "words": "w"}}, r"exactly the keys male and female"),
        ({"above": {"gt": [{"sex": "male", "age_min": 40, "value": 0.2}, {"sex": "female", "value": 0.15}],
                    "finding": "f", "words": "w"}}, r"no threshold case for a male patient aged 0"),
        ({"above": [{"gt": 120, "finding": "a", "words": "a"}, {"gt": 110, "finding": "b", "words": "b"}]},
         r"mildest to most extreme"),
        ({"when": [{"feature": "P_Amp_II", "ge": 0.05, "lt": 1}]}, r"exactly one of lt/le/gt/ge"),
        ({"when": [{"feature": "P_Amp_X", "ge": 0.05}]}, r"unknown feature 'P_Amp_X'"),
        ({"colour": "red"}, r"unknown keys \['colour'\]"),
    ],
)
def test_invalid_rule_is_a_clear_error(rule, message):
    with pytest.raises(StageError, match=message):
        parse_guidelines(_doc(**rule), "g.yaml")


def test_duplicate_rule_id_and_bad_file(tmp_path):
    doc = _doc()
    doc["rules"].append(dict(doc["rules"][0]))
    with pytest.raises(StageError, match="rule id 'r' is used twice"):
        parse_guidelines(doc, "g.yaml")
    bad = tmp_path / "g.yaml"
    bad.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(StageError, match="not valid YAML"):
        load_guidelines(bad)


def test_cli_rejects_guidelines_without_source(tmp_path, capsys):
    g = tmp_path / "guidelines.yaml"
    g.write_text("rules:\n  - id: hr\n    feature: HR__Global\n    leads: global\n"
                 "    above: {gt: 100, finding: tachycardia, words: tachycardia}\n", encoding="utf-8")
    feats = tmp_path / "f.csv"
    feats.write_text("ecg_id,HR__Global\n1,70\n", encoding="utf-8")
    records = _write_records(tmp_path / "records.parquet", [1], ["male"], [50])
    rc = ecglm_main(["describe", "--features", str(feats), "--records", str(records),
                     "--out", str(tmp_path / "o.parquet"), "--guidelines", str(g)])
    assert rc == 1
    assert "rule 1 (hr): no source given" in capsys.readouterr().err


def test_age_dependent_threshold_partition_is_accepted():
    doc = _doc(above={"ge": [{"sex": "male", "age_min": 40, "value": 0.2}, {"sex": "male", "age_max": 39, "value": 0.25},
                             {"sex": "female", "value": 0.15}], "finding": "f", "words": "w"},
               feature="ST_Amp_{lead}", leads=["V2", "V3"])
    rule = parse_guidelines(doc, "g.yaml").rules[0]
    assert rule.leads == ("V2", "V3")
    assert rule.above[0].threshold.value_for("male", 39) == 0.25
    assert rule.above[0].threshold.value_for("male", 40) == 0.2


def test_findings_bench_counts_the_two_by_two_tables():
    # bench/findings.py: sensitivity / specificity of a finding against PTB-XL codes, NORM-only rates
    spec = importlib.util.spec_from_file_location("bench_findings", Path(__file__).parent.parent / "bench" / "findings.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = pl.DataFrame({
        "ecg_id": [1, 2, 3, 4, 5],
        "codes": [["NORM", "SR"], ["NORM", "SR"], ["IMI", "SR"], ["LNGQT", "SR"], ["NORM", "AFIB"]],
        "superclasses": [["NORM"], ["NORM"], ["MI"], ["STTC"], ["NORM"]],
        "heart_axis": ["", "LAD", "", "", ""],
    })  # fmt: skip
    findings = pl.DataFrame({
        "ecg_id": [1, 2, 3, 4, 5],
        "findings": [["sinus_rhythm", "short_qt"], ["left_axis_deviation"], ["st_elevation"], ["long_qt"], []],
    })  # fmt: skip
    rates, comps = bench.agreement(table, findings)
    rate = {r["finding"]: (r["norm_k"], r["norm_n"]) for r in rates}
    assert rate["short_qt"] == (1, 3) and rate["st_elevation"] == (0, 3) and rate["left_axis_deviation"] == (1, 3)
    two_by_two = {(c["finding"], c["label"]): (c["tp"], c["fn"], c["fp"], c["tn"]) for c in comps}
    assert two_by_two[("sinus_rhythm", "SR")] == (1, 3, 0, 1)
    assert two_by_two[("long_qt", "LNGQT")] == (1, 0, 0, 4)
    assert two_by_two[("st_elevation", "STE_/MI")] == (1, 0, 0, 4)
    assert two_by_two[("left_axis_deviation", "axis LAD/ALAD")] == (1, 0, 0, 4)
    assert two_by_two[("atrial_fibrillation", "AFIB")] == (0, 1, 0, 4)
    lo, hi = bench.wilson(1, 3)
    assert 0.0 < lo < 1 / 3 < hi < 1.0
    assert all(math.isnan(v) for v in bench.wilson(0, 0))  # no interval without records


# ---------------------------------------------------------------------------- issue 21: contiguous leads


def _st_doc(contiguous, groups=None, second=None) -> dict:
    rule = {"id": "ste", "feature": "ST_Amp_{lead}", "leads": ["V1", "V2", "V3", "II", "aVF"],
            "above": {"ge": 0.1, "finding": "st_elevation", "words": "ST elevation"}, "contiguous": contiguous,
            "source": "Thygesen 2018"}
    doc = {"version": 1, "lead_groups": groups or {"anterior": ["V1", "V2", "V3"], "inferior": ["II", "aVF"]},
           "rules": [rule]}
    if second is not None:
        doc["rules"].append(second)
    return doc


@pytest.mark.parametrize(
    "contiguous, second, message",
    [
        ({"leads": 1, "groups": ["anterior"]}, None, "contiguous leads must be a whole number of at least 2"),
        ({"leads": 2, "groups": ["septal"]}, None, "contiguous group 'septal' is not a lead group"),
        ({"leads": 3, "groups": ["inferior"]}, None, "contiguous group 'inferior' has fewer than 3 leads"),
        ({"leads": 2}, None, "contiguous must be a mapping with leads"),
        ({"leads": 2, "groups": ["anterior"]},
         {"id": "ste2", "feature": "ST_Amp_{lead}", "leads": ["V4"], "source": "s",
          "above": {"ge": 0.2, "finding": "st_elevation", "words": "ST elevation"}},
         "rules 'ste' and 'ste2' both write finding 'st_elevation', which needs contiguous leads"),
    ],
)
def test_contiguous_is_validated(contiguous, second, message):
    with pytest.raises(StageError, match=message):
        parse_guidelines(_st_doc(contiguous, second=second), "g.yaml")


def test_contiguous_on_a_global_rule_is_an_error():
    with pytest.raises(StageError, match="contiguous applies to per-lead rules only"):
        parse_guidelines({"version": 1, "lead_groups": {"g": ["I", "II"]}, "rules": [
            {"id": "r", "feature": "HR__Global", "leads": "global", "source": "s",
             "above": {"gt": 100, "finding": "f", "words": "w"}, "contiguous": {"leads": 2, "groups": ["g"]}}]},
            "g.yaml")


def test_contiguous_findings_need_two_leads_of_one_group_and_match_the_reference():
    # each lead says what it shows; the finding (and the general text) needs 2 leads of one group
    rules = parse_guidelines(_st_doc({"leads": 2, "groups": ["anterior", "inferior"]}), "g.yaml")
    features = pl.DataFrame({
        "ecg_id": [1, 2, 3, 4],
        "ST_Amp_V1": [0.15, 0.15, 0.0, None], "ST_Amp_V2": [0.0, 0.12, 0.0, 0.2], "ST_Amp_V3": [0.0, 0.0, 0.0, 0.2],
        "ST_Amp_II": [0.15, 0.0, 0.2, 0.0], "ST_Amp_aVF": [0.0, 0.0, 0.1, 0.0],
    })  # fmt: skip
    patients = pl.DataFrame({"ecg_id": [1, 2, 3, 4], "sex": ["male"] * 4, "age": [50] * 4})
    out = describe(features, patients, rules)
    assert out["findings"].to_list() == [[], ["st_elevation"], ["st_elevation"], ["st_elevation"]]
    assert out["general"].to_list() == [None, "ST elevation", "ST elevation", "ST elevation"]
    assert out["lead_V1"].to_list() == ["ST elevation", "ST elevation", None, None]
    assert out["lead_II"].to_list() == ["ST elevation", None, "ST elevation", None]
    spec = importlib.util.spec_from_file_location("bench_describe", Path(__file__).parent.parent / "bench" / "describe.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ref = bench.reference_describe(features.to_pandas(), patients.to_pandas(), rules)
    assert bench.compare(out, ref) == []


# ---------------------------------------------------------------------------- issue 21: the real sample


@pytest.fixture(scope="module")
def real_agreement(ptbxl_sample):
    """(NORM-only rates, 2x2 tables) of bench/findings.py on all 300 real sample records at 100 Hz (~5 s)."""
    spec = importlib.util.spec_from_file_location("bench_findings", Path(__file__).parent.parent / "bench" / "findings.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = bench.load_sample(ptbxl_sample, 100)
    features = bench.measure_sample(ptbxl_sample, table, 100, workers=1)
    findings = describe(features, table.select("ecg_id", "sex", "age", "age_over_89"), GUIDELINES)
    rates, comps = bench.agreement(table, findings)
    return {r["finding"]: r["norm_k"] / r["norm_n"] for r in rates}, comps, rates[0]["norm_n"]


RATE_AND_RHYTHM = {"sinus_rhythm", "sinus_bradycardia", "sinus_tachycardia", "sinus_arrhythmia"}


def test_real_norm_only_records_are_not_called_abnormal(real_agreement):
    # issue 21: among the real sample's NORM-only records no finding but rate/rhythm (and short QT and ST
    # elevation, held below) on more than 10%
    rate, _, n = real_agreement
    assert n >= 150, "the 300-record sample holds 182 NORM-only records"
    over = {f: r for f, r in rate.items() if f not in RATE_AND_RHYTHM | {"short_qt", "st_elevation"} and r > 0.10}
    assert not over, over
    # ST elevation: 28% before issue 21 (read at J + 60 ms, one lead enough), 10% with the J point on a
    # pause of the S wave's upstroke, 2.7% now (5 of 182). Short QT is still ~47% (the xfail below)
    assert rate["st_elevation"] <= 0.05


@pytest.mark.xfail(strict=True, reason="issue 21: short QT on ~47% of the NORM-only records (target 5%): the "
                                       "tangent-method T end runs early")
def test_real_norm_only_short_qt_target(real_agreement):
    assert real_agreement[0]["short_qt"] <= 0.05


def test_real_specificities_hold(real_agreement):
    # specificity against the PTB-XL statements must not fall below the figures measured before issue 21's
    # changes (bench/findings.py on main f903fed): ST elevation vs STE_/MI 66%, ST depression vs STD_/NST_ 87%,
    # long QT vs LNGQT 95.6% (285/298)
    _, comps, _ = real_agreement
    spec = {(c["finding"], c["label"]): c["tn"] / (c["tn"] + c["fp"]) for c in comps}
    # ST elevation vs STE_/MI: 66% at f903fed, 87.5% before the J point left the S wave's upstroke
    assert spec[("st_elevation", "STE_/MI")] >= 0.92
    assert spec[("st_depression", "STD_/NST_")] >= 0.867
    assert spec[("long_qt", "LNGQT")] >= 285 / 298 - 1e-9
