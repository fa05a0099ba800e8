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

Loss: the next-token cross-entropy of the labelled tokens (report and lead descriptions), averaged over
ALL labelled tokens of the optimizer step (every micro-batch of every process), so the gradient does not
depend on how a step is split into micro-batches or processes.

Data order: epoch ``e`` visits ``permutation(seed, e)`` of the training samples (with
``balance_tasks``, ``n`` class-balanced draws with replacement instead: :mod:`ecglm.train.sample_balance`,
whose labels come from ``--records``); optimizer step ``s`` of the epoch takes the
``G = batch_size * grad_accum * world_size`` samples at positions ``[s*G, (s+1)*G)`` (the ``n mod G``
left over are skipped that epoch; a different set each epoch). Within a step, micro-batch ``m`` of
process ``r`` is the slice ``m * world_size + r`` of ``batch_size`` samples, so one process with
``grad_accum * world_size`` micro-batches sees the same micro-batches (the same BatchNorm batches) as
``world_size`` processes with ``grad_accum`` each.
**Global batch = batch_size x grad_accum x world_size.** The paper gives batch 12 and accumulation 8
on 2 A100s without saying whether 12 is per GPU; our default is a global batch of 96 on one process,
so under ``torchrun --nproc-per-node 2`` set ``grad_accum=4`` to keep 96.

Resume: every ``checkpoint_every`` optimizer steps (and never inside OUT, which Snakemake deletes when
a job fails) ``RESUME/step-NNNNNNNN/`` is written: ``trainable.safetensors`` (encoder + projector
tensors), ``state.pt`` (optimizer, scheduler, step/epoch/position, RNG states of python, numpy, torch,
cuda as tensors and plain lists: loadable with ``torch.load(weights_only=True)``) and ``history.json``
(the log so far); then ``RESUME/latest`` names it (atomic), then older step folders are removed.
Running the same command again resumes from ``latest`` and ends where an uninterrupted run ends
(bit-identical trainable weights on CPU for a thread count). After a successful end RESUME is removed.

DDP: launched by ``torchrun`` (``WORLD_SIZE > 1``), each process joins the process group (nccl on
CUDA, gloo on CPU), takes its micro-batches of the same global order, and runs the model under
``DistributedDataParallel(find_unused_parameters=True)`` (the encoder's classification head gets no
gradient; the frozen LLM's tensors are left out of DDP's synchronisation). Only rank 0 writes files
and logs. BatchNorm running statistics are rank 0's (DDP broadcasts buffers from rank 0 each forward).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Literal

import numpy as np

from ecglm.core.atomic import atomic_path, write_text_atomic
from ecglm.core.errors import StageError
from ecglm.core.seeding import numpy_rng
from ecglm.core.stage_config import DETERMINISTIC_DOC, DEVICE_PATTERN, StageConfig, setting
from ecglm.models import PROJECTORS
from ecglm.models.llm import DTYPES
from ecglm.text.prompts import TASK_NAMES
from ecglm.train.ecg_effect import ecg_effect

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.jsonl"
RESUME_WEIGHTS = "trainable.safetensors"
RESUME_STATE = "state.pt"
RESUME_HISTORY = "history.json"
RESUME_LATEST = "latest"
RESUME_FORMAT = "ecglm-align-resume/1"
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
        if self.warmup_epochs > self.epochs:
            raise StageError(f"align config: warmup_epochs must be in [0, epochs], got {self.warmup_epochs!r} "
                             f"with epochs {self.epochs}")


# ------------------------------------------------------------------------------------- pure helpers


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based): linear warm-up to 1 over
    ``warmup_steps`` steps (step 0 gets ``1 / warmup_steps``), then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_order(n: int, seed: int, epoch: int, weights: np.ndarray | None = None) -> np.ndarray:
    """The training order of epoch ``epoch``, a pure function of (seed, epoch, weights): a permutation of
    ``range(n)``, or with ``weights`` [n] (draw probabilities, :mod:`ecglm.train.sample_balance`) ``n`` draws
    with replacement."""
    from ecglm.core.seeding import stream_seed

    rng = np.random.default_rng(np.random.SeedSequence([stream_seed(seed, "shuffle"), int(epoch)]))
    if weights is not None:
        if len(weights) != n:
            raise ValueError(f"{len(weights)} weights for {n} samples")
        return rng.choice(n, size=n, replace=True, p=weights).astype(np.int64)  # [n]
    return rng.permutation(n).astype(np.int64)  # [n]


