"""`ecglm chat` and `ecglm.load`: a person's recording read in any format, measured and described, and a
conversation about it (streamed answers, the context window, a terminal session through a pty)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import sys
import time

import numpy as np
import polars as pl
import pytest
import torch
from test_chat_finetune import llm_dir, store  # noqa: F401  (fixtures)

import ecglm
from ecglm import cli
from ecglm.chat.findings import read_findings
from ecglm.chat.recording import RecordingError, read_recording
from ecglm.chat.session import NOTICE, ChatSettings, Patient
from ecglm.core.leads import LEADS
from ecglm.models.encoder import ResNet1d18
from ecglm.models.llm import load_llm
from ecglm.models.multimodal import ECGLM
from ecglm.text.prompts import CHAT_ECG_HANDOVER, ECG_TOKEN
from ecglm.train.chat_data import Dialogue, render, render_prompt

LIMB = LEADS[:6]


# ------------------------------------------------------------------------------------------ recordings


def _demo_record(demo_world, ecg_id=1, hr=True):
    folder = "records500" if hr else "records100"
    return demo_world / "ptb-xl" / "1.0.3" / folder / "00000" / f"{ecg_id:05d}_{'hr' if hr else 'lr'}"


def _truth(demo_world, ecg_id):
    return pl.read_csv(demo_world / "truth.csv").filter(pl.col("ecg_id") == ecg_id).row(0, named=True)


def _write_csv(path, signal_mv, fs, leads=LEADS, time_column=True, names=str.lower):
    cols = {"time": np.arange(signal_mv.shape[1]) / fs} if time_column else {}
    cols.update({names(lead): signal_mv[LEADS.index(lead)] for lead in leads})
    pl.DataFrame(cols).write_csv(path)
    return path


def test_a_wfdb_record_reads_at_its_own_rate_and_measures_its_true_heart_rate(demo_world):
    for ecg_id in (1, 2, 3):
        rec = read_recording(f"{_demo_record(demo_world, ecg_id)}.hea")
        assert rec.fs == 500 and rec.seconds == 10 and rec.leads == list(LEADS)
        findings = read_findings(rec, sex="male", age=63)
        assert findings.failure is None and abs(findings.heart_rate - _truth(demo_world, ecg_id)["hr_bpm"]) < 5
        low = read_recording(_demo_record(demo_world, ecg_id, hr=False))  # the path without a suffix
        assert low.fs == 100 and np.allclose(low.signal_mv, rec.resampled(100), atol=0.08)


def test_csv_npy_and_wfdb_of_one_record_give_the_same_signal(demo_world, tmp_path):
    rec = read_recording(f"{_demo_record(demo_world)}.hea")
    csv = read_recording(_write_csv(tmp_path / "r.csv", rec.signal_mv, 500, names=str.upper))
    assert csv.fs == 500 and np.allclose(csv.signal_mv, rec.signal_mv)
    uv = read_recording(_write_csv(tmp_path / "uv.csv", rec.signal_mv * 1000, 500), units="uV")
    assert np.allclose(uv.signal_mv, rec.signal_mv)
    np.save(tmp_path / "r.npy", rec.signal_mv.astype(np.float32))
    npy = read_recording(tmp_path / "r.npy", fs=500)
    assert np.allclose(npy.signal_mv, rec.signal_mv, atol=1e-5)
    signal, mask = rec.model_input(100, 1000)
    assert signal.dtype == np.int16 and signal.shape == (12, 1000) and mask.all()


def test_a_subset_of_leads_is_read_with_a_mask_and_named_nowhere_else(demo_world, tmp_path):
    rec = read_recording(f"{_demo_record(demo_world)}.hea")
    limb = read_recording(_write_csv(tmp_path / "limb.csv", rec.signal_mv, 500, leads=LIMB, time_column=False), fs=500)
    assert limb.leads == list(LIMB)
    signal, mask = limb.model_input(100, 1000)
    assert mask.tolist() == [True] * 6 + [False] * 6 and not signal[6:].any()
    findings = read_findings(limb)
    assert list(findings.leads) == list(LIMB) and not re.search(r"\bV[1-6]\b", findings.summary())
    one = np.full((12, rec.signal_mv.shape[1]), np.nan)
    one[0] = rec.signal_mv[0]
    np.save(tmp_path / "lead1.npy", one)
    lead_i = read_recording(tmp_path / "lead1.npy", fs=500)
    assert lead_i.leads == ["I"]
    assert abs(read_findings(lead_i).heart_rate - _truth(demo_world, 1)["hr_bpm"]) < 5


@pytest.mark.parametrize("case, match", [
    ("unknown_column", "'pulse' are not lead names"),
    ("no_rate", "give the sampling rate"),
    ("nan", "NaN or infinite samples in lead\\(s\\) II"),
    ("short", "too short"),
    ("microvolts", "are they in microvolts"),
    ("twice", "lead II appears twice"),
    ("not_csv", "not a readable CSV|are not lead names"),
])
def test_a_bad_csv_is_refused_naming_the_file_and_the_reason(case, match, tmp_path):
    t = np.arange(5000) / 500
    ecg = 1.2 * np.sin(2 * np.pi * 1.1 * t) ** 21  # mV
    path = tmp_path / f"{case}.csv"
    frame = {"time": t, "I": ecg, "II": ecg}
    if case == "unknown_column":
        frame["pulse"] = ecg
    if case == "no_rate":
        del frame["time"]
    if case == "nan":
        frame["II"] = np.where(t > 3, np.nan, ecg)
    if case == "short":
        frame = {k: v[:500] for k, v in frame.items()}
    if case == "microvolts":
        frame["I"] = ecg * 1000
    pl.DataFrame(frame).write_csv(path)
    if case == "twice":
        path.write_text(path.read_text().replace("time,I,II", "time,ii,II", 1))
    if case == "not_csv":
        path.write_bytes(b"\x00\x01\x02 not a table")
    with pytest.raises(RecordingError, match=match) as err:
        read_recording(path, min_seconds=2.0)
    assert str(path) in str(err.value)


def test_npy_is_read_without_pickle_and_must_be_12_by_t(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RecordingError, match="without pickled objects"):
        read_recording(tmp_path / "objects.npy", fs=500)
    np.save(tmp_path / "wrong.npy", np.zeros((5000, 12)))
    with pytest.raises(RecordingError, match=r"expected a numeric array \[12, T\]"):
        read_recording(tmp_path / "wrong.npy", fs=500)
    np.save(tmp_path / "right.npy", np.zeros((12, 5000)))
    with pytest.raises(RecordingError, match="give the sampling rate"):
        read_recording(tmp_path / "right.npy")


def test_a_wfdb_header_is_checked_before_any_signal_file_is_opened(demo_world, tmp_path):
    src = _demo_record(demo_world)
    header = src.with_suffix(".hea").read_text()
    outside = tmp_path / "outside.hea"
    outside.write_text(header.replace("00001_hr.dat", "../00001_hr.dat"))
    with pytest.raises(RecordingError, match="is not beside the header"):
        read_recording(outside)
    long = tmp_path / "long.hea"
    first, rest = header.split("\n", 1)
    fields = first.split()
    fields[3] = str(500 * 61)
    long.write_text(" ".join(fields) + "\n" + rest)
    with pytest.raises(RecordingError, match="declares 61.0 s"):
        read_recording(long)
    (tmp_path / "ecg.xml").write_text("<ecg/>")
    with pytest.raises(RecordingError, match="unknown recording format"):
        read_recording(tmp_path / "ecg.xml")


def test_heart_rate_agrees_with_wfdb_xqrs_on_real_records(ptbxl_sample):
    import wfdb
    from wfdb import processing

    for ecg_id in (1, 2, 9, 17):
        base = ptbxl_sample / "records500" / "00000" / f"{ecg_id:05d}_hr"
        record = wfdb.rdrecord(str(base))
        peaks = processing.xqrs_detect(record.p_signal[:, 1], fs=record.fs, verbose=False)
        xqrs = 60.0 * record.fs / float(np.mean(np.diff(peaks)))
        ours = read_findings(read_recording(base.with_suffix(".hea"))).heart_rate
        assert abs(ours - xqrs) < 5, (ecg_id, ours, xqrs)


# ------------------------------------------------------------------------------------------ the chat model


@pytest.fixture(scope="module")
def chat_dir(store, llm_dir, chatdoctor_sample, tmp_path_factory):  # noqa: F811
    llm, tokenizer = load_llm(llm_dir, dtype="float32")
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("chat")
    aligned = ECGLM(ResNet1d18(n_classes=5, base_width=4), llm, tokenizer.convert_tokens_to_ids(ECG_TOKEN)).save(
        out / "aligned")
    assert cli.main(["finetune-chat", "--records", str(store / "records.parquet"), "--reports",
                     str(store / "reports_en.parquet"), "--findings", str(store / "findings.parquet"), "--signals",
                     str(store / "signals_100.npy"), "--conversations", *map(str, sorted(chatdoctor_sample.glob("*.json"))),
                     "--aligned", str(aligned), "--llm", str(llm_dir), "--out", str(out / "chat"), "--set", "max_steps=2",
                     "--set", "batch_size=4", "--set", "lora_rank=2", "--set", "max_length=256", "--set", "device=cpu",
                     "--ecg-check-samples", "8", "--ecg-source", "demo", "--threads", "1", "--no-progress"]) == 0  # fmt: skip
    return out / "chat"


def test_finetune_chat_writes_a_model_card_an_input_spec_and_an_ecg_check(chat_dir, llm_dir):  # noqa: F811
    assert json.loads((chat_dir / "ecg_input.json").read_text())["fs"] == 100
    card = (chat_dir / "MODEL_CARD.md").read_text()
    assert "Research use only" in card and "not a medical device" in card.lower() and str(llm_dir) in card
    assert re.search(r"`model.safetensors` SHA-256 `[0-9a-f]{64}`", card) and "Apache License" in card
    check = json.loads((chat_dir / "metrics.json").read_text())["ecg_check"]
    assert check["n_samples"] > 0 and {"low", "high", "mean"} <= set(check["difference"])


def test_the_prompt_is_laid_out_as_the_training_dialogues(llm_dir):  # noqa: F811
    from test_chat_finetune import CHATML

    _, tokenizer = load_llm(llm_dir, dtype="float32")
    for template in (None, CHATML):
        tokenizer.chat_template = template
        dialogue = Dialogue("Sys.", (("Hi.", "Hello."), ("Q?", "A.")), None, "conversation")
        text, spans = render(tokenizer, dialogue)
        prompt = render_prompt(tokenizer, "Sys.", [("Hi.", "Hello.")], "Q?")
        if template is None:  # the plain layout continues exactly where the answer starts
            assert text.startswith(prompt) and text[len(prompt):].startswith("A.")
        else:
            assert prompt.startswith(text[: spans[1][0] - len("<|im_start|>assistant\n")])


def test_the_api_answers_about_a_recording_and_keeps_the_ecg_when_turns_are_dropped(chat_dir, demo_world):
    model = ecglm.load(chat_dir, device="cpu", settings=ChatSettings(max_new_tokens=8, max_context=800))
    streamed = []
    answer = model.chat("What does this ECG show?", ecg=f"{_demo_record(demo_world)}.hea", age=63, sex="male",
                        on_text=streamed.append)  # fmt: skip
    assert isinstance(answer, str) and "".join(streamed).strip() == answer
    talk = model.conversation(f"{_demo_record(demo_world)}.hea", patient=Patient(age=52, sex="male",
                              history="high blood pressure, a smoker"))  # fmt: skip
    assert "52-year-old male" in talk.system and "high blood pressure" in talk.system
    assert "The measured findings of the ECG" in talk.system
    first = talk.ask("Is my heart rate normal?")
    assert first.dropped_turns == 0 and talk.prompt("And the QRS?").count("Is my heart rate normal?") == 1
    assert talk.prompt("And the QRS?").count(ECG_TOKEN) == 1
    dropped = 0
    for i in range(12):  # long questions fill an 800-token context
        dropped = talk.ask(f"Question {i}: " + "tell me more about the waves " * 6).dropped_turns or dropped
    assert dropped > 0
    prompt = talk.last_prompt
    assert "Is my heart rate normal?" not in prompt and prompt.count(ECG_TOKEN) == 1 and CHAT_ECG_HANDOVER in prompt
    assert "The measured findings of the ECG" in prompt  # the system text stays
    with pytest.raises(RecordingError, match=r"too short: 5.00 s \(at least 10 s\)"):
        model.read_ecg(_short_csv(demo_world, chat_dir))


def _short_csv(demo_world, folder):
    rec = read_recording(f"{_demo_record(demo_world)}.hea")
    return _write_csv(folder.parent / "short.csv", rec.signal_mv[:, :2500], 500)  # 5 s: the model reads 10 s


def test_ecglm_chat_ask_prints_the_notice_the_findings_and_an_answer(chat_dir, demo_world, capsys):
    assert cli.main(["chat", "--model", str(chat_dir), "--ecg", f"{_demo_record(demo_world)}.hea", "--age", "63",
                     "--sex", "male", "--ask", "What does this ECG show?", "--max-new-tokens", "6",
                     "--device", "cpu"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith(NOTICE) and "heart rate" in out and "Findings in general" in out and "ECG-LM: " in out
    assert cli.main(["chat", "--model", str(chat_dir), "--ecg", str(chat_dir / "missing.csv"), "--ask", "x"]) != 0
    assert f"{chat_dir / 'missing.csv'}: no such file" in capsys.readouterr().err


def _read_until(fd, pattern, timeout=120.0):
    seen, end = b"", time.time() + timeout
    while time.time() < end:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if re.search(pattern, seen.decode(errors="replace")):
                return seen.decode(errors="replace")
    raise AssertionError(f"no {pattern!r} in {seen.decode(errors='replace')[-2000:]!r}")


def test_a_terminal_session_keeps_the_turns_and_says_when_the_context_overflows(chat_dir, demo_world):
    cmd = [sys.executable, "-m", "ecglm", "-v", "chat", "--model", str(chat_dir), "--ecg",
           f"{_demo_record(demo_world)}.hea", "--max-new-tokens", "4", "--max-context", "800", "--device", "cpu"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal is its stdin, stdout and stderr
        os.execvpe(cmd[0], cmd, {**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _read_until(fd, r"you> ")
        os.write(fd, b"Is my heart rate normal?\n")
        _read_until(fd, r"ECG-LM: .*\n(.|\n)*you> ")
        os.write(fd, b"What about the QRS?\n")
        second = _read_until(fd, r"ECG-LM: .*\n(.|\n)*you> ")
        assert re.search(r"prompt \(\d+ tokens\):.*Is my heart rate normal\?.*What about the QRS\?", second, re.S)
        for i in range(12):
            os.write(fd, f"Question {i}: {'describe every wave of every lead please ' * 8}\n".encode())
            text = _read_until(fd, r"you> ")
            if "the context is full" in text:
                break
        else:
            raise AssertionError("the context never overflowed")
        os.write(fd, b"/findings\n")
        assert "Findings in general" in _read_until(fd, r"Findings in general(.|\n)*you> ")
        os.write(fd, b"/quit\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.close(fd)
