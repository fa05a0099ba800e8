"""`ecglm scrub-pii`: personal data out of doctor-patient conversations, clinical content left untouched.

Input and output: a JSON array in the HealthCareMagic schema (``instruction``, ``input``, ``output``; other
keys are kept as they are). Every string field is scrubbed; what was found is replaced by a typed
placeholder, and the counts per kind go beside the output (``<out>.counts.json``):

========== =================================================================================================
``[URL]``     ``http(s)://...``, ``www....`` and bare domains with a path (``bit.ly/3xY``)
``[EMAIL]``   addresses
``[DATE]``    dates of birth: a date after "born", "date of birth", "DOB", "D.O.B.", "birthday"
``[ID]``      a number after an identifier's name (MRN, patient ID, SSN, NHS number, insurance, passport,
              record, case, hospital, employee, account, policy, Medicare), and SSN-shaped numbers
``[PHONE]``   numbers of 7-15 digits in groups (or 10-13 in one), not date-shaped, not followed by a unit
``[ADDRESS]`` a house number and a street (an English street type, a French ``rue``/``impasse``/..., a Dutch,
              German or Nordic street word) with what follows it: flat or suite, city, state, postcode
``[NAME]``    names, found by their context (below), then every other place the same name stands
========== =================================================================================================

Names are the hard part: there is no name list that holds every name and no other word. The rules here
look for a name where the text says there is one: after a title (Dr, Mr, Mrs, Ms, Prof), after an
introduction ("my name is", "I am", "I'm", "this is"), after a relation ("my husband", "my daughter",
...), after a greeting or a sign-off ("Hi", "Dear", "Regards", "Thanks", "Best wishes", ...), and as a
lone last line of two or three capitalised words. They are helped by the first and last names of every
locale of Faker (a maintained package; about 31,000 first and 29,000 last names, read offline from the
installed package): a capitalised first name from those lists followed by a capitalised word is a full
name anywhere. Words that read as names but are clinical are never replaced: an allow-list of eponyms
(Holter, Wolff-Parkinson-White, Mobitz, Wenckebach, Brugada, Bazett, Sokolow-Lyon, Graves, ...) and of
capitalised words that follow a greeting without being names (Doctor, Sir, ...). Presidio, the usual
tool, finds names with a spaCy model that its project publishes outside the package index; this module
needs no model and no network.

ChatDoctor's artefacts ("Thanks for using Chat Doctor", "Welcome to ChatDoctor") are removed with the
sentence that holds them and counted as ``artefact``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from ecglm.core.atomic import write_text_atomic
from ecglm.core.errors import StageError

log = logging.getLogger(__name__)

KINDS = ("URL", "EMAIL", "DATE", "ID", "PHONE", "ADDRESS", "NAME")
COUNTS_SUFFIX = ".counts.json"

#: Clinical eponyms (and their parts) that must survive, whatever a name list says.
EPONYMS = frozenset("""
Holter Wolff Parkinson White Mobitz Wenckebach Brugada Bazett Fridericia Framingham Hodges Sokolow Lyon Cornell
Romhilt Estes Osborn Wellens Sgarbossa Lown Ganong Levine Graves Addison Cushing Crohn Hashimoto Kawasaki Marfan
Ebstein Fallot Eisenmenger Takotsubo Prinzmetal Lenegre Stokes Adams Kussmaul Dressler Romano Ward Jervell Lange
Nielsen Bachmann Purkinje Einthoven Wilson Goldberger Mason Likar Valsalva Chagas Lyme Ashman Epsilon Smith Modified
Duke Killip Forrester Bruce Minnesota Glasgow Apgar Raynaud Down Turner Noonan Williams DiGeorge Kearns Sayre Friedreich
Duchenne Becker Pompe Fabry Danon Anderson Fontan Glenn Blalock Taussig Mustard Senning Rastelli Ross Norwood Lyme
Hodgkin Alzheimer Huntington Tourette Guillain Barre Sjogren Behcet Kawasaki Wegener Horner Bell Cheyne Kerley
Austin Flint Graham Steell Carey Coombs Quincke Duroziez Corrigan Traube Musset Hill Janeway Osler Roth Libman Sacks
Loeffler Lutembacher Gallavardin Brockenbrough Wolf Zollinger Ellison Conn Barlow Bernheim Hamman Tietze Mondor
Von Hippel Lindau Willebrand Gilbert Reiter Wilms Ewing Kaposi Burkitt Paget Peyronie Dupuytren Baker Meniere Tay
Sachs Lou Gehrig Asperger Munchausen Barrett Hirschsprung Meckel Whipple Legionnaires Stevens Johnson Henoch
Schonlein Buerger Moyamoya Kawasaki Marburg Ebola Zika West Nile Rocky Mountain Lassa Epstein Barr Coxsackie
""".split())

#: Words after a name-like phrase that make it a disease, sign or rule named after someone (keep it).
_MEDICAL_HEAD = re.compile(r"\s*(?:'s\s+)?(?i:disease|syndrome|virus|fever|sign|signs|criteria|criterion|pattern|"
                           r"block|wave|waves|index|phenomenon|test|score|maneuver|manoeuvre|reflex|law|equation|"
                           r"formula|formulas|anomaly|malformation|palsy|tumou?r|lymphoma|sarcoma|ulcer|triad|"
                           r"classification|class|type|monitor|monitoring|recorder|correction|method|procedure|"
                           r"operation|shunt|catheter|cell|cells|node|fibers|fibres|bundle|hospital|clinic|"
                           r"university|institute|medical|health|center|centre)\b")  # fmt: skip

#: Capitalised words that follow a greeting, a title or "I am" without being a name.
NOT_NAMES = frozenset("""
Doctor Doc Dr Sir Madam Maam Ma'am There All Everyone Team Again Sorry Yes No Ok Okay Please Thanks Thank Hi Hello
Dear Regards The A An This That It I My Your Our We You He She They Here Now Today Also And But Or So If When After
Before Since Because Currently Recently Yesterday Sincerely Cheers Best Kind Warm Welcome Good Morning Afternoon
Evening Night Patient Mother Father Nurse Cardiologist Physician Consultant Surgeon Professor Indian American British
English Asian African European Chinese Japanese Korean Arab Arabic Hispanic Latino Muslim Christian Hindu Jewish
Diabetic Hypertensive Pregnant Male Female Worried Concerned Scared Afraid Confused Not Very Really Just Still Taking
On In At From With For To Of As By ECG EKG Echo Holter Monday Tuesday Wednesday Thursday Friday Saturday Sunday
January February March April May June July August September October November December Type Lead Leads Sinus Heart
Blood Chest Left Right Normal Abnormal Mild Severe Acute Chronic Hope Hoping Looking Writing Asking Attached Query
Question Answer Reply Note Update Reference Case Report Results Result Test Tests Emergency Hospital Clinic Dept
Is Was Has Had Have Does Did Do Can Could Would Should Will May Might Must Shall Am Are Were Been Being Having
""".split())

_UPPER, _LOWER = "A-ZÀ-ÖØ-ÞĀ-Ž", "a-zß-öø-ÿā-ž'’"  # Latin letters with their accents (Ā-Ž: Latin Extended-A)
_NAME_WORD = rf"[{_UPPER}][{_LOWER}]+(?:-[{_UPPER}][{_LOWER}]+)*"  # Tamsin, O'Neil, Adebayo-Marsh, Ødegaard (not ECG)
_NAME_SEQ = rf"{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}}"
_TITLE = r"\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof|Professor|Sir|Dame)\b\.?\s+"
_RELATION = (r"\b(?i:my)\s+(?:husband|wife|son|daughter|mother|mom|mum|father|dad|brother|sister|partner|boyfriend|"
             r"girlfriend|friend|niece|nephew|cousin|uncle|aunt|grandmother|grandma|grandfather|grandpa|grandson|"
             r"granddaughter|fianc[eé]e?|colleague|baby|child|kid|neighbou?r)\s+")  # fmt: skip
_PATIENT = r"\b(?i:patient|pt\.)\s+"
_INTRO = r"(?i:\bi\s+am\s+called|\bi'm\s+called|\bmy\s+name\s+is|\bmy\s+name's|\bi\s+am|\bi'm|\bthis\s+is|\bcall\s+me)\s+"
_GREETING = (r"(?:^|(?<=[.!?\n])\s*|(?<=\n))(?i:hi|hello|hey|dear|thanks|thank\s+you|regards|kind\s+regards|"
             r"best\s+regards|warm\s+regards|best\s+wishes|best|sincerely|cheers|yours\s+sincerely|yours)\s*,?\s+")  # fmt: skip

_MONTHS = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|Mar|"
           r"Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.?")  # fmt: skip
_DATE = (rf"(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[./-]\d{{1,2}}[./-]\d{{2,4}}|\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTHS},?\s+"
         rf"\d{{4}}|{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})")  # fmt: skip
_DOB = re.compile(rf"(?i:\bborn(?:\s+on)?|\bdate\s+of\s+birth|\bbirth\s*date|\bD\.?O\.?B\.?|\bbirthday)"
                  rf"(?:\s+(?i:is|was))?\s*[:\-]?\s*(?P<x>{_DATE})")  # fmt: skip

_ID = re.compile(
    r"(?i:\b(?:MRN|patient\s+ID|SSN|social\s+security\s+(?:number|no\.?)|NHS\s+number|insurance\s+(?:number|no\.?|ID)|"
    r"policy\s+(?:number|no\.?)|medicare\s+(?:ID|number)|medicaid\s+(?:ID|number)|(?:medical\s+)?record\s+(?:number|no\.?)|"
    r"hospital\s+(?:number|no\.?|ID)|case\s+(?:number|no\.?)|passport(?:\s+(?:number|no\.?))?|employee\s+ID|"
    r"account\s+(?:number|no\.?)|member\s+ID|ID))"
    r"(?:\s+(?i:is|was))?\s*(?:[:#]|(?i:no\.?|number))?\s*"
    r"(?P<x>(?=[A-Z0-9-]*\d)(?:[A-Z0-9][A-Z0-9-]{3,}|\d{3})(?:\s\d{3,4}){0,2})"
)  # fmt: skip
_SSN = re.compile(r"\b(?P<x>\d{3}-\d{2}-\d{4})\b")

_URL = re.compile(
    r"(?P<x>\b(?:https?://|www\.)[^\s<>\"']+|"
    r"\b(?:[a-z0-9-]+\.)+(?:com|org|net|edu|gov|io|co|info|biz|me|ly|app|health|[a-z]{2})/[^\s<>\"']*)",
    re.IGNORECASE,
)  # fmt: skip
_EMAIL = re.compile(r"(?P<x>\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+)")

_PHONE = re.compile(
    r"(?<![\w/.,:+-])(?P<x>(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,5}(?:[ .-]\d{1,8}){1,5}|\+?\d{10,13})"
    r"(?![\w/]|[.,]\d)"
)  # fmt: skip
_UNIT_AFTER = re.compile(r"\s*(?:%|mm|cm|ms|s\b|sec|min|h\b|hr|hours?|days?|weeks?|months?|years?|mg|mcg|g\b|kg|lb|"
                         r"ml|mL|l\b|L\b|bpm|beats|mmHg|mmol|mg/dl|ng|IU|units?|degrees?|°|x\b|times)", re.IGNORECASE)  # fmt: skip
_DATE_SHAPED = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}(?:[ T]\d{1,2})?$")  # a date, perhaps with an hour
_PHONE_CONTEXT = re.compile(r"(?i)\b(?:call|phone|tel|cell|mobile|fax|whatsapp|contact|reach|message|sms)\b\W*"
                            r"(?:\w+\W+){0,3}$")  # fmt: skip

_STREET_TYPES = (r"Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Court|Ct|Boulevard|Blvd|Terrace|Crescent|Highway|"
                 r"Hwy|Parkway|Pkwy")  # fmt: skip
#: Street words that are also ordinary words ("6 Minute Walk Test"): a street only when a comma follows.
_WEAK_STREET_TYPES = r"Way|Place|Pl|Close|Square|Circle|Row|Walk|Gardens|Grove|Hill|Mews|Trail"
_CITY = r"[A-Z][a-zA-Z'-]+(?:\s+[A-Z][a-zA-Z'-]+){0,2}"
_POSTCODE = (r"(?:\d{5}(?:-\d{4})?|[A-Z]\d[A-Z]\s?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}|\d{4}\s?[A-Z]{2})")
_ADDRESS_TAIL = (rf"(?:,?\s*(?:(?:Apt|Apartment|Suite|Unit|Flat)\.?\s*\w+|(?:\d{{4,5}}\s+(?:[A-Z]{{2}}\s+)?)?{_CITY}"
                 rf"(?:,?\s+{_POSTCODE}|,?\s+[A-Z]{{2}}(?:,?\s+{_POSTCODE})?)?|[A-Z]{{2}}\s+\d{{5}}))*")  # fmt: skip
_ADDRESS = re.compile(
    rf"(?P<x>(?:(?:Flat|Apt|Apartment|Unit|Suite)\.?\s*\w+,\s*)?"
    rf"(?:\d{{1,5}}[A-Za-z]?\s+(?:[A-Z][a-zA-Z'-]+\s+){{1,4}}(?:{_STREET_TYPES})\b\.?"
    rf"|\d{{1,5}}[A-Za-z]?\s+(?:[A-Z][a-zA-Z'-]+\s+){{1,4}}(?:{_WEAK_STREET_TYPES})\b(?=,)"
    rf"|\d{{1,5}}\s+(?:rue|impasse|avenue|allée|allee|chemin|boulevard|quai|calle|rua|Rue|Impasse|Calle|Rua)"
    rf"(?:\s+(?:d[eu]s?|de\s+la|del|della|do|da|l')?\s*[A-Z][\w'-]+){{1,3}}"
    rf"|\d{{1,5}}\s+[A-Z][a-z]+(?:gracht|straat|straße|strasse|gasse|laan|vej|gatan|plein)\b"
    rf"|[A-Z][a-z]+(?:gracht|straat|straße|strasse|gasse|laan|vej|gatan|plein)\s+\d{{1,5}}[a-z]?\b"
    rf"|P\.?\s?O\.?\s+Box\s+\d+)"
    rf"{_ADDRESS_TAIL})"
)  # fmt: skip

_ARTEFACT = re.compile(r"\bchat\s*doctor\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?\n]")


@functools.cache
def name_lists() -> tuple[frozenset[str], frozenset[str]]:
    """(first names, last names) of every locale of Faker's person provider, read from the installed package."""
    import importlib
    import pkgutil

    try:
        import faker.providers.person as person
    except ImportError as err:
        raise StageError("scrub-pii needs the faker package (pip install faker): its name lists") from err
    first: set[str] = set()
    last: set[str] = set()
    for module in pkgutil.iter_modules(person.__path__):
        provider = importlib.import_module(f"{person.__name__}.{module.name}").Provider
        for attr, into in (("first_names", first), ("first_names_male", first), ("first_names_female", first),
                           ("last_names", last)):  # fmt: skip
            value = getattr(provider, attr, None)
            if isinstance(value, (list, tuple, dict)):
                into.update(name for name in value if isinstance(name, str) and name.isalpha())
    return frozenset(first), frozenset(last)