def step_indices(order: np.ndarray, step_in_epoch: int, global_batch: int) -> np.ndarray:
    """The ``global_batch`` sample indices of one optimizer step (wrapping around when n < global_batch)."""
    positions = (step_in_epoch * global_batch + np.arange(global_batch)) % len(order)
    return order[positions]  # [G]


def micro_batches(indices: np.ndarray, batch_size: int, grad_accum: int, world_size: int, rank: int) -> list[list[int]]:
    """This process's ``grad_accum`` micro-batches of a step: micro-batch m is slice ``m * world_size + rank``."""
    out = []
    for m in range(grad_accum):
        k = m * world_size + rank
        out.append([int(i) for i in indices[k * batch_size : (k + 1) * batch_size]])
    return out


# ------------------------------------------------------------------------------------- resume state


def _rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and plain lists (``weights_only``-loadable)."""
    import torch

    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(py_state), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    version, py_state, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in py_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((str(name), keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    resume_dir: Path, step: int, model: Any, optimizer: Any, scheduler: Any, extra: dict[str, Any], history: list[dict]
) -> Path:
    """Write ``resume_dir/step-NNNNNNNN/`` (weights, state, history), point ``latest`` at it, drop older ones."""
    import torch
    from safetensors.torch import save_file

    folder = resume_dir / f"step-{step:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.trainable_state_dict().items()}
    with atomic_path(folder / RESUME_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": RESUME_FORMAT, "step": str(step)})
    state = {
        "format": RESUME_FORMAT,
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        **extra,
    }
    with atomic_path(folder / RESUME_STATE) as tmp:
        torch.save(state, tmp)
    write_text_atomic(folder / RESUME_HISTORY, json.dumps(history) + "\n")
    write_text_atomic(resume_dir / RESUME_LATEST, folder.name + "\n")
    for old in resume_dir.glob("step-*"):
        if old.is_dir() and old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(resume_dir: Path) -> tuple[Path, dict[str, Any], dict[str, Any], list[dict]] | None:
    """The latest checkpoint in ``resume_dir``: (folder, trainable tensors, state, history), or None if none.

    Raises StageError naming the file when a checkpoint exists but cannot be read.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    latest = resume_dir / RESUME_LATEST
    if not latest.is_file():
        return None
    folder = resume_dir / latest.read_text(encoding="utf-8").strip()
    try:
        tensors = load_file(str(folder / RESUME_WEIGHTS))
        state = torch.load(folder / RESUME_STATE, map_location="cpu", weights_only=True)
        history = json.loads((folder / RESUME_HISTORY).read_text(encoding="utf-8"))
    except pickle.UnpicklingError as err:  # torch's own text would suggest weights_only=False: never here
        why = ("not trusted: it holds Python objects beyond tensors and plain data, so ecglm align did not write "
               "it and it is not loaded (loading it could run code)") if "global" in str(err).lower() else (
               "corrupt (not a readable checkpoint)")  # fmt: skip
        raise StageError(f"{folder / RESUME_STATE}: {why}; delete {resume_dir} to start over") from None
    except (OSError, SafetensorError, RuntimeError, ValueError, json.JSONDecodeError) as err:
        raise StageError(f"{folder}: unreadable resume checkpoint ({err}); delete {resume_dir} to start over") from err
    if state.get("format") != RESUME_FORMAT:
        raise StageError(f"{folder / RESUME_STATE}: not an align checkpoint (format {state.get('format')!r})")
    return folder, tensors, state, history


# ------------------------------------------------------------------------------------------- DDP


@dataclass
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE > 1``): nccl on CUDA, gloo on CPU."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        here = True
    return Dist(rank=rank, world_size=world, local_rank=local, initialized_here=here)


