"""Language of a PTB-XL report (de, en, sv) from its text alone.

Deterministic word-list scoring: each word of the report (folded spelling, so capital umlauts and
ae/oe/ue spellings are one word) votes for the languages whose vocabulary holds it, split evenly when
several do. The vocabularies are the glossary's source phrases (de, sv), its English side plus
ecglm/text/translate/glossary/en_words.txt (en), and small stop-word lists. A word in no vocabulary votes through
the glossary's stem/compound/near-spelling analysis; letters only one language writes (å: Swedish;
ü, ß: German) vote too. Numbers, leads and ECG notation (``v1``, ``avf``, ``qrs``) and
keep.tsv terms do not vote. Ties go to the language PTB-XL holds most of (de, then en, then sv).

The cardiologist's ``Edit:`` note is German whatever the report's language: :func:`detect_report`
splits it off first.
"""

from __future__ import annotations

import re

from ecglm.text.translate.glossary import Glossary, load_glossary, tokenize
from ecglm.text.translate.reports import fold, split_edit_note

LANGUAGE_CODES = ("de", "en", "sv")
_PRIORITY = {"de": 0, "en": 1, "sv": 2}

STOPWORDS = {
    "de": "der die das und oder nicht mit von auf für bei ist im in zum zur des dem den ein eine einer "
    "als wie nach vor bis über unter noch kein keine sonst auch",
    "sv": "och eller med av på för som i ej inte vid mot är en ett till från har efter utan",
    "en": "the and or of with in is are to be may this that these there by for from on at as an it "
    "not no but than which were was has have likely due",
}


class LanguageDetector:
    """Scores a text against the de/en/sv vocabularies built from a :class:`Glossary`."""

    def __init__(self, glossary: Glossary | None = None):
        self.glossary = glossary or load_glossary()
        stop = {lang: {fold(w) for w in words.split()} for lang, words in STOPWORDS.items()}
        self.vocab: dict[str, set[str]] = {
            "de": self.glossary.vocabulary("de") | stop["de"],
            "sv": self.glossary.vocabulary("sv") | stop["sv"],
            "en": set(self.glossary.english) | stop["en"],
        }

    def scores(self, text: str) -> dict[str, float]:
        """Votes per language (see module doc); the text should not hold an Edit: note."""
        score = {lang: 0.0 for lang in LANGUAGE_CODES}
        for token in tokenize(text):
            if not token.is_word or self.glossary.is_kept(token):
                continue  # numbers, leads, ECG notation and drug names say nothing about language
            langs = [lang for lang in LANGUAGE_CODES if token.key in self.vocab[lang]]
            if not langs:
                langs = [lang for lang in ("de", "sv") if self.glossary.lookup_word(lang, token.key)]
            if not langs:
                continue
            for lang in langs:
                score[lang] += 1.0 / len(langs)
        lowered = text.lower()
        score["sv"] += 2.0 * len(re.findall(r"å", lowered))
        score["de"] += 2.0 * len(re.findall(r"[üß]", lowered))
        return score

    def detect(self, text: str) -> str:
        """'de', 'en' or 'sv' for a report text without its Edit: note. A text with no word at all
        (empty, or only numbers) is 'en': there is nothing to translate."""
        score = self.scores(text)
        if not any(score.values()):
            return "en"
        return max(LANGUAGE_CODES, key=lambda lang: (score[lang], -_PRIORITY[lang]))

    def detect_report(self, report: str | None) -> str:
        """The language of a raw PTB-XL report, judged on the text before any ``Edit:`` note."""
        body, _ = split_edit_note("" if report is None else str(report))
        return self.detect(body)


_DEFAULT: LanguageDetector | None = None


def detect_language(report: str | None) -> str:
    """The language ('de', 'en', 'sv') of a raw PTB-XL report, from its text alone (default glossary)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = LanguageDetector()
    return _DEFAULT.detect_report(report)