def _is_name_word(word: str, eponyms_too: bool = True) -> bool:
    """Whether ``word`` may be (part of) a name: not a known non-name, nor (with ``eponyms_too``) an eponym."""
    parts = [part for part in re.split(r"[-'’]", word) if part]  # Wolff-Parkinson-White; I've, I'm
    return not any(part in NOT_NAMES or (eponyms_too and part in EPONYMS) for part in parts)


def _name_spans(text: str) -> list[tuple[int, int, bool]]:
    """``(start, end, announced)`` of the names found: those the context announces (a title, an introduction,
    a relation, "patient", a greeting), then list names (a first and a last name of Faker's lists) and a
    signature (a last line of two or three capitalised words, the first a listed first name). Only an
    announced name is replaced wherever else it stands."""
    spans: list[tuple[int, int, bool]] = []

    # after a title, "I am", "my son" or "patient" stands a person, even one called Smith or Wilson
    for trigger in (_TITLE, _RELATION, _INTRO, _PATIENT):
        for match in re.finditer(rf"{trigger}(?P<n>{_NAME_SEQ})", text):
            _add_span(spans, text, match, announced=True, eponyms_too=False)
    for match in re.finditer(rf"{_GREETING}(?:{_TITLE})?(?P<n>{_NAME_SEQ})", text, flags=re.MULTILINE):
        _add_span(spans, text, match, announced=True, eponyms_too=True)  # "Hi, Holter showed": a sentence's start
    first, last = name_lists()
    for match in re.finditer(rf"(?P<n>{_NAME_WORD}(?:\s+{_NAME_WORD}){{1,2}})", text):
        words = match.group("n").split()
        if words[0] in first and all(w in last or w in first for w in words[1:]) and words[-1] in last:
            _add_span(spans, text, match, announced=False, eponyms_too=True)
    for match in re.finditer(rf"(?:^|(?<=[.!?]\s)|(?<=\n))(?P<n>{_NAME_WORD}(?:\s+{_NAME_WORD}){{1,2}})\s*$", text):
        if match.group("n").split()[0] in first:
            _add_span(spans, text, match, announced=False, eponyms_too=True)  # a signature line
    return spans


