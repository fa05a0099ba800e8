"""`ecglm chat` (a terminal; one question with --ask) and `ecglm serve` (a web page): talk with a fine-tuned ECG-LM
about a recording."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from ecglm.core.errors import StageError

COMMANDS = """Commands: /ecg PATH (talk about another recording; starts over), /findings (what was measured),
/reset (forget the conversation), /help, /quit (or Ctrl-D)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_chat(subparsers)
    _register_serve(subparsers)


def _model_options(p: argparse.ArgumentParser) -> None:
    """The options of the model and its decoding, shared by chat and serve."""
    p.add_argument("--model", required=True, help="the ecglm finetune-chat output folder (e.g. results/demo/chat)")
    p.add_argument("--llm", default=None, help="the base LLM's folder, if it moved since fine-tuning")
    p.add_argument("--max-new-tokens", type=int, default=200, help="answer length cap in tokens (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples, seeded")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed (default: %(default)s)")
    p.add_argument("--max-context", type=int, default=None,
                   help="context window in tokens (default: the model's, at most 2048); older turns are dropped")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _load_model(args: argparse.Namespace) -> Any:
    from ecglm.chat.session import ChatModel, ChatSettings

    settings = ChatSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                            max_context=args.max_context)  # fmt: skip
    return ChatModel.load(args.model, llm=args.llm, device=args.device, settings=settings)


def _register_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="the chat as a web page: upload a recording or pick a test record, see its leads, talk",
        description=(
            "Serve the chat as a web page (FastAPI): upload a recording (a WFDB .hea with its .dat, a CSV or a "
            ".npy) or pick a test-split record, see the leads plotted with each lead's findings and the measured "
            "intervals, give the patient's data, and talk, answers streamed. Binds to 127.0.0.1 unless --host "
            "says otherwise. Each browser session keeps its own recording and conversation. A research model, "
            "not a medical device."
        ),
    )
    _model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="the address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="the port (default: %(default)s)")
    p.add_argument("--records", default=None, help="records.parquet of a run: its test split can be picked")
    p.add_argument("--signals", default=None, help="the run's signals_<fs>.npy (with --records)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="upload size cap (default: %(default)s MB)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ecglm.chat.web import PickableRecords, create_app
    from ecglm.train.runtime import torch_threads

    if (args.records is None) != (args.signals is None):
        raise StageError("--records and --signals go together (a run's records.parquet and signals_<fs>.npy)")
    with torch_threads(args.threads):
        records = PickableRecords(Path(args.records), Path(args.signals)) if args.records else None
        app = create_app(_load_model(args), records=records, max_upload_mb=args.max_upload_mb)
        print(f"ECG-LM chat on http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _register_chat(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "chat",
        help="talk with a fine-tuned ECG-LM about a recording (terminal; --ask for one question)",
        description=(
            "Talk with a fine-tuned ECG-LM (an `ecglm finetune-chat` output) about a recording. The recording is "
            "read (WFDB .hea, CSV with a header of lead names, or a NumPy [12, T] array; any rate, 12 leads or a "
            "subset), measured and described by the pipeline's own stages, and the findings go into the model's "
            "system text with the patient's details. Answers stream as they are made. With --ask, one question "
            "is answered and the command ends (for scripts). A research model, not a medical device."
        ),
        epilog=COMMANDS,
    )
    p.add_argument("--ecg", default=None, help="the recording: NAME.hea (WFDB), FILE.csv or FILE.npy")
    p.add_argument("--fs", type=float, default=None,
                   help="its sampling rate in Hz (required for .npy and for a CSV without a time column)")
    p.add_argument("--units", choices=("mV", "uV"), default="mV", help="CSV/.npy units (default: %(default)s)")
    p.add_argument("--age", type=float, default=None, help="the person's age in years")
    p.add_argument("--sex", choices=("male", "female"), default=None, help="the person's sex")
    p.add_argument("--height", type=float, default=None, help="height in cm")
    p.add_argument("--weight", type=float, default=None, help="weight in kg")
    p.add_argument("--history", default=None, help='medical history in words, e.g. "high blood pressure, a smoker"')
    p.add_argument("--ask", default=None, help="answer this one question and exit (no prompt loop)")
    _model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ecglm.chat.session import NOTICE, Patient
    from ecglm.train.runtime import torch_threads

    out = sys.stdout
    patient = Patient(age=args.age, sex=args.sex, height_cm=args.height, weight_kg=args.weight, history=args.history)
    print(NOTICE, file=out, flush=True)
    if args.ecg is not None:  # a bad recording is told before the model loads
        from ecglm.chat.recording import read_recording

        read_recording(args.ecg, fs=args.fs, units=args.units)
    with torch_threads(args.threads):
        model = _load_model(args)
        talk = model.conversation(args.ecg, fs=args.fs, units=args.units, patient=patient)
        if talk.ecg is not None:
            _show_ecg(talk.ecg, out)
        if args.ask is not None:
            _answer(talk, args.ask, out)
            return 0
        return _loop(talk, args, out)


def _show_ecg(ecg: Any, out: TextIO) -> None:
    rec = ecg.recording
    leads = "all 12 leads" if len(rec.leads) == 12 else f"lead(s) {', '.join(rec.leads)}"
    ignored = f" (left out: {', '.join(rec.ignored)})" if rec.ignored else ""
    print(f"ECG {rec.source}: {rec.seconds:g} s at {rec.fs:g} Hz, {leads}{ignored}.", file=out)
    print(ecg.findings.summary(), file=out, flush=True)


def _answer(talk: Any, question: str, out: TextIO) -> None:
    print("ECG-LM: ", end="", file=out, flush=True)
    reply = talk.ask(question, on_text=lambda piece: print(piece, end="", file=out, flush=True))
    print(file=out, flush=True)
    if reply.dropped_turns:
        print(f"[the context is full: the oldest {reply.dropped_turns} turn(s) were left out of this answer]",
              file=out, flush=True)  # fmt: skip


def _loop(talk: Any, args: argparse.Namespace, out: TextIO) -> int:
    print(COMMANDS, file=out, flush=True)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print(file=out)
            return 0
        except KeyboardInterrupt:
            print(file=out)
            return 130
        line = line.strip()
        if not line:
            continue
        try:
            if not _command(talk, line, args, out):
                return 0
        except StageError as err:  # a bad recording or question: say so and keep talking
            print(f"error: {err}", file=out, flush=True)


def _command(talk: Any, line: str, args: argparse.Namespace, out: TextIO) -> bool:
    """Run one line of the loop; False ends the chat."""
    word, _, rest = line.partition(" ")
    if word in ("/quit", "/exit"):
        return False
    if word == "/help":
        print(COMMANDS, file=out, flush=True)
    elif word == "/reset":
        talk.reset()
        print("[conversation forgotten]", file=out, flush=True)
    elif word == "/findings":
        if talk.ecg is None:
            print("no recording loaded (/ecg PATH)", file=out, flush=True)
        else:
            _show_ecg(talk.ecg, out)
    elif word == "/ecg":
        if not rest.strip():
            print("usage: /ecg PATH", file=out, flush=True)
        else:
            talk.reset(rest.strip(), fs=args.fs, units=args.units)
            print("[new recording; the conversation starts over]", file=out, flush=True)
            _show_ecg(talk.ecg, out)
    elif word.startswith("/"):
        print(f"unknown command {word}. {COMMANDS}", file=out, flush=True)
    else:
        _answer(talk, line, out)
    return True
