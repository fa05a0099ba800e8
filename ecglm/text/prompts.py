"""Every prompt string of the project: the training template, the zero-shot prompts, the scoring sentence.

Nothing else in the package writes prose for the language model; tests/test_prompts.py pins each
string exactly (golden tests), so a change of wording is a deliberate, reviewed change.

The training sample (Yang et al. 2025, "ECG-LM")::

    This person is a 63-year-old male with a height of 172 cm and a weight of 80 kg. The ECG signal
    is <ecg>. The ECG report indicates <report>. The anomalies in general: <general>, lead I:
    <description_I>, ..., lead V6: <description_V6>.

Choices this module makes where the paper is silent (all pinned by golden tests):

- Patient: an age is written as "a 63-year-old male" (with "an" before 8, 11, 18 and 80-89); a record
  whose age is missing but flagged over 89 (PTB-XL codes those ages as 300) reads "a male over 89
  years old"; a missing age reads "a male of unknown age"; a missing sex reads "person" ("a 63-year-old
  person"), and with both missing "This person is of unknown age and sex.". A known age is written
  even when ``age_over_89`` is set (real PTB-XL rows hold plain ages 89-94).
- Height and weight: "with a height of 172 cm and a weight of 80 kg", "with a height of 172 cm",
  "with a weight of 80 kg", or nothing at all (no stray space or punctuation). Values are rounded to
  0.1 and written without a trailing ".0".
- No finding: the general findings read :data:`NO_GENERAL_FINDING` ("no abnormality"), a lead
  without a finding reads :data:`NO_LEAD_FINDING` ("normal").
- Dropped leads (lead mask False) are left out of the text entirely; the kept leads stay in
  :data:`ecglm.core.leads.LEADS` order.
- Loss targets (the spans of :class:`PromptText`): the report and every kept lead's description,
  "normal" included; the general findings and all template words are context, not targets (the
  paper: "the report and the lead descriptions").
- Phrases (report, general, descriptions) are cleaned by :func:`clean_phrase`: whitespace runs
  collapsed, ends stripped, trailing sentence punctuation removed (the template adds its own).
- Spans are ``(start, end)`` indices into the Python ``str`` (Unicode code points, end exclusive), the
  unit of a Hugging Face fast tokenizer's ``offset_mapping``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS, N_LEADS

#: The placeholder where the projected ECG embedding goes (one token in the LLM's input).
ECG_TOKEN = "<ecg>"
#: The general findings of an ECG without any.
NO_GENERAL_FINDING = "no abnormality"
#: The description of a lead without a finding.
NO_LEAD_FINDING = "normal"
#: The words before the report in the training template (and the end of the `generate` prompt).
REPORT_STEM = "The ECG report indicates"
#: The sentence that holds the ECG token.
ECG_SENTENCE = f"The ECG signal is {ECG_TOKEN}."
#: The answer stem of the zero-shot prompts; the next token is the option letter (see :func:`answer_text`).
ANSWER_STEM = "Answer:"

#: Span kinds: the report, and a lead's description.
SPAN_REPORT = "report"
SPAN_LEAD = "lead"

#: The zero-shot tasks (the paper's Table 1, and our form prompt): (letter, label code, option name).
TASKS: dict[str, list[tuple[str, str, str]]] = {
    "diagnostic": [
        ("A", "NORM", "Normal"),
        ("B", "MI", "Myocardial Infarction"),
        ("C", "STTC", "ST/T Change"),
        ("D", "CD", "Conduction Disturbance"),
        ("E", "HYP", "Hypertrophy"),
    ],
    "rhythm": [
        ("A", "SR", "Sinus Rhythm"),
        ("B", "STACH", "Sinus Tachycardia"),
        ("C", "SBRAD", "Sinus Bradycardia"),
        ("D", "AFIB", "Atrial Fibrillation"),
        ("E", "SARRH", "Sinus Arrhythmia"),
    ],
    "form": [
        ("A", "ABQRS", "Abnormal QRS"),
        ("B", "NDT", "Non-Diagnostic T abnormalities"),
        ("C", "NST_", "Non-specific ST changes"),
        ("D", "DIG", "Digitalis-effect"),
        ("E", "LNGQT", "Long QT-interval"),
    ],
}

#: The records.parquet label-list column each task's classes come from.
TASK_LABEL_COLUMNS: dict[str, str] = {"diagnostic": "diagnostic_superclass", "rhythm": "rhythm", "form": "form"}


#: The task names, in order (the config's choices of a task).
TASK_NAMES: tuple[str, ...] = tuple(TASKS)

def distinct_tasks(tasks: Sequence[str]) -> bool:
    """Whether ``tasks`` names tasks of :data:`TASKS`, none twice (the config checks of task lists)."""
    return all(t in TASKS for t in tasks) and len(set(tasks)) == len(tasks)


#: How a class reads inside the report sentence for `likelihood` scoring (lower case, like the
#: PTB-XL reports; acronyms kept): "The ECG report indicates myocardial infarction."
CLASS_PHRASES: dict[str, str] = {
    "NORM": "normal",
    "MI": "myocardial infarction",
    "STTC": "ST/T change",
    "CD": "conduction disturbance",
    "HYP": "hypertrophy",
    "SR": "sinus rhythm",
    "STACH": "sinus tachycardia",
    "SBRAD": "sinus bradycardia",
    "AFIB": "atrial fibrillation",
    "SARRH": "sinus arrhythmia",
    "ABQRS": "abnormal QRS",
    "NDT": "non-diagnostic T abnormalities",
    "NST_": "non-specific ST changes",
    "DIG": "digitalis-effect",
    "LNGQT": "long QT-interval",
}

_SEXES = ("male", "female")
_WS = re.compile(r"\s+")
_TRAILING = " \t\n.,;:"


@dataclass(frozen=True)
class Patient:
    """What the template says about the person (the columns of records.parquet)."""

    age: int | None = None
    age_over_89: bool = False
    sex: str | None = None  # "male", "female" or None
    height_cm: float | None = None
    weight_kg: float | None = None

    @classmethod
    def from_record(cls, row: Mapping) -> "Patient":
        """Build from a records.parquet row (keys age, age_over_89, sex, height, weight; any may be absent)."""
        return cls(
            age=_none_if_nan(row.get("age")),
            age_over_89=bool(row.get("age_over_89") or False),
            sex=row.get("sex"),
            height_cm=_none_if_nan(row.get("height")),
            weight_kg=_none_if_nan(row.get("weight")),
        )


@dataclass(frozen=True)
class TargetSpan:
    """A loss target: ``text[start:end]``; kind is :data:`SPAN_REPORT` or :data:`SPAN_LEAD`."""

    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class PromptText:
    """A text and the character spans of its loss targets (in text order, non-overlapping)."""

    text: str
    spans: tuple[TargetSpan, ...] = ()


def _none_if_nan(value):
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def clean_phrase(phrase: str | None) -> str:
    """Collapse whitespace runs, strip the ends and any trailing ``.,;:``; None gives ""."""
    if phrase is None:
        return ""
    return _WS.sub(" ", phrase).strip().rstrip(_TRAILING)


def _number(value: float) -> str:
    """172.0 -> "172", 165.54 -> "165.5" (rounded to 0.1, no trailing ".0")."""
    text = f"{round(float(value), 1):.1f}"
    return text[:-2] if text.endswith(".0") else text


def _article(age: int) -> str:
    """'an' before ages read with a leading vowel (8, 11, 18, 80-89, 800...), else 'a'."""
    return "an" if str(age).startswith("8") or age in (11, 18) else "a"


def body_template(height_cm: float | None, weight_kg: float | None) -> str:
    """The <sub_template>: height and weight as known ("" when neither is), without leading space."""
    parts = []
    if height_cm is not None and not (isinstance(height_cm, float) and math.isnan(height_cm)):
        parts.append(f"a height of {_number(height_cm)} cm")
    if weight_kg is not None and not (isinstance(weight_kg, float) and math.isnan(weight_kg)):
        parts.append(f"a weight of {_number(weight_kg)} kg")
    return f"with {' and '.join(parts)}" if parts else ""


def patient_sentence(patient: Patient) -> str:
    """"This person is a 63-year-old male with a height of 172 cm and a weight of 80 kg." (one sentence)."""
    if patient.sex is not None and patient.sex not in _SEXES:
        raise ValueError(f"sex must be one of {_SEXES} or None, got {patient.sex!r}")
    noun = patient.sex or "person"
    if patient.age is not None:
        age = int(patient.age)
        who = f"{_article(age)} {age}-year-old {noun}"
    elif patient.age_over_89:
        who = f"a {noun} over 89 years old"
    elif patient.sex is None:
        who = "of unknown age and sex"
    else:
        who = f"a {noun} of unknown age"
    body = body_template(patient.height_cm, patient.weight_kg)
    return f"This person is {who}{' ' + body if body else ''}."


def _kept_leads(lead_mask: Sequence[bool] | None) -> list[str]:
    if lead_mask is None:
        return list(LEADS)
    mask = [bool(m) for m in lead_mask]
    if len(mask) != N_LEADS:
        raise ValueError(f"lead_mask must have {N_LEADS} values (one per lead of {LEADS}), got {len(mask)}")
    return [lead for lead, keep in zip(LEADS, mask) if keep]


def _check_lead_names(leads: Mapping[str, str | None]) -> None:
    unknown = sorted(set(leads) - set(LEADS))
    if unknown:
        raise ValueError(f"unknown lead name(s) {unknown} (expected names of {LEADS})")


def lead_description(leads: Mapping[str, str | None], lead: str) -> str:
    """The lead's cleaned description, or :data:`NO_LEAD_FINDING` when it has none."""
    return clean_phrase(leads.get(lead)) or NO_LEAD_FINDING