def _add_span(spans: list, text: str, match: re.Match, announced: bool, eponyms_too: bool) -> None:
    """Add the leading words of ``match``'s group ``n`` that can be names (none before a medical head word)."""
    if _MEDICAL_HEAD.match(text, match.end("n")):
        return  # "Von Willebrand disease", "Dr. Holter monitor"
    kept = []
    for w in re.finditer(_NAME_WORD, match.group("n")):
        if not _is_name_word(w.group(), eponyms_too):
            break
        kept.append(w)
    if kept:
        spans.append((match.start("n") + kept[0].start(), match.start("n") + kept[-1].end(), announced))


def _replace(text: str, pattern: re.Pattern, kind: str, counts: Counter, keep: Callable[[re.Match], bool] | None = None) -> str:
    def swap(match: re.Match) -> str:
        if keep is not None and keep(match):
            return match.group(0)
        counts[kind] += 1
        start, end = match.span("x")
        return match.group(0)[: start - match.start()] + f"[{kind}]" + match.group(0)[end - match.start():]

    return pattern.sub(swap, text)


def _keep_phone(text: str) -> Callable[[re.Match], bool]:
    """Whether a phone-shaped match is something else: a date, a number with a unit, or too few digits."""

    def keep(match: re.Match) -> bool:
        number = match.group("x").rstrip(" .-")
        digits = sum(c.isdigit() for c in number)
        if not 7 <= digits <= 15 or _DATE_SHAPED.match(number) or _UNIT_AFTER.match(text, match.end()):
            return True
        strong = number.startswith(("+", "(")) or digits >= 10
        return not (strong or _PHONE_CONTEXT.search(text[max(0, match.start() - 40): match.start()]))

    return keep


