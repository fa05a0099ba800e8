"""`ecglm train-simclr`: the SimCLR baseline's encoder (the paper's Table 2 few-shot row).

The same ResNet-18 1D as ECG-LM's encoder (:class:`ecglm.models.encoder.ResNet1d18`), pretrained with no
label at all: two augmented views of every training ECG are pulled together and pushed away from the
other ECGs of the batch (SimCLR's NT-Xent loss on a 2-layer projection head, Chen et al. 2020). The
baseline is then a linear probe on the frozen embeddings, fitted on 5% of the training labels
(`ecglm evaluate-baseline --kind simclr`); `--kind random-probe` fits the same probe on a randomly
initialised encoder of the same shape, the reference that pretraining must beat.

The paper gives no SimCLR settings; ours, each a setting of :class:`SimCLRConfig`: the augmentations of
ECG contrastive learning (Mehari & Strodthoff 2022, Kiyasseh et al. 2021): per-lead amplitude scaling,
Gaussian noise, a random time-out (a stretch set to zero), a random circular time shift, and random lead
dropout (the encoder's lead mask), each view drawn independently; temperature 0.1, AdamW, cosine decay.

Writes, into ``--out`` (each file atomically): ``model.safetensors`` (the encoder; the projection head
and the unused class head are not saved), ``config.yaml`` (the resolved :class:`SimCLRConfig`) and
``metrics.json`` (the training loss per epoch, the validation loss per epoch on fixed views, the epoch
kept: the lowest validation loss). :func:`load_simclr_encoder` reads the folder back. On CPU the same
config and thread count give bit-identical weights (one seeded generator per random stream).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ecglm.core.atomic import atomic_path, write_text_atomic
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS, N_LEADS
from ecglm.core.stage_config import DETERMINISTIC_DOC, DEVICE_PATTERN, StageConfig, setting
from ecglm.data.ecg_data import check_store, read_records
from ecglm.train.loop import BestEpoch, lr_factor
from ecglm.train.runtime import resolve_device, torch_threads

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
SAFETENSORS_FORMAT = "ecglm-simclr-encoder-v1"


@dataclass
class SimCLRConfig(StageConfig):
    """SimCLR pretraining settings (ours throughout: the paper names the baseline, not its settings)."""

    LABEL: ClassVar[str] = "simclr config"
    SECTION_DESCRIPTION: ClassVar[str] = """The SimCLR baseline's contrastive pretraining of a ResNet-18 1D (ecglm
        train-simclr; no labels); its linear probe is evaluate.probe_fraction of the training labels. The seed
        is the top-level one."""

    epochs: int = setting(20, "Training epochs.", ge=1)
    lr: float = setting(1e-3, "Peak learning rate (AdamW, cosine decay to 0).", gt=0, allow_inf_nan=False)
    batch_size: int = setting(128, "ECGs per batch (each gives two views: 2 x batch_size embeddings).", ge=2)
    weight_decay: float = setting(1e-4, "AdamW weight decay.", ge=0)
    temperature: float = setting(0.1, "NT-Xent temperature.", gt=0, allow_inf_nan=False)
    projection_dim: int = setting(64, "Output size of the 2-layer projection head (discarded after training).", ge=1)
    scale_range: list[float] = setting([0.8, 1.2], "Range [lo, hi] of the per-lead amplitude factor of a view.",
                                       min_length=2, max_length=2)
    noise_mv: float = setting(0.05, "Standard deviation of the Gaussian noise added to a view (mV).", ge=0)
    timeout_fraction: float = setting(0.2, "Longest share of the record that a view's time-out zeroes (0 = off).",
                                      ge=0, le=0.9)
    lead_dropout: float = setting(0.5, "Probability that a view loses leads (as in the encoder's pretraining).",
                                  ge=0, le=1)
    lead_dropout_k: list[int] = setting([1, 11], "Range [lo, hi] (inclusive) of how many leads a dropped view loses.",
                                        min_length=2, max_length=2)
    base_width: int = setting(64, "ResNet-18's base width (embedding = 8 x base_width).", ge=1)
    dilation: int = setting(1, "Dilation of stages 3 and 4 (as the encoder section's).", ge=1)
    seed: int = setting(1234, "Random seed (the rules pass the top-level seed).", by_rule=True, ge=0)
    device: str = setting("auto", "auto (CUDA if available), cpu or cuda.", pattern=DEVICE_PATTERN)
    deterministic: bool = setting(True, DETERMINISTIC_DOC)
    max_train_records: int | None = setting(None, "A seeded random subset of the training ECGs (null = all).", ge=2)

    def validate(self) -> None:
        lo, hi = self.lead_dropout_k
        if not 0 <= lo <= hi <= N_LEADS - 1:
            raise StageError(f"simclr config: lead_dropout_k must be [lo, hi] with 0 <= lo <= hi <= {N_LEADS - 1}, "
                             f"got {self.lead_dropout_k!r}")  # fmt: skip
        s_lo, s_hi = self.scale_range
        if not 0 < s_lo <= s_hi:
            raise StageError(f"simclr config: scale_range must be [lo, hi] with 0 < lo <= hi, got {self.scale_range!r}")


# ----------------------------------------------------------------------------------------- the views


def augment(x: Any, cfg: SimCLRConfig, gen: Any) -> tuple[Any, Any]:
    """One random view of a batch ``x`` [B, 12, T] (float32 microvolts): ``(view [B, 12, T], lead mask [B, 12])``.

    Per-lead amplitude scaling, Gaussian noise, a circular time shift, a time-out, lead dropout; every draw
    from ``gen`` (a CPU torch.Generator), so a seed gives the same views."""
    import torch

    from ecglm.data.ecg_data import random_lead_masks

    b, n_leads, t = x.shape
    lo, hi = cfg.scale_range
    scale = lo + (hi - lo) * torch.rand(b, n_leads, 1, generator=gen)  # [B, 12, 1]
    view = x * scale + cfg.noise_mv * 1000.0 * torch.randn(b, n_leads, t, generator=gen)  # [B, 12, T] uV
    shift = torch.randint(0, t, (b,), generator=gen)  # [B]
    index = (torch.arange(t)[None, :] + shift[:, None]) % t  # [B, T]
    view = torch.gather(view, 2, index[:, None, :].expand(b, n_leads, t))
    if cfg.timeout_fraction > 0:
        length = (torch.rand(b, generator=gen) * cfg.timeout_fraction * t).long()  # [B]
        start = (torch.rand(b, generator=gen) * (t - length)).long()  # [B]
        pos = torch.arange(t)[None, :]  # [1, T]
        out = (pos >= start[:, None]) & (pos < (start + length)[:, None])  # [B, T]
        view = view.masked_fill(out[:, None, :], 0.0)
    mask = random_lead_masks(b, cfg.lead_dropout, tuple(cfg.lead_dropout_k), gen)  # [B, 12]
    mask = torch.where(mask.any(dim=1, keepdim=True), mask, torch.ones_like(mask))  # never drop every lead
    return view, mask


def nt_xent(z1: Any, z2: Any, temperature: float) -> Any:
    """SimCLR's loss: each of the 2B projections [B, D] must pick its own other view among the 2B - 1 others."""
    import torch
    import torch.nn.functional as F

    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # [2B, D]
    sim = z @ z.T / temperature  # [2B, 2B]
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)  # [2B]
    return F.cross_entropy(sim.float(), targets)


