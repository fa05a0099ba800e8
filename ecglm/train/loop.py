"""The training loop that every ECG-LM training stage shares: alignment (``ecglm align``) and the
instruction fine-tunings (``ecglm finetune-qa``, ``ecglm finetune-chat``).

A stage builds a :class:`Run` (its model, its two datasets, the optimizer over the model's trainable
parameters), then calls :func:`resume` and :func:`train_loop`; the stage's own module writes its outputs.
The model is an :class:`ecglm.models.multimodal.ECGLM` (or anything with its ``forward(input_ids,
attention_mask, signals, lead_mask, labels)``, ``trainable_state_dict()``, ``load_trainable(tensors,
where)``, ``encoder`` and ``train()``); the datasets give items of :mod:`ecglm.train.pairs_data`'s shape.
The config (``Run.cfg``) is the stage's typed config: the loop reads ``seed``, ``epochs``,
``warmup_epochs``, ``max_steps``, ``lr``, ``encoder_lr_scale``, ``weight_decay``, ``batch_size``,
``grad_accum``, ``eval_every``, ``checkpoint_every``, ``max_val_samples``, ``amp``, ``grad_clip``,
``freeze_encoder`` and ``gradient_checkpointing``.

Data order: epoch ``e`` visits ``permutation(seed, e)`` of the training samples (or ``n`` weighted draws
with replacement, when the stage gives draw weights); optimizer step ``s`` of the epoch takes the
``G = batch_size * grad_accum * world_size`` samples at positions ``[s*G, (s+1)*G)`` (the ``n mod G``
left over are skipped that epoch; a different set each epoch). Within a step, micro-batch ``m`` of
process ``r`` is the slice ``m * world_size + r`` of ``batch_size`` samples, so one process with
``grad_accum * world_size`` micro-batches sees the same micro-batches as ``world_size`` processes with
``grad_accum`` each.

Loss: the next-token cross-entropy of the labelled tokens, averaged over ALL labelled tokens of the
optimizer step (every micro-batch of every process), so the gradient does not depend on how a step is
split into micro-batches or processes.

Resume: every ``checkpoint_every`` optimizer steps (never inside the stage's output folder, which
Snakemake deletes when a job fails) ``RESUME/step-NNNNNNNN/`` is written: ``trainable.safetensors`` (the
model's trainable tensors), ``state.pt`` (optimizer, scheduler, step, the config fields a resume must
match, RNG states of python, numpy, torch, cuda as tensors and plain lists: loadable with
``torch.load(weights_only=True)``) and ``history.json`` (the log so far); then ``RESUME/latest`` names it
(atomic), then older step folders are removed. Running the same command again resumes from ``latest``
and ends where an uninterrupted run ends (bit-identical trainable weights on CPU for a thread count).

DDP: launched by ``torchrun`` (``WORLD_SIZE > 1``), each process joins the process group (nccl on CUDA,
gloo on CPU), takes its micro-batches of the same global order, and runs the model under
``DistributedDataParallel(find_unused_parameters=True)`` (the frozen LLM's tensors left out of DDP's
synchronisation). Only rank 0 writes files and logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ecglm.core.atomic import atomic_path, write_text_atomic
from ecglm.core.errors import StageError
from ecglm.core.seeding import numpy_rng

log = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
RESUME_WEIGHTS = "trainable.safetensors"
RESUME_STATE = "state.pt"
RESUME_HISTORY = "history.json"
RESUME_LATEST = "latest"
RESUME_FORMAT = "ecglm-align-resume/1"  # the alignment's name, kept: the fine-tunings' checkpoints share it


def check_warmup(label: str, warmup_epochs: float, epochs: float) -> None:
    """The check every training config makes of its schedule: the warm-up fits in the run."""
    if warmup_epochs > epochs:
        raise StageError(f"{label}: warmup_epochs must be in [0, epochs], got {warmup_epochs!r} with epochs {epochs}")


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based): linear warm-up to 1 over
    ``warmup_steps`` steps (step 0 gets ``1 / warmup_steps``), then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class BestEpoch:
    """The state of the epoch with the lowest score so far (a tie keeps the earlier epoch), for the stages
    that keep their best epoch by a validation loss (SimCLR, METS)."""

    def __init__(self) -> None:
        self.score: float | None = None
        self.epoch = 0
        self.state: dict[str, Any] | None = None

    def update(self, score: float, epoch: int, state: Callable[[], dict[str, Any]]) -> None:
        """Keep ``state()`` (called only then) when ``score`` is lower than every earlier epoch's."""
        if self.score is None or score < self.score:
            self.score, self.epoch, self.state = score, epoch, state()


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
    """Everything one training run holds, built by the stage's ``setup`` and read by the loop's functions."""

    cfg: Any  # the stage's typed config (the fields of the module docstring)
    dist: Dist
    device: Any  # torch.device
    llm: Any
    tokenizer: Any
    model: Any  # ECGLM (its LLM frozen, or with trainable LoRA adapters)
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
    name: str = "train"  # the stage (progress bar, messages)
    step: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)
    last_train: float | None = None
    last_val: float | None = None


def make_schedule(cfg: Any, n_train: int, n_val: int, world: int) -> Schedule:
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


