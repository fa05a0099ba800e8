"""The chat: a fine-tuned ECG-LM, one conversation about one recording, answers streamed token by token.

    import ecglm
    model = ecglm.load("results/demo/chat")                   # ChatModel
    print(model.chat("What does this ECG show?", ecg="00001_hr.hea", age=63, sex="male"))
    talk = model.conversation(ecg="my_ecg.csv", fs=500)      # Conversation: several turns
    talk.ask("Is my heart rate normal?", on_text=lambda piece: print(piece, end=""))

What the model reads, per answer: the system text (:func:`ecglm.text.prompts.chat_system`: the standing
research-use notice, the patient's data and history, and the recording's measured findings, in the training
dialogues' words), the conversation so far, and the new question; the first user turn it keeps starts with
the ECG hand-over sentence, whose ``<ecg>`` token carries the recording (:data:`ecglm.text.prompts.
CHAT_ECG_HANDOVER`). When this no longer fits the context window with room for the answer, the oldest turns
are dropped (the system text and the ECG stay) and :class:`Reply` says how many. Decoding is greedy unless a
temperature is set (then seeded, so a reply can be reproduced).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ecglm.chat.findings import Findings, read_findings
from ecglm.chat.recording import Recording, read_recording
from ecglm.core.errors import StageError
from ecglm.train.model_card import ECG_INPUT_NAME

log = logging.getLogger(__name__)

#: What every chat shows first, and the web page keeps in view.
NOTICE = ("ECG-LM is a research model, not a medical device. Its answers can be wrong and are not medical "
          "advice; ask a clinician about your ECG.")  # fmt: skip
#: The context window the chat uses at most (the model's own, if smaller).
DEFAULT_MAX_CONTEXT = 2048


@dataclass(frozen=True)
class ChatSettings:
    """How answers are decoded."""

    max_new_tokens: int = 200
    temperature: float = 0.0  # 0: greedy
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    max_context: int | None = None  # None: min(the model's, DEFAULT_MAX_CONTEXT)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1 or self.repetition_penalty <= 0:
            raise StageError(f"chat settings out of range: {self}")


@dataclass(frozen=True)
class Patient:
    """What a person says about themself (all optional)."""

    age: float | None = None
    sex: str | None = None  # "male" or "female"
    height_cm: float | None = None
    weight_kg: float | None = None
    history: str | None = None  # free text: "high blood pressure, a smoker"

    def __post_init__(self) -> None:
        if self.sex is not None and self.sex not in ("male", "female"):
            raise StageError(f"sex must be male or female, got {self.sex!r}")
        for name, value, hi in (("age", self.age, 130), ("height", self.height_cm, 260), ("weight", self.weight_kg, 400)):
            if value is not None and not 0 < value <= hi:
                raise StageError(f"{name} {value!r} is out of range (0, {hi}]")

    @property
    def known(self) -> bool:
        return any(v is not None for v in (self.age, self.sex, self.height_cm, self.weight_kg))


@dataclass(frozen=True)
class Reply:
    text: str
    dropped_turns: int = 0  # turns left out of this answer's context (the oldest first)
    prompt_tokens: int = 0


@dataclass(frozen=True)
class ECGInput:
    """The recording as the encoder reads it, and what was measured on it."""

    recording: Recording
    signal: np.ndarray  # int16 uV [12, T]
    lead_mask: np.ndarray  # bool [12]
    findings: Findings


def ecg_input_spec(folder: Path) -> tuple[int, int]:
    """``(fs, samples)`` the model's encoder reads: from ``ecg_input.json``, else from the ``signals_<fs>.npy``
    named in ``metrics.json`` (an ``ecglm align`` or ``finetune-qa`` output)."""
    from ecglm.data.ecg_data import RECORD_SECONDS, rate_from_name

    spec_path = folder / ECG_INPUT_NAME
    if spec_path.exists():
        try:
            spec = json.loads(spec_path.read_text())
            return int(spec["fs"]), int(spec["samples"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StageError(f"{spec_path}: not a valid ECG input spec ({err})") from err
    try:
        signals = json.loads((folder / "metrics.json").read_text())["signals"]
    except (OSError, ValueError, KeyError, TypeError):
        signals = None
    fs = rate_from_name(Path(signals)) if signals else None
    if fs is None:
        raise StageError(f"{folder}: neither {ECG_INPUT_NAME} nor a signals_<fs>.npy in metrics.json says the rate "
                         "its encoder reads (is it an ecglm finetune-chat output?)")  # fmt: skip
    return int(fs), int(RECORD_SECONDS * fs)


class ChatModel:
    """A fine-tuned ECG-LM ready to talk (:func:`load`)."""

    def __init__(self, model: Any, tokenizer: Any, fs: int, samples: int, folder: Path,
                 settings: ChatSettings | None = None, guidelines: str | Path | None = None) -> None:  # fmt: skip
        self.model, self.tokenizer, self.fs, self.samples, self.folder = model, tokenizer, fs, samples, folder
        self.settings = settings or ChatSettings()
        self.guidelines = guidelines
        own = getattr(model.llm.config, "max_position_embeddings", None) or DEFAULT_MAX_CONTEXT
        self.max_context = min(int(own), self.settings.max_context or DEFAULT_MAX_CONTEXT)

    @classmethod
    def load(cls, folder: str | os.PathLike, *, llm: str | None = None, device: str = "auto", dtype: str = "auto",
             settings: ChatSettings | None = None, guidelines: str | Path | None = None) -> "ChatModel":  # fmt: skip
        """Load ``folder`` (an ``ecglm finetune-chat`` output) on its base LLM (``llm`` overrides the recorded one)."""
        from ecglm.models.llm import load_llm
        from ecglm.models.multimodal import CONFIG_NAME, ECGLM
        from ecglm.train.runtime import resolve_device

        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file():
            raise StageError(f"{folder}: no {CONFIG_NAME}: not an ECG-LM model folder (run ecglm finetune-chat)")
        fs, samples = ecg_input_spec(folder)
        if llm is None:
            try:
                base = json.loads((folder / CONFIG_NAME).read_text())["base_llm"]
            except (OSError, ValueError, KeyError) as err:
                raise StageError(f"{folder / CONFIG_NAME}: cannot read the base LLM ({err})") from err
            llm, revision = _relocated(base["name_or_path"], folder), base.get("revision")
        else:
            revision = None
        device_obj = resolve_device(device)
        base_llm, tokenizer = load_llm(llm, revision=revision, dtype=dtype, device=device_obj)
        model = ECGLM.load(folder, base_llm, tokenizer=tokenizer)
        model.eval()
        return cls(model, tokenizer, fs, samples, folder, settings, guidelines)

    def read_ecg(self, path: str | os.PathLike, *, fs: float | None = None, units: str = "mV",
                 patient: Patient | None = None) -> ECGInput:  # fmt: skip
        """Read, check, measure and describe a recording; RecordingError names the file and the reason."""
        recording = read_recording(path, fs=fs, units=units, min_seconds=self.samples / self.fs)
        return self.prepare(recording, patient)

    def prepare(self, recording: Recording, patient: Patient | None = None) -> ECGInput:
        """A checked recording as the encoder reads it, measured and described."""
        seconds = self.samples / self.fs
        signal, mask = recording.model_input(self.fs, self.samples)
        patient = patient or Patient()
        findings = read_findings(recording, sex=patient.sex, age=patient.age, seconds=seconds,
                                 guidelines=self.guidelines)  # fmt: skip
        return ECGInput(recording, signal, mask, findings)

    def conversation(self, ecg: str | os.PathLike | ECGInput | None = None, *, fs: float | None = None,
                     units: str = "mV", patient: Patient | None = None, **details: Any) -> "Conversation":  # fmt: skip
        """A new conversation about ``ecg`` (a path, an :class:`ECGInput` or None); ``details`` are
        :class:`Patient` fields (age, sex, height_cm, weight_kg, history) when ``patient`` is not given."""
        patient = patient or Patient(**details)
        if ecg is not None and not isinstance(ecg, ECGInput):
            ecg = self.read_ecg(ecg, fs=fs, units=units, patient=patient)
        return Conversation(self, ecg, patient)

    def chat(self, message: str, *, ecg: str | os.PathLike | ECGInput | None = None,
             on_text: Callable[[str], None] | None = None, **details: Any) -> str:  # fmt: skip
        """One question about ``ecg`` (see :meth:`conversation` for ``details``), the answer's text."""
        return self.conversation(ecg, **details).ask(message, on_text=on_text).text

    # -- generation
    def count_tokens(self, prompt: str) -> int:
        from ecglm.models.tokenize_pairs import encode_sample

        return len(encode_sample(self.tokenizer, prompt, [], 10**9, num_ecg_tokens=self.model.num_ecg_tokens)["input_ids"])

    def generate(self, prompt: str, ecg: ECGInput | None, on_text: Callable[[str], None] | None = None) -> str:
        """Continue ``prompt`` (with the ECG where it holds ``<ecg>``), streaming pieces to ``on_text``."""
        import torch

        from ecglm.models.tokenize_pairs import encode_sample

        s = self.settings
        ids = encode_sample(self.tokenizer, prompt, [], 10**9, num_ecg_tokens=self.model.num_ecg_tokens)["input_ids"]
        input_ids = ids.unsqueeze(0)  # [1, L]
        signal = mask = None
        if ecg is not None:
            signal = torch.from_numpy(ecg.signal).unsqueeze(0)  # [1, 12, T] int16 uV
            mask = torch.from_numpy(ecg.lead_mask).unsqueeze(0)  # [1, 12]
        streamer = _streamer(self.tokenizer, on_text) if on_text is not None else None
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        sampling = {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p} if s.temperature > 0 else \
            {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}  # fmt: skip
        with torch.no_grad(), warnings.catch_warnings():
            # the penalty applies to the answer's tokens only (the prompt goes in as embeddings): as intended
            warnings.filterwarnings("ignore", message=".*repetition_penalty.*inputs_embeds")
            torch.manual_seed(s.seed)
            embeds = self.model.embed(input_ids, signal, mask)  # [1, L, H]
            new = self.model.llm.generate(
                inputs_embeds=embeds, attention_mask=torch.ones_like(input_ids, device=embeds.device),
                max_new_tokens=s.max_new_tokens, repetition_penalty=s.repetition_penalty, num_beams=1,
                pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id, streamer=streamer, **sampling,
            )  # [1, <= max_new_tokens]: the new tokens only (the prompt went in as embeddings)
        return self.tokenizer.decode(new[0].cpu(), skip_special_tokens=True).strip()


