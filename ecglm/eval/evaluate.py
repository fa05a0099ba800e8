"""`ecglm evaluate`: zero-shot classification (diagnostic, rhythm, form) without task training or sampling.

The evaluation set of a task (:func:`load_eval_set`): the ``test``-split ECGs of records.parquet whose
label list (the task's column, :data:`TASK_LABEL_COLUMNS`) holds EXACTLY ONE of the task's five classes
(labels outside the five, e.g. rhythm ``PACE``, do not count); the true option is that class's letter.

Scoring modes (batched forward passes, eval mode, no gradient, no sampling):

- ``mcq`` (the paper's reading): the Table 1 prompt (:func:`ecglm.text.prompts.zero_shot_prompt`) ends in
  "Answer:"; each option's score is the next-token log-probability of :func:`ecglm.text.prompts.answer_text`
  (" A" ... " E"), the prediction its argmax, the option probabilities the softmax over the five scores.
  Where a tokenizer does not give " A" as one token after the prompt, the whole continuation's
  log-probability is used (equal to the next-token value where it is one token).
- ``likelihood``: the score of class c is the log-likelihood of the class phrase in
  :func:`ecglm.text.prompts.likelihood_text` ("... The ECG signal is <ecg>. The ECG report indicates
  {class}."): by default (``--likelihood-score sum``) the SUM of its tokens' log-probabilities, the
  phrase's log-probability, as the issue defines the mode; ``mean`` divides it by the phrase's token
  count. Both have a length bias: the sum charges every token, so it can favour a shorter phrase when
  a longer one's later tokens are uncertain; the mean favours a longer phrase whose later tokens are
  near-certain, since each of them lifts the average (measured on the demo world: with the mean every
  NORM ECG was read "ST/T change", four tokens, and diagnostic balanced accuracy was 0.38 against 0.50
  with the sum). Probabilities: softmax over the five scores. That text holds no lead
  findings (the training template puts them after the report), so ``--prompt full`` and ``ecg-only``
  read the same text in this mode (recorded as ``text_has_findings: false``).
- ``generate``: the model writes its own report: greedy decoding (:func:`ecglm.models.multimodal.generate_greedy`,
  ``--max-new-tokens``) after :func:`ecglm.text.prompts.report_prompt` ("... The ECG signal is <ecg>. The ECG
  report indicates"), the ECG token being the only thing in the text that tells one record from another.
  The prediction is the task's class whose phrase the report part of the text names first
  (:func:`generated_report`, :func:`ecglm.text.prompts.classes_named`); a text that names none of the five is
  a wrong answer (``"none"`` in the predictions, counted in ``n_unanswered``). Probabilities: one-hot of
  the prediction (all zero for none). Every generated text is saved with the predictions.

Prompt variants: ``full`` (ECG token + findings, the paper's), ``ecg-only`` (ECG token, no findings),
``text-only`` (findings, no ECG token: the LLM alone, no aligned checkpoint needed).
``--control shuffled``: every record gets ANOTHER record's ECG (a derangement of the evaluation set,
fixed by the seed, :func:`shuffle_permutation`); the text stays the record's own.

Output (:func:`write_result`, atomically): one JSON with the metrics of :func:`classification_metrics`,
the class counts, the setting (task, mode, prompt, control, seed) and the model's identity.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ecglm.core.atomic import write_text_atomic
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS
from ecglm.core.seeding import numpy_rng
from ecglm.core.stats import pooled_group_bootstrap
from ecglm.data.ecg_data import PATIENT_COLUMNS, read_records, read_records_schema
from ecglm.data.labels import single_class_index
from ecglm.text.prompts import TASK_LABEL_COLUMNS, TASKS, task_classes, task_letters
from ecglm.train.runtime import resolve_device, torch_threads

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

#: The records.parquet label-list column of each zero-shot task.
MODES = ("mcq", "likelihood", "generate")
#: How ``likelihood`` mode turns the class phrase's token log-probabilities into one score.
LIKELIHOOD_SCORES = ("sum", "mean")
PROMPTS = ("full", "ecg-only", "text-only")
CONTROLS = ("none", "shuffled")
FORMAT = "ecglm-eval/1"
DEFAULT_SEED = 1234
#: Records per chunk read from the memory-mapped signals (the progress-bar step).
CHUNK = 256


# ---------------------------------------------------------------------------------- the evaluation set


@dataclass
class EvalSet:
    """The single-class ECGs of one task and split; every array has one entry per ECG (length M)."""

    task: str
    split: str
    rows: np.ndarray  # int64 [M]: rows of records.parquet = rows of the signals array
    ecg_ids: np.ndarray  # int64 [M]
    y: np.ndarray  # int64 [M]: the true option index (0 = A ... 4 = E)
    patients: list[dict[str, Any]]  # [M] records.parquet patient columns (PATIENT_COLUMNS present)
    groups: np.ndarray  # [M] the bootstrap's resampling unit: patient_id (ecg_id where records.parquet has none)
    group_by: str  # "patient_id" or "ecg_id"
    n_multi_class: int  # ECGs of the split with two or more of the classes (left out)
    n_no_class: int  # ECGs of the split with none of the classes (left out)
    n_single_class: int | None = None  # before subset_eval_set drew a subset of them; None = no subset

    def counts(self) -> dict[str, int]:
        """ECGs per class code, in option order (zeros included)."""
        classes = task_classes(self.task)
        return {code: int((self.y == j).sum()) for j, code in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.rows)


def load_eval_set(records: str | os.PathLike, task: str, split: str = "test") -> EvalSet:
    """The ``split`` ECGs of records.parquet with exactly one of ``task``'s five classes.

    Raises StageError (naming the file) for a missing column, or when no ECG qualifies.
    """
    records = Path(records)
    classes = task_classes(task)
    column = TASK_LABEL_COLUMNS[task]
    table = read_records(records, ["ecg_id", "split", column])
    in_split = np.flatnonzero(np.asarray([s == split for s in table["split"].to_list()], dtype=bool))
    labels = table[column].to_list()
    index, y, n_multi, n_none = single_class_index([labels[i] for i in in_split], classes)
    if len(index) == 0:
        raise StageError(
            f"{records}: no {split}-split ECG has exactly one of the {task} classes {classes} "
            f"(column {column}; {len(in_split)} ECGs in the split, {n_multi} with several, {n_none} with none)"
        )
    rows = in_split[index]
    patient_cols = [c for c in PATIENT_COLUMNS if c in table.columns]
    sub = table[rows.tolist()].select(["ecg_id", *patient_cols])
    group_by = "patient_id" if "patient_id" in read_records_schema(records) else "ecg_id"
    groups = read_records(records, [group_by], patients=False)[group_by].to_numpy()[rows]
    if group_by == "patient_id" and np.any(np.isnan(groups.astype(np.float64))):
        raise StageError(f"{records}: {int(np.isnan(groups.astype(np.float64)).sum())} {split}-split ECGs of {task} "
                         "have no patient_id (the bootstrap resamples patients)")  # fmt: skip
    return EvalSet(
        task=task,
        split=split,
        rows=rows.astype(np.int64),
        ecg_ids=np.asarray(sub["ecg_id"].to_list(), dtype=np.int64),
        y=y,
        patients=sub.select(patient_cols).to_dicts(),
        groups=groups,
        group_by=group_by,
        n_multi_class=n_multi,
        n_no_class=n_none,
    )


def subset_eval_set(eval_set: EvalSet, max_ecgs: int, seed: int) -> EvalSet:
    """At most ``max_ecgs`` ECGs of ``eval_set``, stratified by class and fixed by ``seed``.

    The classes take turns (option order), each giving its next ECG of a seeded random order, until
    ``max_ecgs`` are drawn or none is left: rare classes keep every ECG they have, up to an equal share.
    The drawn ECGs keep the set's order. ``eval_set`` itself is returned when it is small enough.
    """
    if max_ecgs < 1:
        raise StageError(f"--max-test-ecgs must be >= 1, got {max_ecgs}")
    if len(eval_set) <= max_ecgs:
        return eval_set
    rng = numpy_rng(seed, "eval_subset")
    queues = [list(rng.permutation(np.flatnonzero(eval_set.y == j))) for j in range(int(eval_set.y.max()) + 1)]
    chosen: list[int] = []
    while len(chosen) < max_ecgs:
        for queue in queues:
            if queue and len(chosen) < max_ecgs:
                chosen.append(int(queue.pop(0)))
    keep = np.sort(np.asarray(chosen, dtype=np.int64))
    return replace(
        eval_set, rows=eval_set.rows[keep], ecg_ids=eval_set.ecg_ids[keep], y=eval_set.y[keep],
        patients=[eval_set.patients[i] for i in keep], groups=eval_set.groups[keep], n_single_class=len(eval_set),
    )  # fmt: skip


def load_findings(findings: str | os.PathLike, ecg_ids: Sequence[int]) -> list[tuple[str | None, dict[str, str | None]]]:
    """``(general, {lead: description})`` per ECG of ``ecg_ids`` from findings.parquet (``ecg_id``, ``general``, ``lead_I`` ...).

    Raises StageError naming the file when a column is missing or an ECG has no findings row.
    """
    import polars as pl

    findings = Path(findings)
    lead_cols = [f"lead_{lead}" for lead in LEADS]
    try:
        table = pl.read_parquet(findings, columns=["ecg_id", "general", *lead_cols])
    except FileNotFoundError:
        raise StageError(f"{findings}: findings table not found (run `ecglm describe` first)") from None
    except Exception as err:
        raise StageError(f"{findings}: cannot read ecg_id, general and lead_I..lead_V6 ({err})") from err
    by_id = {int(r["ecg_id"]): r for r in table.to_dicts()}
    missing = [int(e) for e in ecg_ids if int(e) not in by_id]
    if missing:
        raise StageError(f"{findings}: no findings row for ecg_id {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)} ECGs)")
    out = []
    for e in ecg_ids:
        row = by_id[int(e)]
        out.append((row["general"], {lead: row[f"lead_{lead}"] for lead in LEADS}))
    return out


def shuffle_permutation(n: int, seed: int) -> np.ndarray:
    """A derangement of ``range(n)`` fixed by ``seed``: ``perm[i] != i`` for every i (n >= 2).

    A random order ``o`` is turned into one cycle through all n positions: ``perm[o[k]] = o[k + 1]``
    (Sattolo-style), so no record keeps its own ECG. Raises StageError for n < 2.
    """
    if n < 2:
        raise StageError(f"the shuffled control needs at least 2 ECGs, the evaluation set holds {n}")
    order = numpy_rng(seed, "shuffle").permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)
    return perm


# ------------------------------------------------------------------------------------------- metrics


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``scores [M, C]`` (float64, each row sums to 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, task: str) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro P/R/F1, macro one-vs-rest AUC, confusion matrix, predicted options.

    ``y_true``, ``y_pred``: int [M] option indices (0 = A; ``y_pred`` -1 = no answer, always wrong,
    counted in ``n_unanswered`` and in the confusion matrix's extra last column ``none``, present only
    then); ``probs``: [M, 5] option probabilities.
    Precision/recall/F1 are scikit-learn's macro averages over all five options (``zero_division=0``).
    Balanced accuracy is scikit-learn's (mean recall over the classes present in ``y_true``; equal to
    the macro recall when all five are present). AUC: per class one-vs-rest (null for a class absent
    from, or the only class of, ``y_true``); ``macro_auc`` is their mean, null if any class is absent.
    The confusion matrix has rows = true, columns = predicted, in option order A-E.
    """
    import warnings

    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    from ecglm.train.train_encoder import auc_report

    letters, classes = task_letters(task), task_classes(task)
    k = len(letters)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(range(k))
    if ((y_pred < -1) | (y_pred >= k)).any():
        raise ValueError(f"predicted option indices must be -1 (none) or 0..{k - 1}")
    n_unanswered = int((y_pred == -1).sum())
    y_pred = np.where(y_pred == -1, k, y_pred)  # "none": a label no record has
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": expected for a small set
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(y_true, y_pred)
    onehot = np.eye(k, dtype=np.float32)[y_true]  # [M, 5]
    auc = auc_report(onehot, probs, classes)
    all_present = all(v is not None for v in auc["per_class_auc"].values())
    predicted = np.bincount(y_pred, minlength=k + 1)[:k]
    confusion = confusion_matrix(y_true, y_pred, labels=labels + [k])  # [k+1, k+1]; the last row is empty
    confusion = confusion[:k] if n_unanswered else confusion[:k, :k]
    n = int(len(y_true))
    return {
        "n": n,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "macro_auc": auc["macro_auc"] if all_present else None,
        "per_class_auc": auc["per_class_auc"],
        "confusion_matrix": confusion.tolist(),
        "confusion_order": letters + (["none"] if n_unanswered else []),
        "n_unanswered": n_unanswered,
        "predicted_options": {letter: int(c) for letter, c in zip(letters, predicted)},
        "predicted_fraction": {letter: (float(c) / n if n else 0.0) for letter, c in zip(letters, predicted)},
        "max_predicted_fraction": float(predicted.max() / n) if n else 0.0,
    }


