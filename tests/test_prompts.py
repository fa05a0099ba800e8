"""Golden tests of every prompt string (ecglm/prompts.py): a change of wording must change this file."""

from __future__ import annotations

import math

import pytest

from ecglm.core.leads import LEADS
from ecglm.text.prompts import (
    ANSWER_STEM,
    CLASS_PHRASES,
    ECG_TOKEN,
    NO_GENERAL_FINDING,
    NO_LEAD_FINDING,
    SPAN_LEAD,
    SPAN_REPORT,
    TASKS,
    Patient,
    answer_text,
    clean_phrase,
    likelihood_text,
    patient_sentence,
    training_text,
    zero_shot_prompt,
)

MAN = Patient(age=63, sex="male", height_cm=172.0, weight_kg=80.0)
FINDINGS = {"II": "ST depression", "V2": "T wave inversion, Q wave"}

ALL_NORMAL_LEADS = ", ".join(f"lead {lead}: normal" for lead in LEADS)


# ------------------------------------------------------------------------------------ patient sentence


@pytest.mark.parametrize(
    ("patient", "expected"),
    [
        (MAN, "This person is a 63-year-old male with a height of 172 cm and a weight of 80 kg."),
        (Patient(63, sex="male", height_cm=172.0), "This person is a 63-year-old male with a height of 172 cm."),
        (Patient(63, sex="male", weight_kg=80.0), "This person is a 63-year-old male with a weight of 80 kg."),
        (Patient(63, sex="male"), "This person is a 63-year-old male."),
        (Patient(None, sex="male", weight_kg=80.0), "This person is a male of unknown age with a weight of 80 kg."),
        (Patient(None, age_over_89=True, sex="female"), "This person is a female over 89 years old."),
        (Patient(None, age_over_89=True, sex="female", height_cm=158.0),
         "This person is a female over 89 years old with a height of 158 cm."),
        (Patient(92, age_over_89=True, sex="female"), "This person is a 92-year-old female."),
        (Patient(45), "This person is a 45-year-old person."),
        (Patient(None, age_over_89=True), "This person is a person over 89 years old."),
        (Patient(None), "This person is of unknown age and sex."),
        (Patient(None, height_cm=180.0, weight_kg=95.5),
         "This person is of unknown age and sex with a height of 180 cm and a weight of 95.5 kg."),
    ],
)
def test_patient_sentence_golden(patient, expected):
    assert patient_sentence(patient) == expected


@pytest.mark.parametrize(("age", "article"), [(8, "an"), (11, "an"), (18, "an"), (80, "an"), (89, "an"),
                                               (1, "a"), (19, "a"), (63, "a"), (100, "a")])
def test_article_before_age(age, article):
    assert patient_sentence(Patient(age, sex="female")) == f"This person is {article} {age}-year-old female."


def test_numbers_rounded_to_one_decimal_without_trailing_zero():
    import numpy as np

    p = Patient(50, sex="male", height_cm=float(np.float32(172.3)), weight_kg=70.04)
    assert patient_sentence(p) == "This person is a 50-year-old male with a height of 172.3 cm and a weight of 70 kg."


def test_patient_from_record_treats_nan_as_missing():
    p = Patient.from_record({"age": None, "age_over_89": None, "sex": None, "height": math.nan, "weight": 61.0})
    assert p == Patient(None, False, None, None, 61.0)
    assert patient_sentence(p) == "This person is of unknown age and sex with a weight of 61 kg."


def test_bad_sex_is_rejected():
    with pytest.raises(ValueError, match="sex"):
        patient_sentence(Patient(50, sex="M"))


# ------------------------------------------------------------------------------------ training template


def test_training_text_golden_all_leads():
    sample = training_text(MAN, "sinus rhythm.  left  axis deviation. ", "sinus bradycardia, prolonged QTc", FINDINGS)
    assert sample.text == (
        "This person is a 63-year-old male with a height of 172 cm and a weight of 80 kg. "
        "The ECG signal is <ecg>. The ECG report indicates sinus rhythm. left axis deviation. "
        "The anomalies in general: sinus bradycardia, prolonged QTc, lead I: normal, lead II: ST depression, "
        "lead III: normal, lead aVR: normal, lead aVL: normal, lead aVF: normal, lead V1: normal, "
        "lead V2: T wave inversion, Q wave, lead V3: normal, lead V4: normal, lead V5: normal, lead V6: normal."
    )
    targets = [(sample.text[s.start:s.end], s.kind) for s in sample.spans]
    assert targets == [("sinus rhythm. left axis deviation", SPAN_REPORT)] + [
        (FINDINGS.get(lead, NO_LEAD_FINDING), SPAN_LEAD) for lead in LEADS
    ]


