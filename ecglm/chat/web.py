"""`ecglm serve`: the chat as a web page (FastAPI), for one person at a time or a few at once.

A small FastAPI app rather than Gradio: the page is three static files shipped in the package (no CDN, no
request beyond the server: the browser test counts them), every text is set with ``textContent`` (nothing
the model or a file says is ever parsed as HTML), and the upload rules are ours to state and test:

- ``GET /``: the page (with a Content-Security-Policy of 'self'); sets the session cookie.
- ``GET /api/records``: the test-split records a user may pick (``--records`` and ``--signals``).
- ``POST /api/ecg``: a recording (WFDB ``.hea`` + its signal file, a ``.csv`` or a ``.npy``) or a picked
  record, with the patient's data; answers the leads to plot, each lead's findings and the measurements.
  Uploads are capped (``max_upload_mb`` in all), file names are never used as paths (a plain name or the
  request is refused; files land in a fresh temporary folder), a header naming a file outside the upload or
  declaring more than 60 s is refused (:mod:`ecglm.chat.recording`), and nothing is unpickled.
- ``POST /api/ask``: the answer, streamed as JSON lines (``{"text": ...}`` pieces, then ``{"done": true,
  "dropped_turns": n}``).

Each browser has its own session (a random cookie): its recording, patient data and conversation are its
own. One model serves them all, one answer at a time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from fastapi import Request  # resolved at import: FastAPI reads the handlers' annotations by name

from ecglm.chat.recording import Recording, RecordingError
from ecglm.chat.session import NOTICE, ChatModel, Conversation, ECGInput, Patient
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS

log = logging.getLogger(__name__)

COOKIE = "ecglm_session"
#: Sessions kept at once (the least recently used is forgotten beyond this).
MAX_SESSIONS = 64
#: A plain file name: what an upload's name must be (it is never used as a path).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
UPLOAD_SUFFIXES = (".hea", ".dat", ".csv", ".npy")
#: Samples per second sent to the page for plotting.
PLOT_FS = 250
PAGE_FILES = {"/": ("page.html", "text/html"), "/page.js": ("page.js", "text/javascript"),
              "/page.css": ("page.css", "text/css")}  # fmt: skip
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'"


@dataclass
class Session:
    conversation: Conversation | None = None
    patient: Patient = field(default_factory=Patient)


class PickableRecords:
    """The prepared test-split records a page user may pick (records.parquet + signals_{fs}.npy)."""

    def __init__(self, records: Path, signals: Path) -> None:
        from ecglm.data.ecg_data import open_signals, rate_from_name, read_records

        table = read_records(records, ["ecg_id", "split"], patients=True)
        self.fs = rate_from_name(signals)
        if self.fs is None:
            raise StageError(f"{signals}: name it signals_<fs>.npy (as ecglm prepare does)")
        self.signals = open_signals(signals, self.fs)
        rows = [(i, r) for i, r in enumerate(table.iter_rows(named=True)) if r["split"] == "test"]
        self.rows = {int(r["ecg_id"]): (i, r) for i, r in rows}

    def listing(self) -> list[dict[str, Any]]:
        return [{"ecg_id": k, "age": r.get("age"), "sex": r.get("sex")} for k, (_, r) in self.rows.items()]

    def recording(self, ecg_id: int) -> Recording:
        if ecg_id not in self.rows:
            raise RecordingError(f"record {ecg_id} is not a test-split record")
        row, _ = self.rows[ecg_id]
        signal = np.asarray(self.signals[row], dtype=np.float64) / 1000.0  # [12, T] mV
        return Recording(signal, (True,) * len(LEADS), float(self.fs), f"test record {ecg_id}")


def view(ecg: ECGInput) -> dict[str, Any]:
    """What the page shows of a recording: the leads to plot (mV at <= PLOT_FS Hz), findings, measurements."""
    from ecglm.chat.findings import SHOWN

    rec = ecg.recording
    x = rec.resampled(min(float(PLOT_FS), rec.fs))
    f = ecg.findings
    leads = [{"name": lead, "recorded": bool(ok), "samples": np.round(x[i], 3).tolist() if ok else [],
              "finding": f.leads.get(lead) if ok else None}
             for i, (lead, ok) in enumerate(zip(LEADS, rec.present))]  # fmt: skip
    shown = [{"label": label, "value": round(v), "unit": unit} for key, label, unit in SHOWN
             if (v := f.measurements.get(key)) is not None]  # fmt: skip
    return {"source": rec.source, "fs": rec.fs, "seconds": rec.seconds, "plot_fs": min(float(PLOT_FS), rec.fs),
            "leads": leads, "measurements": shown, "general": f.general, "failure": f.failure,
            "ignored": list(rec.ignored)}  # fmt: skip


def _patient(form: dict[str, Any]) -> Patient:
    def number(key: str) -> float | None:
        text = str(form.get(key) or "").strip()
        if not text:
            return None
        try:
            return float(text)
        except ValueError:
            raise StageError(f"{key} must be a number, got {text!r}") from None

    sex = str(form.get("sex") or "").strip() or None
    history = str(form.get("history") or "").strip()[:500] or None
    return Patient(age=number("age"), sex=sex, height_cm=number("height"), weight_kg=number("weight"), history=history)


class ChatServer:
    """The app's state: the model, the sessions by cookie, the pickable records; one method per route."""

    def __init__(self, model: ChatModel, records: PickableRecords | None, max_upload_mb: float) -> None:
        self.model, self.records = model, records
        self.max_upload_mb, self.max_bytes = max_upload_mb, int(max_upload_mb * 1024 * 1024)
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.model_lock = threading.Lock()
        self.page_dir = Path(__file__).with_name("page")

    def session_of(self, request: Any) -> Session:
        sid = request.cookies.get(COOKIE)
        if not sid or sid not in self.sessions:
            raise PermissionError("no session: load the page first")
        self.sessions.move_to_end(sid)
        return self.sessions[sid]

    def page(self, name: str, media: str, new_session: bool = False) -> Any:
        from fastapi.responses import Response

        response = Response((self.page_dir / name).read_text(encoding="utf-8"), media_type=media,
                            headers={"Content-Security-Policy": CSP})  # fmt: skip
        if new_session:
            sid = secrets.token_urlsafe(18)
            self.sessions[sid] = Session()
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
            response.set_cookie(COOKIE, sid, httponly=True, samesite="strict")
        return response

    def listing(self) -> dict[str, Any]:
        return {"notice": NOTICE, "records": self.records.listing() if self.records else []}

    async def load_ecg(self, request: Any) -> tuple[int, dict[str, Any]]:
        state = self.session_of(request)
        length = int(request.headers.get("content-length") or 0)
        if length > self.max_bytes:
            return 413, {"error": f"the upload is {length / 1e6:.1f} MB; at most {self.max_upload_mb:g} MB"}
        form = await request.form(max_files=4, max_fields=16, max_part_size=self.max_bytes)
        patient = _patient(dict(form))
        with tempfile.TemporaryDirectory(prefix="ecglm-upload-") as tmp:
            files = [f for f in form.getlist("files") if getattr(f, "filename", None)]
            if files:
                ecg = await _read_upload(self.model, files, Path(tmp), dict(form), patient, self.max_bytes)
            elif form.get("ecg_id") and self.records is not None:
                ecg = self.model.prepare(self.records.recording(int(str(form.get("ecg_id")))), patient)
            else:
                raise RecordingError("upload a recording or pick a test record")
        state.patient = patient
        state.conversation = Conversation(self.model, ecg, patient)
        return 200, view(ecg)

    async def ask(self, request: Any) -> Iterator[bytes] | tuple[int, dict[str, Any]]:
        state = self.session_of(request)
        try:
            question = str((await request.json()).get("question") or "").strip()[:2000]
        except (ValueError, AttributeError):
            return 400, {"error": "send {\"question\": TEXT}"}
        if not question:
            return 400, {"error": "an empty question"}
        if state.conversation is None:
            state.conversation = Conversation(self.model, None, state.patient)
        return _stream(state.conversation, question, self.model_lock)


