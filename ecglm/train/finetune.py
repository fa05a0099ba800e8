"""Instruction fine-tuning of an aligned ECG-LM: `ecglm finetune-qa` (ECG-QA) and the chat fine-tuning.

:func:`finetune` is the whole training, top to bottom: load the base LLM, put the aligned encoder and
projector back on it (:meth:`ecglm.models.multimodal.ECGLM.load`), wrap the LLM in LoRA adapters (peft: rank,
alpha and target layers from the config; the base weights stay frozen and bit-identical), build the two
datasets the stage names, and run the shared loop (:mod:`ecglm.train.loop`: AdamW over the encoder, the
projector and the adapters, linear warm-up then cosine decay, gradient accumulation, validation loss,
resume checkpoints, DDP under torchrun). The loss is the answer's (the assistant's) tokens only: the
datasets label nothing else. The paper does not say how it fine-tunes; this is ours. At the end::

    OUT/model.safetensors   encoder + projector tensors (no LLM weight)
    OUT/adapter/            the LoRA adapters in peft's format (adapter_config.json, adapter_model.safetensors)
    OUT/config.json         the base LLM, projector, encoder spec and the adapter's settings
    OUT/config.yaml         the resolved FinetuneConfig
    OUT/metrics.json        final train/val loss, steps, seconds, sample counts, global batch, ...
    OUT/log.jsonl           one JSON line per optimizer step
    OUT/MODEL_CARD.md       finetune-chat: base LLM and its hash, training data and licences, research use only
    OUT/ecg_input.json      finetune-chat: the rate and window the encoder reads (what `ecglm chat` resamples to)

Never the whole LLM: the base model is named in config.json and loaded from where it came from.
``ecg: false`` (set by the rules) trains the blind baseline: the same data, steps and seed, the questions
without the ECG sentence and without a signal.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

from ecglm.core.errors import StageError
from ecglm.core.stage_config import DETERMINISTIC_DOC, DEVICE_PATTERN, StageConfig, setting
from ecglm.models.llm import DTYPES
from ecglm.train.loop import Run, check_warmup, finish, make_optimizer, make_schedule, session, train, wrap_ddp

log = logging.getLogger(__name__)

#: Fields that may change between a run and its resumption (they do not change the trained weights).
RESUME_FREE_FIELDS = ("num_workers", "checkpoint_every", "eval_every", "device", "max_val_samples")

#: (tokenizer, num_ecg_tokens, cfg) -> (train dataset, validation dataset): what a fine-tuning stage trains on;
#: a train dataset with a closed answer vocabulary has ``answer_token_ids()`` (``train_answer_tokens``).
DatasetFactory = Callable[[Any, int, "FinetuneConfig"], tuple[Any, Any]]


@dataclass
class FinetuneConfig(StageConfig):
    """Fine-tuning settings (ours: the paper does not say how it fine-tunes)."""

    LABEL: ClassVar[str] = "finetune config"
    SECTION_DESCRIPTION: ClassVar[str] = """ECG-QA fine-tuning of the aligned ECG-LM (ecglm finetune-qa): LoRA
        adapters on the LLM (peft) plus the encoder and projector, loss on the answer only. llm, aligned_dir and
        ecg are set by the rules."""

    llm: str | None = setting(None, "The base LLM the aligned model was aligned with (a folder or hf:NAME).",
                              by_rule=True)
    llm_revision: str | None = setting(None, "The Hub revision to pin.", by_rule=True)
    trust_remote_code: bool = setting(False, "Run a checkpoint's own Python code (never, unless asked).", by_rule=True)
    aligned_dir: str | None = setting(None, "The ecglm align output folder to start from; required.", by_rule=True)
    ecg: bool = setting(True, "Give the model the ECG (false: the blind baseline, the questions alone).",
                        by_rule=True)
    dtype: Literal[DTYPES] = setting("auto", "LLM dtype: auto (bf16 on a bf16-capable GPU, else float32), bfloat16 "
                                     "or float32.")
    lora_rank: int = setting(8, "LoRA rank of the adapters on the LLM's target layers.", ge=1)
    lora_alpha: float = setting(16.0, "LoRA alpha (the adapters' output is scaled by alpha / rank).", gt=0)
    lora_targets: list[str] = setting(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                      """The LLM's linear layers that get adapters, by name (Llama-style names: every
        attention and MLP projection, as QLoRA recommends; an unknown name is an error that lists the LLM's).""",
                                      unique=True, min_length=1)
    train_answer_tokens: bool = setting(False, """Also train the embedding rows of the tokens the answers are
        written in (ECG-QA's valid answers, the separator and the end of text; peft's trainable tokens, saved in the
        adapter, tied to the output head where the LLM ties them; the base rows stay unchanged). For an LLM whose
        pretraining never wrote these words: their rows are untrained, and no LoRA adapter lifts them (the demo
        LLM writes " yes" in three bytes it has never predicted). finetune-qa only.""")
    freeze_encoder: bool = setting(False, "Keep the aligned encoder fixed (BatchNorm in eval mode).")
    encoder_lr_scale: float = setting(1.0, "The encoder's peak learning rate as a multiple of lr.", gt=0,
                                      allow_inf_nan=False)
    max_length: int = setting(128, "Tokens per sample (question and answer; longer ones are truncated).", ge=8)
    epochs: int = setting(1, "Fine-tuning epochs over the training questions.", ge=1)
    warmup_epochs: float = setting(0.1, "Linear warm-up epochs before the cosine decay (at most epochs).", ge=0)
    lr: float = setting(1e-3, "Peak learning rate (adapters and projector; the encoder's x encoder_lr_scale).", gt=0,
                        allow_inf_nan=False)
    weight_decay: float = setting(0.0, "AdamW weight decay.", ge=0)
    batch_size: int = setting(16, "Samples per micro-batch per process.", ge=1)
    grad_accum: int = setting(1, "Micro-batches per optimizer step per process.", ge=1)
    max_steps: int | None = setting(None, "Cap on optimizer steps (null = none); the schedule spans the capped run.",
                                    ge=1)
    eval_every: int = setting(0, "Optimizer steps between validation passes (0 = at the end of every epoch).", ge=0)
    checkpoint_every: int = setting(200, "Optimizer steps between resume checkpoints (0 = none).", ge=0)
    max_val_samples: int = setting(512, "Validation passes score a seeded subset of this many samples (0 = all).",
                                   ge=0)
    gradient_checkpointing: bool = setting(False, "Recompute the LLM's layer activations in the backward pass.")
    amp: bool = setting(True, "bf16 autocast on CUDA (no effect on the CPU).")
    grad_clip: float = setting(1.0, "Clip the trainable parameters' gradient norm to this (0 = off).", ge=0,
                               allow_inf_nan=False)
    deterministic: bool = setting(True, DETERMINISTIC_DOC)
    seed: int = setting(1234, "Random seed (the rules pass the top-level seed).", by_rule=True, ge=0)
    num_workers: int = setting(0, "DataLoader worker processes per process (0 = read in the main process).", ge=0)
    device: str = setting("auto", "auto (CUDA if available), cpu or cuda (under torchrun: cuda:LOCAL_RANK).",
                          pattern=DEVICE_PATTERN)

    def validate(self) -> None:
        check_warmup(self.LABEL, self.warmup_epochs, self.epochs)


