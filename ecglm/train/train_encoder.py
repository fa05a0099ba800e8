"""`ecglm train-encoder`: pretrain the ResNet-18 1D ECG encoder on PTB-XL's diagnostic superclasses.

Multi-label classification of NORM, MI, STTC, CD, HYP (binary cross-entropy on the logits; the paper's
"cross-entropy"), trained on the ``train`` split of records.parquet, selected on the ``val`` split,
reported on ``val`` and ``test``. Random lead dropout during training (each sample, with probability
``lead_dropout``, loses k leads, k uniform in ``lead_dropout_k``) makes the encoder work on lead
subsets: the lead-dropped alignment samples and single-lead recordings.

Writes, into ``--out`` (each file atomically):

- ``model.safetensors``: the weights of the epoch with the best validation macro AUC (12 leads);
- ``config.yaml``: the resolved :class:`EncoderConfig` (defaults, --config and --set applied);
- ``metrics.json``: per split (val, test) and per lead set (:data:`EVAL_LEAD_SETS`) the macro AUC and
  the per-class AUC (scikit-learn ``roc_auc_score``), the classes, the number of ECGs per split,
  the train loss and validation macro AUC per epoch, and the chosen epoch.

:func:`load_encoder` reads a written folder back (the alignment stage uses it).

Reproducibility: on CPU, a seed (and thread count) gives bit-identical weights: torch's deterministic
algorithms, one explicit generator per random stream (shuffling, lead dropout, the record subset),
and lead dropout drawn in the main process, so the result does not depend on ``num_workers``.
On CUDA the forward/backward runs under bf16 autocast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np

from ecglm.core.atomic import atomic_path, write_text_atomic
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS, N_LEADS
from ecglm.core.stage_config import DETERMINISTIC_DOC, DEVICE_PATTERN, StageConfig, setting
from ecglm.data.ecg_data import check_store, multi_hot, read_records
from ecglm.data.labels import SUPERCLASSES
from ecglm.train.loop import lr_factor
from ecglm.train.runtime import autocast, resolve_device, torch_threads

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")
#: The lead subsets every final evaluation reports (name -> leads); "all12" selects the best epoch.
EVAL_LEAD_SETS: dict[str, tuple[str, ...]] = {
    "all12": LEADS,
    "limb6": ("I", "II", "III", "aVR", "aVL", "aVF"),
    "precordial6": ("V1", "V2", "V3", "V4", "V5", "V6"),
    "I": ("I",),
    "II": ("II",),
}
#: Written into the safetensors header so a reader can tell what the file holds.
SAFETENSORS_FORMAT = "ecglm.encoder.ResNet1d18/v1"  # a file format tag, kept as first written (not the module path)


# ------------------------------------------------------------------------------------------- the config


@dataclass
class EncoderConfig(StageConfig):
    """Encoder pretraining settings. Defaults are the paper's (20 epochs, lr 1e-2, batch 64, AdamW).

    Where the paper is silent, the default is ours and says so in its comment.
    """

    LABEL: ClassVar[str] = "encoder config"
    SECTION_DESCRIPTION: ClassVar[str] = """The ResNet-18 1D encoder pretraining (ecglm train-encoder); the seed is
        the top-level one. Defaults are the paper's where it gives them."""

    epochs: int = setting(20, "Training epochs (paper: 20).", ge=1)
    lr: float = setting(1e-2, "Peak learning rate (paper: 1e-2).", gt=0, allow_inf_nan=False)
    batch_size: int = setting(64, "ECGs per batch (paper: 64).", ge=1)
    weight_decay: float = setting(1e-2, "AdamW weight decay (ours; the paper gives none).", ge=0)
    optimizer: Literal["adamw"] = setting("adamw", "Optimizer; AdamW as in the paper (the only choice).")
    lr_schedule: Literal["cosine", "constant"] = setting(
        "cosine", "Learning-rate schedule (ours): cosine decay to 0 over all steps, or constant.")
    lead_dropout: float = setting(0.5, """Probability that a training ECG loses leads (random lead dropout, so the
        encoder works on subsets; ours).""", ge=0, le=1)
    lead_dropout_k: list[int] = setting([1, 11], """Range [lo, hi] (inclusive) of how many leads a dropped-out
        training ECG loses (ours).""", min_length=2, max_length=2)
    base_width: int = setting(64, "ResNet-18's base width (64 = the standard ResNet-18; embedding = 8 x base_width).",
                              ge=1)
    dilation: int = setting(1, """Dilation of the second convolution of every block in stages 3 and 4 (ours; 1 = the
        standard ResNet-18, whose last layer sees 4.35 s at 100 Hz). 4 widens it to the whole 10 s record at 100 Hz
        at the same parameters and cost, so that rhythms defined over a breath (sinus arrhythmia) can be seen.""",
                            ge=1)
    seed: int = setting(1234, "Random seed (the rules pass the top-level seed).", by_rule=True, ge=0)
    num_workers: int = setting(0, "DataLoader worker processes (0 = read in the main process).", ge=0)
    device: str = setting("auto", "auto (CUDA if available), cpu or cuda.", pattern=DEVICE_PATTERN)
    amp: bool = setting(True, "bf16 autocast on CUDA (no effect on the CPU).")
    grad_clip: float = setting(0.0, """Clip the norm of the trainable parameters' gradients to this before each
        optimizer step (ours; 0 = off, the default, so no figure changes unless you ask).""", ge=0,
                               allow_inf_nan=False)
    deterministic: bool = setting(True, DETERMINISTIC_DOC)
    max_train_records: int | None = setting(
        None, "A seeded random subset of the training ECGs, for smoke runs (null = all).", ge=1)
    label_column: str = setting("diagnostic_superclass", """The records.parquet label-list column the encoder is
        pretrained on (the diagnostic superclasses).""")
    classes: list[str] = setting(list(SUPERCLASSES), "The classes of the head, in order.", min_length=1, unique=True)
    drop_unlabeled: bool = setting(True, "Leave out ECGs with none of the classes, as the PTB-XL benchmark does.")

    def validate(self) -> None:
        lo, hi = self.lead_dropout_k
        if not 0 <= lo <= hi <= N_LEADS - 1:
            raise StageError(f"encoder config: lead_dropout_k must be [lo, hi] with 0 <= lo <= hi <= {N_LEADS - 1}, "
                             f"got {self.lead_dropout_k!r}")

    # -- reading and writing



