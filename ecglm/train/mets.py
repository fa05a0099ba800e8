"""`ecglm train-mets`: the METS baseline (the paper's Table 2 zero-shot rows "METS" and "LLM + METS").

METS (Li et al. 2024, "Frozen language model helps ECG zero-shot learning") trains an ECG encoder
contrastively against the embeddings that a FROZEN text encoder gives the ECGs' reports, then classifies
zero-shot: an ECG goes to the class whose description lies nearest (cosine) in the shared space. The
encoder here is ECG-LM's ResNet-18 1D (:class:`ecglm.models.encoder.ResNet1d18`), trained from scratch;
two linear projections map the ECG embedding and the text embedding into one space.

The text encoder (``text_encoder``), the only difference between the two rows:

- ``tfidf`` (the "METS" row): the paper's METS used ClinicalBERT, which cannot be fetched offline; ours is
  a TF-IDF of word 1-2-grams (sublinear term frequency) fitted on the run's training reports
  (scikit-learn), then a seeded Gaussian random projection to ``text_dim`` dimensions. A bag of
  words knows no medicine: what it knows comes from the reports themselves.
- ``llm`` (the "LLM + METS" row): the run's LLM (``llm``, the rules pass the LLM of
  ``evaluate.mets_variant``), its last hidden states mean-pooled over a report's tokens. A pretrained
  LLM brings what it learnt elsewhere; the demo world's tiny LLM only what the run's text taught it.

Ours where the paper is silent (each a setting of :class:`METSConfig`): the CLIP loss (symmetric
cross-entropy over the batch) with a fixed temperature; no signal augmentation; the class descriptions in
PTB-XL's own words: scp_statements.csv's description of the statement ("atrial fibrillation"), or for a
superclass the list of its statements' ("left ventricular hypertrophy, left atrial overload/enlargement,
..."; :func:`class_descriptions`). PTB-XL's reports repeat ("sinus rhythm. normal ecg" is one of many):
two ECGs of one batch with the same report get the same text embedding, so the loss cannot ask to tell
them apart; summed over both directions it equals the loss that counts same-report pairs as positives.

Writes, into ``--out`` (each file atomically): ``model.safetensors`` (the encoder, the ECG projection, and
each task's five class-description embeddings already projected and normalised, ``class_text.<task>``
[5, projection_dim]: the text encoder is not needed at evaluation), ``config.yaml`` (the resolved
:class:`METSConfig`) and ``metrics.json`` (losses per epoch, the epoch kept: lowest validation loss, and
the sanity check: ECG-to-report recall@5 on the validation ECGs among the distinct validation reports,
with a 95% bootstrap interval over patients and its chance level). :func:`load_mets` reads the folder.
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
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ecglm.core.atomic import atomic_path, write_text_atomic
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS
from ecglm.core.stage_config import DETERMINISTIC_DOC, DEVICE_PATTERN, StageConfig, setting
from ecglm.data.ecg_data import check_store, read_records
from ecglm.text.prompts import TASK_NAMES, clean_phrase, task_classes
from ecglm.train.loop import BestEpoch, lr_factor
from ecglm.train.runtime import resolve_device, torch_threads

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
SAFETENSORS_FORMAT = "ecglm-mets-v1"
TEXT_ENCODERS = ("tfidf", "llm")
RECALL_K = 5


@dataclass
class METSConfig(StageConfig):
    """METS training settings (ours throughout: the paper names the baseline, not its settings)."""

    LABEL: ClassVar[str] = "mets config"
    SECTION_DESCRIPTION: ClassVar[str] = """The METS baselines (ecglm train-mets): a ResNet-18 1D trained contrastively
        against a frozen text encoder's embeddings of the training reports, zero-shot by cosine similarity to the
        class descriptions. The rules train it twice: text_encoder tfidf (the METS row) and llm (the LLM + METS row,
        the LLM of evaluate.mets_variant). The seed is the top-level one."""

    epochs: int = setting(20, "Training epochs.", ge=1)
    lr: float = setting(1e-3, "Peak learning rate (AdamW, cosine decay to 0).", gt=0, allow_inf_nan=False)
    batch_size: int = setting(128, "ECG-report pairs per batch.", ge=2)
    weight_decay: float = setting(1e-4, "AdamW weight decay.", ge=0)
    temperature: float = setting(0.1, "The CLIP loss's temperature (fixed), also the zero-shot logits' scale.", gt=0,
                                 allow_inf_nan=False)  # fmt: skip
    projection_dim: int = setting(128, "Size of the shared ECG-text space (both linear projections' output).", ge=1)
    text_encoder: str = setting("tfidf", """tfidf: TF-IDF of word 1-2-grams fitted on the training reports, then a
        seeded random projection (the METS row; stands in for ClinicalBERT). llm: the LLM given by the rules,
        mean-pooled last hidden states (the LLM + METS row).""", by_rule=True, pattern="^(tfidf|llm)$")
    text_dim: int = setting(256, "tfidf: the random projection's dimensions.", ge=2)
    llm: str | None = setting(None, "text_encoder llm: the LLM folder or Hub id (the rules pass the variant's).",
                              by_rule=True)  # fmt: skip
    text_batch_size: int = setting(32, "text_encoder llm: reports per forward pass of the LLM.", ge=1)
    base_width: int = setting(64, "ResNet-18's base width (embedding = 8 x base_width).", ge=1)
    dilation: int = setting(1, "Dilation of stages 3 and 4 (as the encoder section's).", ge=1)
    seed: int = setting(1234, "Random seed (the rules pass the top-level seed).", by_rule=True, ge=0)
    device: str = setting("auto", "auto (CUDA if available), cpu or cuda.", pattern=DEVICE_PATTERN)
    deterministic: bool = setting(True, DETERMINISTIC_DOC)
    max_train_records: int | None = setting(None, "A seeded random subset of the training ECGs (null = all).", ge=2)

    def validate(self) -> None:
        if self.text_encoder == "llm" and not self.llm:
            raise StageError("mets config: text_encoder llm needs llm (an LLM folder or Hub id: --set llm=PATH)")


def class_descriptions() -> dict[str, dict[str, str]]:
    """``{task: {code: text}}``: what each class is matched against, in PTB-XL's own words (the
    ``description`` of scp_statements.csv, PTB-XL 1.0.3's copy shipped in the package; a superclass as the
    list of its statements: :func:`ecglm.data.labels.class_description`)."""
    from ecglm.data.demo.ptbxl import SCP_STATEMENTS
    from ecglm.data.labels import class_description, load_scp_statements

    statements = load_scp_statements(SCP_STATEMENTS)
    return {task: {code: class_description(statements, code) for code in task_classes(task)} for task in TASK_NAMES}


# ----------------------------------------------------------------------------------------- the data


class Pairs(NamedTuple):
    """The ECGs of one split that have a report; every array has one entry per ECG."""

    rows: np.ndarray  # int64 [n]: rows of records.parquet = rows of the signals array
    text: np.ndarray  # int64 [n]: index of the ECG's report among ``reports``
    reports: list[str]  # [U] the split's distinct report texts (cleaned), first-seen order
    groups: np.ndarray  # [n] patient_id (ecg_id where records.parquet has none): the bootstrap's unit


def read_pairs(records: Path, reports: Path, signals: Path, cfg: METSConfig) -> tuple[dict[str, Pairs], dict[str, int]]:
    """``({"train": Pairs, "val": Pairs}, {split: ECGs without a report})``: the train and val ECGs joined to
    their English report (reports_en.parquet of `ecglm translate`, by ecg_id). An ECG with no row or an empty
    report is left out and counted (logged, and written to metrics.json). Raises StageError naming the file
    for a missing column or a duplicated ecg_id, or when fewer than 2 training ECGs have a report."""
    import polars as pl

    from ecglm.data.ecg_data import read_records_schema

    group_by = "patient_id" if "patient_id" in read_records_schema(records) else "ecg_id"
    table = read_records(records, sorted({"ecg_id", "split", group_by}), patients=False)
    check_store(records, table.height, signals)
    try:
        rep = pl.read_parquet(reports, columns=["ecg_id", "report_en"])
    except FileNotFoundError:
        raise StageError(f"{reports}: English reports not found (run `ecglm translate`)") from None
    except Exception as err:  # polars raises several types for a bad file or a missing column
        raise StageError(f"{reports}: not a reports table with ecg_id and report_en ({err})") from err
    if rep["ecg_id"].is_duplicated().any():
        raise StageError(f"{reports}: ecg_id(s) more than once: {sorted(set(rep.filter(rep['ecg_id'].is_duplicated())['ecg_id'].to_list()))[:10]}")
    text_of = {int(i): clean_phrase(t) for i, t in zip(rep["ecg_id"].to_list(), rep["report_en"].to_list())}
    ecg_ids, splits, groups = table["ecg_id"].to_list(), table["split"].to_list(), table[group_by].to_numpy()
    out, missing = {}, {}
    for name in ("train", "val"):
        rows = [i for i, s in enumerate(splits) if s == name]
        kept = [i for i in rows if text_of.get(int(ecg_ids[i]))]
        missing[name] = len(rows) - len(kept)
        if name == "train" and cfg.max_train_records is not None and len(kept) > cfg.max_train_records:
            from ecglm.core.seeding import numpy_rng

            kept = sorted(numpy_rng(cfg.seed, "subset").choice(kept, cfg.max_train_records, replace=False).tolist())
        distinct: dict[str, int] = {}
        text = [distinct.setdefault(text_of[int(ecg_ids[i])], len(distinct)) for i in kept]
        out[name] = Pairs(np.asarray(kept, dtype=np.int64), np.asarray(text, dtype=np.int64), list(distinct),
                          groups[np.asarray(kept, dtype=np.int64)])  # fmt: skip
        if missing[name]:
            log.warning("%d %s-split ECGs have no report in %s: left out of METS", missing[name], name, reports)
    if len(out["train"].rows) < 2:
        raise StageError(f"{records}, {reports}: METS needs at least 2 training ECGs with a report, found "
                         f"{len(out['train'].rows)}")  # fmt: skip
    return out, missing


# ----------------------------------------------------------------------------------------- the text encoders


def tfidf_embeddings(train_reports: list[str], others: list[list[str]], cfg: METSConfig) -> tuple[np.ndarray, list[np.ndarray], dict[str, Any]]:
    """TF-IDF fitted on ``train_reports``, then a seeded Gaussian random projection to ``text_dim``:
    ``(train [U, d], [each of others [u, d]], identity)``, rows L2-normalised (float32).

    A random projection, not an SVD: a sparse matrix times a dense one is scipy's own loop, with no BLAS
    and a fixed summation order, so the embeddings are the same bits in every process and on every CPU.
    ARPACK's truncated SVD (the first version) varied with OpenBLAS's start-up thread count, which
    Snakemake and a SLURM job step set differently, and its trailing directions are arbitrary when a run
    has few distinct reports. A Gaussian projection keeps cosines within about 1/sqrt(d) (Johnson and
    Lindenstrauss); the identity reports the mean distortion measured on the training reports."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w[\w/-]*\b")
    x = vectorizer.fit_transform(train_reports)  # [U, V] sparse, rows L2-normalised
    vocabulary = x.shape[1]
    if vocabulary < 3:
        raise StageError(f"METS tfidf: the training reports hold {vocabulary} distinct terms; too few for a text encoder")
    rng = np.random.default_rng(cfg.seed)
    projection = rng.standard_normal((vocabulary, cfg.text_dim)) / np.sqrt(cfg.text_dim)  # [V, d]

    def embed(texts: list[str]) -> np.ndarray:
        z = np.asarray(vectorizer.transform(texts) @ projection)  # [n, d]: scipy's sparse loop, no BLAS
        norms = np.sqrt((z * z).sum(axis=1, keepdims=True))  # [n, 1]
        return (z / np.maximum(norms, 1e-12)).astype(np.float32)

    train = embed(train_reports)
    identity = {"name": "tfidf-rp", "vocabulary": int(vocabulary), "dim": int(cfg.text_dim),
                "cosine_distortion": _cosine_distortion(x, train),
                "about": "TF-IDF of word 1-2-grams (sublinear tf), fitted on the training reports, "
                         "then a seeded Gaussian random projection"}  # fmt: skip
    return train, [embed(t) for t in others], identity