def scrub_text(text: str, counts: Counter, names: set[str] | None = None) -> str:
    """``text`` with its personal data replaced by placeholders (the module docstring); ``counts`` gets one per
    replacement; ``names`` (if given) gathers the names found, to be replaced wherever else they stand."""
    if not text:
        return text
    if _ARTEFACT.search(text):
        text = _drop_artefacts(text)
        counts["artefact"] += 1
    text = _replace(text, _EMAIL, "EMAIL", counts)
    text = _URL.sub(lambda m: _url(m, counts), text)
    text = _replace(text, _DOB, "DATE", counts)
    text = _replace(text, _ADDRESS, "ADDRESS", counts)
    text = _replace(text, _ID, "ID", counts)
    text = _replace(text, _SSN, "ID", counts)
    text = _replace(text, _PHONE, "PHONE", counts, keep=_keep_phone(text))
    spans = sorted(set(_name_spans(text)), reverse=True)
    merged: list[tuple[int, int, bool]] = []
    for start, end, announced in spans:  # right to left, overlapping spans as one
        if merged and start < merged[-1][1] and end > merged[-1][0]:
            merged[-1] = (min(start, merged[-1][0]), max(end, merged[-1][1]), announced or merged[-1][2])
        else:
            merged.append((start, end, announced))
    for start, end, announced in sorted(merged, reverse=True):
        if names is not None and announced:
            names.update(w for w in re.findall(_NAME_WORD, text[start:end]) if _is_name_word(w, eponyms_too=False))
        text = text[:start] + "[NAME]" + text[end:]
        counts["NAME"] += 1
    return text


