"""Clinical conversations as training samples for `ecglm finetune-chat`.

Two sources, one sample shape (:class:`Dialogue`: a system text, user and assistant turns, and the ECG the
first user turn hands over, if any):

- **conversations** in the HealthCareMagic schema (``instruction``, ``input``, ``output``; any files the
  user names, e.g. HealthCareMagic-100k, ChatDoctor's GenMedGPT), ALWAYS scrubbed first
  (:func:`ecglm.text.scrub.scrub_item`: names, phones, e-mails, addresses, IDs, dates of birth and URLs
  become typed placeholders; ChatDoctor's artefacts are removed), the counts per kind returned for the log.
  The instruction is the system text, the input the user's turn, the output the assistant's.
- **ECG dialogues**, built from the training ECGs (ours: they stand in for the paper's 2,000 private
  hospital dialogues about ECG readings, which are not published): the system text holds
  :data:`ecglm.text.prompts.CHAT_SYSTEM` and the patient's data; the user hands over the ECG
  (:data:`~ecglm.text.prompts.CHAT_ECG_REQUEST`) and the assistant answers with the translated report and the
  per-lead findings (:func:`~ecglm.text.prompts.chat_ecg_answer`), then up to ``qa_turns`` of the ECG's ECG-QA
  training questions follow as further turns. A seeded share (``findings_share``) of the dialogues also has
  the findings in its system text (as the chat shows a user's recording); the rest has not, so that the
  model must read the ECG token rather than copy the text.

Rendering (:func:`render`): with the LLM's own chat template (``tokenizer.apply_chat_template``) when it has
one, else the plain "User: ... / Assistant: ..." layout below; the loss targets are the assistant turns
(each with the end-of-turn token that follows it, so the model learns to stop), nothing else.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS, N_LEADS
from ecglm.core.seeding import stream_seed

#: The layout of a dialogue for an LLM without a chat template (the tiny demo LLM).
PLAIN_TURN = "User: {user}\nAssistant: "


@dataclass(frozen=True)
class Dialogue:
    system: str | None
    turns: tuple[tuple[str, str], ...]  # (user, assistant)
    ecg_row: int | None  # the signals row the first user turn hands over (it holds <ecg>), or None
    source: str  # "conversation" or "ecg"


def conversation_dialogues(paths: Sequence[str | os.PathLike]) -> tuple[list[Dialogue], Counter]:
    """The scrubbed conversations of the HealthCareMagic-format files ``paths``, and what was scrubbed per kind."""
    from ecglm.text.scrub import read_conversations, scrub_item

    counts: Counter = Counter()
    out = []
    for path in paths:
        for item in read_conversations(Path(path)):
            clean = scrub_item(item, counts)
            user = " ".join(p for p in (clean.get("input") or "").split()) or None
            if user is None or not (clean.get("output") or "").strip():
                raise StageError(f"{path}: a conversation without an input or an output ({item!r:.80})")
            out.append(Dialogue((clean.get("instruction") or "").strip() or None, ((user, clean["output"].strip()),),
                                None, "conversation"))  # fmt: skip
    return out, counts


def ecg_dialogues(records: Path, reports: Path, findings: Path, *, split: str = "train", seed: int = 0,
                  findings_share: float = 0.5, qa: Path | None = None, qa_turns: int = 1) -> list[Dialogue]:  # fmt: skip
    """One dialogue per ECG of ``split`` that has a report and findings (see the module docstring)."""
    from ecglm.text.expand import load_inputs
    from ecglm.text.prompts import (
        CHAT_ECG_REQUEST,
        Patient,
        chat_ecg_answer,
        chat_system,
        clean_phrase,
        qa_answer_text,
    )  # fmt: skip

    joined = load_inputs(records, reports, findings)
    questions: dict[int, list[tuple[str, list[str]]]] = {}
    if qa is not None and qa_turns:
        from ecglm.train.qa_data import read_questions

        table = read_questions(qa, ("question", "answer", "row"))
        for question, answer, row in zip(table["question"].to_list(), table["answer"].to_list(), table["row"].to_list()):
            questions.setdefault(int(row), []).append((question, answer))
    out = []
    for row in joined.filter(joined["split"] == split).iter_rows(named=True):
        if not (row["_has_report"] and row["_has_findings"]) or not clean_phrase(row["report"]):
            continue
        ecg = int(row["signal_row"])
        rng = np.random.default_rng(np.random.SeedSequence([stream_seed(seed, "chat_dialogue"), ecg]))
        leads = {lead: row[f"lead_{lead}"] for lead in LEADS}
        show = rng.random() < findings_share
        system = chat_system(Patient.from_record(row), row["general"], leads if show else None)
        turns = [(CHAT_ECG_REQUEST, chat_ecg_answer(row["report"], row["general"], leads))]
        asked = questions.get(ecg, [])
        for i in rng.permutation(len(asked))[:qa_turns]:
            question, answer = asked[int(i)]
            turns.append((" ".join(question.split()), qa_answer_text(answer).strip()))
        out.append(Dialogue(system, tuple(turns), ecg, "ecg"))
    if not out:
        raise StageError(f"{records}: no {split} ECG with a report and findings to build dialogues from")
    return out


def render(tokenizer: Any, dialogue: Dialogue) -> tuple[str, list[tuple[int, int]]]:
    """The dialogue's text for ``tokenizer`` and the character spans of its assistant turns (each with the
    end-of-turn token after it)."""
    messages = ([{"role": "system", "content": dialogue.system}] if dialogue.system else [])
    for user, assistant in dialogue.turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    eos = tokenizer.eos_token or ""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    else:
        text = (dialogue.system + "\n\n") if dialogue.system else ""
        for user, assistant in dialogue.turns:
            text += PLAIN_TURN.format(user=user) + assistant + eos + "\n"
    spans, position = [], 0
    for _, assistant in dialogue.turns:
        start = text.find(assistant, position)
        if start < 0:
            raise StageError(f"the chat template changed an assistant turn ({assistant[:60]!r}); cannot label it")
        end = start + len(assistant)
        if eos and text.startswith(eos, end):
            end += len(eos)  # the model learns to end its turn
        spans.append((start, end))
        position = end
    return text, spans


def render_prompt(tokenizer: Any, system: str | None, turns: Sequence[tuple[str, str]], question: str) -> str:
    """The text a chat model continues: ``system``, the past ``turns`` and the new user ``question``, laid out as
    :func:`render` lays out training dialogues, ending where the assistant's answer begins."""
    messages = ([{"role": "system", "content": system}] if system else [])
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": question})
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    eos = tokenizer.eos_token or ""
    text = (system + "\n\n") if system else ""
    for user, assistant in turns:
        text += PLAIN_TURN.format(user=user) + assistant + eos + "\n"
    return text + PLAIN_TURN.format(user=question)