def _cosine_distortion(x: Any, z: np.ndarray, n: int = 200) -> float:
    """Mean |cosine(TF-IDF) - cosine(projected)| over the pairs of the first ``n`` training reports, computed
    elementwise (no BLAS: the figure is the same bits wherever it runs)."""
    head = x[:n]  # [n, V] sparse, rows L2-normalised
    before = np.asarray((head @ head.T).todense())  # [n, n]: scipy's sparse product
    after = (z[:n, None, :].astype(np.float64) * z[None, :n, :]).sum(-1)  # [n, n]
    upper = np.triu_indices(len(before), k=1)
    return round(float(np.abs(before - after)[upper].mean()), 4) if upper[0].size else 0.0


def llm_embeddings(train_reports: list[str], others: list[list[str]], cfg: METSConfig, device: Any,
                   progress: bool) -> tuple[np.ndarray, list[np.ndarray], dict[str, Any]]:  # fmt: skip
    """The frozen LLM's last hidden states mean-pooled over each report's tokens: as :func:`tfidf_embeddings`."""
    import torch
    from tqdm import tqdm

    from ecglm.models.llm import load_llm

    model, tokenizer = load_llm(cfg.llm, device=device)
    tokenizer.padding_side = "right"

    def embed(texts: list[str], what: str) -> np.ndarray:
        out = []
        starts = range(0, len(texts), cfg.text_batch_size)
        for start in tqdm(starts, desc=f"mets text ({what})", unit="batch", disable=not progress, file=sys.stderr):
            batch = tokenizer(texts[start : start + cfg.text_batch_size], return_tensors="pt", padding=True,
                              truncation=True, max_length=256).to(device)  # fmt: skip
            with torch.no_grad():
                hidden = model(**batch, output_hidden_states=True).hidden_states[-1].float()  # [b, L, H]
            mask = batch["attention_mask"].unsqueeze(-1).float()  # [b, L, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # [b, H]
            out.append(torch.nn.functional.normalize(pooled, dim=1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    train = embed(train_reports, "train")
    rest = [embed(t, f"{len(t)} more") for t in others]
    source = getattr(model, "_ecglm_source", None)
    identity = {"name": "llm", "llm": str(cfg.llm), "dim": int(train.shape[1]), "model_type": model.config.model_type,
                "revision": getattr(source, "revision", None),
                "about": "the LLM's last hidden states, mean-pooled over the report's tokens"}  # fmt: skip
    return train, rest, identity


def text_embeddings(pairs: dict[str, Pairs], descriptions: dict[str, dict[str, str]], cfg: METSConfig, device: Any,
                    progress: bool) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, Any]]:  # fmt: skip
    """``(train reports [U, d], val reports [u, d], {task: class descriptions [5, d]}, identity)``; ``descriptions``
    as :func:`class_descriptions` gives them."""
    classes = [text for per_task in descriptions.values() for text in per_task.values()]
    others = [pairs["val"].reports, classes]
    if cfg.text_encoder == "tfidf":
        train, (val, desc), identity = tfidf_embeddings(pairs["train"].reports, others, cfg)
    else:
        train, (val, desc), identity = llm_embeddings(pairs["train"].reports, others, cfg, device, progress)
    per_task = {task: desc[5 * i : 5 * i + 5] for i, task in enumerate(TASK_NAMES)}
    return train, val, per_task, identity


