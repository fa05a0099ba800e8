"""The interface every translation backend implements, and the glossary backend behind it.

The stage code holds a :class:`Translator` and never asks which one: ``name`` and ``model`` go into
the output table, ``translate(texts, hints)`` returns one English string per text, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tqdm import tqdm

from ecglm.text.translate.glossary import Glossary, load_glossary
from ecglm.text.translate.langdetect import LanguageDetector
from ecglm.text.translate.reports import normalise_spaces


@dataclass(frozen=True)
class Hint:
    """What the stage knows about one text: its language (None: let the backend detect it), whether
    PTB-XL's 255-character limit cut it (its last word may be a fragment), and a label naming it in
    error messages (e.g. ``ecg_id 1234``)."""

    language: str | None = None
    truncated: bool = False
    label: str = ""


class TranslationError(Exception):
    """A backend could not deliver a valid English text; the message names the text's label."""


@runtime_checkable
class Translator(Protocol):
    """A translation backend: German/Swedish/English report text in, English out."""

    name: str
    model: str

    def translate(self, texts: list[str], hints: Sequence[Hint] | None = None) -> list[str]:
        """One English text per input text, in order. Raises TranslationError if one cannot be had."""
        ...


class GlossaryTranslator:
    """The offline, deterministic backend: ecglm/text/translate/glossary/ phrase tables (see glossary.py).

    ``model`` names the glossary version (a hash of its files), so outputs record which glossary
    made them. English texts pass through with their spaces normalised.
    """

    name = "glossary"

    def __init__(self, glossary: Glossary | None = None, detector: LanguageDetector | None = None):
        self.glossary = glossary or load_glossary()
        self.detector = detector or LanguageDetector(self.glossary)
        self.model = f"glossary-{self.glossary.version}"

    def translate(self, texts: list[str], hints: Sequence[Hint] | None = None) -> list[str]:
        hints = list(hints) if hints is not None else [Hint()] * len(texts)
        if len(hints) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(hints)} hints")
        out = []
        for text, hint in tqdm(list(zip(texts, hints)), desc="translate (glossary)", unit="text", leave=False,
                               disable=len(texts) < 200):
            lang = hint.language or self.detector.detect(text)
            if lang == "en":
                out.append(normalise_spaces(text))
            else:
                out.append(self.glossary.translate(text, lang, truncated=hint.truncated).text)
        return out
