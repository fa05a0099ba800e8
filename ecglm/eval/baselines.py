"""Baselines on the zero-shot evaluation sets, written in the same JSON shape as `ecglm evaluate`.

- ``majority``: the most frequent class among the TRAINING ECGs with exactly one of the task's five
  classes (ties go to the earlier option, A before E), predicted for every test ECG; the option
  probabilities are one-hot on it (so every per-class AUC is 0.5).
- ``supervised``: a ResNet-18 (:class:`ecglm.models.encoder.ResNet1d18` + its linear head) trained by
  `ecglm train-encoder` on the task's label column and classes (``--set label_column=rhythm --set
  classes=SR,STACH,SBRAD,AFIB,SARRH``); prediction = argmax over the task's five logits with all 12
  leads, probabilities = softmax over those five logits.
- ``simclr``: the paper's few-shot SimCLR row: a linear probe (multinomial logistic regression on the
  standardised embeddings) on the frozen encoder of `ecglm train-simclr`, fitted on ``--probe-fraction``
  (5%) of the training ECGs with exactly one of the task's classes, drawn per class (at least one each,
  seeded); probabilities = the probe's.
- ``random-probe``: the same probe on a randomly initialised encoder of the same shape (seeded): the
  reference that SimCLR's pretraining must beat.
- ``mets`` and ``llm-mets``: the paper's zero-shot METS rows: the encoder of `ecglm train-mets` (text encoder
  tfidf, resp. llm) scores each class by the cosine similarity of the ECG to the class description in the
  shared space (over the temperature: the logits); probabilities = their softmax. No label is used.

The CLI is `ecglm evaluate-baseline` (registered here, with :mod:`ecglm.eval.evaluate`'s common inputs).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ecglm.core.errors import StageError
from ecglm.eval.evaluate import (
    TASK_LABEL_COLUMNS,
    EvalSet,
    _common_inputs,
    _read_signals,
    llm_label,
    load_eval_set,
    predictions_from_scores,
    read_records,
    resolve_device,
    result_record,
    single_class_index,
    task_classes,
    task_letters,
    write_result,
)

log = logging.getLogger(__name__)

KINDS = ("majority", "supervised", "simclr", "random-probe", "mets", "llm-mets")
PROBE_KINDS = ("simclr", "random-probe")
#: The METS kinds and the text encoder (`ecglm train-mets --set text_encoder=...`) each needs.
METS_KINDS = {"mets": "tfidf", "llm-mets": "llm"}
PROBE_FRACTION = 0.05  # the paper's few-shot rows: 5% of the training labels


def training_class_counts(records: str | os.PathLike, task: str) -> dict[str, int]:
    """ECGs per class (option order) among the ``train``-split ECGs with exactly one of ``task``'s classes."""
    records = Path(records)
    column = TASK_LABEL_COLUMNS[task]
    table = read_records(records, ["split", column])
    labels = [lab for lab, split in zip(table[column].to_list(), table["split"].to_list()) if split == "train"]
    _, y, _, _ = single_class_index(labels, task_classes(task))
    return {code: int((y == j).sum()) for j, code in enumerate(task_classes(task))}


def majority_class(records: str | os.PathLike, task: str) -> int:
    """The option index of the most frequent single class among the training ECGs (ties: earlier option).

    Raises StageError when no training ECG has exactly one of the task's classes.
    """
    counts = training_class_counts(records, task)
    if sum(counts.values()) == 0:
        raise StageError(f"{records}: no train-split ECG has exactly one of the {task} classes {task_classes(task)}")
    values = list(counts.values())
    return int(np.argmax(values))  # argmax takes the first of equal counts


def majority_predictions(eval_set: EvalSet, majority: int) -> tuple[np.ndarray, np.ndarray]:
    """``(y_pred [M] = majority, probabilities [M, 5] one-hot on it)``."""
    k = len(task_letters(eval_set.task))
    y_pred = np.full(len(eval_set), majority, dtype=np.int64)
    return y_pred, np.eye(k, dtype=np.float64)[y_pred]


