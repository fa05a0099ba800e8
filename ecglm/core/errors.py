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

# A quote as it appears in plain text, in JSON, or in JSON quoted once more inside an error body (\").
_Q = r"""(?:\\?['"])?"""
# Credentials as they appear in an echoed request or an error body: an Authorization header (with its
# scheme, or a long bare value), key=value / "key": "value" pairs of API keys, tokens and passwords, and
# the shapes of OpenAI-style (sk-...) and Hugging Face (hf_...) keys. Ordinary words are left alone: a
# bare value must look like a credential (16+ characters without spaces).
_SECRET_PATTERNS = [
    re.compile(rf"(?i)(\bauthorization{_Q}\s*[:=]\s*{_Q}(?:bearer|basic|token|digest)\s+)[^\s'\",;}}\\]+"),
    re.compile(rf"(?i)(\bauthorization{_Q}\s*[:=]\s*{_Q})[A-Za-z0-9._~+/=-]{{16,}}"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(rf"(?i)(\b(?:x-)?api[_-]?key{_Q}\s*[:=]\s*{_Q})[^\s'\",;}}&\\]{{6,}}"),
    re.compile(rf"(?i)(\b(?:access_|auth_|hf_|id_|refresh_)?token{_Q}\s*[:=]\s*{_Q})[A-Za-z0-9._~+/=-]{{16,}}"),
    re.compile(rf"(?i)(\b(?:password|passwd|secret){_Q}\s*[:=]\s*{_Q})[^\s'\",;}}&\\]+"),
    re.compile(r"()\bsk-[A-Za-z0-9_-]{20,}"),
    re.compile(r"()\bhf_[A-Za-z0-9]{30,}"),
]
# Environment variables whose values are secrets: their values are redacted wherever they appear.
_SECRET_ENV = re.compile(r"(?i)(api_?key|token|secret|password|passwd)")
#: Values registered at run time as secrets (e.g. the API key read from a variable of the user's naming).
_REGISTERED: set[str] = set()


def register_secret(value: str | None) -> None:
    """Treat ``value`` as a secret from now on: redacted wherever it appears (values under 8 characters are
    not registered, so that ordinary words are never redacted)."""
    if value and len(value) >= 8:
        _REGISTERED.add(value)


def _secret_values() -> list[str]:
    values = [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8]
    return sorted(set(values) | _REGISTERED, key=len, reverse=True)


def scrub_secrets(text: str) -> str:
    """``text`` with API keys, tokens, passwords and Authorization headers replaced by ``[REDACTED]``.

    Redacts the registered secrets (:func:`register_secret`) and the values of secret-looking environment
    variables (``*_API_KEY``, ``*TOKEN*``, ...) wherever they occur, then the known shapes of credentials.
    """
    for value in _secret_values():
        text = text.replace(value, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class SecretFilter(logging.Filter):
    """A logging filter that scrubs secrets from every record's message and traceback (installed by the CLI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub_secrets(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub_secrets(record.exc_text)
        return True