#: The metrics given a bootstrap interval (the table's), and the bootstrap's size.
INTERVAL_METRICS = ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "macro_auc")
BOOTSTRAP_REPS = 1000
BOOTSTRAP_LEVEL = 0.95


def table_metric(name: str, y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, k: int):
    """The metric ``name`` of :data:`INTERVAL_METRICS` on the given rows, as :func:`classification_metrics`
    computes it (scikit-learn's definitions), in plain numpy for the bootstrap's thousand draws: a function
    of the row indices [m] (repeats allowed) giving the value, or None where it is undefined (macro AUC with a
    class absent from the drawn rows)."""
    y_pred = np.where(y_pred < 0, k, y_pred)  # "none": a label no record has

    def confusion(rows: np.ndarray) -> np.ndarray:
        return np.bincount(y_true[rows] * (k + 1) + y_pred[rows], minlength=k * (k + 1)).reshape(k, k + 1)

    def per_class(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        c = confusion(rows)  # [k, k+1] rows = true, columns = predicted (+ none)
        tp = np.diag(c[:, :k]).astype(np.float64)  # [k]
        support, predicted = c.sum(axis=1), c[:, :k].sum(axis=0)  # [k], [k]
        recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
        precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
        return tp, support, precision, recall

    n = len(y_true)
    # [k] the rank level of each row's probability of class j (tied probabilities share a level)
    levels = [np.unique(probs[:, j], return_inverse=True)[1] for j in range(k)] if name == "macro_auc" else []

    def auc(rows: np.ndarray) -> float | None:
        """Mean over classes of the one-vs-rest AUC, P(a positive scores above a negative) + P(tie) / 2, each
        row weighted by how often the draw holds it (the Mann-Whitney statistic of the drawn rows): O(n)."""
        weight = np.bincount(rows, minlength=n).astype(np.float64)  # [n]
        values = []
        for j in range(k):
            positive = weight * (y_true == j)  # [n]
            n_levels = int(levels[j].max()) + 1
            pos = np.bincount(levels[j], weights=positive, minlength=n_levels)  # [L] positive weight per level
            neg = np.bincount(levels[j], weights=weight - positive, minlength=n_levels)  # [L]
            if pos.sum() == 0 or neg.sum() == 0:
                return None
            below = np.cumsum(neg) - neg  # [L] negative weight strictly below each level
            values.append(float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum())))
        return float(np.mean(values))

    def f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
        total = precision + recall
        return np.divide(2 * precision * recall, total, out=np.zeros(k), where=total > 0)

    from_classes = {  # (tp [k], support [k], precision [k], recall [k]) -> the metric
        "accuracy": lambda tp, support, precision, recall: tp.sum() / support.sum(),
        "precision": lambda tp, support, precision, recall: precision.mean(),
        "recall": lambda tp, support, precision, recall: recall.mean(),
        "f1": lambda tp, support, precision, recall: f1(precision, recall).mean(),
        "balanced_accuracy": lambda tp, support, precision, recall: recall[support > 0].mean(),
    }
    if name not in from_classes and name != "macro_auc":
        raise ValueError(f"unknown metric {name!r}")

    def value(rows: np.ndarray) -> float | None:
        return auc(rows) if name == "macro_auc" else float(from_classes[name](*per_class(rows)))

    return value


