"""`ecglm align`: train the ECG encoder + projector against a FROZEN causal LM (the paper's alignment).

:func:`align` is the whole training, top to bottom (nanoGPT style): load the LLM (frozen, eval), the
encoder (pretrained by ``ecglm train-encoder``, or random: the "no encoder pretraining" ablation), build
:class:`ecglm.models.multimodal.ECGLM`, read the ``train`` / ``val`` pairs (:class:`ecglm.train.pairs_data.PairsDataset`),
AdamW over ``model.trainable_parameters()`` only, linear warm-up then cosine decay (per optimizer step),
gradient accumulation, bf16 autocast on CUDA, validation loss, checkpoints, and at the end::

    OUT/model.safetensors   encoder + projector tensors only (no LLM weight)   (ECGLM.save)
    OUT/config.json         the base LLM, projector, encoder spec              (ECGLM.save)
    OUT/config.yaml         the resolved AlignConfig
    OUT/metrics.json        final train/val loss, steps, seconds, sample counts, global batch, ...
    OUT/log.jsonl           one JSON line per optimizer step (step, epoch, lr, train_loss, n_tokens,
                            val_loss where evaluated) and events ({"event": "resumed", ...})

Learning rates: the projector's peak is ``lr``, the encoder's ``lr * encoder_lr_scale`` (the paper: one lr,
scale 1; above 1 the encoder learns faster from the reports what its diagnostic pretraining never needed,
such as the beat-to-beat variation of sinus arrhythmia, and forgets more of its diagnostic features).

The loop itself (data order, loss averaging, resume checkpoints, DDP) is :mod:`ecglm.train.loop`, shared
with the instruction fine-tunings. Here: with ``balance_tasks`` each epoch draws ``n`` class-balanced
samples with replacement (:mod:`ecglm.train.sample_balance`, whose labels come from ``--records``).
**Global batch = batch_size x grad_accum x world_size.** The paper gives batch 12 and accumulation 8
on 2 A100s without saying whether 12 is per GPU; our default is a global batch of 96 on one process,
so under ``torchrun --nproc-per-node 2`` set ``grad_accum=4`` to keep 96. Resume: with ``--resume-dir``
a rerun continues from the last checkpoint (:mod:`ecglm.train.loop`); after a successful end the folder
is removed. Under DDP the frozen LLM's tensors are left out of the synchronisation and BatchNorm running
statistics are rank 0's (DDP broadcasts buffers from rank 0 each forward).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

from ecglm.core.errors import StageError
from ecglm.core.stage_config import DETERMINISTIC_DOC, DEVICE_PATTERN, StageConfig, setting
from ecglm.models import PROJECTORS
from ecglm.models.llm import DTYPES
from ecglm.text.prompts import TASK_NAMES
from ecglm.train.ecg_effect import ecg_effect
from ecglm.train.loop import (
    Dist,
    Run,
    check_warmup,
    finish,
    make_optimizer,
    make_schedule,
    session,
    train,
    wrap_ddp,
)

log = logging.getLogger(__name__)

#: Fields that may change between a run and its resumption (they do not change the trained weights).
RESUME_FREE_FIELDS = ("num_workers", "checkpoint_every", "eval_every", "device", "ecg_check_samples", "max_val_samples")


# ------------------------------------------------------------------------------------------- the config


@dataclass
class AlignConfig(StageConfig):
    """Alignment settings. Defaults are the paper's where it gives them (commented "paper"), else ours."""

    LABEL: ClassVar[str] = "align config"
    SECTION_DESCRIPTION: ClassVar[str] = """Alignment of encoder + projector with the frozen LLM (ecglm align); llm and
        encoder_dir are set by the rules. Defaults are the paper's where it gives them."""

    llm: str | None = setting(None, """The base LLM: a local folder (save_pretrained layout) or a Hub id (hf:NAME);
        required.""", by_rule=True)
    llm_revision: str | None = setting(None, "The Hub revision to pin (a commit hash for a reproducible run).",
                                       by_rule=True)
    trust_remote_code: bool = setting(False, "Run a checkpoint's own Python code (never, unless asked).",
                                      by_rule=True)
    dtype: Literal[DTYPES] = setting("auto", """LLM dtype: auto (bf16 on a bf16-capable GPU, else float32),
        bfloat16 or float32.""")
    projector: Literal[PROJECTORS] = setting("linear", """How the ECG embedding becomes the LLM's <ecg> token:
        linear (the paper's) or vocab (a softmax blend of the frozen word embeddings).""")
    num_ecg_tokens: int = setting(1, "Embeddings the ECG becomes (paper: 1).", ge=1)
    vocab_temperature: float = setting(1.0, "Softmax temperature of the vocab projector.", gt=0)
    vocab_hard: bool = setting(False, """Vocab projector: each ECG token is one real word (the argmax, Gumbel noise
        in training) with the softmax's gradient (straight-through Gumbel-softmax), instead of a blend of words.""")
    max_length: int = setting(1024, "Tokens per sample (longer texts are truncated after the <ecg> token).", ge=8)
    encoder_dir: str | None = setting(None, "The train-encoder output folder; null = random weights (an ablation).",
                                      by_rule=True)
    encoder_base_width: int = setting(64, """ResNet-18 width of a randomly initialised encoder (the no-pretraining
        variant).""", ge=1)
    encoder_dilation: int = setting(1, """ResNet-18 dilation (encoder.dilation) of a randomly initialised encoder
        (the no-pretraining variant).""", ge=1)
    freeze_encoder: bool = setting(False, "Train the projector only (encoder fixed, BatchNorm in eval mode).")
    encoder_lr_scale: float = setting(1.0, """The encoder's peak learning rate as a multiple of lr (the projector's
        is lr). The paper uses one lr (1). Above 1 the encoder learns faster from the reports what its diagnostic
        pretraining never needed (sinus arrhythmia), and forgets more of its diagnostic features (README,
        align).""", gt=0, allow_inf_nan=False)
    balance_tasks: list[Literal[TASK_NAMES]] = setting([], """Tasks whose classes balance the training draws
        (ecglm/train/sample_balance.py). Each epoch draws as many samples as there are, with replacement, from an
        equal mixture of each task's class-balanced distribution (a sample's class is its ECG's one class of the
        task, else "other"). [] visits every sample once per epoch, as the paper does.""", unique=True)
    balance_power: float = setting(1.0, """How far balance_tasks balances. 1 draws every class equally often; 0
        keeps the data's frequencies (a class of m samples gets a share proportional to m ** (1 - power)).""",
                                   ge=0, le=1)
    epochs: int = setting(20, "Alignment epochs (paper: 20).", ge=1)
    warmup_epochs: float = setting(4.0, "Linear warm-up epochs before the cosine decay (paper: 4; at most epochs).",
                                   ge=0)
    lr: float = setting(1e-4, "Peak learning rate (paper: 1e-4).", gt=0, allow_inf_nan=False)
    weight_decay: float = setting(0.03, "AdamW weight decay (paper: 0.03).", ge=0)
    batch_size: int = setting(12, "Samples per micro-batch per process (paper: 12).", ge=1)
    grad_accum: int = setting(8, """Micro-batches per optimizer step per process (paper: 8); global batch =
        batch_size x grad_accum x GPUs.""", ge=1)
    max_steps: int | None = setting(None, """Cap on optimizer steps for smoke runs (null = none); the schedule spans
        the capped run.""", ge=1)
    eval_every: int = setting(0, "Optimizer steps between validation passes (0 = at the end of every epoch).", ge=0)
    checkpoint_every: int = setting(200, """Optimizer steps between resume checkpoints in results/{run}/.resume/
        (0 = none).""", ge=0)
    gradient_checkpointing: bool = setting(False, """Recompute the LLM's layer activations in the backward pass
        (saves GPU memory; not the encoder's: it is small, and recomputing it would update its BatchNorm
        statistics twice per step).""")
    amp: bool = setting(True, "bf16 autocast on CUDA (no effect on the CPU).")
    grad_clip: float = setting(0.0, """Clip the norm of the trainable parameters' gradients to this before each
        optimizer step (ours; 0 = off, the default, so no figure changes unless you ask).""", ge=0,
                               allow_inf_nan=False)
    deterministic: bool = setting(True, DETERMINISTIC_DOC)
    ecg_check_samples: int = setting(256, """After training, score this many validation samples (seeded) with their
        own ECGs and with other records' ECGs, and write the loss difference with a bootstrap interval that
        resamples records to metrics.json (ecg_check): does the ECG reach the LLM? 0 = no check.""", ge=0)
    max_val_samples: int = setting(0, """Validation passes score a seeded subset of this many val samples (0 = all):
        the val loss of a smoke-scale run of a large LLM in minutes.""", ge=0)
    seed: int = setting(1234, "Random seed (the rules pass the top-level seed).", by_rule=True, ge=0)
    num_workers: int = setting(0, "DataLoader worker processes per process (0 = read in the main process).", ge=0)
    device: str = setting("auto", "auto (CUDA if available), cpu or cuda (under torchrun: cuda:LOCAL_RANK).",
                          pattern=DEVICE_PATTERN)

    def validate(self) -> None:
        check_warmup(self.LABEL, self.warmup_epochs, self.epochs)