def _relocated(llm: str, folder: Path) -> str:
    """The recorded base LLM, found from another working directory: a relative folder that is not here is
    looked for under the run's root (``results/{run}/chat`` -> the folder above ``results``)."""
    path = Path(llm)
    if path.is_absolute() or path.exists() or llm.startswith("hf:"):
        return llm
    root = folder.resolve().parents[2] if len(folder.resolve().parents) > 2 else None
    if root is not None and (root / path).is_dir():
        return str(root / path)
    return llm  # load_llm names it if it is neither a folder nor a Hub id (then pass --llm)


def _streamer(tokenizer: Any, on_text: Callable[[str], None]) -> Any:
    """A transformers TextStreamer that hands each decoded piece to ``on_text`` instead of printing it."""
    from transformers import TextStreamer

    streamer = TextStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True)
    streamer.on_finalized_text = lambda text, stream_end=False: on_text(text) if text else None
    return streamer


@dataclass
class Conversation:
    """One conversation about one recording (or none); :meth:`ask` adds a turn."""

    chat_model: ChatModel
    ecg: ECGInput | None
    patient: Patient = field(default_factory=Patient)
    turns: list[tuple[str, str]] = field(default_factory=list)  # (user, assistant), as asked and answered
    last_prompt: str | None = None  # the text the last answer continued (the turns it kept)

    @property
    def system(self) -> str:
        from ecglm.text.prompts import Patient as TemplatePatient
        from ecglm.text.prompts import chat_system

        p = self.patient
        who = TemplatePatient(age=None if p.age is None else int(p.age), sex=p.sex, height_cm=p.height_cm,
                              weight_kg=p.weight_kg) if p.known else None  # fmt: skip
        findings = self.ecg.findings if self.ecg is not None else None
        if findings is None or findings.failure:
            text = chat_system(who, history=p.history)
            return text + (" The ECG's findings could not be measured." if findings is not None else "")
        return chat_system(who, findings.general, findings.leads, history=p.history)

    def prompt(self, question: str, keep_from: int = 0) -> str:
        """The text the model continues, with the turns from ``keep_from`` on."""
        from ecglm.text.prompts import CHAT_ECG_HANDOVER
        from ecglm.train.chat_data import render_prompt

        turns = list(self.turns[keep_from:])
        if self.ecg is not None:  # the ECG goes with the first user turn kept
            if turns:
                turns[0] = (f"{CHAT_ECG_HANDOVER} {turns[0][0]}", turns[0][1])
            else:
                question = f"{CHAT_ECG_HANDOVER} {question}"
        return render_prompt(self.chat_model.tokenizer, self.system, turns, question)

    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> Reply:
        """Answer ``question`` in the context of the turns so far (the oldest dropped when the context is full)."""
        question = " ".join(question.split())
        if not question:
            raise StageError("an empty question")
        m = self.chat_model
        budget = m.max_context - m.settings.max_new_tokens
        keep_from = 0
        prompt = self.prompt(question, keep_from)
        n_tokens = m.count_tokens(prompt)
        while n_tokens > budget and keep_from < len(self.turns):
            keep_from += 1
            prompt = self.prompt(question, keep_from)
            n_tokens = m.count_tokens(prompt)
        if n_tokens > budget:
            raise StageError(f"the question and the ECG's system text take {n_tokens} tokens; with room for "
                             f"{m.settings.max_new_tokens} answer tokens the context holds {m.max_context}: "
                             "ask a shorter question")  # fmt: skip
        log.debug("prompt (%d tokens): %s", n_tokens, prompt)
        if keep_from:
            log.info("context full: the oldest %d turn(s) are left out of this answer", keep_from)
        self.last_prompt = prompt
        text = m.generate(prompt, self.ecg, on_text)
        self.turns.append((question, text))
        return Reply(text, keep_from, n_tokens)

    def reset(self, ecg: ECGInput | None | str | os.PathLike = None, **read: Any) -> None:
        """Forget the turns; with ``ecg``, talk about that recording from now on."""
        if ecg is not None and not isinstance(ecg, ECGInput):
            ecg = self.chat_model.read_ecg(ecg, patient=self.patient, **read)
        if ecg is not None:
            self.ecg = ecg
        self.turns.clear()


def load(folder: str | os.PathLike, **kwargs: Any) -> ChatModel:
    """``ecglm.load(DIR)``: the fine-tuned ECG-LM of ``DIR`` ready to chat (:meth:`ChatModel.load`'s options)."""
    return ChatModel.load(folder, **kwargs)