def metric_intervals(eval_set: EvalSet, y_pred: np.ndarray, probs: np.ndarray, metrics: Mapping[str, Any],
                     seed: int) -> dict[str, Any]:
    """Percentile bootstrap intervals of the table's metrics, resampling the set's patients (ECGs of one
    patient are drawn together; :func:`ecglm.core.stats.pooled_group_bootstrap`), every metric on the same draws.
    A metric that is null on the whole set gets no interval."""
    k = len(task_classes(eval_set.task))
    y_true = np.asarray(eval_set.y, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    out: dict[str, Any] = {"level": BOOTSTRAP_LEVEL, "reps": BOOTSTRAP_REPS, "resampled": eval_set.group_by,
                           "seed": seed, "metrics": {name: None for name in INTERVAL_METRICS}, "undefined_draws": {}}  # fmt: skip
    defined = {name: [table_metric(name, y_true, y_pred, probs, k)] for name in INTERVAL_METRICS
               if metrics.get(name) is not None}  # fmt: skip
    if not defined:
        return out
    boots = pooled_group_bootstrap(defined, [eval_set.groups], seed=seed, reps=BOOTSTRAP_REPS, level=BOOTSTRAP_LEVEL)
    for name, boot in boots.items():
        out["groups"] = boot["groups"]
        out["metrics"][name] = None if boot["low"] is None else [boot["low"], boot["high"]]
        if boot["undefined"]:
            out["undefined_draws"][name] = boot["undefined"]
    return out


def seed_mean_intervals(members: Sequence[Mapping[str, np.ndarray]], task: str, seed: int) -> dict[str, Any]:
    """The interval of the mean over seeds of each table metric: ``members`` are one evaluation per seed
    (``y_true``, ``y_pred``, ``probs``, ``groups``: arrays over that evaluation's ECGs; the ECGs may differ,
    as seeded subsets do). Each draw takes the test patients of all members with replacement, computes
    every member's metric on its ECGs of the drawn patients, and averages over the members; a draw where
    a member's metric is undefined is left out. ``{metric: [low, high] or None}``."""
    k = len(task_classes(task))
    statistics = {name: [table_metric(name, np.asarray(m["y_true"], dtype=np.int64), np.asarray(m["y_pred"], dtype=np.int64),
                                      np.asarray(m["probs"], dtype=np.float64), k) for m in members]
                  for name in INTERVAL_METRICS}  # fmt: skip
    boots = pooled_group_bootstrap(statistics, [m["groups"] for m in members], seed=seed, reps=BOOTSTRAP_REPS,
                                   level=BOOTSTRAP_LEVEL)  # fmt: skip
    return {name: None if boot["low"] is None else [boot["low"], boot["high"]] for name, boot in boots.items()}


def paired_difference_intervals(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], task: str,
                                seed: int) -> dict[str, Any]:
    """The interval of each table metric's difference a - b between two evaluations of the same test ECGs
    (arrays as in :func:`seed_mean_intervals`), both computed on every draw of the test patients: a paired
    comparison, narrower than two overlapping intervals suggest. ``{metric: [low, high] or None}``."""
    k = len(task_classes(task))
    statistics = {name: [table_metric(name, np.asarray(m["y_true"], dtype=np.int64), np.asarray(m["y_pred"], dtype=np.int64),
                                      np.asarray(m["probs"], dtype=np.float64), k) for m in (a, b)]
                  for name in INTERVAL_METRICS}  # fmt: skip
    boots = pooled_group_bootstrap(statistics, [a["groups"], b["groups"]], seed=seed, reps=BOOTSTRAP_REPS,
                                   level=BOOTSTRAP_LEVEL, weights=(1.0, -1.0))  # fmt: skip
    return {name: None if boot["low"] is None else [boot["low"], boot["high"]] for name, boot in boots.items()}


