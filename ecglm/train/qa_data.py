"""ECG-QA questions as training samples: the ``ecglm qa-data`` shards joined to the signals array.

Input: ``QA/{split}.parquet`` (written by ``ecglm qa-data``: ``sample_id``, ``question``, ``answer``, ``row``,
...) and ``signals_{fs}.npy`` (int16 ``[N, 12, T]``, memory-mapped, never loaded whole).

Item ``i`` (file order), the shape of :mod:`ecglm.train.pairs_data`'s items, so that the shared training
loop (:mod:`ecglm.train.loop`) takes it::

    {"index": i, "input_ids": long [L], "attention_mask": long [L], "labels": long [L],
     "signal": int16 [12, T], "lead_mask": bool [12]}       # signal and lead_mask only with ecg=True

The text is :func:`ecglm.text.prompts.qa_prompt` followed by :func:`ecglm.text.prompts.qa_answer_text` and
the tokenizer's EOS; the loss targets are the answer's tokens and the EOS (the model must learn to stop),
never the question. ``ecg=False`` (the blind model) drops the ECG sentence and the signal. The answers of a
set are written in an order drawn per sample from the seed (fixed across epochs): ECG-QA's own list order
is by template, and a fixed order would teach which answer comes first rather than which belong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ecglm.core.errors import StageError
from ecglm.core.leads import N_LEADS
from ecglm.core.seeding import stream_seed

COLUMNS = ("sample_id", "question", "answer", "row")


def read_questions(path: str | os.PathLike, columns: tuple[str, ...] = COLUMNS) -> Any:
    """One split of ``ecglm qa-data`` as a polars DataFrame; StageError naming the file when unreadable."""
    import polars as pl

    path = Path(path)
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as err:  # polars raises several types for a missing or corrupt file
        raise StageError(f"{path}: not a readable ECG-QA split (written by `ecglm qa-data`): {err}") from err
    missing = [c for c in columns if c not in schema]
    if missing:
        raise StageError(f"{path}: missing column(s) {', '.join(missing)} (written by `ecglm qa-data`)")
    return pl.read_parquet(path, columns=list(columns))


def answer_order(answers: list[str], sample_id: int, seed: int) -> list[str]:
    """The answers of one sample in its seeded order (a pure function of the answers, the sample and the seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([stream_seed(seed, "qa_answer_order"), int(sample_id)]))
    return [answers[i] for i in rng.permutation(len(answers))]


class QADataset:
    """Map-style Dataset of one ECG-QA split (see the module docstring for an item)."""

    def __init__(self, path: str | os.PathLike, signals_path: str | os.PathLike, tokenizer: Any, max_length: int, *,
                 num_ecg_tokens: int = 1, ecg: bool = True, seed: int = 0) -> None:  # fmt: skip
        from ecglm.data.ecg_data import EcgDataset

        table = read_questions(path)
        self.path = Path(path)
        self.sample_ids: list[int] = table["sample_id"].to_list()
        self.questions: list[str] = table["question"].to_list()
        self.answers: list[list[str]] = table["answer"].to_list()
        rows = table["row"].to_numpy().astype(np.int64)  # [M]
        self.signals = EcgDataset(signals_path, rows, lead_masks=np.ones((len(rows), N_LEADS), dtype=bool))
        self.tokenizer, self.max_length, self.num_ecg_tokens = tokenizer, int(max_length), int(num_ecg_tokens)
        self.ecg, self.seed = bool(ecg), int(seed)

    def __len__(self) -> int:
        return len(self.questions)

    def answer_token_ids(self) -> list[int]:
        """The ids of every token an answer text can hold (each valid answer of the split's templates as
        :func:`ecglm.text.prompts.qa_answer_text` writes it, the separator between two answers) and EOS."""
        from ecglm.text.prompts import qa_answer_text

        valid = read_questions(self.path, ("valid_answers",))["valid_answers"].to_list()
        answers = sorted({a for options in valid for a in options})
        texts = [qa_answer_text([a]) for a in answers] + [qa_answer_text(answers[:2])]  # the separator in place
        ids = {i for text in texts for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]}
        return sorted(ids | {int(self.tokenizer.eos_token_id)})

    def text(self, i: int) -> tuple[str, list[tuple[int, int]]]:
        """Sample ``i``'s text and its target span (the answer)."""
        from ecglm.text.prompts import qa_answer_text, qa_prompt

        prompt = qa_prompt(self.questions[i], ecg=self.ecg)
        answer = qa_answer_text(answer_order(self.answers[i], self.sample_ids[i], self.seed))
        return prompt + answer, [(len(prompt), len(prompt) + len(answer))]

    def __getitem__(self, i: int) -> dict[str, Any]:
        from ecglm.models.tokenize_pairs import encode_sample

        try:
            text, spans = self.text(i)
            item = encode_sample(self.tokenizer, text, spans, self.max_length, num_ecg_tokens=self.num_ecg_tokens,
                                 add_eos=True)  # fmt: skip
        except ValueError as err:
            raise StageError(f"{self.path}: sample_id {self.sample_ids[i]}: {err}") from err
        item["index"] = i
        if self.ecg:
            ecg = self.signals[i]
            item["signal"] = ecg["signal"]  # int16 [12, T]
            item["lead_mask"] = ecg["lead_mask"]  # bool [12]
        return item