# ----------------------------------------------------------------------------------------- the model and loss


def build_model(cfg: METSConfig, text_dim: int) -> Any:
    """The trainable parts: ``encoder`` (ResNet-18 1D), ``ecg_projection`` and ``text_projection`` (linear)."""
    import torch

    from ecglm.models.encoder import ResNet1d18

    encoder = ResNet1d18(n_classes=1, base_width=cfg.base_width, dilation=cfg.dilation)
    return torch.nn.ModuleDict({"encoder": encoder,
                                "ecg_projection": torch.nn.Linear(encoder.embed_dim, cfg.projection_dim),
                                "text_projection": torch.nn.Linear(text_dim, cfg.projection_dim)})  # fmt: skip


def clip_loss(ecg: Any, text: Any, temperature: float) -> Any:
    """CLIP's symmetric contrastive loss of ``ecg`` [B, D] and ``text`` [B, D] (normalised), pair i = (ecg i,
    text i): each ECG must pick its text among the batch's, and each text its ECG."""
    import torch
    import torch.nn.functional as F

    logits = (ecg @ text.T / temperature).float()  # [B, B]
    target = torch.arange(len(ecg), device=logits.device)  # [B]
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _project(model: Any, x: Any) -> Any:
    import torch.nn.functional as F

    return F.normalize(model["ecg_projection"](model["encoder"].forward_features(x, None)), dim=1)  # [b, D]