def result_record(
    eval_set: EvalSet,
    y_pred: np.ndarray,
    probs: np.ndarray,
    setting: Mapping[str, Any],
    scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """The JSON document of one evaluation: setting, class counts, metrics, per-record predictions."""
    letters, classes = task_letters(eval_set.task), task_classes(eval_set.task)
    metrics = classification_metrics(eval_set.y, y_pred, probs, eval_set.task)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "task": eval_set.task,
        "split": eval_set.split,
        **setting,
        "classes": classes,
        "options": {letter: code for letter, code in zip(letters, classes)},
        "class_counts": eval_set.counts(),
        "n_left_out": {"several_classes": eval_set.n_multi_class, "no_class": eval_set.n_no_class},
        "subset": None if eval_set.n_single_class is None else {
            "rule": "class-stratified, seeded", "n": len(eval_set), "of": eval_set.n_single_class,
        },
        **metrics,
        "intervals": metric_intervals(eval_set, y_pred, probs, metrics, seed=DEFAULT_SEED if setting.get("seed") is None else setting["seed"]),
        "predictions": {
            "ecg_id": [int(e) for e in eval_set.ecg_ids],
            "group": [g.item() if hasattr(g, "item") else g for g in eval_set.groups],  # the bootstrap's unit
            "true": [letters[i] for i in eval_set.y],
            "predicted": [letters[i] if i >= 0 else "none" for i in np.asarray(y_pred, dtype=np.int64)],
            "probabilities": np.asarray(probs, dtype=np.float64).tolist(),
        },
    }
    if scores is not None:
        doc["predictions"]["scores"] = np.asarray(scores, dtype=np.float64).tolist()
    return doc


def write_result(doc: Mapping[str, Any], out: str | os.PathLike | None) -> None:
    """Write ``doc`` as JSON to ``out`` atomically (stdout when ``out`` is None). Non-finite numbers are an error."""
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(out, text)
        log.info("wrote %s", out)


# ------------------------------------------------------------------------------------------- scoring