def _drop_artefacts(text: str) -> str:
    """``text`` without the sentences that name ChatDoctor (each sentence found once: linear in the text)."""
    out, start = [], 0
    for match in _ARTEFACT.finditer(text):
        if match.start() < start:
            continue  # inside a sentence already dropped
        begin = max((m.end() for m in _SENTENCE_END.finditer(text, start, match.start())), default=start)
        end_match = _SENTENCE_END.search(text, match.end())
        end = end_match.end() if end_match else len(text)
        while end < len(text) and text[end] in " \t":
            end += 1
        out.append(text[start:begin])
        start = end
    out.append(text[start:])
    return "".join(out)


def _url(match: re.Match, counts: Counter) -> str:
    url = match.group("x")
    trail = re.search(r"[.,;:!?)\]]+$", url)
    tail = trail.group(0) if trail else ""
    counts["URL"] += 1
    return "[URL]" + tail


def scrub_item(item: dict[str, Any], counts: Counter) -> dict[str, Any]:
    """One conversation with every string field scrubbed; a name found in one field is replaced in all."""
    names: set[str] = set()
    out = {key: scrub_text(value, counts, names) if isinstance(value, str) else value for key, value in item.items()}
    if names:
        again = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")\b")
        for key, value in out.items():
            if isinstance(value, str):
                value, n = again.subn("[NAME]", value)
                counts["NAME"] += n
                out[key] = value
    return out