# --------------------------------------------------------------------------------------------- the data


@dataclass
class SplitData:
    """The rows of records.parquet (= signals rows) of each split and their multi-hot targets."""

    rows: dict[str, np.ndarray]  # split -> int64 [M]
    targets: dict[str, np.ndarray]  # split -> float32 [M, C]
    n_unlabeled: dict[str, int]  # split -> ECGs with none of the classes (left out if drop_unlabeled)
    ignored_labels: dict[str, int]  # label -> count of labels outside cfg.classes
    n_samples: int  # T


def load_split_data(cfg: EncoderConfig, records: Path, signals: Path) -> SplitData:
    """Read the split and label columns of records.parquet and check them against the signals array."""
    table = read_records(records, ["split", cfg.label_column], patients=False)
    _, n_samples = check_store(records, table.height, signals)

    split = np.asarray(table["split"].to_list(), dtype=object)
    bad = sorted({str(s) for s in split if s not in SPLITS})
    if bad:
        raise StageError(f"{records}: split values {bad} are not among {list(SPLITS)}")
    targets, ignored = multi_hot(table[cfg.label_column].to_list(), cfg.classes)
    if ignored:
        log.warning("labels of %s outside the configured classes are not trained on: %s",
                    cfg.label_column, dict(sorted(ignored.items())))  # fmt: skip
    labeled = targets.sum(axis=1) > 0
    rows, tgts, n_unlabeled = {}, {}, {}
    for name in SPLITS:
        in_split = split == name
        n_unlabeled[name] = int((in_split & ~labeled).sum())
        keep = in_split & labeled if cfg.drop_unlabeled else in_split
        idx = np.flatnonzero(keep)
        if name == "train" and cfg.max_train_records is not None and len(idx) > cfg.max_train_records:
            from ecglm.core.seeding import numpy_rng

            idx = np.sort(numpy_rng(cfg.seed, "subset").choice(idx, cfg.max_train_records, replace=False))
        rows[name], tgts[name] = idx.astype(np.int64), targets[idx]
    if len(rows["train"]) == 0:
        raise StageError(f"{records}: no training ECG with a label among {cfg.classes} in column {cfg.label_column}")
    return SplitData(rows, tgts, n_unlabeled, dict(ignored), n_samples)


# ----------------------------------------------------------------------------------------- evaluation