@dataclass
class ChatFinetuneConfig(FinetuneConfig):
    """The chat fine-tuning's settings: those of :class:`FinetuneConfig`, with dialogues' lengths."""

    LABEL: ClassVar[str] = "finetune_chat config"
    SECTION_DESCRIPTION: ClassVar[str] = """Conversation fine-tuning of the aligned ECG-LM (ecglm finetune-chat): LoRA
        adapters on the LLM (peft) plus the encoder and projector, loss on the assistant turns only. llm and
        aligned_dir are set by the rules."""

    max_length: int = setting(512, "Tokens per dialogue (system text, turns; longer ones are truncated).", ge=8)
    train_answer_tokens: Literal[False] = setting(False, """finetune-qa's setting, always false here: dialogues are
        free text, with no closed answer vocabulary whose rows could train.""")
    max_val_samples: int = setting(128, "Validation passes score a seeded subset of this many dialogues (0 = all).",
                                   ge=0)


def load_aligned(cfg: FinetuneConfig, device: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)``: the aligned ECG-LM on its base LLM, without adapters yet."""
    from ecglm.core.seeding import seed_everything
    from ecglm.models.llm import load_llm
    from ecglm.models.multimodal import ECGLM

    seed_everything(cfg.seed)
    llm, tokenizer = load_llm(cfg.llm, revision=cfg.llm_revision, dtype=cfg.dtype, device=device,
                              trust_remote_code=cfg.trust_remote_code)  # fmt: skip
    model = ECGLM.load(cfg.aligned_dir, llm, tokenizer=tokenizer)
    if model.adapter is not None:
        raise StageError(f"{cfg.aligned_dir}: already fine-tuned (it carries LoRA adapters); start from an alignment")
    return model, tokenizer


def add_adapters(model: Any, cfg: FinetuneConfig, token_ids: list[int]) -> None:
    """Fresh LoRA adapters (and trainable rows of ``token_ids``) on the LLM; freeze what the run does not train."""
    import torch

    from ecglm.core.seeding import stream_seed

    torch.manual_seed(stream_seed(cfg.seed, "init"))
    model.add_lora(cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, token_ids)
    if cfg.gradient_checkpointing:
        model.llm.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.freeze_encoder or not cfg.ecg:  # the blind model never runs its encoder
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    if not cfg.ecg:
        for p in model.projector.parameters():
            p.requires_grad_(False)


def trainable_token_ids(cfg: FinetuneConfig, train_set: Any, name: str) -> list[int]:
    """The token ids whose embedding rows train (``train_answer_tokens``), else none."""
    if not cfg.train_answer_tokens:
        return []
    if not hasattr(train_set, "answer_token_ids"):
        raise StageError(f"{name}: train_answer_tokens needs a closed answer vocabulary (finetune-qa); "
                         f"{type(train_set).__name__} has none")  # fmt: skip
    return train_set.answer_token_ids()


def setup(cfg: FinetuneConfig, datasets: DatasetFactory, device: Any, dist_info: Any, name: str) -> Run:
    """The model, the data, the schedule and the optimizer of a run (not yet resumed)."""
    from ecglm.core.seeding import torch_generator, worker_init_fn
    from ecglm.train.pairs_data import PairsCollator

    model, tokenizer = load_aligned(cfg, device)
    train_set, val_set = datasets(tokenizer, model.num_ecg_tokens, cfg)
    if len(train_set) == 0:
        raise StageError(f"{name}: no training sample")
    token_ids = trainable_token_ids(cfg, train_set, name)
    add_adapters(model, cfg, token_ids)
    llm = model.llm
    params = [p for p in model.trainable_parameters() if p.requires_grad]
    adapters = sum(p.numel() for n, p in llm.named_parameters() if p.requires_grad)
    if dist_info.is_main:
        log.info("trainable parameters: %s (of which LLM adapters %s, %d trainable token rows; base LLM frozen: %s)",
                 f"{sum(p.numel() for p in params):,}", f"{adapters:,}", len(token_ids),
                 f"{sum(p.numel() for p in llm.parameters()) - adapters:,}")  # fmt: skip
    schedule = make_schedule(cfg, len(train_set), len(val_set), dist_info.world_size)
    optimizer, scheduler = make_optimizer(cfg, model, params, schedule)
    loader_kw: dict[str, Any] = dict(
        collate_fn=PairsCollator(tokenizer.pad_token_id), num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", worker_init_fn=worker_init_fn, generator=torch_generator(cfg.seed, "workers"),
    )  # fmt: skip
    return Run(
        cfg=cfg, dist=dist_info, device=device, llm=llm, tokenizer=tokenizer, model=model,
        ddp_model=wrap_ddp(model, device, dist_info.world_size), train_set=train_set, val_set=val_set,
        draw_weights=None, draw_shares={}, schedule=schedule, optimizer=optimizer, scheduler=scheduler, params=params,
        loader_kw=loader_kw, identity={k: v for k, v in cfg.to_dict().items() if k not in RESUME_FREE_FIELDS},
        name=name,
    )  # fmt: skip


def finetune(cfg: FinetuneConfig, datasets: DatasetFactory, out_dir: str | os.PathLike,
             resume_dir: str | os.PathLike | None = None, *, name: str = "finetune", progress: bool = True,
             threads: int | None = None, inputs: dict[str, Any] | None = None,
             on_step: Callable[[int], None] | None = None,
             check: Callable[[Run], dict[str, Any]] | None = None) -> dict[str, Any] | None:  # fmt: skip
    """Fine-tune the aligned ECG-LM of ``cfg.aligned_dir`` on the samples ``datasets`` builds; write OUT on rank 0.

    The same guarantees as ``ecglm align``: the base LLM's weights never change, every file is written
    atomically, and with ``resume_dir`` a rerun after an interruption ends with the weights an
    uninterrupted run ends with (CPU, same thread count). ``check(run)`` (rank 0, after training) adds its
    figures to the metrics. Returns the metrics (rank 0; None elsewhere)."""
    if not cfg.llm or not cfg.aligned_dir:
        raise StageError("finetune config: llm and aligned_dir must name the base LLM and the aligned model")
    out_dir, resume_dir = Path(out_dir), Path(resume_dir) if resume_dir is not None else None
    t_start = time.time()
    metrics = None
    with session(cfg, threads) as (device, dist_info):
        run = setup(cfg, datasets, device, dist_info, name)
        llm_before = train(run, out_dir, resume_dir, progress, on_step)
        if dist_info.is_main:
            extra = {"trainable_parameters": sum(p.numel() for p in run.params),
                     "adapter_parameters": sum(p.numel() for p in run.llm.parameters() if p.requires_grad),
                     "ecg": cfg.ecg, "aligned": cfg.aligned_dir, **(inputs or {}),
                     **(check(run) if check is not None else {})}  # fmt: skip
            metrics = finish(run, out_dir, resume_dir, llm_before, time.time() - t_start, extra)
    return metrics


# ------------------------------------------------------------------------------------------ ECG-QA


def qa_datasets(train: Path, valid: Path, signals: Path) -> DatasetFactory:
    """The ECG-QA train and valid questions (:class:`ecglm.train.qa_data.QADataset`)."""

    def build(tokenizer: Any, num_ecg_tokens: int, cfg: FinetuneConfig) -> tuple[Any, Any]:
        from ecglm.train.qa_data import QADataset

        kw = dict(num_ecg_tokens=num_ecg_tokens, ecg=cfg.ecg, seed=cfg.seed)
        return (QADataset(train, signals, tokenizer, cfg.max_length, **kw),
                QADataset(valid, signals, tokenizer, cfg.max_length, **kw))  # fmt: skip

    return build


def chat_datasets(dialogues: tuple[list[Any], list[Any]], signals: Path) -> DatasetFactory:
    """The training and validation dialogues (:class:`ecglm.train.chat_data.ChatDataset`)."""

    def build(tokenizer: Any, num_ecg_tokens: int, cfg: FinetuneConfig) -> tuple[Any, Any]:
        from ecglm.train.chat_data import ChatDataset

        train, val = dialogues
        return (ChatDataset(train, signals, tokenizer, cfg.max_length, num_ecg_tokens=num_ecg_tokens),
                ChatDataset(val, signals, tokenizer, cfg.max_length, num_ecg_tokens=num_ecg_tokens))  # fmt: skip

    return build


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_qa(subparsers)
    _register_chat(subparsers)


def _register_qa(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune-qa",
        help="fine-tune an aligned ECG-LM on ECG-QA's training questions (LoRA + encoder + projector)",
        description=(
            "Instruction fine-tuning on ECG-QA (the output of `ecglm qa-data`): each question after the ECG "
            "sentence, the loss on the answer set only (and its end-of-text token). Trains LoRA adapters on the "
            "LLM (peft; the base weights stay frozen), the encoder and the projector, starting from an `ecglm "
            "align` output. Writes model.safetensors, adapter/, config.json, config.yaml, metrics.json and "
            "log.jsonl into --out, never the whole LLM. With --resume-dir a rerun resumes. --set ecg=false "
            "trains the blind baseline (the questions without the ECG)."
        ),
    )
    p.add_argument("--qa", required=True, type=Path, help="the `ecglm qa-data` folder (train.parquet, valid.parquet)")
    p.add_argument("--signals", "--signals-npy", dest="signals", required=True, type=Path,
                   help="signals_{fs}.npy written by `ecglm prepare` (the questions' row indexes it)")  # fmt: skip
    _common_options(p)
    p.set_defaults(func=run)


def _common_options(p: argparse.ArgumentParser, config: type[FinetuneConfig] = FinetuneConfig) -> None:
    """The options every fine-tuning stage shares: where it starts, where it writes, its settings."""
    p.add_argument("--aligned", required=True, type=Path, help="the `ecglm align` output folder to start from")
    p.add_argument("--llm", required=True, help="the base LLM it was aligned with (a folder or hf:NAME)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--resume-dir", type=Path, default=None,
                   help="folder for resume checkpoints, OUTSIDE --out; a rerun resumes from it (default: none)")
    config.add_options(p, threads=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _register_chat(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune-chat",
        help="fine-tune an aligned ECG-LM for conversation (scrubbed conversations + ECG dialogues; LoRA)",
        description=(
            "Supervised fine-tuning for clinical conversation with the LLM's own chat template (a plain "
            "User/Assistant layout for an LLM without one), the loss on the assistant turns only. Inputs: any "
            "HealthCareMagic-format files (--conversations, scrubbed of personal data first; the counts go to "
            "the log and metrics.json) and dialogues built from the training ECGs (the report and the per-lead "
            "findings as the answer, ECG-QA questions as further turns, the findings in the system text of a "
            "seeded share only), our substitute for the paper's private hospital dialogues. Validation: the "
            "dialogues of the val ECGs. The same loop, adapters and outputs as finetune-qa."
        ),
    )
    p.add_argument("--records", required=True, type=Path, help="records.parquet written by `ecglm prepare`")
    p.add_argument("--reports", required=True, type=Path, help="reports_en.parquet written by `ecglm translate`")
    p.add_argument("--findings", required=True, type=Path, help="findings.parquet written by `ecglm describe`")
    p.add_argument("--signals", "--signals-npy", dest="signals", required=True, type=Path,
                   help="signals_{fs}.npy written by `ecglm prepare`")  # fmt: skip
    p.add_argument("--conversations", type=Path, nargs="*", default=[],
                   help="HealthCareMagic-format JSON files (instruction, input, output), scrubbed before use")
    p.add_argument("--qa", type=Path, default=None, help="the `ecglm qa-data` folder: its train questions as turns")
    p.add_argument("--qa-turns", type=int, default=1, help="ECG-QA turns after each ECG's first turn (default: 1)")
    p.add_argument("--findings-share", type=float, default=0.5,
                   help="share of the ECG dialogues whose system text holds the findings (default: %(default)s)")
    p.add_argument("--ecg-check-samples", type=int, default=128,
                   help="after training, score this many held-out dialogues of test ECGs with their own ECG and "
                        "with another record's (metrics.json ecg_check; 0 = no check; default: %(default)s)")
    p.add_argument("--ecg-source", choices=("demo", "ptbxl"), default="ptbxl",
                   help="where the ECG records come from, for the model card's licence line (default: %(default)s)")
    _common_options(p, ChatFinetuneConfig)
    p.set_defaults(func=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    from ecglm.data.ecg_data import open_signals, rate_from_name
    from ecglm.train.chat_data import conversation_dialogues, ecg_dialogues
    from ecglm.train.model_card import write_ecg_input, write_model_card

    if not 0.0 <= args.findings_share <= 1.0 or args.qa_turns < 0 or args.ecg_check_samples < 0:
        raise StageError("--findings-share must be in [0, 1], --qa-turns and --ecg-check-samples >= 0")
    fs = rate_from_name(args.signals)
    if fs is None:
        raise StageError(f"{args.signals}: name it signals_<fs>.npy (as ecglm prepare does): the chat must know "
                         "the rate its encoder reads")  # fmt: skip
    samples = open_signals(args.signals, fs).shape[2]
    cfg = dataclasses.replace(ChatFinetuneConfig.from_args(args), llm=str(args.llm), aligned_dir=str(args.aligned))
    conversations, scrubbed = conversation_dialogues(args.conversations)
    log.info("conversations: %d from %d file(s); scrubbed %s", len(conversations), len(args.conversations),
             dict(sorted(scrubbed.items())) or "nothing")  # fmt: skip
    common = dict(seed=cfg.seed, findings_share=args.findings_share, qa_turns=args.qa_turns)
    train = ecg_dialogues(args.records, args.reports, args.findings, split="train",
                          qa=args.qa / "train.parquet" if args.qa else None, **common)  # fmt: skip
    val = ecg_dialogues(args.records, args.reports, args.findings, split="val",
                        qa=args.qa / "valid.parquet" if args.qa else None, **common)  # fmt: skip
    log.info("ECG dialogues: %d train, %d val", len(train), len(val))
    held_out = None
    if args.ecg_check_samples and cfg.ecg:  # the test ECGs' dialogues, findings never in the system text
        held_out = ecg_dialogues(args.records, args.reports, args.findings, split="test", seed=cfg.seed,
                                 findings_share=0.0, qa_turns=0)  # fmt: skip
    metrics = finetune(cfg, chat_datasets((train + conversations, val), args.signals), args.out, args.resume_dir,
                       name="finetune-chat", progress=not args.no_progress, threads=args.threads,
                       inputs={"conversations": [str(p) for p in args.conversations], "scrubbed": dict(scrubbed),
                               "n_conversations": len(conversations), "n_ecg_dialogues": len(train),
                               "signals": str(args.signals), "lora_rank": cfg.lora_rank},
                       check=_chat_ecg_check(held_out, args.signals, args.ecg_check_samples) if held_out else None)
    if metrics is not None:
        write_ecg_input(args.out, fs, samples)
        write_model_card(args.out, llm=str(args.llm), aligned=str(args.aligned), records=args.records,
                         ecg_source=args.ecg_source, conversations=args.conversations, qa=args.qa, metrics=metrics)
    return 0


def _chat_ecg_check(dialogues: list[Any], signals: Path, max_samples: int) -> Callable[[Run], dict[str, Any]]:
    """After training: are the held-out dialogues' reference answers more likely with their own ECG than with
    another record's? (:func:`ecglm.train.ecg_effect.ecg_effect`: paired, records resampled)."""

    def check(run: Run) -> dict[str, Any]:
        from ecglm.train.chat_data import ChatDataset
        from ecglm.train.ecg_effect import ecg_effect

        data = ChatDataset(dialogues, signals, run.tokenizer, run.cfg.max_length, num_ecg_tokens=run.model.num_ecg_tokens)
        effect = ecg_effect(run.model, data, run.loader_kw["collate_fn"], max_samples=max_samples,
                            batch_size=run.cfg.batch_size, seed=run.cfg.seed, device=run.device, amp=run.cfg.amp)
        if effect is not None:
            effect["what"] = ("answer loss of held-out dialogues about test ECGs (findings not in the system text), "
                              "each with its own ECG vs another record's (shuffled)")  # fmt: skip
        return {"ecg_check": effect}

    return check


def run(args: argparse.Namespace) -> int:
    cfg = dataclasses.replace(FinetuneConfig.from_args(args), llm=str(args.llm), aligned_dir=str(args.aligned))
    train, valid = args.qa / "train.parquet", args.qa / "valid.parquet"
    finetune(cfg, qa_datasets(train, valid, args.signals), args.out, args.resume_dir, name="finetune-qa",
             progress=not args.no_progress, threads=args.threads,
             inputs={"qa": str(args.qa), "signals": str(args.signals)})  # fmt: skip
    return 0
