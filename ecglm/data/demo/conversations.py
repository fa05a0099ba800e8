"""A HealthCareMagic-100k look-alike: patient questions about ECG findings and a doctor's answers.

One JSON array (``json.dumps(indent=4)``, as ChatDoctor ships it) of ``{instruction, input, output}``;
the instruction is always ChatDoctor's. Each conversation is about the (written) findings of one demo
record: the patient quotes the report's findings and asks, the doctor explains each finding and
what to do, consistently with medical practice; some outputs carry ChatDoctor's artefacts
("Thanks for using Chat Doctor", "Welcome to Chat Doctor", a "Regards" line).
"""

from __future__ import annotations

import json
from pathlib import Path

from ecglm.core.atomic import write_text_atomic
from ecglm.data.demo.labels import RecordPlan, stream

INSTRUCTION = "If you are a doctor, please answer the medical questions based on the patient's description."

#: code -> (how the patient quotes it, the doctor's explanation, the doctor's advice)
KNOWLEDGE: dict[str, tuple[str, str, str]] = {
    "AFIB": ("atrial fibrillation",
             "Atrial fibrillation means that the upper chambers of the heart beat fast and chaotically, so the pulse becomes irregular.",
             "It raises the risk of stroke, so your doctor should assess whether you need a blood thinner, and the heart rate can be controlled with medicines such as beta blockers. An echocardiogram and thyroid tests are advisable."),
    "SBRAD": ("sinus bradycardia",
              "Sinus bradycardia is a regular but slow heart rate, below 60 beats per minute.",
              "In fit people it is often normal. If you feel dizzy, faint or very tired, a Holter monitor and a check of your thyroid function and of medicines such as beta blockers are needed."),
    "STACH": ("sinus tachycardia",
              "Sinus tachycardia is a regular heart rate above 100 beats per minute, with the normal pacemaker of the heart.",
              "It is usually a response to something else, such as fever, anxiety, dehydration, anaemia or an overactive thyroid, so the cause should be found and treated."),
    "SARRH": ("sinus arrhythmia",
              "Sinus arrhythmia is a normal variation of the heart rate with breathing; it is common in young and healthy people.",
              "It needs no treatment."),
    "NORM": ("a normal ECG",
             "Your ECG is within normal limits.",
             "If your symptoms continue, other causes should be looked for; a normal resting ECG does not exclude every heart problem, so a stress test may be considered if you have chest pain on exertion."),
    "MI": ("an old myocardial infarction",
           "The ECG shows signs of a previous heart attack (pathological Q waves) in one wall of the heart.",
           "Please see a cardiologist: an echocardiogram to check the pumping function and a stress test or coronary angiography are usually done. Control of blood pressure, cholesterol and sugar, stopping smoking, and medicines such as aspirin and statins are important."),
    "ISC": ("ST depression suggesting ischaemia",
            "ST-T changes of this kind suggest that part of the heart muscle may not get enough blood (ischaemia).",
            "A treadmill stress test or a stress echocardiogram should be done; if you have chest pain at rest, go to an emergency department at once."),
    "NDT": ("non-specific T wave changes",
            "Non-specific T wave changes are minor changes in the recovery phase of the heart beat; they are often not significant.",
            "They have to be interpreted together with your symptoms, blood pressure and electrolytes; a repeat ECG and an echocardiogram can settle it."),
    "NST_": ("non-specific ST changes",
             "Non-specific ST changes are small deviations of the ST segment that can occur with many conditions and also in healthy people.",
             "If you have chest pain, a stress test is advisable; otherwise a repeat ECG is enough."),
    "DIG": ("digitalis effect",
            "The scooped ST depression on your ECG is a typical effect of digoxin (digitalis) and does not by itself mean toxicity.",
            "Your doctor should check the digoxin level, potassium and kidney function, especially if you have nausea or visual disturbances."),
    "LNGQT": ("a long QT interval",
              "A long QT interval means the heart takes longer than normal to recover between beats, which can predispose to dangerous rhythm disturbances.",
              "Medicines that prolong the QT interval should be reviewed, and potassium and magnesium checked; fainting spells need urgent evaluation."),
    "CLBBB": ("left bundle branch block",
              "Left bundle branch block means the electrical signal travels slowly through the left side of the heart, which makes the QRS complex wide.",
              "It can be a sign of underlying heart disease, so an echocardiogram is needed; a new left bundle branch block with chest pain is an emergency."),
    "CRBBB": ("right bundle branch block",
              "Right bundle branch block is a delay of the electrical signal in the right side of the heart.",
              "In a person with an otherwise normal heart it is usually harmless; an echocardiogram can confirm that the heart is normal."),
    "IRBBB": ("incomplete right bundle branch block",
              "Incomplete right bundle branch block is a minor conduction delay that is very often a normal variant.",
              "It needs no treatment if you have no symptoms."),
    "LAFB": ("left anterior fascicular block",
             "Left anterior fascicular block is a partial block in one branch of the left conduction system, which shifts the heart axis to the left.",
             "On its own it needs no treatment, but blood pressure and heart function should be checked."),
    "1AVB": ("first degree AV block",
             "First degree AV block means the signal from the upper to the lower chambers is delayed (PR interval above 200 ms), but every beat gets through.",
             "It is usually benign; medicines that slow conduction such as beta blockers or calcium channel blockers should be reviewed."),
    "IVCD": ("an intraventricular conduction delay",
             "An intraventricular conduction delay means the electrical activation of the ventricles is slightly slow, without a typical bundle branch pattern.",
             "An echocardiogram is reasonable to look at the heart muscle."),
    "LVH": ("left ventricular hypertrophy",
            "Left ventricular hypertrophy means the wall of the main pumping chamber is thickened, most often because of long-standing high blood pressure.",
            "Good control of blood pressure is the key treatment; an echocardiogram confirms the thickening."),
    "LAO/LAE": ("left atrial enlargement",
                "Left atrial enlargement means the left upper chamber is under strain or enlarged, for example from high blood pressure or a valve problem.",
                "An echocardiogram will show the size of the atrium and the valves."),
    "PVC": ("ventricular premature beats",
            "Ventricular premature beats are extra beats that start in the lower chambers; they are common and often felt as skipped beats.",
            "Reduce caffeine and alcohol, check potassium and magnesium, and a Holter monitor shows how frequent they are."),
}
SYMPTOMS = ("I get chest pain when I walk fast", "I have palpitations for a few weeks", "I feel dizzy sometimes",
            "I get short of breath on climbing stairs", "I had a routine check-up and have no complaints",
            "I feel tired all the time", "I had an episode of fainting last week")