def auc_report(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class and macro ROC AUC. y_true, y_prob: [M, C].

    A class whose targets are all 0 or all 1 has no AUC (null); the macro AUC is the mean over the
    classes that have one (null if none has).
    """
    from sklearn.metrics import roc_auc_score

    per_class: dict[str, float | None] = {}
    for j, name in enumerate(classes):
        column = y_true[:, j]
        if len(column) == 0 or column.min() == column.max():
            per_class[name] = None
        else:
            per_class[name] = float(roc_auc_score(column, y_prob[:, j]))
    defined = [v for v in per_class.values() if v is not None]
    return {
        "macro_auc": float(np.mean(defined)) if defined else None,
        "per_class_auc": per_class,
        "n": int(len(y_true)),
        "n_positive": {name: int(y_true[:, j].sum()) for j, name in enumerate(classes)},
    }


def predict(model: Any, loader: Any, lead_sets: dict[str, Sequence[str]], device: Any, amp: bool) -> dict[str, np.ndarray]:
    """Sigmoid probabilities float32 [M, C] per lead set, in the loader's (sequential) order."""
    import torch

    from ecglm.models.encoder import lead_mask_from_names

    set_masks = {name: lead_mask_from_names(list(leads))[0].to(device) for name, leads in lead_sets.items()}  # [12]
    out: dict[str, list[np.ndarray]] = {name: [] for name in lead_sets}
    model.eval()
    with torch.no_grad():
        for batch in loader:
            x = batch["signal"].to(device, non_blocking=True)  # [B, 12, T] int16
            for name, mask in set_masks.items():
                masks = mask.expand(x.shape[0], N_LEADS)  # [B, 12]
                with autocast(device, amp):
                    logits = model(x, masks)  # [B, C]
                out[name].append(torch.sigmoid(logits.float()).cpu().numpy())
    return {name: np.concatenate(parts) if parts else np.zeros((0, model.n_classes), np.float32)
            for name, parts in out.items()}  # fmt: skip


# ------------------------------------------------------------------------------------------- training


@dataclass
class EncoderRun:
    """One pretraining run: the model, its optimizer and schedule, the loaders (built by :func:`setup`)."""

    cfg: EncoderConfig
    device: Any  # torch.device
    model: Any  # ResNet1d18
    optimizer: Any
    scheduler: Any
    train_loader: Any
    eval_loaders: dict[str, Any]  # val, test
    dropout_gen: Any  # torch.Generator of the random lead dropout
    steps_total: int


def setup(cfg: EncoderConfig, data: SplitData, signals: Path, device: Any) -> EncoderRun:
    """Seed, build the ResNet-18, AdamW, the loaders (seeded order) and the per-batch lr schedule."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from ecglm.core.seeding import seed_everything, torch_generator, worker_init_fn
    from ecglm.data.ecg_data import EcgDataset
    from ecglm.models.encoder import ResNet1d18, count_parameters

    seed_everything(cfg.seed)
    model = ResNet1d18(n_classes=len(cfg.classes), base_width=cfg.base_width, dilation=cfg.dilation).to(device)
    log.info("ResNet1d18 (base width %d, dilation %d): %d parameters", cfg.base_width, cfg.dilation,
             count_parameters(model))  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader_kw: dict[str, Any] = dict(
        batch_size=cfg.batch_size, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
        worker_init_fn=worker_init_fn, persistent_workers=cfg.num_workers > 0,
    )  # fmt: skip
    train_set = EcgDataset(signals, data.rows["train"], data.targets["train"])
    train_loader = DataLoader(
        train_set, sampler=RandomSampler(train_set, generator=torch_generator(cfg.seed, "shuffle")),
        generator=torch_generator(cfg.seed, "workers"), **loader_kw,
    )  # fmt: skip
    eval_loaders = {
        name: DataLoader(EcgDataset(signals, data.rows[name], data.targets[name]), shuffle=False, **loader_kw)
        for name in EVAL_SPLITS
    }
    steps_total = cfg.epochs * len(train_loader)
    if cfg.lr_schedule == "cosine":
        schedule = lambda step: lr_factor(step, steps_total, warmup_steps=0)  # noqa: E731  (cosine to 0)
    else:
        schedule = lambda step: 1.0  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return EncoderRun(cfg, device, model, optimizer, scheduler, train_loader, eval_loaders,
                      torch_generator(cfg.seed, "lead_dropout"), steps_total)  # fmt: skip


def train_step(run: EncoderRun, batch: dict[str, Any], epoch: int, step: int) -> float:
    """One optimizer step on a batch with random lead dropout; returns the batch's mean loss."""
    import torch

    from ecglm.data.ecg_data import random_lead_masks

    cfg, device = run.cfg, run.device
    x = batch["signal"].to(device, non_blocking=True)  # [B, 12, T] int16 microvolts
    y = batch["target"].to(device, non_blocking=True)  # [B, C]
    given = batch["lead_mask"]  # [B, 12] the dataset's own mask (all True for records)
    mask = given & random_lead_masks(x.shape[0], cfg.lead_dropout, tuple(cfg.lead_dropout_k), run.dropout_gen)
    mask = torch.where(mask.any(dim=1, keepdim=True), mask, given)  # never drop every lead
    with autocast(device, cfg.amp):
        logits = run.model(x, mask.to(device))  # [B, C]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
    if not torch.isfinite(loss):
        raise StageError(
            f"encoder training diverged: loss {loss.item()} at epoch {epoch}, batch {step + 1} "
            f"(lr {cfg.lr}); lower lr (--set lr=...)"
        )
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    return loss.item()


def train_epoch(run: EncoderRun, epoch: int, bar: Any) -> float:
    """One pass over the training ECGs; returns the epoch's mean training loss."""
    run.model.train()
    loss_sum, seen = 0.0, 0
    for step, batch in enumerate(run.train_loader):
        loss = train_step(run, batch, epoch, step)
        loss_sum += loss * batch["signal"].shape[0]
        seen += batch["signal"].shape[0]
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}")
    return loss_sum / seen