def make_optimizer(cfg: Any, model: Any, params: list[Any], schedule: Schedule) -> tuple[Any, Any]:
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
    run.model.load_trainable(tensors, where=str(folder / RESUME_WEIGHTS))
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"][run.dist.rank] if isinstance(state["rng"], list) else state["rng"])
    run.step = int(state["step"])
    run.history = [h for h in history if h.get("step", 0) <= run.step]
    run.history.append({"event": "resumed", "step": run.step, "from": str(folder)})
    log.info("resumed from %s (step %d of %d)", folder, run.step, run.schedule.total_steps)


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
                out = run.model(batch["input_ids"], batch["attention_mask"], batch.get("signal"),
                                batch.get("lead_mask"), batch["labels"])  # fmt: skip
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
                out = run.ddp_model(batch["input_ids"], batch["attention_mask"], batch.get("signal"),
                                    batch.get("lead_mask"), batch["labels"])  # fmt: skip
            weight = (n_local[m] / n_step * world) if n_step else 0.0
            (out.loss * weight).backward()
        loss_sum += float(out.loss.detach()) * n_local[m]
    (loss_total,) = _all_sum([loss_sum], run.dist, run.device)
    train_loss = loss_total / n_step if n_step else float("nan")
    if not math.isfinite(train_loss):
        raise StageError(f"{run.name} diverged: loss {train_loss} at step {run.step + 1} (lr {cfg.lr}); lower lr")
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
    barrier(run.dist)


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
    bar = tqdm(total=sched.total_steps, initial=run.step, desc=run.name, unit="step", disable=not progress, dynamic_ncols=True)
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


def frozen_llm_copy(llm: Any) -> dict[str, Any] | None:
    """A copy of the LLM's frozen tensors (its base weights and buffers, not trainable adapters, also where a
    trainable tensor is tied under a second name) to check they are unchanged at the end, only when the LLM is
    small (< 64M parameters)."""
    if sum(p.numel() for p in llm.parameters()) >= 64_000_000:
        return None
    trainable = {p.data_ptr() for p in llm.parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in llm.state_dict().items() if v.data_ptr() not in trainable}


def check_llm_unchanged(llm: Any, before: dict[str, Any] | None) -> None:
    """RuntimeError (a bug, never user input) if a frozen LLM tensor copied by :func:`frozen_llm_copy` changed."""
    import torch

    if before is None:
        return
    state = llm.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(state[k], v)]
    if changed:
        raise RuntimeError(f"the frozen LLM changed during training: {changed[:5]}")


def _gather_rng(dist_info: Dist) -> list[dict[str, Any]]:
    """Every process's RNG state, rank order (only rank 0's list is complete; others get their own only)."""
    state = _rng_state()
    if dist_info.world_size == 1:
        return [state]
    import torch.distributed as dist

    states: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(states, state)
    return states


def barrier(dist_info: Dist) -> None:
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


# ------------------------------------------------------------------------------------- a stage's run


@contextlib.contextmanager
def session(cfg: Any, threads: int | None) -> Iterator[tuple[Any, Dist]]:
    """``(device, dist)`` of a training stage's run: the device resolved (under torchrun the process group
    joined, CUDA: this process's GPU), torch's CPU threads pinned, deterministic kernels when
    ``cfg.deterministic``; at the end every process waits for the others and the group is left."""
    import torch

    from ecglm.core.seeding import deterministic_torch
    from ecglm.train.runtime import resolve_device, torch_threads

    device = resolve_device(cfg.device)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.world_size > 1:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    deterministic = deterministic_torch(cuda=device.type == "cuda") if cfg.deterministic else contextlib.nullcontext()
    try:
        with torch_threads(threads), deterministic:
            yield device, dist_info
        barrier(dist_info)
    finally:
        if dist_info.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def train(run: Run, out_dir: Path, resume_dir: Path | None, progress: bool,
          on_step: Callable[[int], None] | None) -> dict[str, Any] | None:  # fmt: skip
    """Resume (or seed) the run and train it to the end; return the copy of the frozen LLM tensors that
    :func:`finish` checks (rank 0, small LLMs; else None)."""
    resume(run, resume_dir)
    llm_before = None
    if run.dist.is_main:
        llm_before = frozen_llm_copy(run.llm)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / LOG_FILE, "".join(json.dumps(h) + "\n" for h in run.history))
    train_loop(run, out_dir, resume_dir, progress and run.dist.is_main, on_step)
    return llm_before


def finish(run: Run, out_dir: Path, resume_dir: Path | None, llm_before: dict | None, seconds: float,
           extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Rank 0: check the frozen LLM tensors are unchanged, write the model (``run.model.save``), the config
    (config.yaml), the log and metrics.json (the run's figures, then ``extra``), and remove the resume folder."""
    check_llm_unchanged(run.llm, llm_before)
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
        **extra,
    }
    run.model.save(out_dir)
    write_text_atomic(out_dir / CONFIG_FILE, run.cfg.to_yaml())
    write_text_atomic(out_dir / LOG_FILE, "".join(json.dumps(h) + "\n" for h in run.history))
    write_text_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    log.info("%s: %d steps (%.0f s): train loss %s, val loss %s; wrote %s", run.name, run.step, seconds,
             run.last_train, run.last_val, out_dir)  # fmt: skip
    if resume_dir is not None and resume_dir.exists():
        shutil.rmtree(resume_dir, ignore_errors=True)
    return metrics