def epoch_loss(model: Any, store: np.ndarray, pairs: Pairs, order: np.ndarray, text: Any, cfg: METSConfig,
               device: Any, optimizer: Any = None, scheduler: Any = None) -> float:  # fmt: skip
    """One pass over ``pairs`` in ``order`` (positions into pairs) in batches of cfg.batch_size (a last batch of
    one pair is skipped: no negatives); ``text`` [U, d] the split's report embeddings. Trains when an optimizer
    is given. Returns the mean loss."""
    import torch
    import torch.nn.functional as F

    losses = []
    for start in range(0, len(order), cfg.batch_size):
        pos = np.sort(order[start : start + cfg.batch_size])
        if len(pos) < 2:
            continue
        x = torch.from_numpy(np.asarray(store[pairs.rows[pos]], dtype=np.float32)).to(device)  # [b, 12, T] uV
        ids = torch.from_numpy(pairs.text[pos])  # [b]
        with torch.set_grad_enabled(optimizer is not None):
            e = _project(model, x)  # [b, D]
            t = F.normalize(model["text_projection"](text[ids].to(device)), dim=1)  # [b, D]
            loss = clip_loss(e, t, cfg.temperature)
        if not torch.isfinite(loss):
            raise StageError(f"METS training diverged: loss {loss.item()} (lr {cfg.lr}); lower lr (--set lr=...)")
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