def validation_auc(run: EncoderRun, data: SplitData) -> float | None:
    """The 12-lead macro AUC on the validation ECGs (None without any)."""
    if not len(data.rows["val"]):
        return None
    probs = predict(run.model, run.eval_loaders["val"], {"all12": LEADS}, run.device, run.cfg.amp)["all12"]
    return auc_report(data.targets["val"], probs, run.cfg.classes)["macro_auc"]


def fit(run: EncoderRun, data: SplitData, progress: bool) -> tuple[dict[str, Any], int, list[float], list[float | None]]:
    """All epochs, keeping the weights of the best validation AUC: ``(best state, best epoch, train
    losses, validation AUCs)``; the model ends with the best weights loaded."""
    from tqdm import tqdm

    cfg = run.cfg
    train_loss: list[float] = []
    val_auc_per_epoch: list[float | None] = []
    best_score, best_epoch, best_state = -math.inf, 0, None
    bar = tqdm(total=run.steps_total, desc="train-encoder", unit="batch", disable=not progress, dynamic_ncols=True)
    for epoch in range(1, cfg.epochs + 1):
        train_loss.append(train_epoch(run, epoch, bar))
        val_auc = validation_auc(run, data)
        val_auc_per_epoch.append(val_auc)
        score = -math.inf if val_auc is None else val_auc
        improved = score > best_score or best_state is None or (score == best_score == -math.inf)
        if improved:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in run.model.state_dict().items()}
        log.info("epoch %d/%d: train loss %.4f, val macro AUC %s%s", epoch, cfg.epochs, train_loss[-1],
                 "n/a" if val_auc is None else f"{val_auc:.4f}", " (best)" if improved else "")  # fmt: skip
        bar.set_postfix(epoch=epoch, loss=f"{train_loss[-1]:.4f}",
                        val_auc="n/a" if val_auc is None else f"{val_auc:.3f}")  # fmt: skip
    bar.close()
    assert best_state is not None  # epochs >= 1
    run.model.load_state_dict(best_state)
    return best_state, best_epoch, train_loss, val_auc_per_epoch


