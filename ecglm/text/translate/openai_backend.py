"""The ``openai`` backend: any OpenAI-compatible chat-completions endpoint, through the openai package.

Design:

- Batched AND concurrent: texts are sent ``batch_size`` per request (a JSON list of items in, a
  JSON object ``{"translations": {id: english}}`` out), and batches go out on a thread pool of
  ``workers``. PTB-XL reports are short (median ~120 characters), so batching cuts the request
  count, and the rate-limit pressure with it, by ``batch_size``; the pool keeps latency down. An item
  whose English is rejected is retried on its own (a batch of one), so one bad reply costs little.
- Our own retries: the client's are disabled (``max_retries=0``); 429, 5xx, timeouts and connection
  errors are retried with exponential backoff (``backoff_s * 2**attempt``, or the server's
  Retry-After when it says more, capped at 60 s), ``retries`` times. Any other HTTP error (401, 400,
  404) stops at once with its status.
- A request budget: at most ``max_requests`` HTTP requests per run, retries included. When it is
  spent the run stops with a clear error; everything answered until then is already in the cache.
- A persistent cache (cache.py) keyed by source text, language, backend, model and prompt version:
  a re-run, or a run resumed after an error, sends no text twice.
- Validation: an English text is accepted only if it is non-empty, holds no German or Swedish
  word (a word of the glossary's de/sv vocabulary that is not English), and the language detector
  scores it no less English than German or Swedish. A rejected or malformed reply is retried; then a TranslationError names the
  text's label (the ecg_id).
- The API key is read from an environment variable (default OPENAI_API_KEY) and is never logged,
  cached or written anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

from tqdm import tqdm

from ecglm.core.errors import StageError, register_secret, scrub_secrets
from ecglm.text.translate.cache import CacheKey, TranslationCache
from ecglm.text.translate.glossary import Glossary, load_glossary, tokenize
from ecglm.text.translate.langdetect import LanguageDetector
from ecglm.text.translate.translator import Hint, TranslationError

log = logging.getLogger(__name__)

PROMPT_VERSION = "ptbxl-report-en-1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
MAX_BACKOFF_S = 60.0
LANGUAGE_NAMES = {"de": "German", "sv": "Swedish", "en": "English"}
# English words the glossary's English vocabulary lacks but a model may rightly write
ENGLISH_EXTRA = frozenset({"ekg"})

SYSTEM_PROMPT = """You translate electrocardiogram (ECG) reports from the PTB-XL dataset into English \
for cardiologists. The reports are terse machine or physician statements in German or Swedish, \
lower case, sometimes with spelling errors and with umlauts written as capitals (ischÄmie) or ae/oe/ue.
Rules:
- Translate every German or Swedish word into standard English cardiology terms (for example \
"left axis deviation", "atrial fibrillation with rapid ventricular response", "left ventricular \
hypertrophy", "ECG" - never "EKG"). Leave no German or Swedish word.
- Keep upper-case SCP codes (NORM, IRBBB, LVH), lead names (I, II, III, aVR, aVL, aVF, V1-V6), \
numbers, dates and drug names as they are. Do not add findings, do not explain, do not summarise.
- Write in lower case, like the source.
- An item marked "truncated": true was cut at 255 characters; if its last word is cut, translate \
it as the word it obviously begins, or write [truncated].
Input: a JSON object {"items": [{"id", "language", "truncated", "text"}]}.
Output: ONLY a JSON object {"translations": {"<id>": "<english>", ...}} with every id."""


@dataclass(frozen=True)
class OpenAISettings:
    """How to reach the endpoint and how hard to try."""

    model: str = DEFAULT_MODEL
    base_url: str | None = None
    api_key_env: str = DEFAULT_KEY_ENV
    batch_size: int = 16
    workers: int = 4
    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    max_requests: int | None = None


class BudgetExceeded(TranslationError):
    """The run's request budget (--max-requests) is spent."""


class _Retryable(Exception):
    """A transient failure (429, 5xx, timeout, connection): try again after ``wait_s``."""

    def __init__(self, message: str, wait_s: float | None = None):
        super().__init__(message)
        self.wait_s = wait_s


class _BadReply(Exception):
    """A reply that is malformed or fails validation."""


class _Skipped(Exception):
    """A batch not sent because another batch had already failed."""