# ----------------------------------------------------------------------------------------- the loop


def _rows(records: Path, signals: Path, cfg: SimCLRConfig) -> dict[str, np.ndarray]:
    """The signals rows of the train and val splits (every ECG: no label is read)."""
    table = read_records(records, ["split"], patients=False)
    check_store(records, table.height, signals)
    split = np.asarray(table["split"].to_list(), dtype=object)
    rows = {name: np.flatnonzero(split == name).astype(np.int64) for name in ("train", "val")}
    if len(rows["train"]) < 2:
        raise StageError(f"{records}: SimCLR needs at least 2 training ECGs, found {len(rows['train'])}")
    if cfg.max_train_records is not None and len(rows["train"]) > cfg.max_train_records:
        from ecglm.core.seeding import numpy_rng

        rows["train"] = np.sort(numpy_rng(cfg.seed, "subset").choice(rows["train"], cfg.max_train_records, replace=False))
    return rows


def _batch(store: np.ndarray, rows: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.asarray(store[np.sort(rows)], dtype=np.float32))  # [b, 12, T] uV


def epoch_loss(model: Any, head: Any, store: np.ndarray, rows: np.ndarray, cfg: SimCLRConfig, gen: Any,
               device: Any, optimizer: Any = None, scheduler: Any = None) -> float:
    """One pass over ``rows`` in batches of cfg.batch_size (a last batch of one ECG is skipped: no negatives);
    trains when an optimizer is given. Returns the mean NT-Xent loss."""
    import torch

    losses = []
    for start in range(0, len(rows), cfg.batch_size):
        chunk = rows[start : start + cfg.batch_size]
        if len(chunk) < 2:
            continue
        x = _batch(store, chunk)  # [b, 12, T]
        (v1, m1), (v2, m2) = augment(x, cfg, gen), augment(x, cfg, gen)
        with torch.set_grad_enabled(optimizer is not None):
            z1 = head(model.forward_features(v1.to(device), m1.to(device)))  # [b, D]
            z2 = head(model.forward_features(v2.to(device), m2.to(device)))  # [b, D]
            loss = nt_xent(z1, z2, cfg.temperature)
        if not torch.isfinite(loss):
            raise StageError(f"SimCLR training diverged: loss {loss.item()} (lr {cfg.lr}); lower lr (--set lr=...)")
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


