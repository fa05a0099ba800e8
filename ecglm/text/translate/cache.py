"""A persistent, crash-safe translation cache: one small JSON file per translated text.

An entry's key is the SHA-256 of (source text, language, truncated flag, backend, model, prompt
version), so a re-run or a resumed run sends nothing it has sent before, and a change of model or
prompt never reuses an old answer. Each entry is written through :func:`ecglm.core.atomic.atomic_path`
(temporary name, then rename): a crash leaves either the whole entry or none. Layout:
``<cache_dir>/<backend>/<key[:2]>/<key>.json``. Entries hold no credentials.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ecglm.core.atomic import atomic_path

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("resources/cache/translate")


@dataclass(frozen=True)
class CacheKey:
    """What a cached translation depends on."""

    source: str
    language: str | None
    truncated: bool
    backend: str
    model: str
    prompt_version: str

    @property
    def digest(self) -> str:
        payload = json.dumps(
            [self.source, self.language, self.truncated, self.backend, self.model, self.prompt_version],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class TranslationCache:
    """Read and write cached translations under ``directory`` (thread-safe: one file per entry)."""

    def __init__(self, directory: str | Path = DEFAULT_CACHE_DIR):
        self.directory = Path(directory)

    def path(self, key: CacheKey) -> Path:
        digest = key.digest
        return self.directory / key.backend / digest[:2] / f"{digest}.json"

    def get(self, key: CacheKey) -> str | None:
        """The cached English for ``key``, or None. An unreadable entry is ignored (and logged)."""
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable cache entry %s (%s)", path, err)
            return None
        if entry.get("source") != key.source or not isinstance(entry.get("english"), str):
            log.warning("ignoring cache entry %s: it does not hold this text", path)
            return None
        return entry["english"]

    def put(self, key: CacheKey, english: str) -> None:
        """Store ``english`` for ``key`` (atomically)."""
        entry = {
            "source": key.source,
            "language": key.language,
            "truncated": key.truncated,
            "backend": key.backend,
            "model": key.model,
            "prompt_version": key.prompt_version,
            "english": english,
        }
        with atomic_path(self.path(key)) as tmp:
            tmp.write_text(json.dumps(entry, ensure_ascii=False, indent=0), encoding="utf-8")

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*/*.json")) if self.directory.is_dir() else 0
