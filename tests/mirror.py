"""A PhysioNet-shaped mirror for tests: build the folder, zip it, serve it on 127.0.0.1 with a request log.

Reusable by any test (``from mirror import ...``; pytest puts tests/ on sys.path)::

    project = build_ptbxl_mirror(tmp_path / "mirror", ptbxl_sample, ids=range(1, 101), rates=(100, 500))
    with MirrorServer(tmp_path / "mirror") as server:
        server.faults.fail_500["/ptb-xl/1.0.3/RECORDS"] = 2   # answer 500 twice, then serve it
        ecglm.cli.main(["download", "ptbxl", "--base-url", server.base_url, ...])
        server.requests_for("/ptb-xl/1.0.3/RECORDS")           # -> [Request, ...]

The server is a real ``http.server.ThreadingHTTPServer`` speaking HTTP/1.1 (keep-alive, so one client
connection carries many requests; ``Request.conn`` tells them apart). It serves ``Range: bytes=N-`` /
``bytes=N-M`` requests with 206 and supports programmable faults (:class:`Faults`).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

from ecglm.data.physionet import PROJECTS, record_path, write_checksums

PTBXL_TABLES = ("ptbxl_database.csv", "scp_statements.csv", "LICENSE.txt", "RECORDS")


# ----------------------------------------------------------------------------------------- the folder
def build_tree(root: Path, slug: str, version: str, files: dict[str, bytes | Path]) -> Path:
    """Write ``root/<slug>/<version>/<rel>`` for each file (bytes, or a Path that is symlinked, not copied)
    and a SHA256SUMS.txt over them; return the project folder."""
    project = Path(root) / slug / version
    for rel, content in files.items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            os.symlink(content.resolve(), path)
        else:
            path.write_bytes(content)
    write_checksums(project, sorted(files))
    return project


def build_ptbxl_mirror(root: Path, sample: Path, ids=range(1, 101), rates=(100, 500)) -> Path:
    """A PTB-XL 1.0.3 tree under ``root`` from the real sample (tables + the records ``ids`` at ``rates``),
    with a SHA256SUMS.txt written for exactly these files. Returns ``root/ptb-xl/1.0.3``."""
    files: dict[str, bytes | Path] = {name: sample / name for name in PTBXL_TABLES}
    for fs in rates:
        for ecg_id in ids:
            for ext in (".hea", ".dat"):
                rel = record_path(ecg_id, fs) + ext
                files[rel] = sample / rel
    project = PROJECTS["ptbxl"]
    return build_tree(root, project.slug, project.version, files)


def build_zip(project_dir: Path, zip_path: Path, top: str) -> Path:
    """Zip every file of ``project_dir`` (SHA256SUMS.txt included) under one top folder ``top/``, as
    PhysioNet publishes them."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(project_dir.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}/{path.relative_to(project_dir).as_posix()}")
    return zip_path


# ----------------------------------------------------------------------------------------- the server
@dataclass
class Request:
    """One request as the server saw it."""

    path: str  # URL path, unquoted: /ptb-xl/1.0.3/records100/00000/00001_lr.dat
    range: str | None  # the Range header as sent, e.g. "bytes=1234-"
    conn: tuple[str, int]  # the client's address: one per TCP connection
    thread: int  # the server thread that handled it
    start: float  # time.monotonic() when the request line was parsed
    end: float = 0.0  # when the answer was written (or aborted)
    status: int = 0
    sent: int = 0  # body bytes written


@dataclass
class Faults:
    """Programmable misbehaviour, keyed by URL path (as in :class:`Request.path`).

    ``fail_500[path] = n``: answer 500 to the next n requests. ``missing``: answer 404. ``corrupt``: serve
    the bytes with one byte flipped. ``abort[path] = n``: for the next n requests, send the headers and half
    of the body, then drop the connection. ``ignore_range``: answer 200 with the whole file even to a Range
    request. ``delay_s``: wait this long before each answer (a slow server, so that connections overlap).
    """

    fail_500: dict[str, int] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    abort: dict[str, int] = field(default_factory=dict)
    ignore_range: set[str] = field(default_factory=set)
    delay_s: float = 0.0


_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = unquote(urlparse(self.path).path)
        record = Request(path=path, range=self.headers.get("Range"), conn=self.client_address,
                         thread=threading.get_ident(), start=time.monotonic())
        with self.server.lock:
            self.server.log.append(record)
        try:
            self._answer(path, record)
        finally:
            record.end = time.monotonic()

    def _take(self, counter: dict[str, int], path: str) -> bool:
        with self.server.lock:
            left = counter.get(path, 0)
            if left > 0:
                counter[path] = left - 1
                return True
        return False

    def _send(self, record: Request, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        record.status = status
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        record.sent = len(body)

    def _answer(self, path: str, record: Request) -> None:
        faults = self.server.faults
        if faults.delay_s:
            time.sleep(faults.delay_s)
        if self._take(faults.fail_500, path):
            self._send(record, 500, b"injected server error\n")
            return
        file = (self.server.root / path.lstrip("/")).resolve() if ".." not in path else None
        if path in faults.missing or file is None or not file.is_file():
            self._send(record, 404, b"not found\n")
            return
        data = file.read_bytes()
        if path in faults.corrupt and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        status, headers, body = 200, {"Accept-Ranges": "bytes"}, data
        match = _RANGE.match(record.range or "")
        if match and path not in faults.ignore_range:
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) else len(data) - 1
            if first >= len(data):
                self._send(record, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            last = min(last, len(data) - 1)
            status, body = 206, data[first:last + 1]
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        if self._take(faults.abort, path):
            record.status = status
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            half = body[: len(body) // 2]
            self.wfile.write(half)
            self.wfile.flush()
            record.sent = len(half)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(record, status, body, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root).resolve()
        self.faults = Faults()
        self.log: list[Request] = []
        self.lock = threading.Lock()


class MirrorServer:
    """Serve ``root`` on 127.0.0.1 (a free port) in a background thread; use as a context manager."""

    def __init__(self, root: Path):
        self._server = _Server(root)
        self._thread = threading.Thread(target=self._server.serve_forever, name="mirror", daemon=True)

    def __enter__(self) -> "MirrorServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def faults(self) -> Faults:
        return self._server.faults

    @property
    def requests(self) -> list[Request]:
        """A copy of the request log, in arrival order."""
        with self._server.lock:
            return list(self._server.log)

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def clear_log(self) -> None:
        with self._server.lock:
            self._server.log.clear()


def overlapping_connections(requests: list[Request]) -> list[tuple[Request, Request]]:
    """Pairs of requests from different connections whose [start, end] intervals overlap."""
    ordered = sorted(requests, key=lambda r: r.start)
    pairs = []
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.start >= a.end:
                break
            if b.conn != a.conn:
                pairs.append((a, b))
    return pairs

