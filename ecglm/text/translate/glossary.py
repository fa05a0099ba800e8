"""The glossary backend: deterministic, offline phrase translation of PTB-XL's German and Swedish reports.

The vocabulary lives in reviewable data files (ecglm/text/translate/glossary/, see its README.md):

- ``de.tsv``, ``sv.tsv``: ``source<TAB>english`` phrases per language;
- ``abbreviations.tsv``: ``language<TAB>source<TAB>english`` (a source ending in "." also matches
  without the dot when three or more characters are left);
- ``keep.tsv``: terms kept verbatim in every language (drug names, ECG notation, units);
- ``en_words.txt``: English words that may stand in a report (never reported as untranslated).

Translation works on tokens (words, numbers, punctuation) in the folded spelling of
:func:`ecglm.text.translate.reports.fold`, so capital umlauts, ae/oe/ue spellings, case and runs of spaces
do not matter. At each position the longest glossary phrase wins. A word no phrase covers is, in
order: kept (numbers, ECG notation such as ``v1``/``rsIII``, upper-case SCP codes, keep.tsv terms);
translated through its inflection stem (``anteroseptaler`` -> ``anteroseptal``), as a compound of
glossary words (``linkskammerhypertrophie``), or as the one glossary word within a small edit
distance (typos such as ``pathologsiches``); completed when it is the cut last word of a truncated
report; passed through when it is English; read as the glossary word it begins when a dot follows
(``repol.``); and otherwise passed through AND reported as untranslated.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ecglm.core.errors import StageError
from ecglm.core.resources import packaged
from ecglm.text.translate.reports import fold

log = logging.getLogger(__name__)

#: The glossary shipped in the package (ecglm/text/translate/glossary/); --glossary-dir names another.
DEFAULT_GLOSSARY_DIR = packaged("ecglm.text.translate", "glossary")
LANGUAGES = ("de", "sv")
TRUNCATED_MARK = "[truncated]"

# words, numbers (with decimal/ratio parts: 4.46, 0,2, 2:1) and single punctuation characters
TOKEN = re.compile(r"[^\W_]+(?:[.,:]\d+)*|\S")
# ECG notation kept as is: leads (i, ii, iii, avr, avl, avf, v1..v6), wave letters and their
# combinations with a lead (rsIII, QSaVL, RsV2, qiii), intervals (qrs, qt, pr, st)
_ECG_NOTATION = re.compile(
    r"^(?:[pqrstu]|[qrs]{1,6}(?:i{1,3}|avr|avl|avf|v\d{0,2})?|i{1,3}|av[rlf]|v\d{0,2}|qrs|qt|qtc|pr|st)$"
)
_SCP_CODE = re.compile(r"^[A-Z][A-Z0-9]{1,7}$")  # NORM, IRBBB, LVH, ISC, 1AVB ...
_WORDLIKE = re.compile(r"^[^\W\d_]{2,}$")
_SUFFIXES = {
    "de": ("en", "er", "es", "em", "e", "s", "n"),
    "sv": ("arna", "erna", "orna", "na", "en", "et", "er", "ar", "or", "a", "t", "e"),
}


@dataclass(frozen=True)
class Token:
    """One token of a text: its original spelling, folded key, and whether whitespace preceded it."""

    text: str
    key: str
    space_before: bool

    @property
    def is_word(self) -> bool:
        return bool(_WORDLIKE.match(self.key))


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; the folded key of each is what the glossary is looked up with."""
    tokens = []
    last_end = 0
    for match in TOKEN.finditer(text):
        tokens.append(Token(match.group(0), fold(match.group(0)), match.start() > last_end or not tokens))
        last_end = match.end()
    if tokens:
        tokens[0] = Token(tokens[0].text, tokens[0].key, False)
    return tokens


def render(pieces: list[tuple[str, bool]]) -> str:
    """Join (text, space_before) pieces into one string with single spaces."""
    out: list[str] = []
    for text, space in pieces:
        if not text:
            continue
        if out and space:
            out.append(" ")
        out.append(text)
    return re.sub(r"\s+", " ", "".join(out)).strip()


