"""The project's error type for failures a user can act on, and the scrubbing of secrets from messages."""

from __future__ import annotations

import logging
import os
import re


class StageError(Exception):
    """A stage failed for a reason the user can act on; the message names the file or record and why.

    The CLI prints it as one line and exits 1, without a traceback.
    """


REDACTED = "[REDACTED]"

# Credentials as they appear in an echoed request or an error body: an Authorization header (any
# scheme), a bearer token, key=value / "key": "value" pairs of API keys and tokens, and the shapes of
# OpenAI-style (sk-...) and Hugging Face (hf_...) keys.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(\bauthorization['\"]?\s*[:=]\s*['\"]?)(?:bearer\s+|basic\s+|token\s+)?[^\s'\",;}]+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(r"(?i)(\b(?:x-)?api[_-]?key['\"]?\s*[:=]\s*['\"]?)[^\s'\",;}]+"),
    re.compile(r"(?i)(\b(?:access_|auth_|hf_|id_)?token['\"]?\s*[:=]\s*['\"]?)[^\s'\",;}]+"),
    re.compile(r"()\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"()\bhf_[A-Za-z0-9]{8,}"),
]
# Environment variables whose values are secrets: their values are redacted wherever they appear.
_SECRET_ENV = re.compile(r"(?i)(api_?key|token|secret|password|passwd)")


def _secret_env_values() -> list[str]:
    values = [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8]
    return sorted(set(values), key=len, reverse=True)


def scrub_secrets(text: str) -> str:
    """``text`` with API keys, tokens and Authorization headers replaced by ``[REDACTED]``.

    Redacts the values of secret-looking environment variables (``*_API_KEY``, ``*TOKEN*``, ...) wherever
    they occur, then the known shapes of credentials (see ``_SECRET_PATTERNS``).
    """
    for value in _secret_env_values():
        text = text.replace(value, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class SecretFilter(logging.Filter):
    """A logging filter that scrubs secrets from every record's final message (installed by the CLI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub_secrets(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True
