"""PTB-XL report text: normalisation, the cardiologist's ``Edit:`` note, the auto-report tail, truncation.

A PTB-XL ``report`` is lower-case German, English or Swedish with PTB-XL's quirks (datasets.md):
capital umlauts inside words (``ischÄmie``), ae/oe/ue spellings (``ueberdrehter``), runs of spaces,
DOS code-page artefacts (``f#r`` for ``für``, ``á`` for ``ß``), a German auto-report tail
``4.46   unbestÄtigter bericht`` (often itself cut short), a 255-character limit that may cut the last
word, and a cardiologist's note after ``Edit:`` (German, mixed case, SCP codes).

:func:`parse_report` splits one raw report into these parts; :func:`fold` gives the spelling every
vocabulary lookup uses (lower case, umlauts as ae/oe/ue, å as aa, ß as ss).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: PTB-XL's report column holds at most this many characters (before an appended Edit: note).
REPORT_LIMIT = 255
#: The German auto-report tail, in its full form (normalised spelling).
AUTO_TAIL = "unbestätigter bericht"
AUTO_TAIL_MARK = "(unconfirmed automatic report)"

_SPACES = re.compile(r"\s+")
_EDIT = re.compile(r"\s*\bEdit\s*:\s*", re.IGNORECASE)
# "4.46" then what is left of "unbestätigter bericht" (cut anywhere, any spelling of the ä)
_TAIL_START = re.compile(r"(?:^|\s)4\.46(?=\s|$)(?P<rest>[^\d]*)$")
_TAIL_CUT = re.compile(r"(?:^|\s)4\.4?$")  # a tail cut inside "4.46" itself
# DOS code-page artefacts seen in PTB-XL: '#' stands for Ü/ü next to letters, 'á' for ß,
# 'ó' followed by a symbol is line-drawing debris.
_HASH_UE = re.compile(r"#(?=[^\W\d_])|(?<=[^\W\d_])#")
_JUNK = re.compile(r"ó[¿¬½©®]?")

_FOLD_TABLE = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "å": "aa", "ß": "ss", "é": "e", "è": "e"})


def normalise_spaces(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends."""
    return _SPACES.sub(" ", text).strip()


def repair(text: str) -> str:
    """Undo PTB-XL's code-page artefacts: ``f#r`` -> ``für``, ``schweiáausbruch`` -> ``schweißausbruch``,
    line-drawing debris (``ó¬``) -> space. Case, umlauts and spaces are otherwise kept."""
    text = _HASH_UE.sub("ü", text)
    text = text.replace("á", "ß")
    return _JUNK.sub(" ", text)


def fold(text: str) -> str:
    """The lookup spelling: lower case, ä/ö/ü -> ae/oe/ue, å -> aa, ß -> ss (so that ``ischÄmie``,
    ``ischämie`` and ``ischaemie`` are one word). Guarantees ``fold(fold(x)) == fold(x)``."""
    return repair(text.lower()).translate(_FOLD_TABLE)


@dataclass(frozen=True)
class ParsedReport:
    """One raw report split into its parts.

    body: the report without the Edit: note and without the auto-report tail, spaces normalised.
    edit_note: the text after ``Edit:`` (spaces normalised) or None.
    auto_unconfirmed: the German auto-report tail (``4.46 ... unbestätigter bericht``, or a cut
      variant of it) was present.
    truncated: the report reached PTB-XL's 255-character limit, so its last word may be cut.
    """

    source: str
    body: str
    edit_note: str | None
    auto_unconfirmed: bool
    truncated: bool


def split_edit_note(report: str) -> tuple[str, str | None]:
    """Split ``report`` at its first ``Edit:`` into (report text, note). The note is None when absent
    and "" when ``Edit:`` is followed by nothing."""
    match = _EDIT.search(report)
    if match is None:
        return report, None
    return report[: match.start()], normalise_spaces(report[match.end():])


def strip_auto_tail(text: str, truncated: bool = False) -> tuple[str, bool]:
    """Remove the German auto-report tail; return (text without it, whether it was there).

    Recognises ``4.46`` followed by any prefix of ``unbestätigter bericht`` (the report is often cut
    inside it: ``4.46 unbestÄti``, ``4.46 u``, ``4.46``). When ``truncated``, a cut inside the number
    itself (``... 4.4``) counts too.
    """
    match = _TAIL_START.search(text)
    if match is not None:
        rest = normalise_spaces(fold(match.group("rest")))
        if fold(AUTO_TAIL).startswith(rest):
            return text[: match.start()].rstrip(), True
    if truncated:
        cut = _TAIL_CUT.search(text.rstrip())
        if cut is not None and len(text) >= REPORT_LIMIT - 5:
            return text[: cut.start()].rstrip(), True
    return text, False


def parse_report(report: str | None) -> ParsedReport:
    """Split a raw PTB-XL report into body, Edit: note, auto-tail flag and truncation flag.

    ``truncated`` is True when the report text before any Edit: note is at least 255 characters long
    (PTB-XL's field limit; the cut may fall mid-word). A missing report (None) parses as "".
    """
    source = "" if report is None else str(report)
    text, note = split_edit_note(source)
    truncated = len(text) >= REPORT_LIMIT
    text, auto = strip_auto_tail(repair(text), truncated=truncated)
    note_text = None if note is None else repair(note)
    return ParsedReport(
        source=source,
        body=normalise_spaces(text),
        edit_note=note_text,
        auto_unconfirmed=auto,
        truncated=truncated,
    )