def recall_at_k(model: Any, store: np.ndarray, pairs: Pairs, text: Any, cfg: METSConfig, device: Any,
                k: int = RECALL_K) -> dict[str, Any]:  # fmt: skip
    """ECG-to-report retrieval on ``pairs``: the share of ECGs whose own report text is among the ``k`` distinct
    reports of the split nearest to it, with its 95% bootstrap interval over patients and its chance level
    (k / distinct reports: a random ranking)."""
    import torch
    import torch.nn.functional as F

    from ecglm.core.stats import group_bootstrap_mean

    if len(pairs.rows) == 0:
        return {"k": k, "value": None, "low": None, "high": None, "chance": None, "n_ecgs": 0, "n_reports": 0}
    with torch.no_grad():
        t = F.normalize(model["text_projection"](text.to(device)), dim=1)  # [U, D]
        hits = []
        for start in range(0, len(pairs.rows), cfg.batch_size):
            sl = slice(start, start + cfg.batch_size)
            x = torch.from_numpy(np.asarray(store[pairs.rows[sl]], dtype=np.float32)).to(device)  # [b, 12, T]
            sim = _project(model, x) @ t.T  # [b, U]
            top = sim.topk(min(k, t.shape[0]), dim=1).indices.cpu()  # [b, k]
            hits.append((top == torch.from_numpy(pairs.text[sl])[:, None]).any(dim=1).numpy())
    hit = np.concatenate(hits).astype(np.float64)  # [n]
    ci = group_bootstrap_mean(hit, pairs.groups, seed=cfg.seed)
    return {"k": k, "value": ci["mean"], "low": ci["low"], "high": ci["high"], "chance": min(k, len(pairs.reports)) / len(pairs.reports),
            "n_ecgs": int(len(hit)), "n_reports": len(pairs.reports), "groups": ci["groups"]}  # fmt: skip