def _all_sum(values: list[float], dist_info: Dist, device: Any) -> list[float]:
    """Sum ``values`` over all processes (float64)."""
    if dist_info.world_size == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def _checkpoint_llm_layers(llm: Any) -> None:
    """Make HF gradient checkpointing work on the frozen LLM kept in eval mode: the decoder layers check
    ``self.training`` before checkpointing, so only those layer objects are flagged (their attention and
    MLP submodules, which hold any dropout, stay in eval mode)."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # older transformers: its checkpointing needs train mode; leave it off
        return
    for module in llm.modules():
        if isinstance(module, GradientCheckpointingLayer) and getattr(module, "gradient_checkpointing", False):
            module.training = True


# ------------------------------------------------------------------------------------------- training


@dataclass
class Schedule:
    """How many samples make an optimizer step and how many steps the run has."""

    global_batch: int  # batch_size x grad_accum x world_size
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_every: int  # optimizer steps between validation passes


@dataclass
class Run:
    """Everything one alignment run holds, built by :func:`setup` and read by the loop's functions."""

    cfg: AlignConfig
    dist: Dist
    device: Any  # torch.device
    llm: Any
    tokenizer: Any
    model: Any  # ECGLM
    ddp_model: Any  # the model, or its DistributedDataParallel wrapper
    train_set: Any  # PairsDataset
    val_set: Any  # PairsDataset
    draw_weights: np.ndarray | None  # [n_train] class-balanced draw probabilities, or None
    draw_shares: dict[str, dict[str, float]]
    schedule: Schedule
    optimizer: Any
    scheduler: Any
    params: list[Any]  # the trainable parameters (what the optimizer gets, what the clip sees)
    loader_kw: dict[str, Any]
    identity: dict[str, Any]  # the config fields a resume must match
    step: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)
    last_train: float | None = None
    last_val: float | None = None


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


def make_schedule(cfg: AlignConfig, n_train: int, n_val: int, world: int) -> Schedule:
    """Steps per epoch, total and warm-up steps, validation interval (see the module docstring)."""
    global_batch = cfg.batch_size * cfg.grad_accum * world
    steps_per_epoch = max(1, n_train // global_batch)
    if n_train < global_batch:
        log.warning("%d training samples < global batch %d: each step repeats samples", n_train, global_batch)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup_steps = round(total_steps * cfg.warmup_epochs / cfg.epochs)
    log.info("train %d / val %d samples; global batch %d = %d x %d x %d processes; %d steps/epoch, "
             "%d steps (%d warm-up)", n_train, n_val, global_batch, cfg.batch_size,
             cfg.grad_accum, world, steps_per_epoch, total_steps, warmup_steps)  # fmt: skip
    return Schedule(global_batch, steps_per_epoch, total_steps, warmup_steps, cfg.eval_every or steps_per_epoch)


def make_optimizer(cfg: AlignConfig, model: Any, params: list[Any], schedule: Schedule) -> tuple[Any, Any]:
    """AdamW with the encoder's parameter group (empty when frozen: left out) and the projector's (always
    last), and the per-step warm-up + cosine schedule."""
    import torch

    encoder_ids = {id(p) for p in model.encoder.parameters()}
    param_groups = [
        {"params": [p for p in params if id(p) in encoder_ids], "lr": cfg.lr * cfg.encoder_lr_scale},
        {"params": [p for p in params if id(p) not in encoder_ids], "lr": cfg.lr},
    ]
    param_groups = [g for g in param_groups if g["params"]]
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, schedule.total_steps, schedule.warmup_steps)
    )
    return optimizer, scheduler


def wrap_ddp(model: Any, device: Any, world: int) -> Any:
    """The model under DistributedDataParallel when there are several processes (the frozen LLM's tensors
    left out of its synchronisation); the model itself otherwise."""
    if world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    llm_names = [f"llm.{n}" for n, _ in model.llm.named_parameters()]
    llm_names += [f"llm.{n}" for n, _ in model.llm.named_buffers()]
    if hasattr(DDP, "_set_params_and_buffers_to_ignore_for_model"):  # skip broadcasting the frozen LLM
        DDP._set_params_and_buffers_to_ignore_for_model(model, llm_names)
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)


def resume(run: Run, resume_dir: Path | None) -> None:
    """Continue from the latest checkpoint in ``resume_dir`` (same settings and process count), or seed a
    fresh run's data order and dropout."""
    from ecglm.core.seeding import seed_everything

    ckpt = load_checkpoint(resume_dir) if resume_dir is not None else None
    if ckpt is None:
        seed_everything(run.cfg.seed + run.dist.rank)
        return
    folder, tensors, state, history = ckpt
    if state.get("config") != json.dumps(run.identity, sort_keys=True) or state.get("world_size") != run.dist.world_size:
        raise StageError(
            f"{folder}: the checkpoint is of another configuration or process count "
            f"({state.get('world_size')} processes); use the same settings or delete {resume_dir}"
        )
    _load_trainable(run.model, tensors, folder)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"][run.dist.rank] if isinstance(state["rng"], list) else state["rng"])
    run.step = int(state["step"])
    run.history = [h for h in history if h.get("step", 0) <= run.step]
    run.history.append({"event": "resumed", "step": run.step, "from": str(folder)})
    log.info("resumed from %s (step %d of %d)", folder, run.step, run.schedule.total_steps)


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
        identity={k: v for k, v in cfg.to_dict().items() if k not in RESUME_FREE_FIELDS},
    )  # fmt: skip