class TextOnlyLM:
    """The LLM alone behind the :func:`ecglm.models.multimodal.score_next_token` / ``sequence_logprob`` interface.

    ``model(input_ids [B, L], attention_mask [B, L], None, None).logits -> [B, L, V]``; texts must not
    hold ``<ecg>`` (the text-only prompts do not). Needs no aligned checkpoint.
    """

    num_ecg_tokens = 1

    def __init__(self, llm: "nn.Module") -> None:
        self.llm = llm
        self.training = False

    @property
    def device(self) -> "torch.device":
        return self.llm.get_input_embeddings().weight.device

    def eval(self) -> "TextOnlyLM":
        self.llm.eval()
        return self

    def train(self, mode: bool = True) -> "TextOnlyLM":
        self.llm.eval()  # the LLM stays frozen in eval mode
        return self

    def embed(self, input_ids, signals=None, lead_mask=None):
        """``input_ids [B, L]`` -> the LLM's token embeddings ``[B, L, H]`` (no ECG to splice)."""
        if signals is not None:
            raise ValueError("the text-only model takes no ECG signals")
        return self.llm.get_input_embeddings()(input_ids.to(self.device))

    def __call__(self, input_ids, attention_mask=None, signals=None, lead_mask=None):
        from ecglm.models.multimodal import ECGLMOutput

        if signals is not None:
            raise ValueError("the text-only model takes no ECG signals")
        input_ids = input_ids.to(self.device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        out = self.llm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return ECGLMOutput(None, out.logits, 0)


def _read_signals(signals: np.ndarray | None, rows: np.ndarray) -> "torch.Tensor | None":
    """Rows of the memory-mapped int16 store as float32 microvolts ``[b, 12, T]`` (None without signals)."""
    import torch

    if signals is None:
        return None
    order = np.argsort(rows, kind="stable")
    block = np.asarray(signals[rows[order]])  # sorted reads from the memmap
    out = np.empty_like(block)
    out[order] = block
    return torch.from_numpy(out.astype(np.float32))  # [b, 12, T]


def score_mcq(model, tokenizer, prompts: Sequence[str], signals: "torch.Tensor | None", letters: Sequence[str], *, batch_size: int, max_length: int) -> np.ndarray:
    """Next-token log-probability of each option letter after each prompt: ``[b, 5]`` float64."""
    from ecglm.models.multimodal import continuation_logprob, score_next_token
    from ecglm.text.prompts import answer_text

    candidates = [answer_text(letter) for letter in letters]
    try:
        scores = score_next_token(model, tokenizer, list(prompts), candidates, signals, None, batch_size=batch_size, max_length=max_length)
    except ValueError as err:
        if "not one token" not in str(err):
            raise
        log.warning("%s; scoring the whole continuation instead", err)
        scores, _ = continuation_logprob(model, tokenizer, list(prompts), candidates, signals, None, batch_size=batch_size, max_length=max_length)
    return scores.numpy()


def score_likelihood(model, tokenizer, patients: Sequence, signals: "torch.Tensor | None", classes: Sequence[str], *, ecg: bool, batch_size: int, max_length: int, score: str = "sum") -> np.ndarray:
    """Log-probability of each class phrase (:func:`likelihood_text`), summed over its tokens
    (``score="sum"``) or their mean (``"mean"``): ``[b, 5]`` float64."""
    import torch

    from ecglm.models.multimodal import sequence_logprob
    from ecglm.text.prompts import likelihood_text

    texts = [likelihood_text(p, code, ecg=ecg) for p in patients for code in classes]  # [b * 5]
    sig = None if signals is None else signals.repeat_interleave(len(classes), dim=0)  # [b*5, 12, T]
    logprob, counts = sequence_logprob(model, tokenizer, texts, sig, None, batch_size=batch_size, max_length=max_length)
    if int(counts.min()) < 1:
        raise StageError("a class phrase has no token to score (the tokenizer gave it none)")
    if score == "mean":
        logprob = logprob / counts.to(torch.float64)
    elif score != "sum":
        raise StageError(f"likelihood score must be one of {', '.join(LIKELIHOOD_SCORES)}, got {score!r}")
    return logprob.view(len(patients), len(classes)).numpy()


def zero_shot_scores(
    model,
    tokenizer,
    eval_set: EvalSet,
    *,
    mode: str,
    prompt: str,
    signals: np.ndarray | None,
    signal_rows: np.ndarray | None,
    findings: list | None,
    batch_size: int = 8,
    max_length: int = 2048,
    likelihood_score: str = "sum",
    progress: bool = True,
) -> np.ndarray:
    """The five option scores of every ECG of ``eval_set``: ``[M, 5]`` float64 (higher = more likely).

    ``signals``: the int16 store ``[N, 12, T]`` (memory-mapped) and ``signal_rows [M]`` the row whose
    ECG record i sees (its own, or another for the shuffled control); both None for ``text-only``.
    ``findings``: per record ``(general, leads)`` (None when the prompt holds none).
    """
    from tqdm import tqdm

    from ecglm.text.prompts import Patient, zero_shot_prompt

    use_ecg = prompt != "text-only"
    use_findings = prompt != "ecg-only"
    if use_ecg and (signals is None or signal_rows is None):
        raise StageError(f"--prompt {prompt} needs ECG signals")
    patients = [Patient.from_record(p) for p in eval_set.patients]
    letters, classes = task_letters(eval_set.task), task_classes(eval_set.task)
    out = np.zeros((len(eval_set), len(letters)), dtype=np.float64)
    starts = range(0, len(eval_set), CHUNK)
    for start in tqdm(starts, desc=f"{eval_set.task} {mode} {prompt}", unit="chunk", disable=not progress, file=sys.stderr):
        sl = slice(start, min(len(eval_set), start + CHUNK))
        sig = _read_signals(signals, signal_rows[sl]) if use_ecg else None  # [b, 12, T]
        if mode == "mcq":
            prompts = []
            for i in range(sl.start, sl.stop):
                general, leads = findings[i] if use_findings else (None, None)
                prompts.append(
                    zero_shot_prompt(eval_set.task, patients[i], general, leads, ecg=use_ecg, findings=use_findings)
                )
            out[sl] = score_mcq(model, tokenizer, prompts, sig, letters, batch_size=batch_size, max_length=max_length)
        elif mode == "likelihood":
            out[sl] = score_likelihood(
                model, tokenizer, patients[sl], sig, classes, ecg=use_ecg, batch_size=batch_size,
                max_length=max_length, score=likelihood_score,
            )
        else:
            raise StageError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    return out


def generated_report(text: str) -> str:
    """The part of a `generate` continuation that is the report and the general findings: everything
    before the first lead description (", lead I: ..." in the training template), where "normal" means
    only "no finding in this lead"."""
    return text.split(", lead ", 1)[0]


def predictions_from_generations(texts: Sequence[str], task: str) -> tuple[np.ndarray, np.ndarray]:
    """``(y_pred [M] int64, probabilities [M, 5])`` of generated texts: the class named first in
    :func:`generated_report` (-1 and an all-zero row when none is named), its probability 1."""
    from ecglm.text.prompts import classes_named

    classes = task_classes(task)
    y_pred = np.full(len(texts), -1, dtype=np.int64)
    for i, text in enumerate(texts):
        named = classes_named(generated_report(text), task)
        if named:
            y_pred[i] = classes.index(named[0])
    probs = np.zeros((len(texts), len(classes)), dtype=np.float64)
    answered = y_pred >= 0
    probs[answered, y_pred[answered]] = 1.0
    return y_pred, probs


def zero_shot_generations(
    model,
    tokenizer,
    eval_set: EvalSet,
    *,
    prompt: str,
    signals: np.ndarray | None,
    signal_rows: np.ndarray | None,
    batch_size: int = 8,
    max_length: int = 2048,
    max_new_tokens: int = 48,
    progress: bool = True,
) -> list[str]:
    """The greedy report the model writes for every ECG of ``eval_set`` (``[M]`` strings): after
    :func:`ecglm.text.prompts.report_prompt`, with the ECG of ``signal_rows`` (no ECG for ``text-only``)."""
    from tqdm import tqdm

    from ecglm.models.multimodal import generate_greedy
    from ecglm.text.prompts import Patient, report_prompt

    use_ecg = prompt != "text-only"
    if use_ecg and (signals is None or signal_rows is None):
        raise StageError(f"--prompt {prompt} needs ECG signals")
    texts: list[str] = []
    starts = range(0, len(eval_set), CHUNK)
    for start in tqdm(starts, desc=f"{eval_set.task} generate {prompt}", unit="chunk", disable=not progress, file=sys.stderr):
        sl = slice(start, min(len(eval_set), start + CHUNK))
        sig = _read_signals(signals, signal_rows[sl]) if use_ecg else None  # [b, 12, T]
        prompts = [report_prompt(Patient.from_record(p), ecg=use_ecg) for p in eval_set.patients[sl]]
        texts += generate_greedy(model, tokenizer, prompts, sig, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, max_length=max_length)  # fmt: skip
    return texts


def predictions_from_scores(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(y_pred [M] int64 = argmax, probabilities [M, 5] = softmax)`` of option scores ``[M, 5]``.

    Ties go to the first option (numpy's argmax). Non-finite scores raise StageError.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
        raise StageError(f"non-finite option scores for {len(bad)} ECGs (first rows {bad[:5].tolist()}): check the model")
    return scores.argmax(axis=1).astype(np.int64), softmax_rows(scores)


# ---------------------------------------------------------------------------------------- the stage


def _base_llm_of(align: Path) -> str:
    from ecglm.models.multimodal import CONFIG_NAME

    path = align / CONFIG_NAME
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["base_llm"]["name_or_path"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise StageError(f"{path}: cannot read the aligned model's base LLM ({err}); pass --llm") from err


def llm_label(llm_path: str) -> str:
    """The name a person reads for an LLM: the ``name`` of its fetch manifest, else its folder's or Hub name."""
    from ecglm.models.gguf import MANIFEST

    manifest = Path(str(llm_path)).expanduser() / MANIFEST
    if manifest.is_file():
        try:
            return str(json.loads(manifest.read_text(encoding="utf-8"))["name"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise StageError(f"{manifest}: not a readable LLM manifest ({err})") from err
    return str(llm_path)


def load_model(align: Path | None, llm_path: str | None, prompt: str, *, device: str = "auto", dtype: str = "auto"):
    """``(model, tokenizer, identity)`` for a prompt variant.

    ``text-only`` needs only the LLM (``llm_path``, else the aligned model's base LLM); the others need
    the aligned checkpoint ``align`` (its recorded base LLM unless ``llm_path`` is given).
    """
    from ecglm.models.llm import llm_source, load_llm

    if prompt != "text-only" and align is None:
        raise StageError(f"--prompt {prompt} needs --align (the aligned ECG-LM checkpoint folder)")
    if llm_path is None:
        if align is None:
            raise StageError("--prompt text-only needs --llm (or --align, whose base LLM is then used)")
        llm_path = _base_llm_of(align)
    dev = resolve_device(device)
    llm, tokenizer = load_llm(llm_path, dtype=dtype, device=dev)
    identity: dict[str, Any] = {
        "llm": llm_source(llm).to_dict(), "llm_class": type(llm).__name__, "llm_label": llm_label(llm_path),
    }
    if prompt == "text-only":
        identity["align"] = None
        return TextOnlyLM(llm), tokenizer, identity
    from ecglm.data.physionet import sha256_file
    from ecglm.models.multimodal import ECGLM, WEIGHTS_NAME

    model = ECGLM.load(align, llm, tokenizer=tokenizer)
    identity["align"] = {
        "path": str(align),
        "weights_sha256": sha256_file(align / WEIGHTS_NAME),
        "projector": model.projector_kind,
        "num_ecg_tokens": model.num_ecg_tokens,
        "encoder": model.encoder_spec,
    }
    return model, tokenizer, identity


def _check_options(mode: str, prompt: str, control: str, likelihood_score: str, batch_size: int,
                   max_new_tokens: int) -> None:
    """StageError naming the option that is out of range or that does not go with the others."""
    for name, value, allowed in (("mode", mode, MODES), ("prompt", prompt, PROMPTS), ("control", control, CONTROLS),
                                 ("likelihood-score", likelihood_score, LIKELIHOOD_SCORES)):
        if value not in allowed:
            raise StageError(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")
    if batch_size < 1:
        raise StageError(f"--batch-size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise StageError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if prompt == "text-only" and control == "shuffled":
        raise StageError("--control shuffled needs an ECG in the prompt; --prompt text-only has none")


def _ecg_inputs(records: Path, signals, eval_set: EvalSet, prompt: str, control: str, seed: int):
    """``(signals store, signal rows)`` of the evaluation ECGs; with the shuffled control, the rows permuted."""
    from ecglm.data.ecg_data import check_store, open_signals

    if signals is None:
        raise StageError(f"--prompt {prompt} needs --signals")
    n_records = read_records(records, ["ecg_id"]).height
    check_store(records, n_records, signals)
    store = open_signals(signals)
    rows = eval_set.rows
    if control == "shuffled":
        rows = eval_set.rows[shuffle_permutation(len(eval_set), seed)]
    return store, rows


def evaluate_zero_shot(
    records: str | os.PathLike,
    signals: str | os.PathLike | None,
    findings: str | os.PathLike | None,
    task: str,
    mode: str,
    *,
    align: str | os.PathLike | None = None,
    llm: str | None = None,
    prompt: str = "full",
    control: str = "none",
    seed: int = DEFAULT_SEED,
    batch_size: int = 8,
    max_length: int = 2048,
    max_new_tokens: int = 48,
    likelihood_score: str = "sum",
    device: str = "auto",
    dtype: str = "auto",
    out: str | os.PathLike | None = None,
    progress: bool = True,
    model_bundle: tuple | None = None,
    max_test_ecgs: int | None = None,
    subset_seed: int | None = None,
) -> dict[str, Any]:
    """Run one zero-shot evaluation and write its JSON (see the module docstring); return the document.

    ``model_bundle`` = ``(model, tokenizer, identity)`` uses an already loaded model instead of
    ``align`` / ``llm``.
    """
    _check_options(mode, prompt, control, likelihood_score, batch_size, max_new_tokens)
    records = Path(records)
    eval_set = load_eval_set(records, task)
    if max_test_ecgs is not None:  # the same subset for every seed of a variant: --subset-seed (default --seed)
        eval_set = subset_eval_set(eval_set, max_test_ecgs, seed if subset_seed is None else subset_seed)
        if eval_set.n_single_class is not None:
            log.info("%s: a class-stratified subset of %d of the %d test ECGs (--max-test-ecgs)",
                     task, len(eval_set), eval_set.n_single_class)  # fmt: skip
    log.info("%s: %d test ECGs with exactly one class %s (%d with several, %d with none left out)",
             task, len(eval_set), eval_set.counts(), eval_set.n_multi_class, eval_set.n_no_class)  # fmt: skip

    use_ecg = prompt != "text-only"
    findings_in_text = prompt != "ecg-only" and mode == "mcq"
    store = rows = None
    if use_ecg:
        store, rows = _ecg_inputs(records, signals, eval_set, prompt, control, seed)
    finding_rows = None
    if findings_in_text:
        if findings is None:
            raise StageError(f"--prompt {prompt} needs --findings")
        finding_rows = load_findings(findings, eval_set.ecg_ids)
    if mode != "mcq" and prompt == "full":
        log.warning("--mode %s reads no lead findings (the template puts them after the report): "
                    "--prompt full scores the same text as ecg-only", mode)  # fmt: skip

    model, tokenizer, identity = model_bundle if model_bundle is not None else load_model(
        Path(align) if align is not None else None, llm, prompt, device=device, dtype=dtype
    )
    generations = None
    if mode == "generate":
        generations = zero_shot_generations(
            model, tokenizer, eval_set, prompt=prompt, signals=store, signal_rows=rows, batch_size=batch_size,
            max_length=max_length, max_new_tokens=max_new_tokens, progress=progress,
        )  # fmt: skip
        y_pred, probs = predictions_from_generations(generations, task)
        scores = None
    else:
        scores = zero_shot_scores(
            model, tokenizer, eval_set, mode=mode, prompt=prompt, signals=store, signal_rows=rows,
            findings=finding_rows, batch_size=batch_size, max_length=max_length,
            likelihood_score=likelihood_score, progress=progress,
        )  # fmt: skip
        y_pred, probs = predictions_from_scores(scores)
    setting = {
        "kind": "zero-shot",
        "mode": mode,
        "prompt": prompt,
        "control": control,
        "seed": seed,
        "scoring": {
            "mcq": "next-token log-probability of the option letter",
            "likelihood": f"log-probability of the class phrase ({likelihood_score} over its tokens)",
            "generate": f"the class named first in a greedy report of at most {max_new_tokens} tokens",
        }[mode],
        "text_has_ecg": use_ecg,
        "text_has_findings": findings_in_text,
        "model": identity,
        "inputs": {"records": str(records), "signals": None if signals is None else str(signals),
                   "findings": None if findings is None else str(findings)},
    }  # fmt: skip
    doc = result_record(eval_set, y_pred, probs, setting, scores)
    if generations is not None:
        doc["predictions"]["generated"] = generations
    write_result(doc, out)
    log.info("%s %s (%s, control %s): accuracy %.3f, macro F1 %.3f, predicted %s",
             task, mode, prompt, control, doc["accuracy"], doc["f1"], doc["predicted_options"])  # fmt: skip
    return doc


# ------------------------------------------------------------------------------------------------ CLI


def _common_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", required=True, type=Path, help="records.parquet written by `ecglm prepare`")
    p.add_argument("--signals", type=Path,
                   help="signals_{fs}.npy written by `ecglm prepare` (int16 [N, 12, T], row-aligned with --records)")  # fmt: skip
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="zero-shot task: its five classes are the options A-E")
    p.add_argument("--out", type=Path, help="result JSON (written atomically; default: printed to stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="zero-shot classification (diagnostic, rhythm, form) with the aligned ECG-LM or the LLM alone",
        description=(
            "Zero-shot classification of the test-split ECGs that hold exactly one of the task's five classes, "
            "without task training and without sampling. --mode mcq: the paper's Table 1 prompt, the option "
            "letter with the highest next-token log-probability. --mode likelihood: the class whose phrase in "
            "'... The ECG signal is <ecg>. The ECG report indicates {class}.' has the highest log-probability "
            "(--likelihood-score). --mode generate: the model writes its report after '... The ECG signal is <ecg>. The "
            "ECG report indicates' (greedy decoding) and the class it names first is its answer (none named: "
            "wrong). Writes accuracy, balanced accuracy, macro precision/recall/F1, macro AUC, the "
            "confusion matrix and the distribution of predicted options as JSON."
        ),
    )
    _common_inputs(p)
    p.add_argument("--findings", type=Path, help="findings.parquet written by `ecglm describe` (needed by --prompt full and text-only in mcq mode)")
    p.add_argument("--mode", required=True, nargs="+", choices=MODES,
                   help="mcq: option letter after 'Answer:'; likelihood: class phrase after the ECG; generate: the class "
                        "named in the model's own greedy report. Several modes share one loaded model; --out must "
                        "then hold '{mode}'")  # fmt: skip
    p.add_argument("--align", type=Path, help="aligned ECG-LM folder written by `ecglm align` (needed unless --prompt text-only)")
    p.add_argument("--llm", help="the LLM folder or Hub id (default: the base LLM recorded in --align)")
    p.add_argument("--prompt", choices=PROMPTS, default="full",
                   help="full: ECG token + lead findings (the paper's); ecg-only: no findings; text-only: findings, no ECG token (the LLM alone)")  # fmt: skip
    p.add_argument("--control", choices=CONTROLS, default="none",
                   help="shuffled: every record gets another record's ECG (a derangement fixed by --seed); none: its own")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8, help="texts per forward pass (default 8)")
    p.add_argument("--max-length", type=int, default=2048, help="longest tokenised text (default 2048)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="--mode generate: most tokens generated per ECG (default 48)")
    p.add_argument("--likelihood-score", choices=LIKELIHOOD_SCORES, default="sum",
                   help="--mode likelihood: the class phrase's log-probability (sum over its tokens, the default) "
                        "or its mean per token")  # fmt: skip
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of the shuffled control's permutation and of --max-test-ecgs's subset (default {DEFAULT_SEED})")
    p.add_argument("--max-test-ecgs", type=int, default=None,
                   help="evaluate a class-stratified subset of at most this many test ECGs (smoke-scale rows; default: all)")
    p.add_argument("--subset-seed", type=int, default=None,
                   help="seed of --max-test-ecgs's subset (default: --seed); the workflow passes the run's seed, so "
                        "that the seed replicas of a variant score the same ECGs")  # fmt: skip
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's, from OMP_NUM_THREADS); the workflow passes the "
                        "configured number, since a result's last bits depend on it")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"),
                   help="LLM dtype: auto = bfloat16 on a capable GPU, float32 on CPU")  # fmt: skip
    p.set_defaults(func=run)


def mode_outputs(modes: Sequence[str], out: Path | None) -> list[Path | None]:
    """The result path of each mode: ``out`` with ``{mode}`` filled in (required for several modes)."""
    if len(set(modes)) != len(modes):
        raise StageError(f"--mode lists a mode twice: {' '.join(modes)}")
    if out is None:
        if len(modes) > 1:
            raise StageError("several --mode values need --out with '{mode}' in it (one JSON per mode)")
        return [None]
    if len(modes) > 1 and "{mode}" not in str(out):
        raise StageError(f"--out {out}: several --mode values need '{{mode}}' in the path (one JSON per mode)")
    return [Path(str(out).replace("{mode}", mode)) for mode in modes]


def run(args: argparse.Namespace) -> int:
    outs = mode_outputs(args.mode, args.out)
    with torch_threads(args.threads):
        bundle = load_model(args.align, args.llm, args.prompt, device=args.device, dtype=args.dtype)
        for mode, out in zip(args.mode, outs):
            evaluate_zero_shot(
                args.records, args.signals, args.findings, args.task, mode,
                align=args.align, llm=args.llm, prompt=args.prompt, control=args.control, seed=args.seed,
                batch_size=args.batch_size, max_length=args.max_length, max_new_tokens=args.max_new_tokens,
                likelihood_score=args.likelihood_score, device=args.device, dtype=args.dtype, out=out, progress=not args.no_progress, model_bundle=bundle,
                max_test_ecgs=args.max_test_ecgs, subset_seed=args.subset_seed,
            )  # fmt: skip
    return 0

