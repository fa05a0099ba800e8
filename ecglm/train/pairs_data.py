"""The alignment samples as a torch Dataset: the ``ecglm expand`` shards joined to the signals array.

Input: ``PAIRS/{split}/part-*.parquet`` (columns of :data:`ecglm.text.expand.SCHEMA`; only ``sample_id``,
``signal_row``, ``lead_mask``, ``text`` and ``target_spans`` are read) and ``signals_{fs}.npy`` (int16
``[N, 12, T]`` microvolts, memory-mapped through :class:`ecglm.data.ecg_data.EcgDataset`, never loaded whole).

Item ``i`` (shard order: shards sorted by name, rows in file order)::

    {"index": i, "input_ids": long [L], "attention_mask": long [L], "labels": long [L],
     "signal": int16 [12, T], "lead_mask": bool [12]}

The text is tokenised on access (:func:`ecglm.models.tokenize_pairs.encode_sample`), so memory holds the text
column, not token tensors. :func:`collate_pairs` right-pads a list of items into a batch. Bad input
(no shard, a missing column, a signal row outside the array, a lead mask keeping no lead, a text whose
``<ecg>`` would be cut by ``max_length``) raises StageError naming the shard or the sample.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ecglm.core.errors import StageError
from ecglm.core.leads import N_LEADS

log = logging.getLogger(__name__)

COLUMNS = ("sample_id", "ecg_id", "signal_row", "lead_mask", "text", "target_spans")


def shard_files(pairs_dir: str | os.PathLike, split: str) -> list[Path]:
    """The sorted ``part-*.parquet`` shards of one split; StageError if the split folder holds none."""
    folder = Path(pairs_dir) / split
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise StageError(f"{folder}: no part-*.parquet shard (run `ecglm expand` first)")
    return files


class PairsDataset:
    """Map-style Dataset of one split's text-ECG samples (see the module docstring for an item)."""

    def __init__(
        self,
        pairs_dir: str | os.PathLike,
        split: str,
        signals_path: str | os.PathLike,
        tokenizer: Any,
        max_length: int,
        *,
        num_ecg_tokens: int = 1,
    ) -> None:
        import polars as pl

        from ecglm.data.ecg_data import EcgDataset

        self.split = split
        self.files = shard_files(pairs_dir, split)
        frames = []
        for path in self.files:
            try:
                schema = pl.read_parquet_schema(path)
            except Exception as err:  # polars raises several types for a corrupt file
                raise StageError(f"{path}: not a readable Parquet shard ({err})") from err
            missing = [c for c in COLUMNS if c not in schema]
            if missing:
                raise StageError(f"{path}: missing column(s) {', '.join(missing)} (written by `ecglm expand`)")
            frames.append(pl.read_parquet(path, columns=list(COLUMNS)))
        table = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
        self.sample_ids: list[str] = table["sample_id"].to_list()
        self.ecg_ids: list[int] = table["ecg_id"].to_list()  # [M] the ECG of each sample (records.parquet)
        self.texts: list[str] = table["text"].to_list()
        self.spans: list[list[dict]] = table["target_spans"].to_list()
        rows = table["signal_row"].to_numpy().astype(np.int64)  # [M]
        masks = table["lead_mask"].to_list()
        bad = [sid for sid, m in zip(self.sample_ids, masks) if m is None or len(m) != N_LEADS]
        if bad:
            raise StageError(f"{Path(pairs_dir) / split}: sample {bad[0]} has no {N_LEADS}-value lead_mask")
        from ecglm.text.prompts import ECG_TOKEN

        no_ecg = [sid for sid, text in zip(self.sample_ids, self.texts) if text is None or text.count(ECG_TOKEN) != 1]
        if no_ecg:
            raise StageError(f"{Path(pairs_dir) / split}: sample {no_ecg[0]} does not hold exactly one {ECG_TOKEN}")
        lead_masks = np.asarray(masks, dtype=bool).reshape(len(rows), N_LEADS)  # [M, 12]
        self.signals = EcgDataset(signals_path, rows, lead_masks=lead_masks)
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.num_ecg_tokens = int(num_ecg_tokens)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from ecglm.models.tokenize_pairs import EcgTokenTruncated, encode_sample

        try:
            item = encode_sample(
                self.tokenizer, self.texts[i], self.spans[i], self.max_length, num_ecg_tokens=self.num_ecg_tokens
            )
        except EcgTokenTruncated as err:
            raise StageError(f"{self.split} sample {self.sample_ids[i]}: {err}") from err
        except ValueError as err:
            raise StageError(f"{self.split} sample {self.sample_ids[i]}: {err}") from err
        ecg = self.signals[i]
        item["index"] = i
        item["signal"] = ecg["signal"]  # int16 [12, T]
        item["lead_mask"] = ecg["lead_mask"]  # bool [12]
        return item


class PairsCollator:
    """``collate_fn`` for a DataLoader: right-pads items into a batch (picklable for worker processes)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = int(pad_id)

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return collate_pairs(items, self.pad_id)


def collate_pairs(items: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """``input_ids``/``attention_mask``/``labels`` [B, L] (right-padded), ``signal`` int16 [B, 12, T],
    ``lead_mask`` bool [B, 12], ``index`` long [B]."""
    from ecglm.models.tokenize_pairs import collate

    return collate(items, pad_id)