@dataclass
class GlossaryResult:
    """The English of one text and the source words the glossary could not translate."""

    text: str
    untranslated: list[str] = field(default_factory=list)


def _damerau_at_most(a: str, b: str, limit: int) -> bool:
    """True if the optimal-string-alignment distance between ``a`` and ``b`` is <= ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return False
    prev2: list[int] | None = None
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return False
        prev2, prev = prev, cur
    return prev[-1] <= limit


def _read_rows(path: Path, columns: int) -> list[tuple[int, list[str]]]:
    rows = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in raw.split("\t")]
        if len(parts) < columns or not all(parts[:columns]):
            raise StageError(f"{path}: line {lineno} needs {columns} tab-separated columns: {raw!r}")
        rows.append((lineno, parts))
    return rows


class Glossary:
    """The phrase tables of ecglm/text/translate/glossary/ and the translation that uses them (see module doc)."""

    def __init__(self, directory: str | Path = DEFAULT_GLOSSARY_DIR):
        self.directory = Path(directory)
        self.phrases: dict[str, dict[tuple[str, ...], str]] = {lang: {} for lang in LANGUAGES}
        self.sources: dict[str, dict[tuple[str, ...], str]] = {lang: {} for lang in LANGUAGES}
        self.keep: set[str] = set()
        self.english: set[str] = set()
        files = [self.directory / f"{lang}.tsv" for lang in LANGUAGES]
        files += [self.directory / name for name in ("abbreviations.tsv", "keep.tsv", "en_words.txt")]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise StageError(f"glossary files missing: {', '.join(missing)}")
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        self.version = digest.hexdigest()[:12]
        self._read_phrases()
        self._read_vocabulary()
        self.max_len = {lang: max((len(k) for k in self.phrases[lang]), default=1) for lang in LANGUAGES}
        # single-word entries, for stems, compounds, typos and truncated words
        self.words = {lang: {k[0]: v for k, v in self.phrases[lang].items() if len(k) == 1} for lang in LANGUAGES}
        self._stems = self._stem_tables()
        self._by_length = {
            lang: sorted((w for w in self.words[lang] if len(w) >= 4), key=lambda w: (len(w), w)) for lang in LANGUAGES
        }

    def _read_phrases(self) -> None:
        """The phrase tables (de.tsv, sv.tsv) and the abbreviations."""
        for lang in LANGUAGES:
            path = self.directory / f"{lang}.tsv"
            for lineno, parts in _read_rows(path, 2):
                self._add(lang, parts[0], parts[1], f"{path}:{lineno}")
        path = self.directory / "abbreviations.tsv"
        for lineno, parts in _read_rows(path, 3):
            lang, source, english = parts[:3]
            if lang not in LANGUAGES:
                raise StageError(f"{path}: line {lineno}: language {lang!r} is not one of {LANGUAGES}")
            self._add(lang, source, english, f"{path}:{lineno}")
            if source.endswith(".") and len(source) > 3:  # not "m." -> "m" (the sex in "(m,19)")
                self._add(lang, source[:-1], english, f"{path}:{lineno}", weak=True)

    def _read_vocabulary(self) -> None:
        """The terms kept as they are and the English words (the list, and every word of a translation)."""
        for _, parts in _read_rows(self.directory / "keep.tsv", 1):
            self.keep.add(fold(parts[0]))
        for raw in (self.directory / "en_words.txt").read_text(encoding="utf-8").splitlines():
            word = raw.strip()
            if word and not word.startswith("#"):
                self.english.add(fold(word))
        for lang in LANGUAGES:
            for english in self.phrases[lang].values():
                self.english.update(t.key for t in tokenize(english) if t.is_word)

    def _stem_tables(self) -> dict[str, dict[str, str | None]]:
        """Inflection stems of the single words (anterioren, anteriore -> anterior-); ambiguous ones None."""
        stems: dict[str, dict[str, str | None]] = {lang: {} for lang in LANGUAGES}
        for lang in LANGUAGES:
            table = stems[lang]
            for word, english in self.words[lang].items():
                for stem in self._stem_forms(lang, word):
                    if stem in self.words[lang]:
                        continue
                    table[stem] = english if table.get(stem, english) == english else None
        return stems

    def _add(self, lang: str, source: str, english: str, where: str, weak: bool = False) -> None:
        key = tuple(t.key for t in tokenize(source))
        if not key:
            raise StageError(f"{where}: empty source phrase")
        table = self.phrases[lang]
        if key in table and table[key] != english:
            if weak:
                return
            raise StageError(f"{where}: {source!r} is already translated as {table[key]!r}, not {english!r}")
        table[key] = english
        self.sources[lang].setdefault(key, source)

    # ----------------------------------------------------------------------------------------
    def vocabulary(self, lang: str) -> set[str]:
        """Every folded word that occurs in a source phrase of ``lang``."""
        return {w for key in self.phrases[lang] for w in key if _WORDLIKE.match(w)}

    def is_kept(self, token: Token) -> bool:
        """Numbers, ECG notation, SCP codes (upper case in the original) and keep.tsv terms."""
        key = token.key
        if any(ch.isdigit() for ch in key):
            return True
        if key in self.keep or _ECG_NOTATION.match(key):
            return True
        return bool(_SCP_CODE.match(token.text))

    def is_english(self, key: str) -> bool:
        return key in self.english or key in self.keep

    @functools.lru_cache(maxsize=16384)
    def lookup_word(self, lang: str, key: str) -> str | None:
        """The English of one folded word that is no glossary entry itself: through its inflection
        stem, as a compound of glossary words, or as a unique near-spelling. None if none applies."""
        return self._stem(lang, key) or self._compound(lang, key) or self._near(lang, key)

    @staticmethod
    def _stem_forms(lang: str, word: str) -> list[str]:
        """``word`` without each inflection ending it has (3+ letters left), longest stem first."""
        return [word[: -len(sfx)] for sfx in _SUFFIXES[lang] if word.endswith(sfx) and len(word) - len(sfx) >= 3]

    def _stem(self, lang: str, key: str) -> str | None:
        """A word that shares its stem with exactly one glossary word (``anteroseptaler`` ->
        ``anteroseptal``, ``alle`` -> ``allen``, ``hebungen`` -> ``hebung``)."""
        words, stems = self.words[lang], self._stems[lang]
        for candidate in [key, *self._stem_forms(lang, key)]:
            if candidate != key and candidate in words:
                return words[candidate]
            if stems.get(candidate):
                return stems[candidate]
        return None

    def _known(self, lang: str, key: str) -> str | None:
        return self.words[lang].get(key) or self._stem(lang, key)

    def _compound(self, lang: str, key: str) -> str | None:
        if len(key) < 7:
            return None
        for cut in range(len(key) - 3, 2, -1):  # longest head first
            head, tail = key[:cut], key[cut:]
            first = self._known(lang, head)
            if first is None and head.endswith("s") and len(head) > 4:
                first = self._known(lang, head[:-1])
            if first is None:
                continue
            second = self._known(lang, tail)
            if second is None and len(tail) >= 7:
                second = self._compound(lang, tail)
            if second is not None:
                return f"{first} {second}"
        return None

    def _near(self, lang: str, key: str) -> str | None:
        if len(key) < 5:
            return None
        limit = 1 if len(key) < 9 else 2
        found: dict[str, int] = {}
        for word in self._by_length[lang]:
            if abs(len(word) - len(key)) > limit:
                continue
            if _damerau_at_most(key, word, limit):
                found[self.words[lang][word]] = found.get(self.words[lang][word], 0) + 1
        if len(found) == 1:
            return next(iter(found))
        if len(found) > 1 and limit == 2:  # prefer a unique distance-1 match
            near = {self.words[lang][w] for w in self._by_length[lang] if _damerau_at_most(key, w, 1)}
            if len(near) == 1:
                return near.pop()
        return None

    def complete(self, lang: str, fragment: str) -> str | None:
        """The English of the shortest glossary word that starts with ``fragment`` (a word cut by
        PTB-XL's 255-character limit); None if no word does."""
        if len(fragment) < 3:
            return None
        for word in self._by_length[lang] + sorted(w for w in self.words[lang] if len(w) < 4):
            if word.startswith(fragment):
                return self.words[lang][word]
        return None

    # ----------------------------------------------------------------------------------------
    def translate(
        self, text: str, lang: str, truncated: bool = False, usage: collections.Counter | None = None
    ) -> GlossaryResult:
        """Translate ``text`` (German or Swedish) to English, phrase by phrase (see module doc).

        ``truncated``: the text was cut at PTB-XL's limit, so its last word may be a fragment; a
        fragment is completed to the glossary word it begins, or replaced by ``[truncated]``.
        ``usage``: if given, counts each phrase used, keyed by (lang, folded phrase).
        Guarantees: every source word is translated, kept (numbers, notation, codes, keep.tsv),
        English, or listed in ``untranslated`` (and passed through).
        """
        if lang not in LANGUAGES:
            raise ValueError(f"glossary translates {LANGUAGES}, not {lang!r}")
        tokens = tokenize(text)
        table, max_len = self.phrases[lang], self.max_len[lang]
        last_word = max((i for i, t in enumerate(tokens) if t.is_word), default=-1)
        pieces: list[tuple[str, bool]] = []
        untranslated: list[str] = []
        i = 0
        while i < len(tokens):
            token = tokens[i]
            for length in range(min(max_len, len(tokens) - i), 0, -1):
                key = tuple(t.key for t in tokens[i : i + length])
                english = table.get(key)
                if english is not None:
                    if usage is not None:
                        usage[(lang, key)] += 1
                    pieces.append((english, token.space_before))
                    i += length
                    if key[-1] == "." and i < len(tokens) and tokens[i].is_word and not tokens[i].space_before:
                        # "rep.stoerungen": the abbreviation took the dot; keep the words apart
                        tokens[i] = Token(tokens[i].text, tokens[i].key, True)
                    break
            else:
                dotted = i + 1 < len(tokens) and tokens[i + 1].text == "." and not tokens[i + 1].space_before
                word, took_dot = self._word(token, lang, truncated and i == last_word, dotted, untranslated)
                pieces.append((word, token.space_before))
                i += 2 if took_dot else 1
        return GlossaryResult(render(pieces), untranslated)

    def _word(
        self, token: Token, lang: str, cut: bool, dotted: bool, untranslated: list[str]
    ) -> tuple[str, bool]:
        """The English of one token no phrase covers (see module doc for the order of the rules),
        and whether it took the "." after it. ``cut``: the last word of a truncated text;
        ``dotted``: followed by "." (an abbreviation such as ``repol.`` is read as the glossary
        word it begins, dot included)."""
        key = token.key
        if not token.is_word or self.is_kept(token):
            return token.text, False
        if cut:
            completed = self.complete(lang, key)
            if completed is not None:
                return completed, False
        english = self.lookup_word(lang, key)
        if english is not None:
            return english, False
        if self.is_english(key):
            return token.text, False
        if dotted:
            expanded = self.complete(lang, key)
            if expanded is not None:
                return expanded, True
        if cut:
            return TRUNCATED_MARK, False
        untranslated.append(token.text.lower())
        return token.text, False

    def review_rows(self, counts: dict[tuple[str, tuple[str, ...]], int] | None = None) -> list[dict]:
        """Every glossary phrase with its English and how often it was used (most frequent first)."""
        counts = counts or {}
        rows = []
        for lang in LANGUAGES:
            for key, english in self.phrases[lang].items():
                rows.append(
                    {
                        "language": lang,
                        "source": self.sources[lang][key],
                        "english": english,
                        "count": counts.get((lang, key), 0),
                    }
                )
        rows.sort(key=lambda r: (-r["count"], r["language"], r["source"]))
        return rows


@functools.lru_cache(maxsize=4)
def load_glossary(directory: str | None = None) -> Glossary:
    """The glossary in ``directory`` (default ecglm/text/translate/glossary/), loaded once per process."""
    return Glossary(directory or DEFAULT_GLOSSARY_DIR)