def set_train_mode(run: Run) -> None:
    """Encoder and projector in train mode (a frozen encoder's BatchNorm stays in eval); the LLM in eval."""
    run.model.train()
    if run.cfg.freeze_encoder:
        run.model.encoder.eval()
    if run.cfg.gradient_checkpointing:
        _checkpoint_llm_layers(run.llm)


def val_indices(n: int, max_samples: int, seed: int) -> list[int]:
    """The val samples a validation pass scores: all, or a seeded subset of ``max_samples`` (sorted)."""
    if not max_samples or n <= max_samples:
        return list(range(n))
    return sorted(int(i) for i in numpy_rng(seed, "val_subset").permutation(n)[:max_samples])


def validation_loss(run: Run) -> float | None:
    """Token-mean loss over the val split (each process a strided share; summed over processes)."""
    import torch
    from torch.utils.data import DataLoader

    from ecglm.train.runtime import autocast

    if len(run.val_set) == 0:
        return None
    rank, world, bs = run.dist.rank, run.dist.world_size, run.cfg.batch_size
    mine = val_indices(len(run.val_set), run.cfg.max_val_samples, run.cfg.seed)[rank::world]
    batches = [mine[i : i + bs] for i in range(0, len(mine), bs)]
    loss_sum, n_tok = 0.0, 0.0
    run.model.eval()
    with torch.no_grad():
        for batch in DataLoader(run.val_set, batch_sampler=batches, **run.loader_kw):
            with autocast(run.device, run.cfg.amp):
                out = run.model(batch["input_ids"], batch["attention_mask"], batch["signal"],
                                batch["lead_mask"], batch["labels"])  # fmt: skip
            loss_sum += float(out.loss) * out.n_targets
            n_tok += out.n_targets
    set_train_mode(run)
    loss_sum, n_tok = _all_sum([loss_sum, n_tok], run.dist, run.device)
    return loss_sum / n_tok if n_tok else None


def epoch_batches(run: Run, epoch: int, pos: int, steps_here: int) -> Iterator[dict[str, Any]]:
    """This process's micro-batches for optimizer steps ``pos .. pos + steps_here`` of ``epoch``."""
    from torch.utils.data import DataLoader

    cfg, sched = run.cfg, run.schedule
    order = epoch_order(len(run.train_set), cfg.seed, epoch, run.draw_weights)
    sampler = [
        mb
        for s in range(pos, pos + steps_here)
        for mb in micro_batches(step_indices(order, s, sched.global_batch), cfg.batch_size, cfg.grad_accum,
                                run.dist.world_size, run.dist.rank)  # fmt: skip
    ]
    return iter(DataLoader(run.train_set, batch_sampler=sampler, **run.loader_kw))