# ------------------------------------------------------------------------------------- pure helpers


# ------------------------------------------------------------------------------------- resume state


# ------------------------------------------------------------------------------------------- DDP


# ------------------------------------------------------------------------------------------- training


def build_model(cfg: AlignConfig, device: Any) -> tuple[Any, Any, Any]:
    """``(model, llm, tokenizer)``: the frozen LLM, the encoder (pretrained or random) and the projector."""
    import torch

    from ecglm.core.seeding import seed_everything, stream_seed
    from ecglm.data.labels import SUPERCLASSES
    from ecglm.models.encoder import ResNet1d18
    from ecglm.models.llm import load_llm
    from ecglm.models.multimodal import ECGLM, vocab_exclusions
    from ecglm.text.prompts import ECG_TOKEN
    from ecglm.train.train_encoder import load_encoder

    seed_everything(cfg.seed)  # identical on every rank: same seed
    llm, tokenizer = load_llm(
        cfg.llm, revision=cfg.llm_revision, dtype=cfg.dtype, device=device, trust_remote_code=cfg.trust_remote_code
    )
    torch.manual_seed(stream_seed(cfg.seed, "init"))
    if cfg.encoder_dir:
        encoder, enc_cfg = load_encoder(cfg.encoder_dir, device=str(device))
        log.info("encoder: %s (base width %d, pretrained)", cfg.encoder_dir, enc_cfg.base_width)
    else:
        encoder = ResNet1d18(n_classes=len(SUPERCLASSES), base_width=cfg.encoder_base_width, dilation=cfg.encoder_dilation)
        log.info("encoder: random init, base width %d, dilation %d (no encoder pretraining)",
                 cfg.encoder_base_width, cfg.encoder_dilation)  # fmt: skip
    model = ECGLM(
        encoder, llm, tokenizer.convert_tokens_to_ids(ECG_TOKEN),
        projector=cfg.projector, num_ecg_tokens=cfg.num_ecg_tokens, temperature=cfg.vocab_temperature,
        vocab_hard=cfg.vocab_hard, vocab_excluded_ids=vocab_exclusions(tokenizer, llm),
    )  # fmt: skip
    if cfg.gradient_checkpointing:
        if hasattr(llm, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
            llm.activation_checkpointing_enable({"use_reentrant": False})
        else:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.freeze_encoder:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    return model, llm, tokenizer


def load_data(cfg: AlignConfig, pairs_dir: Path, signals: Path, tokenizer: Any, records: Path | None):
    """``(train_set, val_set, draw_weights, draw_shares)``: the pairs and, with ``balance_tasks``, the draws."""
    from ecglm.train.pairs_data import PairsDataset

    train_set = PairsDataset(pairs_dir, "train", signals, tokenizer, cfg.max_length, num_ecg_tokens=cfg.num_ecg_tokens)
    val_set = PairsDataset(pairs_dir, "val", signals, tokenizer, cfg.max_length, num_ecg_tokens=cfg.num_ecg_tokens)
    if len(train_set) == 0:
        raise StageError(f"{pairs_dir / 'train'}: no training sample")
    if not cfg.balance_tasks:
        return train_set, val_set, None, {}
    from ecglm.train.sample_balance import balanced_weights, group_shares, sample_classes

    groups = sample_classes(records, train_set.ecg_ids, cfg.balance_tasks)
    draw_weights = balanced_weights(groups, cfg.balance_power)  # [n_train]
    draw_shares = {t: group_shares(g, draw_weights) for t, g in zip(cfg.balance_tasks, groups)}
    for t, shares in draw_shares.items():
        log.info("balanced draws (power %g): %s shares %s", cfg.balance_power, t,
                 ", ".join(f"{g} {v:.3f}" for g, v in shares.items()))  # fmt: skip
    return train_set, val_set, draw_weights, draw_shares


def setup(cfg: AlignConfig, pairs_dir: Path, signals: Path, records: Path | None, device: Any, dist_info: Dist) -> Run:
    """The model, the data, the schedule and the optimizer of a run (not yet resumed)."""
    from ecglm.core.seeding import torch_generator, worker_init_fn
    from ecglm.train.pairs_data import PairsCollator

    model, llm, tokenizer = build_model(cfg, device)
    params = [p for p in model.trainable_parameters() if p.requires_grad]
    if dist_info.is_main:
        log.info("trainable parameters: %s (LLM frozen: %s)", f"{sum(p.numel() for p in params):,}",
                 f"{sum(p.numel() for p in llm.parameters()):,}")  # fmt: skip
    train_set, val_set, draw_weights, draw_shares = load_data(cfg, pairs_dir, signals, tokenizer, records)
    schedule = make_schedule(cfg, len(train_set), len(val_set), dist_info.world_size)
    optimizer, scheduler = make_optimizer(cfg, model, params, schedule)
    loader_kw: dict[str, Any] = dict(
        collate_fn=PairsCollator(tokenizer.pad_token_id), num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", worker_init_fn=worker_init_fn,
        generator=torch_generator(cfg.seed, "workers"),
    )  # fmt: skip
    return Run(
        cfg=cfg, dist=dist_info, device=device, llm=llm, tokenizer=tokenizer, model=model,
        ddp_model=wrap_ddp(model, device, dist_info.world_size), train_set=train_set, val_set=val_set,
        draw_weights=draw_weights, draw_shares=draw_shares, schedule=schedule, optimizer=optimizer,
        scheduler=scheduler, params=params, loader_kw=loader_kw,
        identity={k: v for k, v in cfg.to_dict().items() if k not in RESUME_FREE_FIELDS}, name="align",
    )  # fmt: skip


def align(
    cfg: AlignConfig,
    pairs_dir: str | os.PathLike,
    signals: str | os.PathLike,
    out_dir: str | os.PathLike,
    resume_dir: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    threads: int | None = None,
    records: str | os.PathLike | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any] | None:
    """Train encoder + projector against the frozen LLM; write OUT (module docstring) on rank 0.

    Guarantees: the LLM's weights are never changed; every file is written atomically; with
    ``resume_dir`` a rerun after an interruption continues from the last checkpoint and ends with the
    weights an uninterrupted run ends with (CPU, same thread count). ``on_step(step)`` is called after
    each optimizer step (and its checkpoint); an exception it raises stops the run like an interruption.
    Returns the metrics dict (rank 0; None on other ranks).
    """
    from ecglm.data.ecg_data import open_signals

    if not cfg.llm:
        raise StageError("align config: llm must name the base LLM (a folder or a Hub id): --set llm=PATH")
    if cfg.balance_tasks and records is None:
        raise StageError(f"align config: balance_tasks {cfg.balance_tasks} needs the records table (--records)")
    pairs_dir, signals, out_dir = Path(pairs_dir), Path(signals), Path(out_dir)
    resume_dir = Path(resume_dir) if resume_dir is not None else None
    open_signals(signals)  # fail early on a bad array
    t_start = time.time()
    metrics = None
    with session(cfg, threads) as (device, dist_info):
        run = setup(cfg, pairs_dir, signals, Path(records) if records is not None else None, device, dist_info)
        llm_before = train(run, out_dir, resume_dir, progress, on_step)
        if dist_info.is_main:  # does the ECG reach the LLM? (ecglm.train.ecg_effect)
            effect = ecg_effect(run.model, run.val_set, run.loader_kw["collate_fn"], max_samples=cfg.ecg_check_samples,
                                batch_size=cfg.batch_size, seed=cfg.seed, device=run.device, amp=cfg.amp)  # fmt: skip
            extra = {"llm": cfg.llm, "pairs": str(pairs_dir), "signals": str(signals),
                     "balanced_draws": run.draw_shares,  # per balanced task: each class's share of the training draws
                     "ecg_check": effect}  # val loss with the true vs other records' ECGs  # fmt: skip
            metrics = finish(run, out_dir, resume_dir, llm_before, time.time() - t_start, extra)
    return metrics


# ------------------------------------------------------------------------------------------------ CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "align",
        help="train the ECG encoder + projector against the frozen LLM (alignment)",
        description=(
            "Align the ECG encoder and a projector with a FROZEN causal LM on the expansion pairs: next-token "
            "loss on the report and lead descriptions, AdamW, linear warm-up then cosine decay, gradient "
            "accumulation. Writes model.safetensors (encoder + projector only), config.json, config.yaml, "
            "metrics.json and log.jsonl into --out. With --resume-dir, checkpoints go there every "
            "checkpoint_every steps and a rerun resumes. Under torchrun it trains with DDP; global batch = "
            "batch_size x grad_accum x processes. Defaults are the paper's (20 epochs, 4 warm-up, lr 1e-4, "
            "weight decay 0.03, batch 12, accumulation 8)."
        ),
    )
    p.add_argument("--pairs", required=True, type=Path,
                   help="pairs folder written by `ecglm expand` (train/ and val/ part-*.parquet shards)")  # fmt: skip
    p.add_argument("--signals", "--signals-npy", dest="signals", required=True, type=Path,
                   help="signals_{fs}.npy written by `ecglm prepare` (int16 [N, 12, T]; the pairs' signal_row indexes "
                        "it). Under torchrun write --signals-npy: torchrun's own parser rejects --signals as an "
                        "ambiguous abbreviation of its --signals-to-handle")  # fmt: skip
    p.add_argument("--out", required=True, type=Path,
                   help="output folder: model.safetensors, config.json, config.yaml, metrics.json, log.jsonl")  # fmt: skip
    p.add_argument("--records", type=Path, default=None,
                   help="records.parquet written by `ecglm prepare`: the class labels that balance_tasks balances "
                        "(required when balance_tasks is set)")  # fmt: skip
    p.add_argument("--resume-dir", type=Path, default=None,
                   help="folder for resume checkpoints, OUTSIDE --out (e.g. results/{run}/.resume/align/{variant}); "
                        "a rerun resumes from it; removed after a successful end (default: no checkpoints)")  # fmt: skip
    AlignConfig.add_options(p, threads=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    align(
        AlignConfig.from_args(args), args.pairs, args.signals, args.out, args.resume_dir,
        progress=not args.no_progress, threads=args.threads, records=args.records,
    )  # fmt: skip
    return 0