def test_training_text_golden_no_findings():
    sample = training_text(Patient(None, sex="female"), "normal ecg", None, {})
    assert sample.text == (
        "This person is a female of unknown age. The ECG signal is <ecg>. The ECG report indicates normal ecg. "
        f"The anomalies in general: {NO_GENERAL_FINDING}, {ALL_NORMAL_LEADS}."
    )
    assert NO_GENERAL_FINDING == "no abnormality" and NO_LEAD_FINDING == "normal"


def test_training_text_golden_dropped_leads_left_out():
    mask = [lead not in ("I", "aVR", "V1", "V2", "V6") for lead in LEADS]
    sample = training_text(Patient(71, sex="female", weight_kg=64.0), "sinus rhythm", "", FINDINGS, mask)
    assert sample.text == (
        "This person is a 71-year-old female with a weight of 64 kg. The ECG signal is <ecg>. "
        "The ECG report indicates sinus rhythm. The anomalies in general: no abnormality, "
        "lead II: ST depression, lead III: normal, lead aVL: normal, lead aVF: normal, lead V3: normal, "
        "lead V4: normal, lead V5: normal."
    )
    assert [s.kind for s in sample.spans] == [SPAN_REPORT] + [SPAN_LEAD] * 7
    assert [sample.text[s.start:s.end] for s in sample.spans][:2] == ["sinus rhythm", "ST depression"]


def test_training_text_errors():
    with pytest.raises(ValueError, match="report is empty"):
        training_text(MAN, "  . ", None, {})
    with pytest.raises(ValueError, match="unknown lead"):
        training_text(MAN, "x", None, {"AVR": "y"})
    with pytest.raises(ValueError, match="12 values"):
        training_text(MAN, "x", None, {}, [True] * 11)


def test_clean_phrase():
    assert clean_phrase("  sinus   rhythm.\n normal ecg. ") == "sinus rhythm. normal ecg"
    assert clean_phrase(None) == "" and clean_phrase(" ,. ") == ""


# ------------------------------------------------------------------------------------------ zero-shot

PATIENT_TEXT = "This person is a 63-year-old male with a height of 172 cm and a weight of 80 kg."
ABNORMALITIES = (
    "Abnormalities detected in general: sinus bradycardia, Lead I: normal, Lead II: ST depression, "
    "Lead III: normal, Lead aVR: normal, Lead aVL: normal, Lead aVF: normal, Lead V1: normal, "
    "Lead V2: T wave inversion, Q wave, Lead V3: normal, Lead V4: normal, Lead V5: normal, Lead V6: normal."
)
CHOOSE = "Please identify and choose one of A, B, C, D or E as answer.\nAnswer:"


def test_zero_shot_diagnostic_golden():
    assert zero_shot_prompt("diagnostic", MAN, "sinus bradycardia", FINDINGS) == (
        f"{PATIENT_TEXT} The ECG signal is <ecg>. {ABNORMALITIES}\n"
        "Based on the given ECG signal, please identify which type (A-E) it belongs to.\n"
        "A. Normal\nB. Myocardial Infarction\nC. ST/T Change\nD. Conduction Disturbance\nE. Hypertrophy\n"
        f"{CHOOSE}"
    )


def test_zero_shot_rhythm_golden():
    assert zero_shot_prompt("rhythm", MAN, "sinus bradycardia", FINDINGS) == (
        f"{PATIENT_TEXT} The ECG signal is <ecg>. {ABNORMALITIES}\n"
        "Based on the given ECG signal, please identify which type (A-E) it belongs to.\n"
        "A. Sinus Rhythm\nB. Sinus Tachycardia\nC. Sinus Bradycardia\nD. Atrial Fibrillation\nE. Sinus Arrhythmia\n"
        f"{CHOOSE}"
    )


def test_zero_shot_form_golden():
    assert zero_shot_prompt("form", MAN, "sinus bradycardia", FINDINGS) == (
        f"{PATIENT_TEXT} The ECG signal is <ecg>. {ABNORMALITIES}\n"
        "Based on the given ECG signal, please identify which type (A-E) it belongs to.\n"
        "A. Abnormal QRS\nB. Non-Diagnostic T abnormalities\nC. Non-specific ST changes\nD. Digitalis-effect\n"
        f"E. Long QT-interval\n{CHOOSE}"
    )