def train_step(run: Run, micro: list[dict[str, Any]]) -> tuple[float, float]:
    """One optimizer step over ``grad_accum`` micro-batches: ``(train loss, labelled tokens of the step)``.

    The loss is averaged over all labelled tokens of the step on every process (module docstring)."""
    from ecglm.models.tokenize_pairs import IGNORE_INDEX
    from ecglm.train.runtime import autocast

    cfg, world = run.cfg, run.dist.world_size
    n_local = [float((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro]
    (n_step,) = _all_sum([sum(n_local)], run.dist, run.device)
    loss_sum = 0.0
    for m, batch in enumerate(micro):
        sync = m == cfg.grad_accum - 1 or world == 1
        with run.ddp_model.no_sync() if not sync else contextlib.nullcontext():
            with autocast(run.device, cfg.amp):
                out = run.ddp_model(batch["input_ids"], batch["attention_mask"], batch["signal"],
                                    batch["lead_mask"], batch["labels"])  # fmt: skip
            weight = (n_local[m] / n_step * world) if n_step else 0.0
            (out.loss * weight).backward()
        loss_sum += float(out.loss.detach()) * n_local[m]
    (loss_total,) = _all_sum([loss_sum], run.dist, run.device)
    train_loss = loss_total / n_step if n_step else float("nan")
    if not math.isfinite(train_loss):
        raise StageError(f"alignment diverged: loss {train_loss} at step {run.step + 1} (lr {cfg.lr}); lower lr")
    if cfg.grad_clip:
        import torch

        torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return train_loss, n_step


def maybe_checkpoint(run: Run, resume_dir: Path | None) -> None:
    """Every ``checkpoint_every`` steps (never after the last): the resume checkpoint, written by rank 0."""
    cfg, step, sched = run.cfg, run.step, run.schedule
    if resume_dir is None or not cfg.checkpoint_every or step % cfg.checkpoint_every or step >= sched.total_steps:
        return
    rng = _gather_rng(run.dist)
    if run.dist.is_main:
        extra = {"epoch": step // sched.steps_per_epoch, "position": step % sched.steps_per_epoch,
                 "config": json.dumps(run.identity, sort_keys=True), "world_size": run.dist.world_size,
                 "rng_per_rank": True, "rng": rng}  # fmt: skip
        save_checkpoint(resume_dir, step, run.model, run.optimizer, run.scheduler, extra, run.history)
    _barrier(run.dist)


def log_step(run: Run, entry: dict[str, Any], log_file: Any, bar: Any) -> None:
    """Record a step in the history, the log file (rank 0) and the progress bar."""
    run.history.append(entry)
    if log_file is not None:
        log_file.write(json.dumps(entry) + "\n")
        log_file.flush()
    bar.update(1)
    bar.set_postfix(epoch=entry["epoch"], loss=f"{entry['train_loss']:.4f}",
                    **({} if run.last_val is None else {"val": f"{run.last_val:.4f}"}))  # fmt: skip


def train_loop(run: Run, out_dir: Path, resume_dir: Path | None, progress: bool, on_step: Callable[[int], None] | None) -> None:
    """The optimizer steps from ``run.step`` to the end: data, step, validation, log, checkpoint."""
    from tqdm import tqdm

    sched = run.schedule
    set_train_mode(run)
    bar = tqdm(total=sched.total_steps, initial=run.step, desc="align", unit="step", disable=not progress, dynamic_ncols=True)
    log_file = open(out_dir / LOG_FILE, "a", encoding="utf-8") if run.dist.is_main else None
    try:
        while run.step < sched.total_steps:
            epoch, pos = divmod(run.step, sched.steps_per_epoch)
            steps_here = min(sched.steps_per_epoch, sched.total_steps - epoch * sched.steps_per_epoch) - pos
            batches = epoch_batches(run, epoch, pos, steps_here)
            for _ in range(steps_here):
                lr_now = run.optimizer.param_groups[-1]["lr"]  # the projector's (the encoder's x encoder_lr_scale)
                train_loss, n_step = train_step(run, [next(batches) for _ in range(run.cfg.grad_accum)])
                run.step += 1
                run.last_train = train_loss
                entry: dict[str, Any] = {"step": run.step, "epoch": epoch + 1, "lr": lr_now,
                                         "train_loss": train_loss, "n_tokens": int(n_step)}  # fmt: skip
                if run.step % sched.eval_every == 0 or run.step == sched.total_steps:
                    run.last_val = validation_loss(run)
                    entry["val_loss"] = run.last_val
                log_step(run, entry, log_file, bar)
                maybe_checkpoint(run, resume_dir)
                if on_step is not None:
                    on_step(run.step)
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()


def finish(run: Run, out_dir: Path, resume_dir: Path | None, llm_before: dict | None, seconds: float,
           pairs_dir: Path, signals: Path, ecg_check: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rank 0: check the LLM is unchanged, write OUT (module docstring), remove the resume folder."""
    import torch

    if llm_before is not None:
        changed = [k for k, v in run.llm.state_dict().items() if not torch.equal(v, llm_before[k])]
        if changed:  # a bug, never user input
            raise RuntimeError(f"the frozen LLM changed during alignment: {changed[:5]}")
    sched = run.schedule
    metrics = {
        "final_train_loss": run.last_train,
        "final_val_loss": run.last_val,
        "steps": run.step,
        "steps_per_epoch": sched.steps_per_epoch,
        "epochs": run.cfg.epochs,
        "global_batch": sched.global_batch,
        "world_size": run.dist.world_size,
        "n_train_samples": len(run.train_set),
        "n_val_samples": len(run.val_set),
        "n_val_scored": len(val_indices(len(run.val_set), run.cfg.max_val_samples, run.cfg.seed)),
        "seconds": round(seconds, 3),
        "resumed": any(h.get("event") == "resumed" for h in run.history),
        "device": str(run.device),
        "llm": run.cfg.llm,
        "pairs": str(pairs_dir),
        "signals": str(signals),
        "balanced_draws": run.draw_shares,  # per balanced task: each class's share of the training draws
        "ecg_check": ecg_check,  # val loss with the true vs other records' ECGs (ecglm.train.ecg_effect)
    }
    run.model.save(out_dir)
    write_text_atomic(out_dir / CONFIG_FILE, run.cfg.to_yaml())
    write_text_atomic(out_dir / LOG_FILE, "".join(json.dumps(h) + "\n" for h in run.history))
    write_text_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    log.info("aligned in %d steps (%.0f s): train loss %s, val loss %s; wrote %s", run.step, seconds,
             run.last_train, run.last_val, out_dir)  # fmt: skip
    if resume_dir is not None and resume_dir.exists():
        shutil.rmtree(resume_dir, ignore_errors=True)
    return metrics


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
    import torch

    from ecglm.core.seeding import deterministic_torch
    from ecglm.data.ecg_data import open_signals
    from ecglm.train.runtime import resolve_device, torch_threads

    if not cfg.llm:
        raise StageError("align config: llm must name the base LLM (a folder or a Hub id): --set llm=PATH")
    if cfg.balance_tasks and records is None:
        raise StageError(f"align config: balance_tasks {cfg.balance_tasks} needs the records table (--records)")
    pairs_dir, signals, out_dir = Path(pairs_dir), Path(signals), Path(out_dir)
    resume_dir = Path(resume_dir) if resume_dir is not None else None
    open_signals(signals)  # fail early on a bad array
    device = resolve_device(cfg.device)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.world_size > 1:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    t_start = time.time()
    deterministic = deterministic_torch(cuda=device.type == "cuda") if cfg.deterministic else contextlib.nullcontext()
    with torch_threads(threads), deterministic:
        run = setup(cfg, pairs_dir, signals, Path(records) if records is not None else None, device, dist_info)
        resume(run, resume_dir)
        llm_before = None
        if dist_info.is_main:
            llm_before = _llm_copy(run.llm)
            out_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out_dir / LOG_FILE, "".join(json.dumps(h) + "\n" for h in run.history))
        train_loop(run, out_dir, resume_dir, progress and dist_info.is_main, on_step)
        effect = None
        if dist_info.is_main:  # does the ECG reach the LLM? (ecglm.train.ecg_effect)
            effect = ecg_effect(run.model, run.val_set, run.loader_kw["collate_fn"], max_samples=cfg.ecg_check_samples,
                                batch_size=cfg.batch_size, seed=cfg.seed, device=run.device, amp=cfg.amp)  # fmt: skip
    metrics = None
    if dist_info.is_main:
        metrics = finish(run, out_dir, resume_dir, llm_before, time.time() - t_start, pairs_dir, signals, effect)
    _barrier(dist_info)
    if dist_info.initialized_here:
        import torch.distributed as dist

        dist.destroy_process_group()
    return metrics


def _llm_copy(llm: Any) -> dict[str, Any] | None:
    """A copy of the LLM's state to check it is unchanged at the end, only when it is small (< 64M parameters)."""
    if sum(p.numel() for p in llm.parameters()) >= 64_000_000:
        return None
    return {k: v.detach().clone() for k, v in llm.state_dict().items()}



def _gather_rng(dist_info: Dist) -> list[dict[str, Any]]:
    """Every process's RNG state, rank order (only rank 0's list is complete; others get their own only)."""
    state = _rng_state()
    if dist_info.world_size == 1:
        return [state]
    import torch.distributed as dist

    states: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(states, state)
    return states


def _barrier(dist_info: Dist) -> None:
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def _load_trainable(model: Any, tensors: dict[str, Any], folder: Path) -> None:
    enc = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
    proj = {k[len("projector."):]: v for k, v in tensors.items() if k.startswith("projector.")}
    try:
        model.encoder.load_state_dict(enc, strict=True)
        model.projector.load_state_dict(proj, strict=True)
    except RuntimeError as err:
        raise StageError(f"{folder / RESUME_WEIGHTS}: does not match the model: {err}") from err


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
