"""The ``translate`` stage: PTB-XL reports in, English reports (Parquet) out, whatever the backend.

For each report: split off the cardiologist's ``Edit:`` note, detect the language from the text
alone, strip (and flag) the German auto-report tail, flag the 255-character cut, translate the
report and the note through the given :class:`~ecglm.text.translate.translator.Translator`, and list
every source word that reached the English untranslated (``<out stem>.untranslated.csv``).
Identical texts are translated once.
"""

from __future__ import annotations

import collections
import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ecglm.core.atomic import atomic_path
from ecglm.core.errors import StageError
from ecglm.text.translate.glossary import TRUNCATED_MARK, Glossary, tokenize
from ecglm.text.translate.langdetect import LanguageDetector
from ecglm.text.translate.reports import AUTO_TAIL_MARK, normalise_spaces, parse_report
from ecglm.text.translate.translator import Hint, TranslationError, Translator

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = (
    "ecg_id", "language", "report", "report_en", "edit_note", "edit_note_en",
    "auto_unconfirmed", "truncated", "backend", "model",
)


@dataclass
class Translated:
    """The stage's result before it is written: one row per report, and what stayed untranslated."""

    rows: list[dict]
    untranslated: collections.Counter = field(default_factory=collections.Counter)
    examples: dict[str, int] = field(default_factory=dict)
    usage: collections.Counter = field(default_factory=collections.Counter)


def read_reports(database: str | Path | None = None, records: str | Path | None = None) -> list[tuple[int, str]]:
    """(ecg_id, report) pairs from a ptbxl_database.csv-shaped file or a records.parquet.

    A missing report is "". Raises StageError naming the file for a missing column, a missing or
    non-integer ecg_id, or a duplicate ecg_id.
    """
    if (database is None) == (records is None):
        raise StageError("give exactly one input: --database CSV or --records PARQUET")
    path = Path(database if database is not None else records)
    if not path.is_file():
        raise StageError(f"{path}: input file not found")
    if database is not None:
        import pandas as pd

        try:
            frame = pd.read_csv(path, dtype={"report": str, "ecg_id": str}, keep_default_na=False)
        except (ValueError, OSError, UnicodeDecodeError) as err:
            raise StageError(f"{path}: cannot read as CSV ({err})") from err
        ids, reports = _columns(path, list(frame.columns), frame)
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=["ecg_id", "report"])
        except Exception as err:  # pyarrow raises several types for a bad file or missing column
            raise StageError(f"{path}: cannot read ecg_id and report from Parquet ({err})") from err
        ids = table.column("ecg_id").to_pylist()
        reports = table.column("report").to_pylist()
    pairs: list[tuple[int, str]] = []
    seen: dict[int, int] = {}
    for row, (raw_id, report) in enumerate(zip(ids, reports), 1):
        try:
            ecg_id = int(float(raw_id)) if isinstance(raw_id, str) else int(raw_id)
        except (TypeError, ValueError):
            raise StageError(f"{path}: row {row} has no valid ecg_id ({raw_id!r})") from None
        if ecg_id in seen:
            raise StageError(f"{path}: ecg_id {ecg_id} appears twice (rows {seen[ecg_id]} and {row})")
        seen[ecg_id] = row
        pairs.append((ecg_id, "" if report is None else str(report)))
    return pairs


def _columns(path: Path, columns: list[str], frame) -> tuple[list, list]:
    missing = [c for c in ("ecg_id", "report") if c not in columns]
    if missing:
        raise StageError(f"{path}: column(s) {', '.join(missing)} missing (found: {', '.join(columns[:8])} ...)")
    return frame["ecg_id"].tolist(), frame["report"].tolist()


def untranslated_words(glossary: Glossary, source: str, english: str) -> list[str]:
    """Source words that stand untranslated in ``english``: words of ``english`` that also occur in
    ``source`` and are neither English nor kept terms (numbers, ECG notation, codes, keep.tsv)."""
    source_words = {t.key for t in tokenize(source) if t.is_word}
    found = []
    for token in tokenize(english.replace(TRUNCATED_MARK, " ")):
        if token.is_word and token.key in source_words and not glossary.is_kept(token):
            if not glossary.is_english(token.key):
                found.append(token.text.lower())
    return found


def needs_translation(glossary: Glossary, text: str) -> bool:
    """False when every word of ``text`` is English or kept (an Edit: note of SCP codes only)."""
    return any(t.is_word and not glossary.is_kept(t) and not glossary.is_english(t.key) for t in tokenize(text))