def _retry_after(response) -> float | None:
    try:
        value = response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def _parse_reply(content: str | None, ids: list[str]) -> dict[str, str]:
    """The {id: english} mapping of a reply; raises _BadReply if it is not one for these ids."""
    if not content or not content.strip():
        raise _BadReply("empty reply")
    text = content.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.DOTALL)
    if fence:
        text = fence.group(1)
    try:
        data = json.loads(text)
    except ValueError as err:
        raise _BadReply(f"reply is not JSON ({err.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("translations"), dict):
        data = data["translations"]
    if not isinstance(data, dict):
        raise _BadReply("reply is not a JSON object of translations")
    missing = [i for i in ids if not isinstance(data.get(i), str)]
    if missing:
        raise _BadReply(f"reply lacks a translation for item(s) {', '.join(missing)}")
    return {i: data[i] for i in ids}


class OpenAITranslator:
    """Translate through an OpenAI-compatible chat endpoint (see module doc); implements Translator."""

    name = "openai"

    def __init__(
        self,
        settings: OpenAISettings,
        cache: TranslationCache,
        glossary: Glossary | None = None,
        detector: LanguageDetector | None = None,
        client=None,
    ):
        if settings.batch_size < 1 or settings.workers < 1 or settings.retries < 0:
            raise ValueError("batch_size and workers must be >= 1, retries >= 0")
        self.settings = settings
        self.model = settings.model
        self.cache = cache
        self.glossary = glossary or load_glossary()
        self.detector = detector or LanguageDetector(self.glossary)
        self._client = client
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._stop = threading.Event()  # set by the first failing batch: send nothing more
        self.requests_sent = 0
        self._foreign = (self.glossary.vocabulary("de") | self.glossary.vocabulary("sv")) - self.glossary.english

    # -- the client ------------------------------------------------------------------------------
    @property
    def client(self):
        with self._client_lock:
            return self._make_client()

    def _make_client(self):
        if self._client is None:
            import openai

            key = os.environ.get(self.settings.api_key_env)
            if not key:
                raise StageError(
                    f"the openai backend needs an API key in the environment variable "
                    f"{self.settings.api_key_env}, which is not set"
                )
            register_secret(key)  # whatever the variable is called, its value never reaches a message
            self._client = openai.OpenAI(
                api_key=key, base_url=self.settings.base_url, max_retries=0, timeout=self.settings.timeout_s
            )
        return self._client

    # -- validation ------------------------------------------------------------------------------
    def problems(self, english: str, source: str) -> str | None:
        """Why ``english`` is no acceptable translation of ``source``; None if it is."""
        if not english.strip():
            return None if not source.strip() else "empty translation"
        foreign = sorted(
            {
                t.key
                for t in tokenize(english)
                if t.is_word
                and t.key in self._foreign
                and t.key not in ENGLISH_EXTRA
                and not self.glossary.is_kept(t)
            }
        )
        if foreign:
            return f"German/Swedish word(s) left: {', '.join(foreign)}"
        scores = self.detector.scores(english)
        other = max(("de", "sv"), key=lambda lang: scores[lang])
        if scores[other] > scores["en"]:
            return f"the reply reads as {LANGUAGE_NAMES[other]} rather than English"
        return None

    # -- one request -----------------------------------------------------------------------------
    def _take_budget(self) -> None:
        with self._lock:
            limit = self.settings.max_requests
            if limit is not None and self.requests_sent >= limit:
                raise BudgetExceeded(f"the request budget of {limit} request(s) (--max-requests) is spent")
            self.requests_sent += 1

    def _request(self, items: list[dict]) -> str | None:
        """Send one chat request (with backoff on transient errors); return the reply's content."""
        import openai

        payload = json.dumps({"items": items}, ensure_ascii=False)
        for attempt in range(self.settings.retries + 1):
            self._take_budget()
            try:
                response = self.client.chat.completions.create(
                    model=self.settings.model,
                    temperature=0,
                    messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": payload}],
                )
            except openai.RateLimitError as err:
                failure = _Retryable("HTTP 429 (rate limited)", _retry_after(err.response))
            except openai.InternalServerError as err:
                failure = _Retryable(f"HTTP {err.status_code} (server error)", _retry_after(err.response))
            except openai.APITimeoutError:
                failure = _Retryable(f"timed out after {self.settings.timeout_s} s")
            except openai.APIConnectionError as err:
                failure = _Retryable(f"connection failed ({type(err).__name__})")
            except openai.APIStatusError as err:
                raise TranslationError(
                    f"the endpoint answered HTTP {err.status_code} for model {self.settings.model!r} "
                    f"({_status_text(err)}); not retried"
                ) from None
            else:
                try:
                    return response.choices[0].message.content
                except (AttributeError, IndexError, TypeError):
                    raise _BadReply("reply has no choices[0].message.content") from None
            if attempt == self.settings.retries:
                raise TranslationError(f"{failure} - gave up after {self.settings.retries} retries")
            wait_s = self.settings.backoff_s * (2**attempt)
            if failure.wait_s is not None:
                wait_s = max(wait_s, failure.wait_s)
            wait_s = min(wait_s, MAX_BACKOFF_S)
            log.info("request failed: %s; retrying in %.1f s (%d/%d)", failure, wait_s, attempt + 1, self.settings.retries)
            time.sleep(wait_s)
        raise AssertionError("unreachable")

    def _translate_batch(self, batch: list[tuple[str, Hint, CacheKey]]) -> list[str]:
        """Run one batch unless an earlier batch failed (then nothing more is sent)."""
        if self._stop.is_set():
            raise _Skipped()
        try:
            return self._translate_items(batch)
        except BaseException:
            self._stop.set()
            raise

    def _translate_items(self, batch: list[tuple[str, Hint, CacheKey]]) -> list[str]:
        """Translate one batch, validate each item, retry rejected items alone; cache what passes."""
        results: dict[int, str] = {}
        pending = list(range(len(batch)))
        last_problem: dict[int, str] = {}
        for round_ in range(self.settings.retries + 1):
            groups = [pending] if round_ == 0 else [[i] for i in pending]
            still: list[int] = []
            for group in groups:
                items = [
                    {
                        "id": str(n),
                        "language": batch[i][1].language or self.detector.detect(batch[i][0]),
                        "truncated": batch[i][1].truncated,
                        "text": batch[i][0],
                    }
                    for n, i in enumerate(group)
                ]
                try:
                    reply = _parse_reply(self._request(items), [it["id"] for it in items])
                except BudgetExceeded:
                    raise
                except TranslationError as err:
                    labels = ", ".join(batch[i][1].label or f"text {batch[i][0][:40]!r}" for i in group)
                    raise TranslationError(f"{labels}: {err}") from None
                except _BadReply as err:
                    for i in group:
                        last_problem[i] = f"malformed reply: {err}"
                    still.extend(group)
                    continue
                for n, i in enumerate(group):
                    english = " ".join(reply[str(n)].split())
                    problem = self.problems(english, batch[i][0])
                    if problem is None:
                        results[i] = english
                        self.cache.put(batch[i][2], english)
                    else:
                        last_problem[i] = f"rejected reply: {problem}"
                        log.info("%s: %s", batch[i][1].label or "text", last_problem[i])
                        still.append(i)
            pending = still
            if not pending:
                return [results[i] for i in range(len(batch))]
        first = pending[0]
        label = batch[first][1].label or f"text {batch[first][0][:60]!r}"
        raise TranslationError(
            f"{label}: no valid English after {self.settings.retries} retries ({last_problem[first]})"
        )

    # -- the Translator interface ----------------------------------------------------------------
    def key(self, text: str, hint: Hint) -> CacheKey:
        return CacheKey(text, hint.language, hint.truncated, self.name, self.settings.model, PROMPT_VERSION)

    def translate(self, texts: list[str], hints: Sequence[Hint] | None = None) -> list[str]:
        hints = list(hints) if hints is not None else [Hint()] * len(texts)
        if len(hints) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(hints)} hints")
        out: list[str | None] = [None] * len(texts)
        todo: dict[CacheKey, list[int]] = {}
        for i, (text, hint) in enumerate(zip(texts, hints)):
            if not text.strip():
                out[i] = ""
                continue
            key = self.key(text, hint)
            cached = self.cache.get(key)
            if cached is not None:
                out[i] = cached
            else:
                todo.setdefault(key, []).append(i)
        log.info(
            "openai backend: %d text(s), %d from the cache, %d to request (model %s)",
            len(texts), len(texts) - sum(len(v) for v in todo.values()), len(todo), self.settings.model,
        )
        keys = list(todo)
        batches = [keys[k : k + self.settings.batch_size] for k in range(0, len(keys), self.settings.batch_size)]
        if batches:
            self._stop.clear()
            self._run(batches, todo, texts, hints, out)
        return [o if o is not None else "" for o in out]

    def _run(self, batches, todo, texts, hints, out) -> None:
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=self.settings.workers) as pool, tqdm(
            total=sum(len(b) for b in batches), desc="translate (openai)", unit="text", leave=False
        ) as bar:
            futures = {
                pool.submit(self._translate_batch, [(texts[todo[k][0]], hints[todo[k][0]], k) for k in batch]): batch
                for batch in batches
            }
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
                for future in done:
                    batch = futures[future]
                    if future.cancelled():
                        continue
                    try:
                        english = future.result()
                    except _Skipped:
                        continue
                    except BaseException as err:  # collected; the rest is cancelled below
                        errors.append(err)
                        continue
                    for key, text_en in zip(batch, english):
                        for i in todo[key]:
                            out[i] = text_en
                    bar.update(len(batch))
                if errors:
                    for future in remaining:
                        future.cancel()
                    wait(remaining)  # let running batches finish: what they translate is cached
                    remaining = set()
        if errors:
            budget = next((e for e in errors if isinstance(e, BudgetExceeded)), None)
            first = budget or errors[0]
            if not isinstance(first, TranslationError):
                raise first
            done_count = sum(1 for o in out if o is not None)
            raise type(first)(
                f"{first} ({self.requests_sent} request(s) sent; {done_count} of {len(out)} text(s) "
                f"translated, every answer so far is cached in {self.cache.directory})"
            ) from first


def _status_text(err) -> str:
    try:
        body = err.response.json()
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    except Exception:  # a non-JSON error body
        message = None
    return scrub_secrets(message or getattr(err, "message", "") or "no message")