def general_description(general: str | None) -> str:
    """The cleaned general findings, or :data:`NO_GENERAL_FINDING` when there are none."""
    return clean_phrase(general) or NO_GENERAL_FINDING


class _Builder:
    """Appends text pieces and records the spans of loss targets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[TargetSpan] = []

    def add(self, piece: str, kind: str | None = None) -> None:
        if kind is not None:
            self.spans.append(TargetSpan(self.length, self.length + len(piece), kind))
        self.parts.append(piece)
        self.length += len(piece)

    def build(self) -> PromptText:
        return PromptText("".join(self.parts), tuple(self.spans))


def training_text(
    patient: Patient,
    report: str,
    general: str | None,
    leads: Mapping[str, str | None],
    lead_mask: Sequence[bool] | None = None,
) -> PromptText:
    """The paper's training sample and the spans of its loss targets.

    ``leads`` maps lead names (``LEADS`` spelling) to a description or None (absent = None);
    ``lead_mask`` has 12 booleans in ``LEADS`` order, True = kept (None = all kept). Guarantees:
    ``spans`` holds one ``report`` span and then one ``lead`` span per kept lead, in text order, and
    ``text[s.start:s.end]`` equals ``clean_phrase(report)`` resp. :func:`lead_description`; dropped
    leads do not appear in the text. Raises ValueError for an empty report or an unknown lead name.
    """
    _check_lead_names(leads)
    report_text = clean_phrase(report)
    if not report_text:
        raise ValueError("the report is empty")
    b = _Builder()
    b.add(report_prompt(patient) + " ")
    b.add(report_text, SPAN_REPORT)
    b.add(f". The anomalies in general: {general_description(general)}")
    for lead in _kept_leads(lead_mask):
        b.add(f", lead {lead}: ")
        b.add(lead_description(leads, lead), SPAN_LEAD)
    b.add(".")
    return b.build()


def zero_shot_prompt(
    task: str,
    patient: Patient,
    general: str | None = None,
    leads: Mapping[str, str | None] | None = None,
    *,
    ecg: bool = True,
    findings: bool = True,
    lead_mask: Sequence[bool] | None = None,
) -> str:
    """The zero-shot multiple-choice prompt of ``task`` (a key of :data:`TASKS`), ending in :data:`ANSWER_STEM`.

    ``ecg=False`` gives the text-only prompt (no ECG token); ``findings=False`` the ECG-only prompt
    (no general or lead findings). The model's answer is the next token, scored as
    :func:`answer_text` of each option letter.
    """
    if task not in TASKS:
        raise ValueError(f"unknown zero-shot task {task!r} (expected one of {sorted(TASKS)})")
    pieces = [patient_sentence(patient)]
    if ecg:
        pieces.append(ECG_SENTENCE)
    if findings:
        leads = leads or {}
        _check_lead_names(leads)
        segments = [f"Abnormalities detected in general: {general_description(general)}"]
        segments += [f"Lead {lead}: {lead_description(leads, lead)}" for lead in _kept_leads(lead_mask)]
        pieces.append(", ".join(segments) + ".")
    if ecg:
        subject = "ECG signal"
    elif findings:
        subject = "ECG findings"
    else:
        subject = "patient information"
    options = TASKS[task]
    letters = [letter for letter, _, _ in options]
    lines = [
        " ".join(pieces),
        f"Based on the given {subject}, please identify which type ({letters[0]}-{letters[-1]}) it belongs to.",
        *(f"{letter}. {name}" for letter, _, name in options),
        f"Please identify and choose one of {', '.join(letters[:-1])} or {letters[-1]} as answer.",
        ANSWER_STEM,
    ]
    return "\n".join(lines)


def answer_text(letter: str) -> str:
    """The continuation of :data:`ANSWER_STEM` that states an option: " A" (a space, then the letter)."""
    return f" {letter}"


def report_prompt(patient: Patient, *, ecg: bool = True) -> str:
    """The training template up to the report, the prompt of `generate` scoring (no trailing space).

    "This person is ... The ECG signal is <ecg>. The ECG report indicates" (``ecg=False``: without the
    ECG sentence). The model's greedy continuation is its report of the ECG.
    """
    return f"{patient_sentence(patient)} {ECG_SENTENCE + ' ' if ecg else ''}{REPORT_STEM}"


#: The question stem of ECG-QA (ours: the paper does not give its QA prompt).
QUESTION_STEM = "Question:"
#: Between the answers of one ECG-QA answer set (no ECG-QA answer holds it; several hold commas).
ANSWER_SEPARATOR = "; "


def qa_prompt(question: str, *, ecg: bool = True) -> str:
    """The ECG-QA prompt: "The ECG signal is <ecg>. Question: {question} Answer:" (``ecg=False``: the blind
    model's, without the ECG sentence). The answer follows as :func:`qa_answer_text`."""
    question = _WS.sub(" ", question).strip()
    return f"{ECG_SENTENCE + ' ' if ecg else ''}{QUESTION_STEM} {question} {ANSWER_STEM}"


def qa_answer_text(answers: Sequence[str]) -> str:
    """The continuation of :func:`qa_prompt` that states an answer set: " a; b" (a space, the answers
    joined by :data:`ANSWER_SEPARATOR`, in the order given)."""
    if not answers or any(not a or ANSWER_SEPARATOR.strip() in a for a in answers):
        raise ValueError(f"an answer set must be non-empty answers without {ANSWER_SEPARATOR.strip()!r}: {answers!r}")
    return " " + ANSWER_SEPARATOR.join(answers)


#: The chat's standing system text (ours; the paper's conversations are not published).
CHAT_SYSTEM = ("You are ECG-LM, a research model that reads electrocardiograms. You are not a doctor and your "
               "answers are not medical advice.")  # fmt: skip
#: The user's words that hand over the ECG (the paper's Table 6: "This is the electrocardiogram: ..."); the chat
#: puts them before the first user turn it keeps.
CHAT_ECG_HANDOVER = f"This is my electrocardiogram: {ECG_TOKEN}."
#: The first user turn of the training dialogues about an ECG.
CHAT_ECG_REQUEST = f"{CHAT_ECG_HANDOVER} What does it show?"


def chat_system(patient: Patient | None = None, general: str | None = None,
                leads: Mapping[str, str | None] | None = None, history: str | None = None) -> str:  # fmt: skip
    """The system text of a chat about one ECG: :data:`CHAT_SYSTEM`, the patient sentence (when known), the
    person's history in their own words (``history``, e.g. "high blood pressure, a smoker") and, when ``leads``
    is given, the measured findings in the training template's words (only the leads given are named)."""
    parts = [CHAT_SYSTEM]
    if patient is not None:
        parts.append(patient_sentence(patient))
    if history is not None and clean_phrase(history):
        parts.append(f"Their history: {clean_phrase(history)}.")
    if leads is not None:
        _check_lead_names(leads)
        described = ", ".join(f"lead {lead}: {lead_description(leads, lead)}" for lead in LEADS if lead in leads)
        parts.append(f"The measured findings of the ECG: in general {general_description(general)}"
                     + (f", {described}." if described else "."))  # fmt: skip
    return " ".join(parts)


def chat_ecg_answer(report: str, general: str | None, leads: Mapping[str, str | None]) -> str:
    """What ECG-LM answers to :data:`CHAT_ECG_REQUEST` in the training dialogues: the report and the findings,
    in the training template's words ("The ECG report indicates ... The anomalies in general: ..., lead I: ...")."""
    _check_lead_names(leads)
    report_text = clean_phrase(report)
    if not report_text:
        raise ValueError("the report is empty")
    described = "".join(f", lead {lead}: {lead_description(leads, lead)}" for lead in LEADS if lead in leads)
    return f"{REPORT_STEM} {report_text}. The anomalies in general: {general_description(general)}{described}."


def classes_named(text: str, task: str) -> list[str]:
    """The class codes of ``task`` whose :data:`CLASS_PHRASES` ``text`` names, in order of first mention.

    Whole words, case-insensitive ("Sinus tachycardia, abnormal QRS" -> rhythm ["STACH"]; "abnormal"
    does not name "normal"). An unknown task raises ValueError.
    """
    if task not in TASKS:
        raise ValueError(f"unknown zero-shot task {task!r} (expected one of {sorted(TASKS)})")
    found = []
    for _, code, _ in TASKS[task]:
        match = re.search(rf"(?<![\w-]){re.escape(CLASS_PHRASES[code])}(?![\w-])", text, re.IGNORECASE)
        if match:
            found.append((match.start(), code))
    return [code for _, code in sorted(found)]


def likelihood_text(patient: Patient, code: str, *, ecg: bool = True) -> PromptText:
    """The `likelihood` scoring text of class ``code``: the training template up to the report sentence.

    "This person is ... The ECG signal is <ecg>. The ECG report indicates myocardial infarction."
    with one ``report`` span on the class phrase (:data:`CLASS_PHRASES`); ``ecg=False`` leaves the ECG
    sentence out (text-only).
    """
    if code not in CLASS_PHRASES:
        raise ValueError(f"unknown class code {code!r} (expected one of {sorted(CLASS_PHRASES)})")
    b = _Builder()
    b.add(report_prompt(patient, ecg=ecg) + " ")
    b.add(CLASS_PHRASES[code], SPAN_REPORT)
    b.add(".")
    return b.build()


def task_letters(task: str) -> list[str]:
    """The option letters of ``task`` (A-E), in option order."""
    return [letter for letter, _, _ in _task(task)]


def task_classes(task: str) -> list[str]:
    """The class codes of ``task`` in option order (A-E), e.g. diagnostic: NORM MI STTC CD HYP."""
    return [code for _, code, _ in _task(task)]


def _task(task: str) -> list[tuple[str, str, str]]:
    if task not in TASKS:
        raise StageError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    return TASKS[task]