OPENINGS = ("Hi doctor,", "Hello doctor,", "Hi,", "Respected doctor,", "Dear doctor,")


def _topics(codes: dict[str, float]) -> list[str]:
    out: list[str] = []
    for c in codes:
        key = "MI" if c in ("IMI", "ILMI", "IPMI", "IPLMI", "ASMI", "AMI", "ALMI", "LMI", "PMI") else (
            "ISC" if c.startswith(("ISC", "INJ")) else c)
        if key in KNOWLEDGE and key not in out:
            out.append(key)
    return out


def conversation(plan: RecordPlan, seed: int, index: int) -> dict[str, str]:
    """One {instruction, input, output} item about the record's written findings."""
    rng = stream(seed, 60, index)
    topics = _topics(plan.codes) or ["NORM"]
    if len(topics) > 1 and "NORM" in topics:
        topics.remove("NORM")
    sex = "man" if plan.sex == 0 else "woman"
    findings = ", ".join(KNOWLEDGE[t][0] for t in topics)
    question = str(rng.choice(["What does this mean?", "Is this serious?", "What should I do now?",
                               "Do I need any treatment?"]))
    text_in = (f"{rng.choice(OPENINGS)} I am a {plan.true_age} year old {sex}. {rng.choice(SYMPTOMS)}. "
               f"My ECG report says {findings}. {question}")
    parts = []
    u = rng.random()
    if u < 0.3:
        parts.append("Hi, Thanks for using Chat Doctor.")
    elif u < 0.5:
        parts.append("Hi, Welcome to Chat Doctor.")
    else:
        parts.append(str(rng.choice(["Hello,", "Hi,", "Hello, I have gone through your query."])))
    for t in topics:
        parts.append(KNOWLEDGE[t][1])
        parts.append(KNOWLEDGE[t][2])
    if rng.random() < 0.4:
        parts.append(str(rng.choice(["Hope this helps. Take care.", "Regards, Chat Doctor.",
                                     "Hope I have answered your query. Let me know if I can assist you further."])))
    return {"instruction": INSTRUCTION, "input": text_in, "output": " ".join(parts)}


def write_conversations(path: Path, plans: list[RecordPlan], seed: int, n: int) -> int:
    """Write ``n`` conversations about records drawn from ``plans``; return how many were written."""
    rng = stream(seed, 61)
    picks = rng.choice(len(plans), size=n, replace=n > len(plans))
    items = [conversation(plans[int(i)], seed, k) for k, i in enumerate(picks)]
    write_text_atomic(path, json.dumps(items, indent=4))
    return len(items)