def _page_handler(server: ChatServer, name: str, media: str, new_session: bool) -> Any:
    """A route handler that takes NO argument: FastAPI would read any parameter (even one with a default) from
    the query string, and a file name taken from a request must never reach a path."""

    def handler() -> Any:
        return server.page(name, media, new_session)

    return handler


def create_app(model: ChatModel, *, records: PickableRecords | None = None, max_upload_mb: float = 20.0) -> Any:
    """The FastAPI app serving ``model`` (see the module docstring)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="ECG-LM chat", docs_url=None, redoc_url=None, openapi_url=None)
    server = ChatServer(model, records, max_upload_mb)
    app.state.server = server
    for route, (name, media) in PAGE_FILES.items():
        app.add_api_route(route, _page_handler(server, name, media, route == "/"), methods=["GET"])

    @app.get("/api/records")
    def listing() -> JSONResponse:
        return JSONResponse(server.listing())

    @app.post("/api/ecg")
    async def load_ecg(request: Request) -> JSONResponse:
        try:
            status, body = await server.load_ecg(request)
        except PermissionError as err:
            status, body = 403, {"error": str(err)}
        except (RecordingError, StageError, ValueError) as err:
            status, body = 400, {"error": str(err)}
        return JSONResponse(body, status_code=status)

    @app.post("/api/ask")
    async def ask(request: Request) -> Any:
        try:
            result = await server.ask(request)
        except PermissionError as err:
            return JSONResponse({"error": str(err)}, status_code=403)
        if isinstance(result, tuple):
            return JSONResponse(result[1], status_code=result[0])
        return StreamingResponse(result, media_type="application/x-ndjson")

    return app


async def _read_upload(model: ChatModel, files: list[Any], folder: Path, form: dict[str, Any], patient: Patient,
                       max_bytes: int) -> ECGInput:  # fmt: skip
    """Save the uploaded files under their (checked) plain names in ``folder`` and read the recording."""
    total, saved = 0, []
    for upload in files:
        name = Path(str(upload.filename)).name
        if name != str(upload.filename) or not SAFE_NAME.match(name) or not name.lower().endswith(UPLOAD_SUFFIXES):
            raise RecordingError(f"file name {str(upload.filename)[:80]!r} refused (a plain name ending in "
                                 f"{', '.join(UPLOAD_SUFFIXES)})")  # fmt: skip
        data = await upload.read(max_bytes - total + 1)
        total += len(data)
        if total > max_bytes:
            raise RecordingError(f"the upload is over {max_bytes / 1024 / 1024:g} MB")
        (folder / name).write_bytes(data)
        saved.append(name)
    main = [n for n in saved if n.lower().endswith((".hea", ".csv", ".npy"))]
    if len(main) != 1:
        raise RecordingError("upload one recording: a .hea with its signal file, a .csv or a .npy")
    fs = float(form["fs"]) if str(form.get("fs") or "").strip() else None
    units = str(form.get("units") or "mV")
    try:
        ecg = model.read_ecg(folder / main[0], fs=fs, units=units, patient=patient)
    except RecordingError as err:  # name the user's file, not the temporary folder
        raise RecordingError(str(err).replace(f"{folder}/", "")) from None
    return dataclasses.replace(ecg, recording=dataclasses.replace(ecg.recording, source=main[0]))


def _stream(talk: Conversation, question: str, lock: threading.Lock) -> Iterator[bytes]:
    """Run one answer in a thread and yield its pieces as JSON lines as they come."""
    import queue

    pieces: queue.Queue = queue.Queue()
    done = object()

    def work() -> None:
        try:
            with lock:
                reply = talk.ask(question, on_text=lambda piece: pieces.put({"text": piece}))
            pieces.put({"done": True, "dropped_turns": reply.dropped_turns})
        except StageError as err:
            pieces.put({"error": str(err)})
        except Exception as err:  # an answer that failed must still end the stream, with the reason
            log.exception("answer failed")
            pieces.put({"error": f"the answer failed: {type(err).__name__}"})
        finally:
            pieces.put(done)

    threading.Thread(target=work, daemon=True).start()
    while (item := pieces.get()) is not done:
        yield (json.dumps(item) + "\n").encode()