def test_zero_shot_ecg_only_golden():
    assert zero_shot_prompt("diagnostic", MAN, "sinus bradycardia", FINDINGS, findings=False) == (
        f"{PATIENT_TEXT} The ECG signal is <ecg>.\n"
        "Based on the given ECG signal, please identify which type (A-E) it belongs to.\n"
        "A. Normal\nB. Myocardial Infarction\nC. ST/T Change\nD. Conduction Disturbance\nE. Hypertrophy\n"
        f"{CHOOSE}"
    )


def test_zero_shot_text_only_golden():
    prompt = zero_shot_prompt("rhythm", MAN, "sinus bradycardia", FINDINGS, ecg=False)
    assert ECG_TOKEN not in prompt
    assert prompt == (
        f"{PATIENT_TEXT} {ABNORMALITIES}\n"
        "Based on the given ECG findings, please identify which type (A-E) it belongs to.\n"
        "A. Sinus Rhythm\nB. Sinus Tachycardia\nC. Sinus Bradycardia\nD. Atrial Fibrillation\nE. Sinus Arrhythmia\n"
        f"{CHOOSE}"
    )


def test_zero_shot_patient_only_golden():
    assert zero_shot_prompt("form", Patient(None), ecg=False, findings=False).split("\n")[:2] == [
        "This person is of unknown age and sex.",
        "Based on the given patient information, please identify which type (A-E) it belongs to.",
    ]


def test_zero_shot_answer_stem_and_letters():
    for task in TASKS:
        assert zero_shot_prompt(task, MAN).endswith("\n" + ANSWER_STEM)
    assert ANSWER_STEM == "Answer:" and answer_text("C") == " C"


def test_zero_shot_unknown_task():
    with pytest.raises(ValueError, match="unknown zero-shot task"):
        zero_shot_prompt("superdiagnostic", MAN)


def test_tasks_are_the_papers_options():
    assert {t: [(l, c) for l, c, _ in opts] for t, opts in TASKS.items()} == {
        "diagnostic": [("A", "NORM"), ("B", "MI"), ("C", "STTC"), ("D", "CD"), ("E", "HYP")],
        "rhythm": [("A", "SR"), ("B", "STACH"), ("C", "SBRAD"), ("D", "AFIB"), ("E", "SARRH")],
        "form": [("A", "ABQRS"), ("B", "NDT"), ("C", "NST_"), ("D", "DIG"), ("E", "LNGQT")],
    }
    assert set(CLASS_PHRASES) == {c for opts in TASKS.values() for _, c, _ in opts}


# ----------------------------------------------------------------------------------------- likelihood


def test_likelihood_text_golden():
    sample = likelihood_text(MAN, "MI")
    assert sample.text == f"{PATIENT_TEXT} The ECG signal is <ecg>. The ECG report indicates myocardial infarction."
    (span,) = sample.spans
    assert (sample.text[span.start:span.end], span.kind) == ("myocardial infarction", SPAN_REPORT)


def test_likelihood_text_only_golden():
    sample = likelihood_text(Patient(None, sex="female"), "STTC", ecg=False)
    assert sample.text == "This person is a female of unknown age. The ECG report indicates ST/T change."
    assert sample.text[sample.spans[0].start:sample.spans[0].end] == "ST/T change"


def test_likelihood_sentence_matches_training_template():
    """The scoring text is the training text up to and including the report, with the class as report."""
    for code, phrase in CLASS_PHRASES.items():
        scored = likelihood_text(MAN, code)
        trained = training_text(MAN, phrase, None, {})
        assert trained.text.startswith(scored.text[:-1])
        assert scored.spans[0] == trained.spans[0]
    with pytest.raises(ValueError, match="unknown class code"):
        likelihood_text(MAN, "LVH")


def test_the_ecg_qa_prompt_and_answer_are_pinned():
    from ecglm.text.prompts import qa_answer_text, qa_prompt

    assert qa_prompt("Does this ECG show  sinus rhythm?\n") == (
        "The ECG signal is <ecg>. Question: Does this ECG show sinus rhythm? Answer:")
    assert qa_prompt("Does this ECG show sinus rhythm?", ecg=False) == "Question: Does this ECG show sinus rhythm? Answer:"
    assert qa_answer_text(["lead I", "lead aVR"]) == " lead I; lead aVR"
    with pytest.raises(ValueError):
        qa_answer_text([])
    with pytest.raises(ValueError):
        qa_answer_text(["a;b"])
