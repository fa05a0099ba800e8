"""Independent checks of the translate stage: language agreement, leftover words, clinical concepts.

Three figures, each computed on two parts of the real reports: the HELD-OUT fifth
(``ecg_id % 5 == 0``, never used to write the glossary) and the REST (the four fifths it was
written from); see ecglm/text/translate/glossary/README.md.

1. Language agreement: the detector against an independent labelling, Hunspell dictionaries
   (de_DE, sv_SE, en_US: each word of a report is looked up; the language that alone knows the most
   words wins) overridden by hand-checked labels (tests/data/language_labels.csv). Reports with no
   word any dictionary knows and no hand label are left out.
2. No leftover words: the share of non-English reports whose English holds no German or Swedish
   word. A word is a leftover when a German or Swedish dictionary (Hunspell, or the glossary's own
   source vocabulary) knows it and neither the English dictionary nor the glossary's English
   vocabulary does; numbers, leads, ECG notation, codes and keep.tsv terms never are.
3. Clinical concepts kept: for every concept a source report names (regular expressions per
   language, below), whether its English names it too. Never scored against scp_codes.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from ecglm.text.translate.glossary import Glossary, tokenize
from ecglm.text.translate.hunspell import Dictionary
from ecglm.text.translate.reports import fold, parse_report, split_edit_note

HELD_OUT = "held-out fifth"
REST = "rest"


def part_of(ecg_id: int) -> str:
    """The evaluation part of a report: the held-out fifth (ecg_id % 5 == 0) or the rest."""
    return HELD_OUT if ecg_id % 5 == 0 else REST


# Concept detectors, applied to folded text (lower case, ä -> ae, ö -> oe, ü -> ue, å -> aa).
# "src" patterns read the German (de) or Swedish (sv) source; "en" patterns read English.
CONCEPTS: dict[str, dict[str, str]] = {
    "sinus rhythm": {"de": r"sinus\s?-?rhythmus|\bsr\b", "sv": r"sinus\s?rytm", "en": r"sinus rhythm"},
    "atrial fibrillation": {
        "de": r"v\w{1,3}hofflimmern",
        "sv": r"foermaksflimmer",
        "en": r"atrial fibrillation",
    },
    "atrial flutter": {"de": r"flattern", "sv": r"fladder", "en": r"flutter"},
    "tachycardia": {
        "de": r"tachyk|tachyc|tachyarr",
        "sv": r"tachykardi|takykardi|hoeg kammarfrekvens",
        "en": r"tachycard|tachyarrhythm|rapid ventricular response",
    },
    "bradycardia": {"de": r"brs?adyk", "sv": r"bradykardi", "en": r"bradycard|slow ventricular response"},
    "left ventricular hypertrophy": {
        "de": r"linkshypertroph|linksventrikelhypertroph|linkskam+erhypertroph|\blvh\b",
        "sv": r"vaenster kammark?hypertrofi",
        "en": r"left ventricular hypertrophy|\blvh\b",
    },
    "right bundle branch block": {
        "de": r"rechtsschenkelblock|\brsb\b|schenkelblock,?\s*(partiell\s*)?rechts",
        "sv": r"h\w{0,2}gersidigt skaenkelblock",
        "en": r"right(-sided)? bundle branch block|\brbbb\b",
    },
    "left bundle branch block": {
        "de": r"linksschenkelblock|\blsb\b|links[- ]schenkelblock",
        "sv": r"vaenstersidigt skaenkelblock",
        "en": r"left(-sided)? bundle branch block|\blbbb\b",
    },
    "av block": {"de": r"\ba-?v[- ]?block", "sv": r"\ba-?v[- ]?block", "en": r"\bav block|atrioventricular block"},
    "infarction": {"de": r"infarkt", "sv": r"infarkt", "en": r"infarct"},
    "ischaemia": {"de": r"isch(ae|a)mie", "sv": r"ischemi", "en": r"ischa?emi"},
    "low voltage": {
        "de": r"niederspannung|niedervoltage|low[- ]?vol",
        "sv": r"laaga qrs[ -]amplituder",
        "en": r"low (limb lead )?voltage|low-voltage|low[- ]vol|low qrs amplitudes",
    },
    "pacemaker": {"de": r"schrittmacher", "sv": r"pacemaker", "en": r"pacemaker|paced"},
    "extrasystoles": {
        "de": r"extrasystol|exrtrasystol|\bves\b|-es\b|\bes\b",
        "sv": r"extrasystol|extraslag",
        "en": r"extrasystol|premature|ectopic",
    },
    "left axis": {"de": r"linkstyp|linkslage|\bllt\b", "sv": r"vaenster el-axel", "en": r"left axis"},
    "right axis": {"de": r"rechtstyp|rechtslage|\brlt\b", "sv": r"hoeger el-axel", "en": r"right axis|rightward axis"},
    "normal axis": {
        "de": r"lagetyp normal|mittellage|indifferenz|indiff\.|\bmlt\b",
        "sv": r"normal el-axel",
        "en": r"normal axis|intermediate axis|axis normal",
    },
    "vertical axis": {"de": r"steil|\bslt\b", "sv": r"vertikal el-axel", "en": r"vertical axis"},
    "indeterminate axis": {
        "de": r"schwierig bestimmbare",
        "sv": r"svaarbestaemmbar",
        "en": r"indeterminate",
    },
}
_COMPILED = {c: {lang: re.compile(p) for lang, p in d.items()} for c, d in CONCEPTS.items()}


def concepts(text: str, lang: str) -> set[str]:
    """The clinical concepts ``text`` (in ``lang``: de, sv or en) names."""
    folded = fold(text)
    return {c for c, pats in _COMPILED.items() if lang in pats and pats[lang].search(folded)}


def read_hand_labels(path: str | Path) -> dict[int, str]:
    """ecg_id -> language from a CSV with columns ecg_id, language."""
    with open(path, newline="", encoding="utf-8") as fh:
        return {int(row["ecg_id"]): row["language"].strip() for row in csv.DictReader(fh)}


def hunspell_language(text: str, dictionaries: dict[str, Dictionary]) -> str | None:
    """The language whose dictionary alone knows the most words of ``text`` (ties: the one that knows
    the most words in all); None if no dictionary knows any word. The Edit: note is left out."""
    body, _ = split_edit_note(text)
    unique = {lang: 0 for lang in dictionaries}
    total = {lang: 0 for lang in dictionaries}
    for word in re.findall(r"[^\W\d_]{2,}", body.lower()):
        knowing = [lang for lang, d in dictionaries.items() if d.knows(word)]
        for lang in knowing:
            total[lang] += 1
        if len(knowing) == 1:
            unique[knowing[0]] += 1
    if not any(total.values()):
        return None
    return max(sorted(dictionaries), key=lambda lang: (unique[lang], total[lang]))


def leftover_words(english: str, glossary: Glossary, dictionaries: dict[str, Dictionary]) -> list[str]:
    """German or Swedish words left in ``english`` (see module doc)."""
    foreign_vocab = glossary.vocabulary("de") | glossary.vocabulary("sv")
    found = []
    for token in tokenize(english):
        if not token.is_word or glossary.is_kept(token) or token.key == "truncated":
            continue
        word = token.text.lower()
        if glossary.is_english(token.key) or dictionaries["en"].knows(word):
            continue
        if token.key in foreign_vocab or dictionaries["de"].knows(word) or dictionaries["sv"].knows(word):
            found.append(word)
    return found


@dataclass
class Figures:
    """The three figures for one part (counts and rates)."""

    language_agree: int = 0
    language_total: int = 0
    clean: int = 0
    translated: int = 0
    concepts_kept: int = 0
    concepts_total: int = 0
    disagreements: list[tuple[int, str, str]] = field(default_factory=list)
    leftovers: list[tuple[int, list[str]]] = field(default_factory=list)
    lost_concepts: list[tuple[int, str]] = field(default_factory=list)

    @property
    def language_rate(self) -> float:
        return self.language_agree / self.language_total if self.language_total else float("nan")

    @property
    def clean_rate(self) -> float:
        return self.clean / self.translated if self.translated else float("nan")

    @property
    def concept_rate(self) -> float:
        return self.concepts_kept / self.concepts_total if self.concepts_total else float("nan")


def evaluate(
    rows: list[dict],
    glossary: Glossary,
    dictionaries: dict[str, Dictionary],
    hand_labels: dict[int, str],
) -> dict[str, Figures]:
    """The three figures per part for the stage's output rows (dicts with ecg_id, language, report,
    report_en)."""
    figures = {HELD_OUT: Figures(), REST: Figures()}
    for row in rows:
        ecg_id, lang = int(row["ecg_id"]), row["language"]
        fig = figures[part_of(ecg_id)]
        label = hand_labels.get(ecg_id) or hunspell_language(row["report"], dictionaries)
        if label is not None:
            fig.language_total += 1
            if label == lang:
                fig.language_agree += 1
            else:
                fig.disagreements.append((ecg_id, label, lang))
        if lang == "en":
            continue
        fig.translated += 1
        left = leftover_words(row["report_en"], glossary, dictionaries)
        if left:
            fig.leftovers.append((ecg_id, left))
        else:
            fig.clean += 1
        body = parse_report(row["report"]).body
        named = concepts(body, lang)
        kept = concepts(row["report_en"], "en")
        fig.concepts_total += len(named)
        fig.concepts_kept += len(named & kept)
        fig.lost_concepts.extend((ecg_id, c) for c in sorted(named - kept))
    return figures


SAMPLE_FILES = ("ptbxl_database.csv", "ptbxl_database.reports-dev.csv")


def sample_reports(ptbxl_dir: str | Path) -> list[tuple[int, str]]:
    """(ecg_id, report) of every distinct record in the real PTB-XL sample files (the 300 rows of
    ptbxl_database.csv and the 2,778 of ptbxl_database.reports-dev.csv; they share 200 ids)."""
    from ecglm.text.translate.stage import read_reports

    merged: dict[int, str] = {}
    for name in SAMPLE_FILES:
        for ecg_id, report in read_reports(database=Path(ptbxl_dir) / name):
            merged.setdefault(ecg_id, report)
    return sorted(merged.items())


def glossary_figures(
    ptbxl_dir: str | Path, hand_labels_path: str | Path, dictionaries: dict[str, Dictionary]
) -> tuple[dict[str, Figures], list[dict]]:
    """Translate the real sample with the glossary backend and compute the figures per part."""
    from ecglm.text.translate.glossary import load_glossary
    from ecglm.text.translate.langdetect import LanguageDetector
    from ecglm.text.translate.stage import translate_reports
    from ecglm.text.translate.translator import GlossaryTranslator

    glossary = load_glossary()
    detector = LanguageDetector(glossary)
    result = translate_reports(sample_reports(ptbxl_dir), GlossaryTranslator(glossary, detector), glossary, detector)
    figures = evaluate(result.rows, glossary, dictionaries, read_hand_labels(hand_labels_path))
    return figures, result.rows