# ----------------------------------------------------------------------------------------- the loop


def train_mets(cfg: METSConfig, records: str | os.PathLike, reports: str | os.PathLike, signals: str | os.PathLike,
               out_dir: str | os.PathLike, progress: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Train METS; write model.safetensors, config.yaml and metrics.json into ``out_dir``."""
    import torch
    from tqdm import tqdm

    from ecglm.core.seeding import deterministic_torch, numpy_rng, seed_everything
    from ecglm.data.ecg_data import open_signals
    from ecglm.models.encoder import count_parameters

    records, reports, signals, out_dir = Path(records), Path(reports), Path(signals), Path(out_dir)
    pairs, missing = read_pairs(records, reports, signals, cfg)
    store = open_signals(signals)
    device = resolve_device(cfg.device)
    deterministic = deterministic_torch(cuda=device.type == "cuda") if cfg.deterministic else contextlib.nullcontext()
    with torch_threads(threads), deterministic:
        descriptions = class_descriptions()
        train_text, val_text, class_text, text_identity = text_embeddings(pairs, descriptions, cfg, device, progress)
        train_text, val_text = torch.from_numpy(train_text), torch.from_numpy(val_text)  # [U, d], [u, d]
        seed_everything(cfg.seed)
        model = build_model(cfg, train_text.shape[1]).to(device)
        params = [p for name, p in model.named_parameters() if not name.startswith("encoder.head.")]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = cfg.epochs * max(1, math.ceil(len(pairs["train"].rows) / cfg.batch_size))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup_steps=0))  # cosine to 0
        log.info("METS (%s text encoder, %d dims): ResNet1d18 (base width %d, %d parameters), %d training ECGs "
                 "(%d distinct reports), %d validation ECGs, device %s", cfg.text_encoder, train_text.shape[1],
                 cfg.base_width, count_parameters(model["encoder"]), len(pairs["train"].rows),
                 len(pairs["train"].reports), len(pairs["val"].rows), device)  # fmt: skip
        order_rng = numpy_rng(cfg.seed, "shuffle")
        train_loss, val_loss, best = [], [], BestEpoch()
        for epoch in tqdm(range(1, cfg.epochs + 1), desc="mets", unit="epoch", disable=not progress, file=sys.stderr):
            model.train()
            train_loss.append(epoch_loss(model, store, pairs["train"], order_rng.permutation(len(pairs["train"].rows)),
                                         train_text, cfg, device, optimizer, scheduler))  # fmt: skip
            model.eval()
            n_val = len(pairs["val"].rows)
            val_loss.append(epoch_loss(model, store, pairs["val"], np.arange(n_val), val_text, cfg, device)
                            if n_val >= 2 else None)  # fmt: skip
            score = val_loss[-1] if val_loss[-1] is not None else -epoch  # no validation: keep the last epoch
            best.update(score, epoch, lambda: {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            log.info("epoch %d/%d: train loss %.4f, val loss %s", epoch, cfg.epochs, train_loss[-1],
                     "n/a" if val_loss[-1] is None else f"{val_loss[-1]:.4f}")  # fmt: skip
        model.load_state_dict(best.state)
        model.eval()
        recall = recall_at_k(model, store, pairs["val"], val_text, cfg, device)
        with torch.no_grad():
            classes = {task: torch.nn.functional.normalize(model["text_projection"](torch.from_numpy(v).to(device)), dim=1).cpu()
                       for task, v in class_text.items()}  # fmt: skip
    log.info("validation ECG-to-report recall@%d: %s (chance %s, %d ECGs, %d distinct reports)", RECALL_K,
             _fmt(recall["value"], recall["low"], recall["high"]), _fmt(recall["chance"]), recall["n_ecgs"],
             recall["n_reports"])  # fmt: skip
    metrics = {"epochs": cfg.epochs, "best_epoch": best.epoch, "train_loss": train_loss, "val_loss": val_loss,
               "recall_at_5": recall, "text_encoder": text_identity,
               "class_descriptions": descriptions,
               "n": {name: int(len(p.rows)) for name, p in pairs.items()},
               "distinct_reports": {name: len(p.reports) for name, p in pairs.items()}, "without_report": missing,
               "device": str(device), "parameters": count_parameters(model["encoder"]),
               "records": str(records), "reports": str(reports), "signals": str(signals)}  # fmt: skip
    write_outputs(out_dir, cfg, metrics, best.state, classes)
    log.info("wrote %s, %s, %s in %s (epoch %d kept)", MODEL_FILE, CONFIG_FILE, METRICS_FILE, out_dir, best.epoch)
    return metrics


def _fmt(value: float | None, low: float | None = None, high: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if low is None else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def write_outputs(out_dir: Path, cfg: METSConfig, metrics: dict[str, Any], state: dict[str, Any],
                  classes: dict[str, Any]) -> None:  # fmt: skip
    """The encoder and ECG projection of ``state`` and the projected class descriptions, with the config and metrics."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in state.items()
               if not k.startswith(("text_projection.", "encoder.head."))}  # fmt: skip
    tensors.update({f"class_text.{task}": v.contiguous() for task, v in classes.items()})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / CONFIG_FILE, cfg.to_yaml())
    write_text_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        header = {"format": SAFETENSORS_FORMAT, "leads": list(LEADS), "text_encoder": cfg.text_encoder,
                  "best_epoch": metrics["best_epoch"]}  # fmt: skip
        save_file(tensors, str(tmp), metadata={"ecglm": json.dumps(header, sort_keys=True)})