def read_conversations(path: Path) -> list[dict[str, Any]]:
    """A JSON array of conversation objects; StageError naming the file (and the item) otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StageError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, list):
        raise StageError(f"{path}: expected a JSON array of {{instruction, input, output}} objects, got {type(data).__name__}")
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not any(k in item for k in ("instruction", "input", "output")):
            raise StageError(f"{path}: item {i} is not an object with instruction, input and output")
    return data


def scrub_file(src: str | os.PathLike, dest: str | os.PathLike) -> dict[str, Any]:
    """Scrub the conversations of ``src`` into ``dest`` (atomically) and write the counts beside it; return them."""
    src, dest = Path(src), Path(dest)
    items = read_conversations(src)
    counts: Counter = Counter()
    changed = 0
    scrubbed = []
    for item in items:
        new = scrub_item(item, counts)
        changed += new != item
        scrubbed.append(new)
    summary = {"input": str(src), "items": len(items), "items_changed": changed,
               "replaced": {kind: counts.get(kind, 0) for kind in (*KINDS, "artefact")}}  # fmt: skip
    write_text_atomic(dest, json.dumps(scrubbed, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(dest.with_name(dest.name + COUNTS_SUFFIX), json.dumps(summary, indent=2) + "\n")
    log.info("scrubbed %d of %d conversations: %s", changed, len(items), summary["replaced"])
    return summary


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "scrub-pii",
        help="replace personal data in conversations (HealthCareMagic schema) with typed placeholders",
        description=(
            "Read a JSON array of {instruction, input, output} conversations and write the same with names, "
            "phone numbers, e-mail addresses, postal addresses, identifiers, dates of birth and URLs replaced "
            "by [NAME], [PHONE], [EMAIL], [ADDRESS], [ID], [DATE] and [URL], and ChatDoctor's artefacts removed; "
            "clinical content (leads, intervals, rates, blood pressure, ages, drugs, eponyms) is kept. The "
            "counts per kind go to <out>.counts.json. Offline: no model, no network."
        ),
    )
    p.add_argument("--in", dest="src", required=True, type=Path, help="conversations (JSON array)")
    p.add_argument("--out", required=True, type=Path, help="the scrubbed conversations (JSON array); counts beside it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = scrub_file(args.src, args.out)
    print(json.dumps(summary["replaced"]))
    return 0
