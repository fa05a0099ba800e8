"""An ECG-QA 1.0.2 look-alike over the demo world's records (``ecg-qa/ptbxl/``).

Layout and formats of the real dataset: ``{paraphrased,template}/{train,valid,test}/NNNNN.json``
(JSON arrays of at most 10,000 samples, ``json.dumps(indent=4)``, named by their first sample_id,
ordered by template), ``answers.csv`` (``index,class``, 104 classes incl. ``none``),
``answers_for_each_template.csv``, ``{train,valid,test}_ecgs.tsv`` (``index<TAB>ecg_id``). Samples
carry template_id, question_id (shared by the paraphrases of one template question), sample_id,
question_type (the seven real types), attribute_type (scp_code, noise, stage_of_infarction,
extra_systole, heart_axis, numeric_feature), question, answer (always a list, ``["none"]`` when
empty), ecg_id (a list: one id, two for comparisons) and attribute (null for comparisons).

Answers are TRUE for the world: SCP codes from the written scp_codes, leads from where the
synthesiser put each finding, noise from the noise columns, numeric features from the measured
12SL-named features. The split is by patient at random (80/10/10), not by strat_fold, and ECG-QA's
ids are PTB-XL 1.0.1's: a few questions refer to the removed duplicates (ids missing from 1.0.3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecglm.core.atomic import write_text_atomic
from ecglm.core.leads import LEADS
from ecglm.data.demo.labels import CODE_CLASS, stream, superclasses_of

CHUNK = 10_000
SPLIT_SHARES = (("train", 0.8), ("valid", 0.1), ("test", 0.1))

#: ECG-QA's answer classes (answers.csv of ECG-QA 1.0.2, in its order).
ANSWER_CLASSES: tuple[str, ...] = (
    "no", "not sure", "yes", "conduction disturbance", "hypertrophy", "myocardial infarction", "none",
    "st/t change", "complete left bundle branch block", "complete right bundle branch block", "digitalis effect",
    "first degree av block", "incomplete left bundle branch block", "incomplete right bundle branch block",
    "ischemic in anterior leads", "ischemic in anterolateral leads", "ischemic in anteroseptal leads",
    "ischemic in inferior leads", "ischemic in inferolateral leads", "ischemic in lateral leads",
    "left anterior fascicular block", "left atrial overload/enlargement", "left posterior fascicular block",
    "left ventricular hypertrophy", "long qt-interval", "myocardial infarction in anterior leads",
    "myocardial infarction in anterolateral leads", "myocardial infarction in anteroseptal leads",
    "myocardial infarction in inferior leads", "myocardial infarction in inferolateral leads",
    "myocardial infarction in inferoposterior leads", "myocardial infarction in inferoposterolateral leads",
    "myocardial infarction in lateral leads", "myocardial infarction in posterior leads",
    "non-diagnostic t abnormalities", "non-specific intraventricular conduction disturbance (block)",
    "non-specific ischemic", "non-specific st changes", "right atrial overload/enlargement",
    "subendocardial injury in anterolateral leads", "subendocardial injury in anteroseptal leads",
    "subendocardial injury in inferior leads", "subendocardial injury in inferolateral leads",
    "subendocardial injury in lateral leads", "abnormal qrs", "atrial premature complex", "high qrs voltage",
    "inverted t-waves", "low amplitude t-wave", "low qrs voltages in the frontal and horizontal leads",
    "non-specific st depression", "non-specific st elevation", "non-specific t-wave changes",
    "prolonged pr interval", "q waves present", "t-wave abnormality", "ventricular premature complex",
    "voltage criteria (qrs) for left ventricular hypertrophy", "atrial fibrillation", "atrial flutter",
    "bigeminal pattern (unknown origin, supraventricular, or ventricular)", "normal functioning artificial pacemaker",
    "sinus arrhythmia", "sinus bradycardia", "sinus rhythm", "sinus tachycardia", "supraventricular tachycardia",
    "lead I", "lead II", "lead III", "lead V1", "lead V2", "lead V3", "lead V4", "lead V5", "lead V6",
    "lead aVF", "lead aVL", "lead aVR", "extreme axis deviation", "left axis deviation", "normal heart axis",
    "right axis deviation", "early stage of myocardial infarction", "old stage of myocardial infarction",
    "middle stage of myocardial infarction", "none of myocardial infarction", "unknown stage of myocardial infarction",
    "baseline drift", "burst noise", "electrodes problems", "static noise", "extrasystoles",
    "supraventricular extrasystoles", "ventricular extrasystoles", "above the normal range", "below the normal range",
    "within the normal range", "p duration", "pr interval", "qrs duration", "qt corrected", "qt interval",
    "rr interval",
)

CODE_NAMES: dict[str, str] = {
    "NORM": "normal ecg", "IMI": "myocardial infarction in inferior leads",
    "ILMI": "myocardial infarction in inferolateral leads", "IPMI": "myocardial infarction in inferoposterior leads",
    "IPLMI": "myocardial infarction in inferoposterolateral leads", "ASMI": "myocardial infarction in anteroseptal leads",
    "AMI": "myocardial infarction in anterior leads", "ALMI": "myocardial infarction in anterolateral leads",
    "LMI": "myocardial infarction in lateral leads", "PMI": "myocardial infarction in posterior leads",
    "INJAS": "subendocardial injury in anteroseptal leads", "INJAL": "subendocardial injury in anterolateral leads",
    "INJIN": "subendocardial injury in inferior leads", "INJLA": "subendocardial injury in lateral leads",
    "INJIL": "subendocardial injury in inferolateral leads", "NDT": "non-diagnostic t abnormalities",
    "NST_": "non-specific st changes", "DIG": "digitalis effect", "LNGQT": "long qt-interval",
    "ISC_": "non-specific ischemic", "ISCAL": "ischemic in anterolateral leads", "ISCIN": "ischemic in inferior leads",
    "ISCIL": "ischemic in inferolateral leads", "ISCAS": "ischemic in anteroseptal leads",
    "ISCLA": "ischemic in lateral leads", "ISCAN": "ischemic in anterior leads",
    "LAFB": "left anterior fascicular block", "LPFB": "left posterior fascicular block", "1AVB": "first degree av block",
    "IVCD": "non-specific intraventricular conduction disturbance (block)",
    "IRBBB": "incomplete right bundle branch block", "ILBBB": "incomplete left bundle branch block",
    "CRBBB": "complete right bundle branch block", "CLBBB": "complete left bundle branch block",
    "LAO/LAE": "left atrial overload/enlargement", "RAO/RAE": "right atrial overload/enlargement",
    "LVH": "left ventricular hypertrophy", "RVH": "right ventricular hypertrophy", "SEHYP": "septal hypertrophy",
    "ABQRS": "abnormal qrs", "PVC": "ventricular premature complex", "STD_": "non-specific st depression",
    "VCLVH": "voltage criteria (qrs) for left ventricular hypertrophy", "QWAVE": "q waves present",
    "LOWT": "low amplitude t-wave", "NT_": "non-specific t-wave changes", "PAC": "atrial premature complex",
    "LPR": "prolonged pr interval", "INVT": "inverted t-waves",
    "LVOLT": "low qrs voltages in the frontal and horizontal leads", "HVOLT": "high qrs voltage",
    "TAB_": "t-wave abnormality", "STE_": "non-specific st elevation", "SR": "sinus rhythm",
    "AFIB": "atrial fibrillation", "STACH": "sinus tachycardia", "SBRAD": "sinus bradycardia", "SARRH": "sinus arrhythmia",
}
ANSWER_SET = frozenset(ANSWER_CLASSES)
SUPER_NAMES = {"MI": "myocardial infarction", "STTC": "st/t change", "CD": "conduction disturbance", "HYP": "hypertrophy"}
RHYTHM_CODES = ("SR", "AFIB", "STACH", "SBRAD", "SARRH")
FORM_CODES = ("ABQRS", "PVC", "STD_", "VCLVH", "QWAVE", "LOWT", "NT_", "PAC", "LPR", "INVT", "LVOLT", "HVOLT",
              "TAB_", "STE_", "NDT", "NST_", "DIG", "LNGQT")
LEAD_FORMS = ("NDT", "NST_", "DIG", "STD_", "QWAVE", "VCLVH")  # form codes asked per lead (findings)
AXIS_NAMES = {"MID": "normal heart axis", "LAD": "left axis deviation", "ALAD": "left axis deviation",
              "RAD": "right axis deviation", "ARAD": "right axis deviation", "AXR": "extreme axis deviation",
              "AXL": "extreme axis deviation"}
STAGE_NAMES = {"Stadium I": "early stage of myocardial infarction", "Stadium II": "middle stage of myocardial infarction",
               "Stadium II-III": "middle stage of myocardial infarction", "Stadium III": "old stage of myocardial infarction",
               "unknown": "unknown stage of myocardial infarction"}
NOISE_NAMES = ("baseline drift", "static noise", "burst noise", "electrodes problems")
EXTRA_NAMES = ("extrasystoles", "supraventricular extrasystoles", "ventricular extrasystoles")
#: numeric feature -> (12SL-named column, normal range low, high), in ms
NUMERIC = {"rr interval": ("RR_Mean_Global", 600.0, 1000.0), "p duration": ("P_Dur_Global", 60.0, 120.0),
           "pr interval": ("PR_Int_Global", 120.0, 200.0), "qrs duration": ("QRS_Dur_Global", 60.0, 110.0),
           "qt interval": ("QT_Int_Global", 300.0, 450.0), "qt corrected": ("QT_IntBazett_Global", 350.0, 450.0)}
LEVELS = ("below", "within", "above")


@dataclass
class EcgFacts:
    """What the questions about one ECG may ask, all true for the world."""

    ecg_id: int
    patient_id: int
    recording_date: str
    codes: dict[str, float]
    heart_axis: str = ""
    stadium: str = ""
    noise: dict[str, list[str]] = field(default_factory=dict)  # noise name -> leads ("lead V1")
    extra: list[str] = field(default_factory=list)
    numeric: dict[str, str] = field(default_factory=dict)  # feature -> "below"/"within"/"above"
    lead_findings: dict[str, list[str]] = field(default_factory=dict)  # code -> leads (LEADS spelling)

    def code_names(self, pool: tuple[str, ...] | None = None) -> list[str]:
        return [CODE_NAMES[c] for c in self.codes if c in CODE_NAMES and c != "NORM" and (pool is None or c in pool)]


def noise_leads(text: str) -> list[str]:
    """Leads named by a PTB-XL noise cell (`` , I-AVF,  ``, ``V1,V2``, ``alles``) as ``lead X`` names."""
    upper = [ld.upper() for ld in LEADS]
    out: list[str] = []
    for token in (t.strip().upper() for t in text.replace(" ", "").split(",")):
        if not token:
            continue
        if token in ("ALLES", "LEICHT", "MITTEL", "STARK"):
            out = list(upper)
            break
        if "-" in token:
            a, b = token.split("-", 1)
            if a in upper and b in upper:
                out += upper[upper.index(a): upper.index(b) + 1]
        elif token in upper:
            out.append(token)
    return [f"lead {LEADS[upper.index(u)]}" for u in upper if u in out]


def numeric_levels(features: dict[str, float | None]) -> dict[str, str]:
    """Level of each ECG-QA numeric feature against its normal range (missing when not measured)."""
    out = {}
    for name, (col, lo, hi) in NUMERIC.items():
        v = features.get(col)
        if v is None or not np.isfinite(v):
            continue
        out[name] = "below" if v < lo else "above" if v > hi else "within"
    return out


# ---------------------------------------------------------------------------------------------
# Templates: (id, question_type, attribute_type, [template wording, paraphrases...], answer function)
# ---------------------------------------------------------------------------------------------

def _verify(present: bool) -> list[str]:
    return ["yes" if present else "no"]


def _listed(items: list[str]) -> list[str]:
    return items or ["none"]


@dataclass
class Template:
    tid: int
    qtype: str
    atype: str
    wordings: tuple[str, ...]  # [0] is the template wording; the rest are paraphrases


TEMPLATES: dict[int, Template] = {t.tid: t for t in (
    Template(1, "single-verify", "scp_code", ("Does this ECG show symptoms of {a}?", "Is there evidence of {a} on this ECG?",
                                              "Does this ECG indicate {a}?", "Are there signs of {a} in this ECG?")),
    Template(2, "single-verify", "scp_code", ("Is this a normal ECG?", "Does this ECG look normal?", "Is this ECG within normal limits?")),
    Template(3, "single-query", "scp_code", ("What diagnostic symptoms does this ECG show?", "Which diagnostic findings are present in this ECG?",
                                             "What kinds of diagnostic abnormalities can be seen on this ECG?")),
    Template(4, "single-query", "scp_code", ("What diagnostic symptoms related to {a} does this ECG show?",
                                             "Which {a} findings does this ECG present?",
                                             "What specific {a} symptoms can be found in this ECG?")),
    Template(6, "single-query", "scp_code", ("What form-related symptoms does this ECG show?", "Which form abnormalities are present in this ECG?",
                                             "What findings about the waveform shape does this ECG show?")),
    Template(7, "single-query", "scp_code", ("What rhythm-related symptoms does this ECG show?", "Which rhythm does this ECG present?",
                                             "What kind of rhythm can be seen in this ECG?")),
    Template(8, "single-choose", "scp_code", ("Which diagnostic symptom does this ECG show, {a} or {b}?",
                                              "Does this ECG show {a} or {b}?", "Which one is present in this ECG: {a} or {b}?")),
    Template(10, "single-choose", "scp_code", ("Which rhythm does this ECG show, {a} or {b}?", "Is the rhythm of this ECG {a} or {b}?",
                                               "Which rhythm is present in this ECG: {a} or {b}?")),
    Template(11, "single-choose", "scp_code", ("Which form-related symptom does this ECG show, {a} or {b}?",
                                               "Does this ECG present {a} or {b}?", "Which form finding is in this ECG: {a} or {b}?")),
    Template(12, "single-verify", "scp_code", ("Does this ECG show {a} in {lead}?", "Is there {a} in {lead} of this ECG?",
                                               "Can {a} be seen in {lead} on this ECG?")),
    Template(19, "single-query", "scp_code", ("In which leads does this ECG show {a}?", "Which leads of this ECG present {a}?",
                                              "Where in this ECG can {a} be seen?")),
    Template(20, "single-verify", "heart_axis", ("Does this ECG show {a}?", "Is there {a} in this ECG?", "Does the heart axis of this ECG show {a}?")),
    Template(21, "single-query", "heart_axis", ("What direction is this ECG deviated to?", "What is the heart axis of this ECG?",
                                                "Which way is the electrical axis of this ECG deviated?")),
    Template(22, "single-choose", "heart_axis", ("Which direction is this ECG deviated to, {a} or {b}?",
                                                 "Does this ECG show {a} or {b}?", "Is the axis of this ECG {a} or {b}?")),
    Template(23, "single-verify", "stage_of_infarction", ("Does this ECG show {a}?", "Is this ECG consistent with {a}?",
                                                          "Does this ECG indicate {a}?")),
    Template(25, "single-query", "stage_of_infarction", ("What stage of myocardial infarction does this ECG show?",
                                                         "Which stage of infarction is seen in this ECG?",
                                                         "At what stage is the myocardial infarction in this ECG?")),
    Template(26, "single-verify", "noise", ("Does this ECG show {a} in {lead}?", "Is {a} present in {lead} based on the ECG?",
                                            "Does the ECG reveal any {a} in {lead}?")),
    Template(27, "single-verify", "noise", ("Does this ECG show {a}?", "Is there any indication of {a} on this ECG?",
                                            "Is this ECG reading being affected by any {a}?")),
    Template(30, "single-query", "noise", ("What kind of noises does this ECG show?", "Which types of noise are present in this ECG?",
                                           "What noise affects this ECG?")),
    Template(32, "single-choose", "noise", ("Which noise does this ECG show, {a} or {b}?", "Does this ECG show {a} or {b}?",
                                            "Which is present in this ECG, {a} or {b}?")),
    Template(34, "single-query", "noise", ("In which leads does this ECG show {a}?", "Which leads of this ECG are affected by {a}?",
                                           "Where in this ECG is there {a}?")),
    Template(35, "single-verify", "extra_systole", ("Does this ECG show {a}?", "Are there {a} in this ECG?", "Does this ECG contain {a}?")),
    Template(37, "single-query", "extra_systole", ("What kind of extra systoles does this ECG show?",
                                                   "Which extra systoles are present in this ECG?", "What type of extra beats does this ECG have?")),
    Template(39, "single-verify", "numeric_feature", ("Does the {a} of this ECG fall {level} the normal range?",
                                                      "Is the {a} of this ECG {level} the normal range?",
                                                      "Does this ECG have a {a} {level} the normal range?")),
    Template(40, "single-query", "numeric_feature", ("Where does the {a} of this ECG fall relative to the normal range?",
                                                     "How does the {a} of this ECG compare to the normal range?",
                                                     "Is the {a} of this ECG below, within or above the normal range?")),
    Template(42, "single-query", "numeric_feature", ("What numeric features of this ECG fall outside the normal range?",
                                                     "Which measurements of this ECG are abnormal?",
                                                     "What numeric values of this ECG are out of the normal range?")),
    Template(43, "comparison_consecutive-verify", "scp_code", ("Does this ECG newly show symptoms of {a} compared to the previous ECG?",
                                                               "Compared to the previous ECG, does {a} newly appear in this ECG?",
                                                               "Is {a} new in this ECG as compared to the previous one?")),
    Template(47, "comparison_consecutive-query", "scp_code", ("What symptoms newly appear in this ECG compared to the previous ECG?",
                                                              "Which findings are new in this ECG as compared to the previous ECG?",
                                                              "What new symptoms does this ECG show relative to the previous ECG?")),
    Template(48, "comparison_consecutive-query", "scp_code", ("What symptoms of the previous ECG disappeared in this ECG?",
                                                              "Which findings of the previous ECG are no longer present in this ECG?",
                                                              "What symptoms have resolved in this ECG compared to the previous ECG?")),
    Template(54, "comparison_consecutive-query", "numeric_feature", (
        "What numeric features of this ECG now have become normal as compared to the previous ECG?",
        "Which numeric measurements of this ECG have returned to normal compared to the previous ECG?",
        "Which numerical features in this ECG are now normal in contrast to the previous ECG?")),
    Template(57, "comparison_irrelevant-verify", "scp_code", ("Do both ECGs show symptoms of {a}?", "Is {a} present in both ECGs?",
                                                              "Do the two ECGs both indicate {a}?")),
    Template(61, "comparison_irrelevant-query", "scp_code", ("What symptoms do both ECGs share?", "Which findings are common to both ECGs?",
                                                             "What symptoms are shown in both of the ECGs?")),
    Template(68, "comparison_irrelevant-query", "numeric_feature", (
        "What numeric features of the second ECG now have become normal as compared to the first ECG?",
        "Which numerical features in the second ECG have returned to a normal state in comparison to the first ECG?",
        "Which numeric features of the second ECG have now become typical in contrast to the first ECG?")),
    Template(69, "comparison_irrelevant-query", "numeric_feature", (
        "What numeric features of the second ECG are now considered abnormal values as compared to the first ECG?",
        "Which numeric measurements in the second ECG are newly considered abnormal values compared to the first ECG?",
        "Which numerical features of the second ECG are considered unusual in contrast to the first ECG?")),
    Template(70, "comparison_irrelevant-query", "numeric_feature", (
        "What numeric features of the second ECG are still abnormal as compared to the first ECG?",
        "Which numerical features of the second ECG remain irregular compared to the first ECG?",
        "Which numeric features are abnormal in both the first and the second ECG?")),
)}


def template_classes() -> dict[int, list[str]]:
    """answers_for_each_template.csv: the sorted answer options of each template."""
    diag = sorted(n for c, n in CODE_NAMES.items() if c not in RHYTHM_CODES + FORM_CODES + ("NORM",)
                  or c in ("NDT", "NST_", "DIG", "LNGQT"))
    form = sorted(CODE_NAMES[c] for c in FORM_CODES)
    rhythm = sorted(CODE_NAMES[c] for c in RHYTHM_CODES)
    leads = sorted(f"lead {ld}" for ld in LEADS)
    axes = sorted(set(AXIS_NAMES.values()))
    stages = sorted(set(STAGE_NAMES.values()) | {"none of myocardial infarction"})
    noises = sorted(NOISE_NAMES)
    numeric = sorted(NUMERIC)
    every = sorted(set(diag) | set(form) | set(rhythm))
    yn = ["no", "yes"]
    table = {
        1: ["no", "not sure", "yes"], 2: yn, 3: sorted(set(SUPER_NAMES.values()) | {"none"}), 4: diag + ["none"],
        6: form + ["none"], 7: rhythm + ["none"], 8: diag + ["none"], 10: rhythm + ["none"], 11: form + ["none"],
        12: yn, 19: leads + ["none"], 20: yn, 21: axes + ["none"], 22: axes, 23: yn, 25: stages, 26: yn, 27: yn,
        30: noises + ["none"], 32: noises + ["none"], 34: leads + ["none"], 35: yn,
        37: sorted(EXTRA_NAMES) + ["none"], 39: yn, 40: sorted(f"{lv} the normal range" for lv in LEVELS) + ["none"],
        42: numeric + ["none"], 43: yn, 47: every + ["none"], 48: every + ["none"], 54: numeric + ["none"], 57: yn,
        61: every + ["none"], 68: numeric + ["none"], 69: numeric + ["none"], 70: numeric + ["none"],
    }
    return {tid: [c for c in classes if c in ANSWER_SET] for tid, classes in table.items()}


class _Builder:
    """Collects the samples of one split, template by template (question ids shared across splits)."""

    def __init__(self, rng: np.random.Generator, qids: dict[tuple[int, str], int]):
        self.rng = rng
        self.qids = qids
        self.samples: list[tuple[dict, dict]] = []  # (paraphrased, template) versions

    def add(self, tid: int, ecg_ids: list[int], answer: list[str], attribute: list[str] | None, **slots: str) -> None:
        """One sample; answers outside ECG-QA's 104 classes are dropped (``["none"]`` if none is left)."""
        t = TEMPLATES[tid]
        answer = [a for a in answer if a in ANSWER_SET] or ["none"]
        template_q = t.wordings[0].format(**slots)
        qid = self.qids.setdefault((tid, template_q), len(self.qids))
        para_q = t.wordings[int(self.rng.integers(len(t.wordings)))].format(**slots)
        para_answer = list(answer)
        self.rng.shuffle(para_answer)
        base = {"template_id": tid, "question_id": qid, "sample_id": 0, "question_type": t.qtype,
                "attribute_type": t.atype}
        if attribute is None and t.qtype.startswith("single"):
            attribute = sorted(answer)  # single questions always name their attribute(s); comparisons: null
        tail = {"ecg_id": ecg_ids, "attribute": attribute}
        self.samples.append(({**base, "question": para_q, "answer": para_answer, **tail},
                             {**base, "question": template_q, "answer": sorted(answer), **tail}))


