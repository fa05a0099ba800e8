"""``ecglm translate``: detect each PTB-XL report's language and translate it to English."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ecglm.core.errors import StageError

log = logging.getLogger(__name__)

DESCRIPTION = """\
Detect the language (de/en/sv) of every PTB-XL report from its text alone and translate it to
English. Writes OUT (Parquet: ecg_id, language, report, report_en, edit_note, edit_note_en,
auto_unconfirmed, truncated, backend, model) and, beside it, <OUT stem>.untranslated.csv (term,
count, example_ecg_id): every source word that stayed untranslated.

Backends: 'glossary' (default; offline and deterministic: the phrase tables in ecglm/text/translate/glossary/)
and 'openai' (any OpenAI-compatible chat endpoint; key from an environment variable; answers are
cached under --cache-dir so a re-run or a resumed run sends nothing twice).
"""


def register(subparsers) -> None:
    """Add the ``translate`` subcommand."""
    from ecglm.text.translate.cache import DEFAULT_CACHE_DIR
    from ecglm.text.translate.openai_backend import DEFAULT_KEY_ENV, DEFAULT_MODEL

    p = subparsers.add_parser(
        "translate",
        help="detect report languages and translate PTB-XL reports to English",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--database", metavar="CSV", help="a ptbxl_database.csv-shaped file (any subset of rows)")
    src.add_argument("--records", metavar="PARQUET", help="results/{run}/data/records.parquet from `ecglm prepare`")
    p.add_argument("--out", required=True, metavar="FILE.parquet", help="the Parquet file to write (atomically)")
    p.add_argument(
        "--backend", choices=("glossary", "openai"), default="glossary",
        help="translation backend (default: glossary, offline and deterministic)",
    )
    p.add_argument("--glossary-dir", metavar="DIR", help="glossary data files (default: ecglm/text/translate/glossary/)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"openai backend: model name (default: {DEFAULT_MODEL})")
    p.add_argument(
        "--base-url", metavar="URL",
        help="openai backend: base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1 "
        "(default: the openai package's, or OPENAI_BASE_URL)",
    )
    p.add_argument(
        "--api-key-env", default=DEFAULT_KEY_ENV, metavar="VAR",
        help=f"openai backend: environment variable that holds the API key (default: {DEFAULT_KEY_ENV}); "
        "the key is never logged or written",
    )
    p.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE_DIR), metavar="DIR",
        help=f"openai backend: persistent translation cache (default: {DEFAULT_CACHE_DIR})",
    )
    p.add_argument("--workers", type=int, default=4, metavar="N", help="openai backend: concurrent requests (default: 4)")
    p.add_argument(
        "--batch-size", type=int, default=16, metavar="N", help="openai backend: reports per request (default: 16)"
    )
    p.add_argument(
        "--max-requests", type=int, default=None, metavar="N",
        help="openai backend: request budget for this run, retries included; when spent the run stops "
        "with an error and what was translated stays cached (default: no limit)",
    )
    p.add_argument(
        "--retries", type=int, default=5, metavar="N",
        help="openai backend: retries of a 429/5xx/timeout or a rejected reply (default: 5)",
    )
    p.add_argument(
        "--backoff", type=float, default=1.0, metavar="SECONDS",
        help="openai backend: first retry delay, doubled each retry (default: 1.0)",
    )
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="openai backend: request timeout")
    p.add_argument(
        "--review", metavar="FILE.csv",
        help="also write the glossary's source phrases beside their English, most frequent in this "
        "input first, for a clinician to review",
    )
    p.set_defaults(func=run)


def make_translator(args, glossary, detector):
    """The backend the arguments ask for (the stage code does not care which)."""
    from ecglm.text.translate.translator import GlossaryTranslator

    if args.backend == "glossary":
        return GlossaryTranslator(glossary, detector)
    from ecglm.text.translate.cache import TranslationCache
    from ecglm.text.translate.openai_backend import OpenAISettings, OpenAITranslator

    for name in ("workers", "batch_size"):
        if getattr(args, name) < 1:
            raise StageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_requests is not None and args.max_requests < 0:
        raise StageError("--max-requests must not be negative")
    settings = OpenAISettings(
        model=args.model,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        batch_size=args.batch_size,
        workers=args.workers,
        retries=args.retries,
        backoff_s=args.backoff,
        timeout_s=args.timeout,
        max_requests=args.max_requests,
    )
    translator = OpenAITranslator(settings, TranslationCache(args.cache_dir), glossary, detector)
    translator.client  # fail early (missing key) before any work
    return translator


def run(args) -> int:
    from ecglm.text.translate.glossary import load_glossary
    from ecglm.text.translate.langdetect import LanguageDetector
    from ecglm.text.translate.stage import (
        read_reports,
        translate_reports,
        untranslated_path,
        write_parquet,
        write_review,
        write_untranslated,
    )

    out = Path(args.out)
    if out.suffix != ".parquet":
        raise StageError(f"--out {out}: expected a .parquet file name")
    glossary = load_glossary(args.glossary_dir)
    detector = LanguageDetector(glossary)
    pairs = read_reports(args.database, args.records)
    translator = make_translator(args, glossary, detector)
    result = translate_reports(pairs, translator, glossary, detector, count_usage=bool(args.review))
    write_parquet(result.rows, out)
    write_untranslated(result, untranslated_path(out))
    if args.review:
        write_review(glossary, result, args.review)
    log.info(
        "wrote %s (%d reports) and %s (%d untranslated term(s))",
        out, len(result.rows), untranslated_path(out), len(result.untranslated),
    )
    return 0