class ChatDataset:
    """Map-style Dataset of dialogues (items of :mod:`ecglm.train.pairs_data`'s shape). Every item has a
    ``signal`` and a ``lead_mask``: a dialogue without an ECG gets zeros and a mask that keeps no lead, which
    :class:`ecglm.models.multimodal.ECGLM` reads as "no ECG" (so that one batch can mix both)."""

    def __init__(self, dialogues: Sequence[Dialogue], signals_path: str | os.PathLike, tokenizer: Any, max_length: int,
                 *, num_ecg_tokens: int = 1) -> None:  # fmt: skip
        from ecglm.data.ecg_data import open_signals

        self.dialogues = list(dialogues)
        self.signals_path = Path(signals_path)
        self.samples = open_signals(self.signals_path).shape[2]
        self.tokenizer, self.max_length, self.num_ecg_tokens = tokenizer, int(max_length), int(num_ecg_tokens)
        self._signals: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.dialogues)

    @property
    def ecg_ids(self) -> list[int]:
        """Each dialogue's signals row (-1 for a dialogue without an ECG): the records of the ECG check."""
        return [-1 if d.ecg_row is None else int(d.ecg_row) for d in self.dialogues]

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        from ecglm.data.ecg_data import open_signals
        from ecglm.models.tokenize_pairs import encode_sample

        dialogue = self.dialogues[i]
        text, spans = render(self.tokenizer, dialogue)
        try:
            item = encode_sample(self.tokenizer, text, spans, self.max_length, num_ecg_tokens=self.num_ecg_tokens)
        except ValueError as err:
            raise StageError(f"dialogue {i} ({dialogue.source}): {err}") from err
        item["index"] = i
        if dialogue.ecg_row is None:
            item["signal"] = torch.zeros((N_LEADS, self.samples), dtype=torch.int16)  # [12, T]
            item["lead_mask"] = torch.zeros(N_LEADS, dtype=torch.bool)  # [12] no lead: no ECG
        else:
            if self._signals is None:
                self._signals = open_signals(self.signals_path)
            item["signal"] = torch.from_numpy(np.array(self._signals[dialogue.ecg_row], dtype=np.int16))  # [12, T]
            item["lead_mask"] = torch.ones(N_LEADS, dtype=torch.bool)  # [12]
        return item
