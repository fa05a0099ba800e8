"""Fetch one file over http(s):// or file:// into a resumable ``.part`` file, verify it, then rename it.

The guarantees :func:`fetch_file` gives:

- bytes go to ``.<name>.part`` beside the final name; the final name only ever receives a complete file
  whose SHA-256 matched (when an expected digest is given), by ``os.replace``;
- a ``.part`` left by an earlier, killed attempt is resumed with an HTTP ``Range`` request; a server that
  answers 200 instead of 206 restarts it from zero;
- a resumed file whose hash mismatches is fetched once more from scratch before the call fails;
- transient failures (connection errors, timeouts, a body cut short, HTTP 429 and 5xx) are retried with
  exponential backoff; a missing file (404/410), any other HTTP error and a hash mismatch raise
  :class:`~ecglm.core.errors.StageError` at once, naming the file (and both hashes for a mismatch), and leave
  no corrupt file under the final name.

``file://`` URLs (a mirror on a shared disk) go through the same code: the file is read from its path,
with the same resume, verification and rename.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse
from urllib.request import url2pathname

from ecglm.core.errors import StageError
from ecglm.data.physionet import sha256_file

log = logging.getLogger(__name__)

CHUNK = 1 << 16
RETRY_DELAY_ENV = "ECGLM_RETRY_DELAY_S"
DEFAULT_RETRY_DELAY_S = 1.0
MAX_RETRY_DELAY_S = 60.0
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504}) | frozenset(range(500, 600))
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def part_path(final: Path) -> Path:
    """The temporary name a download is written to before it is verified: ``.<name>.part`` beside it."""
    return final.with_name(f".{final.name}.part")


class Stopped(StageError):
    """A file given up because another file of the same run failed (not a failure of its own)."""


class TransientError(Exception):
    """A failure worth retrying (connection reset, timeout, body cut short, HTTP 429/5xx)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class RetryPolicy:
    """How often and how patiently transient failures are retried.

    ``delay_s`` is the first backoff; attempt ``k`` (0-based) waits ``delay_s * 2**k``, capped at
    ``MAX_RETRY_DELAY_S`` (a server's numeric ``Retry-After`` is honoured up to the same cap).
    ``None`` reads ``$ECGLM_RETRY_DELAY_S`` (default 1 s).
    """

    retries: int = 5
    timeout_s: float = 60.0
    delay_s: float | None = None

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, not {self.retries}")
        if self.delay_s is None:
            raw = os.environ.get(RETRY_DELAY_ENV)
            try:
                self.delay_s = float(raw) if raw else DEFAULT_RETRY_DELAY_S
            except ValueError:
                raise StageError(f"${RETRY_DELAY_ENV}={raw!r} is not a number of seconds") from None

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        delay = float(self.delay_s) * (2**attempt)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, MAX_RETRY_DELAY_S)


@dataclass
class SessionPool:
    """One ``requests.Session`` per thread (a Session is not thread-safe), closed together at the end."""

    _local: threading.local = field(default_factory=threading.local)
    _all: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self):
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            session.headers["User-Agent"] = "ecglm-download (+https://physionet.org)"
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._all:
                session.close()
            self._all.clear()


class _Response:
    """What :func:`fetch_file` needs of an answer: a status, its length and range, and the body."""

    status: int
    content_length: int | None
    content_range_start: int | None
    retry_after: float | None

    def iter_chunks(self) -> Iterator[bytes]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class _HttpResponse(_Response):
    def __init__(self, resp):
        self._resp = resp
        self.status = resp.status_code
        length = resp.headers.get("Content-Length")
        # A server that compresses despite "Accept-Encoding: identity": decode, and the length is moot.
        self._encoded = resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        self.content_length = int(length) if length and length.isdigit() and not self._encoded else None
        match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        self.content_range_start = int(match.group(1)) if match else None
        ra = resp.headers.get("Retry-After", "")
        self.retry_after = float(ra) if ra.strip().isdigit() else None

    def iter_chunks(self) -> Iterator[bytes]:
        import requests
        import urllib3

        try:
            if self._encoded:
                yield from self._resp.iter_content(CHUNK)
                return
            # read1 hands over what arrived even when the connection then breaks, so that a .part keeps
            # every byte received (iter_content would drop the last, incomplete chunk).
            raw = self._resp.raw
            while chunk := raw.read1(CHUNK, decode_content=False):
                yield chunk
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError) as err:
            raise TransientError(f"connection lost mid-body ({type(err).__name__}: {err})") from err

    def close(self) -> None:
        self._resp.close()


