"""Read Debian's Hunspell dictionaries (``/usr/share/hunspell``) without the hunspell library.

Used only to EVALUATE the translation stage independently of its own vocabulary: the language a
report's words belong to, and German or Swedish words left in an English translation. The stage
itself never reads these files.

The lookup follows Hunspell's affix model (a stem from the .dic file, with one prefix and/or one
suffix rule from the .aff file whose condition holds), plus a simple two- or three-part compound
split for German and Swedish (each part a known word of 3+ letters, German linking ``s`` allowed).
It lower-cases everything and ignores Hunspell's finer flags (KEEPCASE, COMPOUNDRULE, ...), so it
accepts a little more than Hunspell would: good enough to score words, not to spell-check.

Install the dictionaries with ``apt-get install hunspell-de-de hunspell-sv hunspell-en-us``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DIR = Path("/usr/share/hunspell")
DICTIONARIES = {"de": "de_DE", "en": "en_US", "sv": "sv_SE"}
PACKAGES = {"de": "hunspell-de-de", "en": "hunspell-en-us", "sv": "hunspell-sv"}


@dataclass(frozen=True)
class _Affix:
    flag: str
    strip: str
    add: str
    condition: re.Pattern
    cross: bool


@dataclass
class Dictionary:
    """One Hunspell dictionary: stems (lower-cased) with their flags, and its affix rules."""

    language: str
    stems: dict[str, set[str]] = field(default_factory=dict)
    suffixes: dict[str, list[_Affix]] = field(default_factory=dict)  # keyed by the last char of add ("" if none)
    prefixes: list[_Affix] = field(default_factory=list)
    forbidden: str | None = None
    needaffix: str | None = None
    compounding: bool = False

    def _stem_ok(self, stem: str, flag: str | None, bare: bool) -> bool:
        flags = self.stems.get(stem)
        if flags is None:
            return False
        if self.forbidden and self.forbidden in flags:
            return False
        if bare:
            return not (self.needaffix and self.needaffix in flags)
        return flag in flags

    def _suffixed(self, word: str, cross_only: bool = False, prefix_flag: str | None = None) -> bool:
        for key in (word[-1:], ""):
            for sfx in self.suffixes.get(key, ()):
                if cross_only and not sfx.cross:
                    continue
                if sfx.add and not word.endswith(sfx.add):
                    continue
                stem = word[: len(word) - len(sfx.add)] + sfx.strip
                if not stem or not sfx.condition.search(stem):
                    continue
                if prefix_flag is None:
                    if self._stem_ok(stem, sfx.flag, bare=False):
                        return True
                else:
                    flags = self.stems.get(stem)
                    if flags and sfx.flag in flags and prefix_flag in flags:
                        return True
        return False

    def _simple(self, word: str) -> bool:
        if self._stem_ok(word, None, bare=True) or self._suffixed(word):
            return True
        for pfx in self.prefixes:
            if pfx.add and not word.startswith(pfx.add):
                continue
            rest = pfx.strip + word[len(pfx.add):]
            if not rest or not pfx.condition.search(rest):
                continue
            if self._stem_ok(rest, pfx.flag, bare=False):
                return True
            if pfx.cross and self._suffixed(rest, cross_only=True, prefix_flag=pfx.flag):
                return True
        return False

    @functools.lru_cache(maxsize=65536)
    def knows(self, word: str) -> bool:
        """True if the lower-cased ``word`` is a word of this language (affixed or compounded)."""
        word = word.lower()
        if not word:
            return False
        if self._simple(word):
            return True
        if self.compounding and len(word) >= 7:
            return self._compound(word, parts_left=2)
        return False

    def _compound(self, word: str, parts_left: int) -> bool:
        for cut in range(3, len(word) - 2):
            head, tail = word[:cut], word[cut:]
            if not (self._simple(head) or (head.endswith("s") and self._simple(head[:-1]))):
                continue
            if self._simple(tail) or (parts_left > 1 and len(tail) >= 6 and self._compound(tail, parts_left - 1)):
                return True
        return False

    def __hash__(self) -> int:  # lru_cache on a method needs a hashable self
        return id(self)


def _condition(text: str, suffix: bool) -> re.Pattern:
    if text in (".", ""):
        return re.compile("")
    return re.compile(("(?:" + text + ")$") if suffix else ("^(?:" + text + ")"))


def _read_affixes(d: Dictionary, key: str, flag: str, cross: bool, rules: list[str]) -> None:
    """Add the rules of one SFX / PFX block (``key``) of an .aff file to ``d``."""
    for raw in rules:
        fields = raw.split()
        if len(fields) < 4 or fields[0] != key:
            continue
        strip = "" if fields[2] == "0" else fields[2].lower()
        add = fields[3].split("/")[0]
        add = "" if add == "0" else add.lower()
        cond = fields[4] if len(fields) > 4 else "."
        affix = _Affix(flag, strip, add, _condition(cond.lower(), key == "SFX"), cross)
        if key == "SFX":
            d.suffixes.setdefault(add[-1:] if add else "", []).append(affix)
        else:
            d.prefixes.append(affix)


def load_dictionary(language: str, directory: str | Path = DEFAULT_DIR) -> Dictionary:
    """Load the Hunspell dictionary for ``language`` (de, en, sv). Raises FileNotFoundError if absent."""
    base = Path(directory) / DICTIONARIES[language]
    aff_path, dic_path = base.with_suffix(".aff"), base.with_suffix(".dic")
    if not aff_path.is_file() or not dic_path.is_file():
        raise FileNotFoundError(f"{base}.aff/.dic not found (apt-get install {PACKAGES[language]})")
    d = Dictionary(language=language)
    lines = aff_path.read_text(encoding="utf-8", errors="replace").splitlines()
    i = 0
    while i < len(lines):
        parts = lines[i].split()
        i += 1
        if not parts:
            continue
        key = parts[0]
        if key == "FORBIDDENWORD" and len(parts) > 1:
            d.forbidden = parts[1]
        elif key == "NEEDAFFIX" and len(parts) > 1:
            d.needaffix = parts[1]
        elif key in ("COMPOUNDBEGIN", "COMPOUNDFLAG"):
            d.compounding = True  # de, sv: free compounding (en_US only compounds numbers)
        elif key in ("SFX", "PFX") and len(parts) >= 4 and parts[2] in ("Y", "N"):
            count = int(parts[3])
            _read_affixes(d, key, parts[1], parts[2] == "Y", lines[i : i + count])
            i += count
    for raw in dic_path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        if not raw or raw[0] in "\t#":
            continue
        entry = raw.split()[0] if raw.strip() else ""
        if not entry:
            continue
        # a slash escaped as "\/" belongs to the word; the first bare "/" starts the flags
        word, _, flags = entry.replace("\\/", "\x00").partition("/")
        d.stems.setdefault(word.replace("\x00", "/").lower(), set()).update(flags)
    return d


def available(directory: str | Path = DEFAULT_DIR) -> list[str]:
    """The languages (of de, en, sv) whose dictionary files are installed."""
    base = Path(directory)
    return [
        lang for lang, name in DICTIONARIES.items() if (base / f"{name}.aff").is_file() and (base / f"{name}.dic").is_file()
    ]


def missing_message(directory: str | Path = DEFAULT_DIR) -> str | None:
    """None if all three dictionaries are installed, else a message saying what to install."""
    absent = [lang for lang in DICTIONARIES if lang not in available(directory)]
    if not absent:
        return None
    packages = " ".join(PACKAGES[lang] for lang in absent)
    return f"Hunspell dictionaries missing in {directory} for {', '.join(absent)} (apt-get install {packages})"


@functools.lru_cache(maxsize=4)
def load_all(directory: str = str(DEFAULT_DIR)) -> dict[str, Dictionary]:
    """The de, en and sv dictionaries (cached). Raises FileNotFoundError if any is absent."""
    return {lang: load_dictionary(lang, directory) for lang in DICTIONARIES}