class METS(NamedTuple):
    """A trained METS model (eval mode): ``scores(x)`` gives each task's zero-shot logits."""

    model: Any  # ModuleDict with encoder and ecg_projection
    class_text: dict[str, Any]  # {task: [5, D] normalised}
    cfg: METSConfig

    def scores(self, x: Any, task: str) -> Any:
        """Cosine similarity of the ECGs ``x`` [b, 12, T] to the task's five classes, over the temperature: [b, 5]."""
        return _project(self.model, x) @ self.class_text[task].to(x.device).T / self.cfg.temperature


def load_mets(directory: str | os.PathLike, device: str = "cpu") -> METS:
    """The model written by :func:`train_mets` (eval mode), or StageError naming the file."""
    import torch

    from ecglm.train.train_encoder import read_weights

    directory = Path(directory)
    cfg = METSConfig.from_yaml(directory / CONFIG_FILE)
    path = directory / MODEL_FILE
    state = read_weights(path, "METS weights not found (run `ecglm train-mets`)")
    classes = {task: state.pop(f"class_text.{task}", None) for task in TASK_NAMES}
    if any(v is None or v.shape != (5, cfg.projection_dim) for v in classes.values()):
        raise StageError(f"{path}: no class descriptions [5, {cfg.projection_dim}] for every task {TASK_NAMES}")
    model = build_model(cfg, text_dim=1)
    del model["text_projection"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"encoder.head.weight", "encoder.head.bias"}:
        raise StageError(f"{path}: weights do not match {directory / CONFIG_FILE} (missing {missing}, "
                         f"unexpected {unexpected})")  # fmt: skip
    return METS(model.to(device).eval(), {t: v.to(torch.float32) for t, v in classes.items()}, cfg)


# ------------------------------------------------------------------------------------------------ CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-mets",
        help="the METS baselines: an ECG encoder trained against a frozen text encoder's report embeddings",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--records", required=True, type=Path, help="records.parquet written by `ecglm prepare`")
    p.add_argument("--reports", required=True, type=Path, help="reports_en.parquet written by `ecglm translate`")
    p.add_argument("--signals", required=True, type=Path, help="signals_{fs}.npy written by `ecglm prepare`")
    p.add_argument("--out", required=True, type=Path, help="output folder for model.safetensors, config.yaml, metrics.json")
    METSConfig.add_options(p, threads=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    train_mets(METSConfig.from_args(args), args.records, args.reports, args.signals, args.out,
               progress=not args.no_progress, threads=args.threads)  # fmt: skip
    return 0