def train_simclr(cfg: SimCLRConfig, records: str | os.PathLike, signals: str | os.PathLike, out_dir: str | os.PathLike,
                 progress: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Pretrain the encoder contrastively; write model.safetensors, config.yaml and metrics.json into ``out_dir``."""
    import torch
    from tqdm import tqdm

    from ecglm.core.seeding import deterministic_torch, numpy_rng, seed_everything, torch_generator
    from ecglm.data.ecg_data import open_signals
    from ecglm.models.encoder import ResNet1d18, count_parameters

    records, signals, out_dir = Path(records), Path(signals), Path(out_dir)
    rows = _rows(records, signals, cfg)
    store = open_signals(signals)
    device = resolve_device(cfg.device)
    deterministic = deterministic_torch(cuda=device.type == "cuda") if cfg.deterministic else contextlib.nullcontext()
    with torch_threads(threads), deterministic:
        seed_everything(cfg.seed)
        model = ResNet1d18(n_classes=1, base_width=cfg.base_width, dilation=cfg.dilation).to(device)
        head = torch.nn.Sequential(torch.nn.Linear(model.embed_dim, model.embed_dim), torch.nn.ReLU(),
                                   torch.nn.Linear(model.embed_dim, cfg.projection_dim)).to(device)  # fmt: skip
        params = [p for name, p in model.named_parameters() if not name.startswith("head.")] + list(head.parameters())
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = cfg.epochs * max(1, math.ceil(len(rows["train"]) / cfg.batch_size))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup_steps=0))  # cosine to 0
        log.info("SimCLR: ResNet1d18 (base width %d, dilation %d, %d parameters), %d training and %d validation "
                 "ECGs, device %s", cfg.base_width, cfg.dilation, count_parameters(model), len(rows["train"]),
                 len(rows["val"]), device)  # fmt: skip
        order_rng, view_gen = numpy_rng(cfg.seed, "shuffle"), torch_generator(cfg.seed, "simclr_views")
        train_loss, val_loss, best = [], [], BestEpoch()
        for epoch in tqdm(range(1, cfg.epochs + 1), desc="simclr", unit="epoch", disable=not progress, file=sys.stderr):
            model.train()
            head.train()
            train_loss.append(epoch_loss(model, head, store, order_rng.permutation(rows["train"]), cfg, view_gen, device,
                                         optimizer, scheduler))  # fmt: skip
            model.eval()
            head.eval()
            fixed = torch_generator(cfg.seed, "simclr_val_views")  # the same validation views every epoch
            val_loss.append(epoch_loss(model, head, store, rows["val"], cfg, fixed, device) if len(rows["val"]) >= 2
                            else None)  # fmt: skip
            score = val_loss[-1] if val_loss[-1] is not None else -epoch  # no validation: keep the last epoch
            best.update(score, epoch, lambda: {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                                               if not k.startswith("head.")})  # fmt: skip
            log.info("epoch %d/%d: train loss %.4f, val loss %s", epoch, cfg.epochs, train_loss[-1],
                     "n/a" if val_loss[-1] is None else f"{val_loss[-1]:.4f}")  # fmt: skip
    metrics = {"epochs": cfg.epochs, "best_epoch": best.epoch, "train_loss": train_loss, "val_loss": val_loss,
               "n": {name: int(len(r)) for name, r in rows.items()}, "device": str(device),
               "parameters": count_parameters(model) - sum(p.numel() for p in model.head.parameters()),
               "records": str(records), "signals": str(signals)}  # fmt: skip
    write_outputs(out_dir, cfg, metrics, best.state)
    log.info("wrote %s, %s, %s in %s (epoch %d kept)", MODEL_FILE, CONFIG_FILE, METRICS_FILE, out_dir, best.epoch)
    return metrics


def write_outputs(out_dir: Path, cfg: SimCLRConfig, metrics: dict[str, Any], state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / CONFIG_FILE, cfg.to_yaml())
    write_text_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        header = {"format": SAFETENSORS_FORMAT, "leads": list(LEADS), "base_width": cfg.base_width,
                  "best_epoch": metrics["best_epoch"]}  # fmt: skip
        save_file(state, str(tmp), metadata={"ecglm": json.dumps(header, sort_keys=True)})


def build_encoder(cfg: SimCLRConfig, seed: int | None = None) -> Any:
    """A ResNet-18 of the config's shape, randomly initialised (seeded when ``seed`` is given); eval mode."""
    import torch

    from ecglm.models.encoder import ResNet1d18

    if seed is not None:
        torch.manual_seed(seed)
    return ResNet1d18(n_classes=1, base_width=cfg.base_width, dilation=cfg.dilation).eval()


def load_simclr_encoder(directory: str | os.PathLike, device: str = "cpu") -> tuple[Any, SimCLRConfig]:
    """The encoder written by :func:`train_simclr` (eval mode, its class head unused) and its config."""
    from ecglm.train.train_encoder import read_weights

    directory = Path(directory)
    cfg = SimCLRConfig.from_yaml(directory / CONFIG_FILE)
    model = build_encoder(cfg)
    path = directory / MODEL_FILE
    state = read_weights(path, "SimCLR encoder weights not found (run `ecglm train-simclr`)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"head.weight", "head.bias"}:
        raise StageError(f"{path}: weights do not match {directory / CONFIG_FILE} (missing {missing}, "
                         f"unexpected {unexpected})")  # fmt: skip
    return model.to(device).eval(), cfg


# ------------------------------------------------------------------------------------------------ CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-simclr",
        help="the SimCLR baseline: contrastive pretraining of the ResNet-18 1D on unlabeled ECGs",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--records", required=True, type=Path, help="records.parquet written by `ecglm prepare`")
    p.add_argument("--signals", required=True, type=Path, help="signals_{fs}.npy written by `ecglm prepare`")
    p.add_argument("--out", required=True, type=Path, help="output folder for model.safetensors, config.yaml, metrics.json")
    SimCLRConfig.add_options(p, threads=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    train_simclr(SimCLRConfig.from_args(args), args.records, args.signals, args.out, progress=not args.no_progress,
                 threads=args.threads)  # fmt: skip
    return 0