def _single(b: _Builder, facts: list[EcgFacts], per_template: int) -> None:
    rng = b.rng

    def ecgs(pred=lambda f: True, k: int = per_template) -> list[EcgFacts]:
        pool = [f for f in facts if pred(f)]
        if not pool:
            return []
        idx = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
        return [pool[i] for i in sorted(idx)]

    all_codes = [c for c in CODE_NAMES if c != "NORM" and CODE_NAMES[c] in ANSWER_SET]
    for f in ecgs():  # 1: verify a code, half of them present
        present = [c for c in f.codes if c in CODE_NAMES and c != "NORM"]
        code = str(rng.choice(present)) if present and rng.random() < 0.5 else str(rng.choice(all_codes))
        lik = f.codes.get(code)
        ans = "no" if lik is None else ("not sure" if code in CODE_NAMES and lik in (15.0, 35.0) else "yes")
        b.add(1, [f.ecg_id], [ans], [CODE_NAMES[code]], a=CODE_NAMES[code])
    for f in ecgs():
        b.add(2, [f.ecg_id], _verify("NORM" in f.codes), ["normal ecg"])
    for f in ecgs():
        supers = sorted({SUPER_NAMES[s] for s in superclasses_of(f.codes) if s in SUPER_NAMES})
        b.add(3, [f.ecg_id], _listed(supers), sorted(supers) or None)
    for f in ecgs(lambda f: any(s in SUPER_NAMES for s in superclasses_of(f.codes))):
        sc = str(rng.choice([s for s in superclasses_of(f.codes) if s in SUPER_NAMES]))
        names = [CODE_NAMES[c] for c in f.codes if CODE_CLASS.get(c) == sc and c in CODE_NAMES]
        b.add(4, [f.ecg_id], _listed(names), names or None, a=SUPER_NAMES[sc])
    for f in ecgs():
        names = f.code_names(FORM_CODES)
        b.add(6, [f.ecg_id], _listed(names), names or None)
    for f in ecgs():
        names = f.code_names(RHYTHM_CODES)
        b.add(7, [f.ecg_id], _listed(names), names or None)
    askable = lambda codes: tuple(c for c in codes if CODE_NAMES[c] in ANSWER_SET)  # noqa: E731
    for tid, pool in ((8, tuple(c for c in all_codes if CODE_CLASS.get(c) in SUPER_NAMES)), (10, askable(RHYTHM_CODES)),
                      (11, askable(FORM_CODES))):
        for f in ecgs():
            present = [c for c in f.codes if c in pool]
            a = str(rng.choice(present)) if present and rng.random() < 0.7 else str(rng.choice(pool))
            bb = str(rng.choice([c for c in pool if c != a]))
            pair = [a, bb] if rng.random() < 0.5 else [bb, a]
            ans = [CODE_NAMES[c] for c in pair if c in f.codes]
            b.add(tid, [f.ecg_id], _listed(ans), [CODE_NAMES[c] for c in pair], a=CODE_NAMES[pair[0]], b=CODE_NAMES[pair[1]])
    lead_pool = lambda f: [c for c in LEAD_FORMS if c in f.codes and f.lead_findings.get(c)]  # noqa: E731
    for f in ecgs(lambda f: bool(lead_pool(f))):
        code = str(rng.choice(lead_pool(f)))
        lead = str(rng.choice(LEADS))
        b.add(12, [f.ecg_id], _verify(lead in f.lead_findings[code]), [CODE_NAMES[code]], a=CODE_NAMES[code], lead=f"lead {lead}")
        b.add(19, [f.ecg_id], _listed([f"lead {ld}" for ld in f.lead_findings[code]]), [CODE_NAMES[code]], a=CODE_NAMES[code])
    axis_names = sorted(set(AXIS_NAMES.values()))
    for f in ecgs(lambda f: f.heart_axis in AXIS_NAMES):
        name = AXIS_NAMES[f.heart_axis]
        asked = name if rng.random() < 0.5 else str(rng.choice(axis_names))
        b.add(20, [f.ecg_id], _verify(asked == name), [asked], a=asked)
        b.add(21, [f.ecg_id], [name], [name])
        other = str(rng.choice([n for n in axis_names if n != name]))
        pair = [name, other] if rng.random() < 0.5 else [other, name]
        b.add(22, [f.ecg_id], [name], pair, a=pair[0], b=pair[1])
    stage_names = sorted(set(STAGE_NAMES.values()) - {"unknown stage of myocardial infarction"})
    for f in ecgs(lambda f: f.stadium in STAGE_NAMES):
        name = STAGE_NAMES[f.stadium]
        asked = name if name in stage_names and rng.random() < 0.5 else str(rng.choice(stage_names))
        b.add(23, [f.ecg_id], _verify(asked == name), [asked], a=asked)
        b.add(25, [f.ecg_id], [name], [name])
    for f in ecgs(lambda f: not f.stadium, k=max(1, per_template // 4)):
        b.add(25, [f.ecg_id], ["none of myocardial infarction"], ["none of myocardial infarction"])
    for f in ecgs():
        noisy = [n for n in NOISE_NAMES if f.noise.get(n)]
        name = str(rng.choice(noisy)) if noisy and rng.random() < 0.6 else str(rng.choice(NOISE_NAMES))
        lead = str(rng.choice(f.noise[name])) if f.noise.get(name) and rng.random() < 0.6 else f"lead {rng.choice(LEADS)}"
        b.add(26, [f.ecg_id], _verify(lead in f.noise.get(name, [])), [name], a=name, lead=lead)
        b.add(27, [f.ecg_id], _verify(bool(f.noise.get(name))), [name], a=name)
        b.add(30, [f.ecg_id], _listed(sorted(noisy)), sorted(noisy) or None)
        other = str(rng.choice([n for n in NOISE_NAMES if n != name]))
        b.add(32, [f.ecg_id], _listed([n for n in (name, other) if f.noise.get(n)]), [name, other], a=name, b=other)
        if f.noise.get(name):
            b.add(34, [f.ecg_id], f.noise[name], [name], a=name)
    for f in ecgs():
        name = str(rng.choice(f.extra)) if f.extra and rng.random() < 0.6 else str(rng.choice(EXTRA_NAMES))
        b.add(35, [f.ecg_id], _verify(name in f.extra), [name], a=name)
        b.add(37, [f.ecg_id], _listed(sorted(f.extra)), sorted(f.extra) or None)
    for f in ecgs(lambda f: bool(f.numeric)):
        feat = str(rng.choice(sorted(f.numeric)))
        level = f.numeric[feat] if rng.random() < 0.5 else str(rng.choice(LEVELS))
        b.add(39, [f.ecg_id], _verify(level == f.numeric[feat]), [f"{level} the normal range"], a=feat, level=level)
        feat2 = str(rng.choice(sorted(NUMERIC)))
        lv = f.numeric.get(feat2)
        b.add(40, [f.ecg_id], [f"{lv} the normal range"] if lv else ["none"], [feat2], a=feat2)
        abnormal = sorted(k for k, v in f.numeric.items() if v != "within")
        b.add(42, [f.ecg_id], _listed(abnormal), abnormal or None)


def _comparisons(b: _Builder, facts: list[EcgFacts], per_template: int) -> None:
    rng = b.rng
    by_patient: dict[int, list[EcgFacts]] = {}
    for f in facts:
        by_patient.setdefault(f.patient_id, []).append(f)
    consecutive = []
    for recs in by_patient.values():
        recs = sorted(recs, key=lambda f: (f.recording_date, f.ecg_id))
        consecutive += [(recs[i], recs[i + 1]) for i in range(len(recs) - 1)]
    named = lambda f: set(f.code_names())  # noqa: E731
    abnormal = lambda f: {k for k, v in f.numeric.items() if v != "within"}  # noqa: E731
    if consecutive:
        idx = rng.choice(len(consecutive), size=min(per_template, len(consecutive)), replace=False)
        for i in sorted(idx):
            first, second = consecutive[i]
            new, gone = named(second) - named(first), named(first) - named(second)
            pool = sorted(named(first) | named(second)) or [CODE_NAMES["NDT"]]
            attr = str(rng.choice(pool))
            ids = [first.ecg_id, second.ecg_id]
            b.add(43, ids, _verify(attr in new), None, a=attr)
            b.add(47, ids, _listed(sorted(new)), None)
            b.add(48, ids, _listed(sorted(gone)), None)
            b.add(54, ids, _listed(sorted(abnormal(first) - abnormal(second) & set(second.numeric))), None)
    for _ in range(min(per_template, len(facts) // 2)):
        i, j = rng.choice(len(facts), size=2, replace=False)
        first, second = facts[int(i)], facts[int(j)]
        if first.patient_id == second.patient_id:
            continue
        ids = [first.ecg_id, second.ecg_id]
        pool = sorted(named(first) | named(second)) or [CODE_NAMES["NDT"]]
        attr = str(rng.choice(pool))
        b.add(57, ids, _verify(attr in named(first) and attr in named(second)), None, a=attr)
        b.add(61, ids, _listed(sorted(named(first) & named(second))), None)
        b.add(68, ids, _listed(sorted(abnormal(first) - abnormal(second) & set(second.numeric))), None)
        b.add(69, ids, _listed(sorted(abnormal(second) - abnormal(first) & set(first.numeric))), None)
        b.add(70, ids, _listed(sorted(abnormal(first) & abnormal(second))), None)


def split_patients(patient_ids: list[int], seed: int) -> dict[int, str]:
    """ECG-QA's split: patients shuffled at random, 80 / 10 / 10 % to train / valid / test."""
    unique = sorted(set(patient_ids))
    order = stream(seed, 50).permutation(len(unique))
    n_train = int(len(unique) * SPLIT_SHARES[0][1])
    n_valid = int(len(unique) * SPLIT_SHARES[1][1])
    out = {}
    for rank, i in enumerate(order):
        out[unique[i]] = "train" if rank < n_train else "valid" if rank < n_train + n_valid else "test"
    return out


def write_ecgqa(root: Path, facts: list[EcgFacts], seed: int, questions_per_ecg: float = 0.4) -> dict[str, int]:
    """Write the ECG-QA look-alike under ``root`` (= ``.../ecg-qa/ptbxl``); return samples per split.

    ``questions_per_ecg``: how many ECGs each single-ECG template samples, relative to the split's
    ECG count (several templates add 2-4 questions per sampled ECG).
    """
    split_of = split_patients([f.patient_id for f in facts], seed)
    qids: dict[tuple[int, str], int] = {}
    counts = {}
    for split, _ in SPLIT_SHARES:
        part = sorted((f for f in facts if split_of[f.patient_id] == split), key=lambda f: f.ecg_id)
        rows = "".join(f"{i}\t{f.ecg_id}\n" for i, f in enumerate(part))
        write_text_atomic(root / f"{split}_ecgs.tsv", rows)
        builder = _Builder(stream(seed, 51, len(split)), qids)
        per_template = max(1, int(round(questions_per_ecg * len(part))))
        if part:
            _single(builder, part, per_template)
            _comparisons(builder, part, max(1, per_template // 2))
        order = sorted(range(len(builder.samples)), key=lambda k: builder.samples[k][0]["template_id"])
        for version, v in (("paraphrased", 0), ("template", 1)):
            samples = [builder.samples[k][v] for k in order]
            for sid, s in enumerate(samples):
                s["sample_id"] = sid
            for start in range(0, max(len(samples), 1), CHUNK):
                chunk = samples[start:start + CHUNK]
                write_text_atomic(root / version / split / f"{start:05d}.json", json.dumps(chunk, indent=4))
        counts[split] = len(builder.samples)
    write_text_atomic(root / "answers.csv", "index,class\n" + "".join(
        f"{i},{_csv_cell(c)}\n" for i, c in enumerate(ANSWER_CLASSES)))
    write_text_atomic(root / "answers_for_each_template.csv", "template_id,classes\n" + "".join(
        f'{tid},"{classes!r}"\n' for tid, classes in sorted(template_classes().items())))
    return counts


def _csv_cell(text: str) -> str:
    return f'"{text}"' if "," in text else text