def write_outputs(out_dir: Path, cfg: EncoderConfig, metrics: dict[str, Any], best_state: dict[str, Any]) -> None:
    """config.yaml, metrics.json and model.safetensors (the best epoch's weights), each atomically."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / CONFIG_FILE, cfg.to_yaml())
    write_text_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        # ONE metadata key: safetensors writes a multi-key metadata map in no fixed order (not bit-identical)
        header = {"format": SAFETENSORS_FORMAT, "classes": list(cfg.classes), "leads": list(LEADS),
                  "base_width": cfg.base_width, "best_epoch": metrics["best_epoch"]}  # fmt: skip
        save_file(best_state, str(tmp), metadata={"ecglm": json.dumps(header, sort_keys=True)})


def train_encoder(
    cfg: EncoderConfig,
    records: str | os.PathLike,
    signals: str | os.PathLike,
    out_dir: str | os.PathLike,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train the encoder and write model.safetensors, config.yaml and metrics.json into ``out_dir``.

    Guarantees: the weights written are those of the epoch with the best 12-lead validation macro AUC
    (the last epoch if no validation AUC can be computed); every file is written atomically; on CPU
    the same cfg (and thread count) gives bit-identical weights. Returns the metrics dict.
    """
    from ecglm.core.seeding import deterministic_torch
    from ecglm.models.encoder import count_parameters

    records, signals, out_dir = Path(records), Path(signals), Path(out_dir)
    data = load_split_data(cfg, records, signals)
    device = resolve_device(cfg.device)
    n_split = {name: len(data.rows[name]) for name in SPLITS}
    log.info("ECGs per split (with a label among %s): %s; %d samples per lead; device %s",
             cfg.classes, n_split, data.n_samples, device)  # fmt: skip
    if n_split["val"] == 0:
        log.warning("%s has no validation ECG: the last epoch's weights are kept", records)
    deterministic = deterministic_torch(cuda=device.type == "cuda") if cfg.deterministic else contextlib.nullcontext()
    with torch_threads(threads), deterministic:
        run = setup(cfg, data, signals, device)
        best_state, best_epoch, train_loss, val_auc_per_epoch = fit(run, data, progress)
        results: dict[str, Any] = {}
        for name in EVAL_SPLITS:
            probs = predict(run.model, run.eval_loaders[name], EVAL_LEAD_SETS, device, cfg.amp)
            results[name] = {ls: auc_report(data.targets[name], p, cfg.classes) for ls, p in probs.items()}

    metrics = {
        "classes": list(cfg.classes),
        "label_column": cfg.label_column,
        "n": n_split,
        "n_unlabeled": data.n_unlabeled,
        "unlabeled_left_out": cfg.drop_unlabeled,
        "ignored_labels": data.ignored_labels,
        "n_samples": data.n_samples,
        "epochs": cfg.epochs,
        "best_epoch": best_epoch,
        "train_loss": train_loss,
        "val_macro_auc_per_epoch": val_auc_per_epoch,
        "lead_sets": {name: list(leads) for name, leads in EVAL_LEAD_SETS.items()},
        **results,
        "device": str(device),
        "parameters": count_parameters(run.model),
        "records": str(records),
        "signals": str(signals),
    }
    write_outputs(out_dir, cfg, metrics, best_state)
    for name in EVAL_SPLITS:
        summary = ", ".join(
            f"{ls} {r['macro_auc']:.3f}" if r["macro_auc"] is not None else f"{ls} n/a" for ls, r in results[name].items()
        )
        log.info("%s macro AUC (epoch %d): %s", name, best_epoch, summary)
    log.info("wrote %s, %s, %s in %s", MODEL_FILE, CONFIG_FILE, METRICS_FILE, out_dir)
    return metrics


def read_weights(path: Path, missing: str) -> dict[str, Any]:
    """The tensors of the safetensors file ``path``; StageError "``path``: ``missing``" when there is none, and
    naming the file when it cannot be read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise StageError(f"{path}: {missing}") from None
    except (SafetensorError, OSError) as err:
        raise StageError(f"{path}: not a readable safetensors file ({err})") from err


def load_encoder(directory: str | os.PathLike, device: str = "cpu") -> tuple[Any, EncoderConfig]:
    """Read ``model.safetensors`` + ``config.yaml`` written by :func:`train_encoder`; the model is in eval mode."""
    from ecglm.models.encoder import ResNet1d18

    directory = Path(directory)
    cfg = EncoderConfig.from_yaml(directory / CONFIG_FILE)
    model = ResNet1d18(n_classes=len(cfg.classes), base_width=cfg.base_width, dilation=cfg.dilation)
    path = directory / MODEL_FILE
    state = read_weights(path, "encoder weights not found (run `ecglm train-encoder`)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise StageError(f"{path}: weights do not match {directory / CONFIG_FILE}: {err}") from err
    return model.to(device).eval(), cfg


# ------------------------------------------------------------------------------------------------ CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-encoder",
        help="pretrain the ResNet-18 1D ECG encoder on diagnostic superclasses (multi-label)",
        description=(
            "Train the ResNet-18 1D ECG encoder on the train split of records.parquet (multi-label binary "
            "cross-entropy over the diagnostic superclasses, random lead dropout), keep the epoch with the "
            "best validation macro AUC and write model.safetensors, config.yaml and metrics.json (val/test "
            "AUCs with 12 leads and lead subsets) into --out. Defaults are the paper's settings (20 epochs, "
            "lr 1e-2, batch 64, AdamW)."
        ),
    )
    p.add_argument("--records", required=True, type=Path, help="records.parquet written by `ecglm prepare`")
    p.add_argument("--signals", required=True, type=Path,
                   help="signals_{fs}.npy written by `ecglm prepare` (int16 [N, 12, T], row-aligned with --records)")  # fmt: skip
    p.add_argument("--out", required=True, type=Path, help="output folder for model.safetensors, config.yaml, metrics.json")
    EncoderConfig.add_options(p, threads=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    train_encoder(EncoderConfig.from_args(args), args.records, args.signals, args.out, progress=not args.no_progress, threads=args.threads)
    return 0