def translate_reports(
    pairs: list[tuple[int, str]],
    translator: Translator,
    glossary: Glossary,
    detector: LanguageDetector,
    count_usage: bool = False,
) -> Translated:
    """Translate every report (see module doc). ``count_usage`` also counts glossary phrase use
    (for --review). Raises StageError naming the ecg_id when the backend fails."""
    parsed = [(ecg_id, parse_report(report)) for ecg_id, report in pairs]
    languages = [detector.detect_report(p.source) for _, p in parsed]

    # unique texts to translate: report bodies (non-English) and Edit: notes (German)
    jobs: dict[tuple[str, str, bool], list[int]] = {}
    for (ecg_id, p), lang in zip(parsed, languages):
        if lang != "en" and p.body:
            jobs.setdefault((p.body, lang, p.truncated), []).append(ecg_id)
        if p.edit_note and needs_translation(glossary, p.edit_note):
            jobs.setdefault((p.edit_note, "de", False), []).append(ecg_id)
    keys = list(jobs)
    hints = [
        Hint(lang, truncated, f"ecg_id {ids[0]}" + (f" (and {len(ids) - 1} more with the same text)" if len(ids) > 1 else ""))
        for (text, lang, truncated), ids in ((k, jobs[k]) for k in keys)
    ]
    log.info(
        "%d report(s): %s; %d distinct text(s) to translate with %s (%s)",
        len(parsed), dict(collections.Counter(languages)), len(keys), translator.name, translator.model,
    )
    try:
        english = translator.translate([k[0] for k in keys], hints) if keys else []
    except TranslationError as err:
        raise StageError(f"translate ({translator.name}, model {translator.model}): {err}") from err
    if len(english) != len(keys):
        raise StageError(f"translate ({translator.name}): got {len(english)} texts back for {len(keys)}")
    done = dict(zip(keys, english))

    result = Translated(rows=[])
    for (ecg_id, p), lang in zip(parsed, languages):
        body_en = done[(p.body, lang, p.truncated)] if (lang != "en" and p.body) else normalise_spaces(p.body)
        if p.auto_unconfirmed:
            body_en = f"{body_en} {AUTO_TAIL_MARK}".strip()
        note_en = None
        if p.edit_note is not None:
            key = (p.edit_note, "de", False)
            note_en = done[key] if key in done else normalise_spaces(p.edit_note)
        result.rows.append(
            {
                "ecg_id": ecg_id,
                "language": lang,
                "report": p.source,
                "report_en": body_en,
                "edit_note": p.edit_note,
                "edit_note_en": note_en,
                "auto_unconfirmed": p.auto_unconfirmed,
                "truncated": p.truncated,
                "backend": translator.name,
                "model": translator.model,
            }
        )
        _count_words(result, glossary, ecg_id, p, lang, body_en, note_en, count_usage)
    return result


def _count_words(result: Translated, glossary: Glossary, ecg_id: int, p, lang: str, body_en: str,
                 note_en: str | None, count_usage: bool) -> None:
    """Count the source words left untranslated in one report (and, for --review, the glossary's phrase use)."""
    checks = [] if lang == "en" else [(p.body, body_en)]
    if p.edit_note:
        checks.append((p.edit_note, note_en or ""))
    for source, target in checks:
        for word in untranslated_words(glossary, source, target):
            result.untranslated[word] += 1
            result.examples.setdefault(word, ecg_id)
    if count_usage:
        if lang != "en" and p.body:
            glossary.translate(p.body, lang, truncated=p.truncated, usage=result.usage)
        if p.edit_note:
            glossary.translate(p.edit_note, "de", usage=result.usage)


def write_parquet(rows: list[dict], path: str | Path) -> None:
    """Write the stage's rows atomically with a fixed schema (ecg_id Int32, flags Boolean)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("ecg_id", pa.int32()),
            ("language", pa.string()),
            ("report", pa.string()),
            ("report_en", pa.string()),
            ("edit_note", pa.string()),
            ("edit_note_en", pa.string()),
            ("auto_unconfirmed", pa.bool_()),
            ("truncated", pa.bool_()),
            ("backend", pa.string()),
            ("model", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def untranslated_path(out: str | Path) -> Path:
    """``<out stem>.untranslated.csv`` beside the output."""
    out = Path(out)
    return out.with_name(f"{out.stem}.untranslated.csv")


def write_untranslated(result: Translated, path: str | Path) -> None:
    """term, count, example_ecg_id; most frequent first (a header only when nothing was left)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["term", "count", "example_ecg_id"])
        for term, count in sorted(result.untranslated.items(), key=lambda kv: (-kv[1], kv[0])):
            writer.writerow([term, count, result.examples[term]])


def write_review(glossary: Glossary, result: Translated, path: str | Path) -> None:
    """The glossary's source phrases beside their English, most used in this input first."""
    rows = glossary.review_rows(result.usage)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["language", "source", "english", "count"])
        writer.writeheader()
        writer.writerows(rows)