class _FileResponse(_Response):
    """A ``file://`` read that behaves like an HTTP answer (404 when absent, 206 for a range)."""

    def __init__(self, path: Path, start: int):
        self.retry_after = None
        self.content_range_start = None
        self._fh = None
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise FileNotFoundError(path)
        except FileNotFoundError:
            self.status, self.content_length = 404, None
            return
        except OSError as err:  # a shared disk that hiccups: worth another try
            raise TransientError(f"cannot stat {path}: {err}") from err
        if start > size:
            self.status, self.content_length = 416, None
            return
        try:
            self._fh = open(path, "rb")
            self._fh.seek(start)
        except OSError as err:
            raise TransientError(f"cannot read {path}: {err}") from err
        self.status = 206 if start else 200
        self.content_range_start = start if start else None
        self.content_length = size - start

    def iter_chunks(self) -> Iterator[bytes]:
        assert self._fh is not None
        try:
            while block := self._fh.read(CHUNK):
                yield block
        except OSError as err:
            raise TransientError(f"read failed: {err}") from err

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _open(url: str, start: int, sessions: SessionPool | None, timeout_s: float) -> _Response:
    """Ask for ``url`` from byte ``start`` on; raise TransientError for a failure worth retrying."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        return _FileResponse(Path(url2pathname(urlparse(url).path)), start)
    if scheme not in ("http", "https"):
        raise StageError(f"{url}: unsupported URL scheme {scheme!r} (use http://, https:// or file://)")
    import requests

    session = (sessions or SessionPool()).get()
    headers = {"Range": f"bytes={start}-"} if start else {}
    # Identity encoding: the bytes on disk are the bytes hashed, and a Range counts raw bytes.
    headers["Accept-Encoding"] = "identity"
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=(timeout_s, timeout_s))
    except (requests.ConnectionError, requests.Timeout) as err:
        raise TransientError(f"{type(err).__name__}: {err}") from err
    return _HttpResponse(resp)


@dataclass
class FetchResult:
    """What :func:`fetch_file` did: ``how`` is ``fetched`` or ``resumed``; ``sha256`` of the final file."""

    how: str
    sha256: str
    nbytes: int  # bytes received over the wire (or read from file://) by this call
    attempts: int


def fetch_file(
    url: str,
    final: Path,
    expected_sha256: str | None,
    *,
    policy: RetryPolicy,
    sessions: SessionPool | None = None,
    label: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    resume: bool = True,
    stop: threading.Event | None = None,
) -> FetchResult:
    """Fetch ``url`` to ``final`` through ``.<name>.part``; see the module docstring for the guarantees.

    ``expected_sha256``: the digest the file must have (``None``: accept any complete body, e.g. a ZIP).
    ``label``: the name used in error messages (default: ``final``). ``resume=False`` discards an old
    ``.part`` first. ``on_bytes(n)`` is called for each chunk written, ``on_total(size)`` once the full size
    is known. ``stop``: when set by another thread, a retry loop gives up early.
    """
    label = label or str(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(final)
    if not resume:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    received = 0
    transient_failures = 0
    attempts = 0
    resumed_any = False
    fresh_retry_left = True  # a resumed file that mismatches gets one more fetch from scratch
    while True:
        if stop is not None and stop.is_set():
            raise Stopped(f"{label}: stopped because another file failed")
        attempts += 1
        start = part.stat().st_size if part.exists() else 0
        try:
            resp = _open(url, start, sessions, policy.timeout_s)
            try:
                outcome = _receive(resp, url, part, start, label, on_bytes, on_total)
            finally:
                resp.close()
        except TransientError as err:
            _wait_to_retry(err, label, url, part, attempts, transient_failures, policy, stop)
            transient_failures += 1
            continue
        if outcome == "restart":  # the server sent another range than we asked for: start from zero
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            if transient_failures >= policy.retries:
                raise StageError(f"{label}: {url} keeps answering with the wrong byte range")
            transient_failures += 1
            continue
        nbytes, was_resume = outcome
        received += nbytes
        resumed_any = resumed_any or was_resume
        got = sha256_file(part)
        if expected_sha256 is not None and got != expected_sha256:
            part.unlink()
            if resumed_any and fresh_retry_left:
                fresh_retry_left = False
                resumed_any = False
                log.warning("%s: resumed file has SHA-256 %s, expected %s; fetching it again from scratch",
                            label, got, expected_sha256)
                continue
            raise StageError(f"{label}: SHA-256 mismatch (expected {expected_sha256}, got {got}) for {url}")
        os.replace(part, final)
        return FetchResult("resumed" if resumed_any else "fetched", got, received, attempts)


def _wait_to_retry(err: TransientError, label: str, url: str, part: Path, attempts: int, failures: int,
                   policy: RetryPolicy, stop: threading.Event | None) -> None:
    """After a transient error: give up (StageError, saying what is kept for a rerun) once the retries are
    spent, else wait the backoff (cut short, with Stopped, when ``stop`` is set)."""
    if failures >= policy.retries:
        kept = part.is_file() and part.stat().st_size > 0
        raise StageError(
            f"{label}: giving up after {attempts} attempt(s) on {url}: {err}"
            + (f" ({part.stat().st_size} bytes kept in {part.name}; a rerun resumes them)" if kept else "")
        ) from None
    delay = policy.backoff(failures, err.retry_after)
    log.warning("%s: %s; retry %d/%d in %.2fs", label, err, failures + 1, policy.retries, delay)
    if stop is not None:
        if stop.wait(delay):
            raise Stopped(f"{label}: stopped because another file failed") from None
    else:
        time.sleep(delay)


def _write_mode(resp: _Response, start: int, label: str) -> tuple[str, bool, int] | str:
    """How to write an answer (206 or 200) into the .part: ``(file mode, resumed, start)``, or ``"restart"``
    when the server sent another byte range than asked for."""
    if resp.status == 206:
        if resp.content_range_start != start and not (start == 0 and resp.content_range_start is None):
            log.warning("%s: asked for bytes from %d, server sent from %s; restarting", label, start,
                        resp.content_range_start)
            return "restart"
        if start:
            log.info("%s: resuming at byte %d", label, start)
        return "ab", start > 0, start
    if start:
        log.info("%s: server ignored the Range request; fetching from zero", label)
    return "wb", False, 0


def _receive(resp: _Response, url: str, part: Path, start: int, label: str,
             on_bytes: Callable[[int], None] | None, on_total: Callable[[int], None] | None):
    """Write one answer's body into ``part``. Returns ``(bytes, resumed)`` or ``"restart"``."""
    status = resp.status
    if status in (404, 410):
        raise StageError(f"{label}: not found on the server (HTTP {status} for {url})")
    if status == 416 and start:
        # Our .part is as long as (or longer than) the file: let the hash decide, else start over.
        log.info("%s: server has no bytes past %d; checking the partial file as it is", label, start)
        return (0, True)
    if status in TRANSIENT_STATUS:
        raise TransientError(f"HTTP {status}", retry_after=resp.retry_after)
    if status not in (200, 206):
        raise StageError(f"{label}: HTTP {status} for {url}")
    how = _write_mode(resp, start, label)
    if how == "restart":
        return "restart"
    mode, resumed, start = how
    if on_total is not None and resp.content_length is not None:
        on_total(start + resp.content_length)
    written = 0
    with open(part, mode) as fh:
        for chunk in resp.iter_chunks():
            fh.write(chunk)
            written += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    if resp.content_length is not None and written != resp.content_length:
        raise TransientError(f"body cut short ({written} of {resp.content_length} bytes)")
    return (written, resumed)
