"""Class-balanced draws of the alignment's training samples (``align.balance_tasks``).

The alignment loss is a next-token loss over whole reports, so a class is learnt in proportion to how
often its words are a target. In PTB-XL (and the demo world, which copies its frequencies) 77 % of
the ECGs are in sinus rhythm and sinus arrhythmia is 4 %: the words that name a rare class are a
target in a few hundredths of a percent of the tokens, the encoder barely learns to tell it, and a
greedy description names the majority class (measured on the demo world: sinus arrhythmia named for 0
of 23 test ECGs). Balancing the draws is the standard remedy for a class-aware metric. Measured on the
demo world (README, align), with one ECG token: balanced rhythm draws alone leave sinus arrhythmia at 0
of 23; with ``align.encoder_lr_scale: 5`` it is named for 11 of 23 (rhythm balanced accuracy 0.68 ->
0.85), but the diagnostic superclass's likelihood falls (0.52 -> 0.29). The demo config balances rhythm
and diagnostic together, with two ECG tokens (rhythm 0.81, diagnostic 0.41).

:func:`balanced_weights` gives each training sample a probability: an equal mixture, over the
balanced tasks, of the task's class-balanced distributions. Within task ``t``, a sample whose ECG
holds exactly one of the task's five classes (:func:`ecglm.data.labels.single_class_index`, the
evaluation's rule) is in that class's group, every other sample in one ``other`` group, and each
group's share of the task's draws is proportional to ``size ** (1 - power)``: ``power`` 1 draws every
group equally often, 0 keeps the data's frequencies. The alignment then draws each epoch's ``n``
samples with replacement from these probabilities (:func:`ecglm.train.loop.epoch_order`).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from ecglm.core.errors import StageError

#: The group of a sample whose ECG holds none, or several, of a task's classes.
OTHER = "other"


def sample_classes(records: str | os.PathLike, ecg_ids: Sequence[int], tasks: Sequence[str]) -> list[list[str]]:
    """For each task of ``tasks``, the class code of each sample's ECG (``OTHER`` unless it holds exactly
    one of the task's classes); the table is read once.

    Raises StageError naming ``records`` when a sample's ecg_id or a task's label column is not in it.
    """
    from ecglm.data.ecg_data import read_records
    from ecglm.data.labels import single_class_index
    from ecglm.text.prompts import TASK_LABEL_COLUMNS, task_classes

    records = Path(records)
    columns = [TASK_LABEL_COLUMNS[t] for t in tasks]
    table = read_records(records, ["ecg_id", *dict.fromkeys(columns)])
    row_of = {int(e): i for i, e in enumerate(table["ecg_id"].to_list())}
    missing = [int(e) for e in ecg_ids if int(e) not in row_of]
    if missing:
        raise StageError(
            f"{records}: ecg_id {missing[0]} of a training sample is not in the records table "
            f"({len(set(missing))} missing); were the pairs expanded from another run?"
        )
    groups = []
    for task, column in zip(tasks, columns):
        classes = task_classes(task)
        index, y, _, _ = single_class_index(table[column].to_list(), classes)
        code_of_row = {int(i): classes[int(j)] for i, j in zip(index, y)}
        groups.append([code_of_row.get(row_of[int(e)], OTHER) for e in ecg_ids])
    return groups


def balanced_weights(groups_per_task: Sequence[Sequence[str]], power: float = 1.0) -> np.ndarray:
    """Draw probabilities [n] (summing to 1): an equal mixture over tasks of each task's balanced draws.

    ``groups_per_task[t][i]`` is sample i's group in task t. Within a task a group of size ``m`` gets a
    share proportional to ``m ** (1 - power)`` of that task's draws, spread evenly over its samples.
    """
    if not groups_per_task:
        raise ValueError("balanced_weights needs at least one task")
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"power must be in [0, 1], got {power}")
    n = len(groups_per_task[0])
    if n == 0 or any(len(g) != n for g in groups_per_task):
        raise ValueError("every task needs one group per sample, for at least one sample")
    total = np.zeros(n)
    for groups in groups_per_task:
        size = Counter(groups)
        w = np.asarray([size[g] ** -power for g in groups], dtype=np.float64)  # [n]
        total += w / w.sum()
    return total / total.sum()


def group_shares(groups: Sequence[str], weights: np.ndarray) -> dict[str, float]:
    """Each group's share of the draws under ``weights`` (for the log), largest first."""
    shares: dict[str, float] = {}
    for g, w in zip(groups, weights):
        shares[g] = shares.get(g, 0.0) + float(w)
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))