def supervised_scores(
    encoder_dir: str | os.PathLike,
    signals: str | os.PathLike,
    eval_set: EvalSet,
    *,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The encoder's logits of the task's five classes (option order) per ECG: ``([M, 5] float64, identity)``.

    Raises StageError when the encoder was trained on another label column or lacks one of the classes.
    """
    import torch
    from tqdm import tqdm

    from ecglm.data.ecg_data import open_signals
    from ecglm.data.physionet import sha256_file
    from ecglm.train.train_encoder import MODEL_FILE, load_encoder

    encoder_dir = Path(encoder_dir)
    dev = resolve_device(device)
    model, cfg = load_encoder(encoder_dir, device=str(dev))
    column, classes = TASK_LABEL_COLUMNS[eval_set.task], task_classes(eval_set.task)
    if cfg.label_column != column:
        raise StageError(
            f"{encoder_dir}: the encoder was trained on {cfg.label_column!r}, the {eval_set.task} task needs "
            f"{column!r} (train one with --set label_column={column} --set classes={','.join(classes)})"
        )
    missing = [c for c in classes if c not in cfg.classes]
    if missing:
        raise StageError(f"{encoder_dir}: the encoder has no output for class(es) {missing} (its classes: {cfg.classes})")
    columns = torch.tensor([cfg.classes.index(c) for c in classes], dtype=torch.long)
    store = open_signals(signals)
    out = np.zeros((len(eval_set), len(classes)), dtype=np.float64)
    starts = range(0, len(eval_set), batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc=f"{eval_set.task} supervised", unit="batch", disable=not progress, file=sys.stderr):
            sl = slice(start, min(len(eval_set), start + batch_size))
            x = _read_signals(store, eval_set.rows[sl]).to(dev)  # [b, 12, T] microvolts
            logits = model(x, None)  # [b, C]
            out[sl] = logits[:, columns.to(logits.device)].double().cpu().numpy()
    identity = {
        "encoder": {"path": str(encoder_dir), "weights_sha256": sha256_file(encoder_dir / MODEL_FILE),
                    "label_column": cfg.label_column, "classes": list(cfg.classes), "base_width": cfg.base_width,
                    "dilation": cfg.dilation},
    }  # fmt: skip
    return out, identity


def probe_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices into ``y`` (class index per training ECG): per class present, round(fraction x its
    count) ECGs, at least one, drawn without replacement by ``seed``'s "probe" stream."""
    from ecglm.core.seeding import numpy_rng

    rng = numpy_rng(seed, "probe")
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        picked.append(rng.choice(members, max(1, int(round(fraction * len(members)))), replace=False))
    return np.sort(np.concatenate(picked))


def _embed(model: Any, store: np.ndarray, rows: np.ndarray, batch_size: int, device: Any) -> np.ndarray:
    """The encoder's embeddings [M, D] (float64) of the signals ``rows``, all 12 leads."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            x = _read_signals(store, rows[start : start + batch_size]).to(device)  # [b, 12, T]
            out.append(model.forward_features(x, None).double().cpu().numpy())  # [b, D]
    return np.concatenate(out) if out else np.zeros((0, model.embed_dim))


def probe_scores(kind: str, encoder_dir: str | os.PathLike, signals: str | os.PathLike, records: str | os.PathLike,
                 eval_set: EvalSet, *, fraction: float, seed: int, batch_size: int = 64, device: str = "auto"
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """The linear probe's class log-probabilities [M, 5] (option order) on ``eval_set`` and its identity.

    ``kind`` simclr: the encoder of ``encoder_dir``; random-probe: a random one of its shape (seeded)."""
    from sklearn.linear_model import LogisticRegression

    from ecglm.data.ecg_data import open_signals
    from ecglm.data.physionet import sha256_file
    from ecglm.train.simclr import CONFIG_FILE, MODEL_FILE, SimCLRConfig, build_encoder, load_simclr_encoder

    if not 0 < fraction <= 1:
        raise StageError(f"--probe-fraction must be in (0, 1], got {fraction}")
    encoder_dir, dev = Path(encoder_dir), resolve_device(device)
    if kind == "simclr":
        model, cfg = load_simclr_encoder(encoder_dir, device=str(dev))
    else:
        cfg = SimCLRConfig.from_yaml(encoder_dir / CONFIG_FILE)
        model = build_encoder(cfg, seed=seed).to(dev)
    train = load_eval_set(records, eval_set.task, split="train")
    pick = probe_subset(train.y, fraction, seed)
    store = open_signals(signals)
    f_train = _embed(model, store, train.rows[pick], batch_size, dev)  # [P, D]
    f_test = _embed(model, store, eval_set.rows, batch_size, dev)  # [M, D]
    mean, std = f_train.mean(axis=0), f_train.std(axis=0) + 1e-6
    k = len(task_classes(eval_set.task))
    labels = train.y[pick]
    scores = np.full((len(eval_set), k), -1e3)  # a class with no training ECG is never predicted
    if len(np.unique(labels)) == 1:
        scores[:, labels[0]] = 0.0
    else:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):  # the BLAS thread count would change the probe's last bits
            probe = LogisticRegression(max_iter=5000).fit((f_train - mean) / std, labels)
            scores[:, probe.classes_] = probe.predict_log_proba((f_test - mean) / std)
    identity = {"encoder": {"path": str(encoder_dir), "random_init": kind == "random-probe", "base_width": cfg.base_width,
                            "dilation": cfg.dilation, "weights_sha256": None if kind == "random-probe"
                            else sha256_file(encoder_dir / MODEL_FILE)},
                "probe": {"fraction": fraction, "seed": seed, "training_ecgs": int(len(pick)), "of": int(len(train)),
                          "per_class": {task_classes(eval_set.task)[c]: int((labels == c).sum()) for c in np.unique(labels)}}}  # fmt: skip
    return scores, identity


def mets_scores(kind: str, encoder_dir: str | os.PathLike, signals: str | os.PathLike, eval_set: EvalSet, *,
                batch_size: int = 64, device: str = "auto") -> tuple[np.ndarray, dict[str, Any]]:
    """METS's zero-shot logits [M, 5] (option order) on ``eval_set`` and its identity; StageError when the
    folder's text encoder is not the one ``kind`` names (a METS row must say which text encoder it had)."""
    import json

    import torch

    from ecglm.data.ecg_data import open_signals
    from ecglm.data.physionet import sha256_file
    from ecglm.train.mets import METRICS_FILE, MODEL_FILE, load_mets

    encoder_dir, dev = Path(encoder_dir), resolve_device(device)
    mets = load_mets(encoder_dir, device=str(dev))
    if mets.cfg.text_encoder != METS_KINDS[kind]:
        raise StageError(f"{encoder_dir}: trained with text encoder {mets.cfg.text_encoder!r}; --kind {kind} needs "
                         f"{METS_KINDS[kind]!r}")  # fmt: skip
    store = open_signals(signals)
    out = []
    with torch.no_grad():
        for start in range(0, len(eval_set), batch_size):
            x = _read_signals(store, eval_set.rows[start : start + batch_size]).to(dev)  # [b, 12, T]
            out.append(mets.scores(x, eval_set.task).double().cpu().numpy())  # [b, 5]
    metrics_path = encoder_dir / METRICS_FILE
    text = json.loads(metrics_path.read_text(encoding="utf-8")).get("text_encoder") if metrics_path.is_file() else None
    identity = {"encoder": {"path": str(encoder_dir), "weights_sha256": sha256_file(encoder_dir / MODEL_FILE),
                            "base_width": mets.cfg.base_width, "dilation": mets.cfg.dilation},
                "text_encoder": text or {"name": mets.cfg.text_encoder, "llm": mets.cfg.llm}}  # fmt: skip
    if mets.cfg.text_encoder == "llm":  # the tables' LLM column and the protocol's list of LLMs
        identity["llm"] = {"name_or_path": mets.cfg.llm, "revision": identity["text_encoder"].get("revision")}
        identity["llm_label"] = llm_label(mets.cfg.llm)
    return np.concatenate(out), identity


def _check_signals(records: str | os.PathLike, signals: str | os.PathLike) -> None:
    """The signals array goes with the records table (row for row), or StageError naming both."""
    from ecglm.data.ecg_data import check_store

    check_store(records, read_records(Path(records), ["ecg_id"]).height, signals)


def evaluate_baseline(
    kind: str,
    records: str | os.PathLike,
    task: str,
    *,
    signals: str | os.PathLike | None = None,
    encoder: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    progress: bool = True,
    probe_fraction: float = PROBE_FRACTION,
    seed: int = 1234,
) -> dict[str, Any]:
    """Evaluate baseline ``kind`` (:data:`KINDS`) on ``task``'s evaluation set; write and return the JSON."""
    if kind not in KINDS:
        raise StageError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    eval_set = load_eval_set(records, task)
    scores = None
    if kind == "majority":
        majority = majority_class(records, task)
        y_pred, probs = majority_predictions(eval_set, majority)
        identity: dict[str, Any] = {
            "majority_class": task_classes(task)[majority],
            "training_class_counts": training_class_counts(records, task),
        }
        scoring = "the most frequent single class among the training ECGs"
    elif kind in PROBE_KINDS:
        if encoder is None or signals is None:
            raise StageError(f"--kind {kind} needs --encoder (a `ecglm train-simclr` folder) and --signals")
        _check_signals(records, signals)
        scores, identity = probe_scores(kind, encoder, signals, records, eval_set, fraction=probe_fraction, seed=seed,
                                        batch_size=batch_size, device=device)  # fmt: skip
        y_pred, probs = predictions_from_scores(scores)
        which = "the SimCLR-pretrained" if kind == "simclr" else "a randomly initialised (seeded)"
        scoring = (f"a linear probe (logistic regression) on {which} ResNet-18's frozen embeddings, fitted on "
                   f"{probe_fraction:.0%} of the single-class training ECGs (per class, at least one)")  # fmt: skip
    elif kind in METS_KINDS:
        if encoder is None or signals is None:
            raise StageError(f"--kind {kind} needs --encoder (a `ecglm train-mets` folder) and --signals")
        _check_signals(records, signals)
        scores, identity = mets_scores(kind, encoder, signals, eval_set, batch_size=batch_size, device=device)
        y_pred, probs = predictions_from_scores(scores)
        named = f"the LLM {identity['llm_label']}" if kind == "llm-mets" else "a TF-IDF + random projection text encoder"
        scoring = (f"zero-shot: argmax of the cosine similarity between the METS ECG embedding and each class "
                   f"description embedded by {named} (probabilities: softmax over similarity / temperature)")  # fmt: skip
    else:
        if encoder is None or signals is None:
            raise StageError("--kind supervised needs --encoder (a `ecglm train-encoder` folder) and --signals")
        _check_signals(records, signals)
        scores, identity = supervised_scores(encoder, signals, eval_set, batch_size=batch_size, device=device, progress=progress)
        y_pred, probs = predictions_from_scores(scores)
        scoring = "argmax of the supervised ResNet-18's logits over the task's five classes (probabilities: softmax)"
    setting = {
        "kind": "baseline",
        "mode": kind,
        "prompt": None,
        "control": "none",
        "seed": seed if kind in PROBE_KINDS else None,
        "scoring": scoring,
        "text_has_ecg": False,
        "text_has_findings": False,
        "model": {"baseline": kind, **identity},
        "inputs": {"records": str(records), "signals": None if signals is None else str(signals)},
    }
    doc = result_record(eval_set, y_pred, probs, setting, scores)
    write_result(doc, out)
    log.info("%s baseline on %s: accuracy %.3f, macro F1 %.3f", kind, task, doc["accuracy"], doc["f1"])
    return doc


# ------------------------------------------------------------------------------------------------ CLI
def register(subparsers) -> None:
    """Add the ``evaluate-baseline`` subcommand."""
    b = subparsers.add_parser(
        "evaluate-baseline",
        help="baselines on the zero-shot evaluation sets: majority class, supervised ResNet-18, SimCLR's linear probe, METS",
        description=(
            "Evaluate a baseline on the same evaluation set (test-split ECGs with exactly one of the task's "
            "classes) and write the same JSON as `ecglm evaluate`. majority: always the most frequent class "
            "among the TRAINING ECGs with exactly one class (probabilities one-hot). supervised: a ResNet-18 "
            "written by `ecglm train-encoder` with --set label_column=<the task's column> --set "
            "classes=<its five classes>; the argmax over the task's five logits. simclr / random-probe: a "
            "linear probe on the frozen SimCLR (or a random) encoder, fitted on --probe-fraction of the training "
            "labels. mets / llm-mets: zero-shot, the class whose description the METS ECG embedding is nearest."
        ),
    )
    _common_inputs(b)
    b.add_argument("--kind", required=True, choices=KINDS, help="which baseline")
    b.add_argument("--encoder", type=Path, help="--kind supervised: the folder written by `ecglm train-encoder` for this "
                   "task; --kind simclr / random-probe: the folder of `ecglm train-simclr` (random-probe reads its shape); "
                   "--kind mets / llm-mets: the folder of `ecglm train-mets` (text encoder tfidf / llm)")
    b.add_argument("--probe-fraction", type=float, default=PROBE_FRACTION,
                   help=f"--kind simclr / random-probe: the share of the training labels the probe is fitted on "
                        f"(default {PROBE_FRACTION}: the paper's 5%%)")
    b.add_argument("--seed", type=int, default=1234, help="--kind simclr / random-probe: the seed of the probe's "
                   "training subset (and of random-probe's encoder)")
    b.add_argument("--batch-size", type=int, default=64, help="ECGs per forward pass of the supervised encoder (default 64)")
    b.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    b.set_defaults(func=run_baseline)


def run_baseline(args: argparse.Namespace) -> int:
    evaluate_baseline(
        args.kind, args.records, args.task, signals=args.signals, encoder=args.encoder,
        batch_size=args.batch_size, device=args.device, out=args.out, progress=not args.no_progress,
        probe_fraction=args.probe_fraction, seed=args.seed,
    )  # fmt: skip
    return 0
