"""The ECG-LM model: ECG encoder -> projector -> ``<ecg>`` embeddings spliced into a FROZEN causal LM.

Shapes: ``B`` batch, ``L`` tokens, ``T`` samples per lead, ``D`` encoder feature size, ``H`` the LLM's
hidden size, ``V`` rows of the LLM's input embedding matrix, ``K`` = ``num_ecg_tokens``.

- The encoder (``ecglm.models.encoder.ResNet1d18`` in the pipeline, which takes microvolts, int16 or float; any
  module with ``forward_features(x [B, 12, T], lead_mask [B, 12] bool) -> [B, D]``) and the projector are
  trained; the LLM is frozen (:func:`ecglm.models.llm.freeze`): no parameter requires a gradient and it stays in
  eval mode even when :meth:`ECGLM.train` is called, so its weights are bit-identical after training.
- Projectors (config ``projector``): ``linear``, the paper's ``Linear(D, K * H)``; ``vocab``, logits over
  the vocabulary -> softmax with a temperature (one per ECG token) -> times the frozen input embedding
  matrix, so each ECG token is a convex blend of real word embeddings (special tokens, ``<ecg>`` and
  spare rows beyond the tokenizer are excluded, see :func:`vocab_exclusions`).
- The splice (LLaVA's ``special_image_mask`` + ``masked_scatter``): the token embeddings of ``input_ids``
  with the ``K`` projected embeddings of row ``b`` written, in order, at row ``b``'s ``K`` ``<ecg>``
  positions. Each row must hold exactly ``K`` ``<ecg>`` ids (ValueError otherwise, naming the counts),
  but for a row whose lead mask keeps no lead: a text without an ECG (a chat batch mixes both), which
  must hold none.
- Saved (:meth:`ECGLM.save`): ``model.safetensors`` with the encoder and projector tensors only (no LLM
  weight) and ``config.json`` naming the base LLM, the projector and the encoder.
- LoRA (:meth:`ECGLM.add_lora`, the instruction fine-tunings): peft's low-rank adapters on the LLM's
  linear layers, the only LLM tensors that train (the base weights stay frozen and bit-identical; the LLM
  stays in eval mode, so there is no adapter dropout). Saved apart from the base weights, in peft's own
  format (``adapter/adapter_config.json`` and ``adapter/adapter_model.safetensors``), never the whole LLM;
  :meth:`ECGLM.load` puts them back on the base LLM. Optionally with trainable token rows (peft's
  ``trainable_token_indices``): a delta on the embedding rows of a few named tokens (and on the output
  head's rows when it is tied to the embeddings), saved in the adapter as well, the base rows unchanged.
  For inference (``ecglm evaluate-qa``) :meth:`ECGLM.merge_adapters` folds them into the in-memory LLM.

Scoring for the zero-shot evaluation (no sampling, batched forward passes): :func:`sequence_logprob`
(log-probability of the target spans of texts), :func:`continuation_logprob` (of continuations after a
prompt), :func:`score_next_token` (of single next tokens, one forward pass per prompt); and
:func:`generate_greedy` (the model's own words after a prompt: greedy decoding, left-padded batches).
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ecglm.core.atomic import atomic_path, write_text_atomic
from ecglm.core.errors import StageError
from ecglm.core.leads import N_LEADS
from ecglm.models import PROJECTORS
from ecglm.models.llm import LLMSource
from ecglm.models.llm import llm_source as recorded_llm_source
from ecglm.models.tokenize_pairs import IGNORE_INDEX, collate, encode_sample
from ecglm.text.prompts import ECG_TOKEN

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORMAT = "ecglm-multimodal/1"


# ----------------------------------------------------------------------------------------- projectors
class LinearProjector(nn.Module):
    """The paper's projection: ``Linear(D, K * H)``, reshaped to ``K`` embeddings."""

    kind = "linear"

    def __init__(self, feature_dim: int, hidden_size: int, num_ecg_tokens: int = 1) -> None:
        super().__init__()
        self.num_ecg_tokens = num_ecg_tokens
        self.hidden_size = hidden_size
        self.proj = nn.Linear(feature_dim, hidden_size * num_ecg_tokens)

    def forward(self, features: torch.Tensor, embedding_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``features [B, D]`` -> ``[B, K, H]`` (``embedding_weight`` is unused)."""
        out = self.proj(features)  # [B, K*H]
        return out.view(features.shape[0], self.num_ecg_tokens, self.hidden_size)  # [B, K, H]


class VocabProjector(nn.Module):
    """Each ECG token is a softmax-weighted blend of the frozen input embedding rows.

    ``weights(z) = softmax(Linear(D, K * V)(z) / temperature)`` per token, 0 on excluded ids;
    ``forward(z, E) = weights(z) @ E``. ``E`` (the LLM's embedding matrix ``[V, H]``) is passed in, never
    stored, so it is not part of this module's state.

    ``hard=True`` makes each ECG token one real word: the forward pass takes the one-hot of the argmax
    (in training, of the logits plus Gumbel noise, drawn from torch's global RNG), the backward pass the
    gradient of the softmax (straight-through Gumbel-softmax, Jang et al. 2017). A small LM reads its own
    words, not blends it never saw in pretraining.
    """

    kind = "vocab"

    def __init__(
        self,
        feature_dim: int,
        vocab_size: int,
        num_ecg_tokens: int = 1,
        temperature: float = 1.0,
        excluded_ids: Iterable[int] = (),
        hard: bool = False,
    ) -> None:
        super().__init__()
        self.hard = bool(hard)
        if temperature <= 0:
            raise ValueError(f"the vocab projector's temperature must be > 0, got {temperature}")
        self.num_ecg_tokens = num_ecg_tokens
        self.vocab_size = vocab_size
        self.temperature = float(temperature)
        self.excluded_ids = sorted({int(i) for i in excluded_ids})
        if any(not 0 <= i < vocab_size for i in self.excluded_ids):
            raise ValueError(f"excluded ids must lie in [0, {vocab_size})")
        if len(self.excluded_ids) >= vocab_size:
            raise ValueError("the vocab projector excludes every vocabulary row")
        self.logits = nn.Linear(feature_dim, vocab_size * num_ecg_tokens)
        excluded = torch.zeros(vocab_size, dtype=torch.bool)  # [V]
        excluded[self.excluded_ids] = True
        self.register_buffer("excluded", excluded, persistent=False)

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """``features [B, D]`` -> blend weights ``[B, K, V]`` (float32, each row sums to 1, 0 on excluded ids)."""
        logits = self.logits(features).float().view(features.shape[0], self.num_ecg_tokens, self.vocab_size)
        logits = logits.masked_fill(self.excluded, float("-inf")) / self.temperature  # [B, K, V]
        if not self.hard:
            return torch.softmax(logits, dim=-1)
        if self.training:  # Gumbel noise: explore the words in proportion to their probability
            uniform = torch.rand_like(logits).clamp_(1e-10, 1.0 - 1e-7)
            logits = logits - torch.log(-torch.log(uniform))
        soft = torch.softmax(logits, dim=-1)  # [B, K, V]
        one_hot = torch.nn.functional.one_hot(logits.argmax(dim=-1), self.vocab_size).to(soft.dtype)  # [B, K, V]
        return one_hot + (soft - soft.detach())  # exactly the word forward, the softmax's gradient backward

    def forward(self, features: torch.Tensor, embedding_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``features [B, D]``, ``embedding_weight [V, H]`` -> ``[B, K, H]`` = weights @ E."""
        if embedding_weight is None or embedding_weight.shape[0] != self.vocab_size:
            rows = None if embedding_weight is None else embedding_weight.shape[0]
            raise ValueError(f"the vocab projector needs the [{self.vocab_size}, H] embedding matrix, got {rows} rows")
        w = self.weights(features)  # [B, K, V]
        if embedding_weight.dtype != torch.float32:
            return w.to(embedding_weight.dtype) @ embedding_weight  # [B, K, H]
        return w @ embedding_weight  # [B, K, H]


def build_projector(
    kind: str,
    *,
    feature_dim: int,
    hidden_size: int,
    vocab_size: int,
    num_ecg_tokens: int = 1,
    temperature: float = 1.0,
    excluded_ids: Iterable[int] = (),
    hard: bool = False,
) -> nn.Module:
    """The projector named ``kind`` (one of :data:`PROJECTORS`)."""
    if num_ecg_tokens < 1:
        raise ValueError(f"num_ecg_tokens must be >= 1, got {num_ecg_tokens}")
    if kind == "linear":
        return LinearProjector(feature_dim, hidden_size, num_ecg_tokens)
    if kind == "vocab":
        return VocabProjector(feature_dim, vocab_size, num_ecg_tokens, temperature, excluded_ids, hard)
    raise ValueError(f"unknown projector {kind!r} (expected one of {PROJECTORS})")


def vocab_exclusions(tokenizer, llm: nn.Module) -> list[int]:
    """Embedding rows the vocab projector must not blend: the tokenizer's special ids (``<ecg>`` included)
    and the spare rows beyond the tokenizer's vocabulary (never trained in most checkpoints)."""
    rows = llm.get_input_embeddings().weight.shape[0]
    ids = {i for i in tokenizer.all_special_ids if i is not None and 0 <= i < rows}
    ids.add(tokenizer.convert_tokens_to_ids(ECG_TOKEN))
    ids.update(range(len(tokenizer), rows))
    return sorted(ids)


# ----------------------------------------------------------------------------------------- the model
@dataclass
class ECGLMOutput:
    """``loss``: mean next-token cross-entropy over the ``n_targets`` labelled tokens (None without labels;
    0 with a gradient when there are none); ``logits [B, L, V]`` as the LLM returns them."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    n_targets: int


def _feature_dim(encoder: nn.Module, feature_dim: int | None) -> int:
    if feature_dim is not None:
        return int(feature_dim)
    for attr in ("feature_dim", "out_features", "embed_dim"):
        value = getattr(encoder, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError("pass feature_dim: the encoder has no integer attribute feature_dim / out_features / embed_dim")


def _default_encoder_spec(encoder: nn.Module) -> dict[str, Any]:
    """``{"target": "module:Class", "kwargs": ...}``: the encoder's ``config`` dict if it has one, else the
    constructor arguments that the instance keeps as attributes of the same name (ResNet1d18:
    ``n_classes``, ``base_width``, ``n_leads``) with plain JSON values."""
    import inspect

    cls = type(encoder)
    config = getattr(encoder, "config", None)
    if isinstance(config, dict):
        kwargs = dict(config)
    else:
        kwargs = {}
        for name in list(inspect.signature(cls.__init__).parameters)[1:]:
            value = getattr(encoder, name, None)
            if isinstance(value, (bool, int, float, str)):
                kwargs[name] = value
    names = {known: name for name, known in _encoder_registry().items()}
    return {"target": names.get(cls, f"{cls.__module__}:{cls.__qualname__}"), "kwargs": kwargs}


class ECGLM(nn.Module):
    """Encoder + projector + frozen causal LM; ``ecg_token_id`` marks where the ECG embeddings go.

    ``encoder_spec`` is recorded in the saved config so :meth:`load` can rebuild the encoder:
    ``{"target": "module:Class", "kwargs": {...}}`` (default: :func:`_default_encoder_spec`).
    ``llm_source`` defaults to what :func:`ecglm.models.llm.load_llm` recorded.
    ``encoder_checkpointing`` recomputes the encoder's activations in the backward pass (saves memory;
    a BatchNorm's running statistics are then updated twice per step).
    """

    def __init__(
        self,
        encoder: nn.Module,
        llm: nn.Module,
        ecg_token_id: int,
        *,
        projector: str = "linear",
        num_ecg_tokens: int = 1,
        temperature: float = 1.0,
        vocab_excluded_ids: Iterable[int] | None = None,
        vocab_hard: bool = False,
        feature_dim: int | None = None,
        encoder_spec: dict[str, Any] | None = None,
        llm_source: LLMSource | None = None,
        encoder_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        embedding = llm.get_input_embeddings()
        vocab_rows, hidden = embedding.weight.shape  # V, H
        if not 0 <= ecg_token_id < vocab_rows:
            raise ValueError(f"ecg_token_id {ecg_token_id} is not a row of the LLM's {vocab_rows}-row embedding")
        self.llm = llm
        for param in self.llm.parameters():
            param.requires_grad_(False)
        self.llm.eval()
        self.ecg_token_id = int(ecg_token_id)
        self.num_ecg_tokens = int(num_ecg_tokens)
        self.feature_dim = _feature_dim(encoder, feature_dim)
        self.hidden_size = int(hidden)
        self.encoder_checkpointing = encoder_checkpointing
        self.encoder_spec = encoder_spec if encoder_spec is not None else _default_encoder_spec(encoder)
        self.llm_source = llm_source if llm_source is not None else recorded_llm_source(llm)
        excluded = [self.ecg_token_id] if vocab_excluded_ids is None else list(vocab_excluded_ids)
        device = embedding.weight.device
        self.encoder = encoder.to(device)
        self.projector = build_projector(
            projector,
            feature_dim=self.feature_dim,
            hidden_size=self.hidden_size,
            vocab_size=vocab_rows,
            num_ecg_tokens=self.num_ecg_tokens,
            temperature=temperature,
            excluded_ids=excluded,
            hard=vocab_hard,
        ).to(device)

    # -- modes and parameters
    def train(self, mode: bool = True) -> "ECGLM":
        """Set the encoder and projector to ``mode``; the LLM stays in eval mode."""
        super().train(mode)
        self.llm.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The encoder's and projector's parameters and the LLM's LoRA adapters, if any (what the optimizer gets)."""
        return [*self.encoder.parameters(), *self.projector.parameters(), *self._adapter_parameters().values()]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder and projector tensors (parameters and buffers), keys ``encoder.*`` / ``projector.*``, and the
        LLM's LoRA adapter tensors (``llm.*``) when it has any; never a base LLM weight."""
        state = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        state.update({f"projector.{k}": v for k, v in self.projector.state_dict().items()})
        state.update({f"llm.{k}": v for k, v in self._adapter_parameters().items()})
        return state

    def load_trainable(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Load what :meth:`trainable_state_dict` gave (a resume checkpoint); StageError naming ``where`` on a mismatch."""
        adapters = self._adapter_parameters()
        llm_keys = {k[len("llm."):] for k in tensors if k.startswith("llm.")}
        if llm_keys != set(adapters):
            raise StageError(f"{where}: its LLM adapter tensors do not match the model's ({len(llm_keys)} saved, "
                             f"{len(adapters)} in the model)")  # fmt: skip
        _load_parts(self, {k: v for k, v in tensors.items() if not k.startswith("llm.")}, Path(where))
        with torch.no_grad():
            for name, param in adapters.items():
                param.copy_(tensors[f"llm.{name}"])

    def _adapter_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.llm.named_parameters() if p.requires_grad}

    @property
    def adapter(self) -> dict[str, Any] | None:
        """The LoRA settings when the LLM carries adapters (:meth:`add_lora`), else None."""
        return getattr(self, "_adapter", None)

    def add_lora(self, rank: int, alpha: float, targets: Sequence[str], token_ids: Sequence[int] = ()) -> None:
        """Wrap the LLM in peft LoRA adapters of ``rank`` on the linear layers named ``targets`` (e.g. q_proj,
        v_proj); only the adapters train, and the embedding rows of ``token_ids`` when given (peft's trainable
        tokens: a delta per row, tied to the output head where the LLM ties them). StageError when a target
        names no layer of this LLM or a token id no row of its embeddings."""
        from peft import LoraConfig, get_peft_model

        if self.adapter is not None:
            raise StageError("the LLM already carries LoRA adapters")
        names = {name.rsplit(".", 1)[-1] for name, module in self.llm.named_modules() if isinstance(module, nn.Linear)}
        unknown = sorted(set(targets) - names)
        if unknown or not targets:
            raise StageError(f"lora targets {unknown or list(targets)} name no linear layer of the LLM "
                             f"({type(self.llm).__name__}: {sorted(names)})")  # fmt: skip
        rows = int(self.llm.get_input_embeddings().weight.shape[0])
        token_ids = sorted({int(t) for t in token_ids})
        if token_ids and not 0 <= token_ids[0] <= token_ids[-1] < rows:
            raise StageError(f"trainable token ids must be rows of the LLM's {rows} embeddings, got "
                             f"{token_ids[0]}..{token_ids[-1]}")  # fmt: skip
        config = LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules=sorted(targets), lora_dropout=0.0,
                            bias="none", task_type="CAUSAL_LM", trainable_token_indices=token_ids or None)  # fmt: skip
        with warnings.catch_warnings():  # peft asks transformers 5 for a deprecated property name
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.llm = get_peft_model(self.llm, config)
        self.llm.eval()
        self._adapter = {"folder": ADAPTER_DIR, "rank": int(rank), "alpha": float(alpha), "targets": sorted(targets),
                         **({"trainable_tokens": len(token_ids)} if token_ids else {})}  # fmt: skip

    def merge_adapters(self) -> None:
        """Fold the LoRA adapters (and the trainable token rows) into this in-memory LLM, for inference: the same
        model up to float rounding, faster (no separate adapter products in every layer). The merged model
        cannot be saved or trained further; the base LLM on disk is untouched."""
        if self.adapter is None:
            raise StageError("the LLM carries no adapters to merge")
        if self.merged:
            return
        with warnings.catch_warnings():  # peft asks transformers 5 for a deprecated property name
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.llm = self.llm.merge_and_unload()
        for param in self.llm.parameters():
            param.requires_grad_(False)
        self.llm.eval()
        self._merged = True

    @property
    def merged(self) -> bool:
        """Whether :meth:`merge_adapters` folded the adapters into the LLM."""
        return getattr(self, "_merged", False)

    @property
    def projector_kind(self) -> str:
        return self.projector.kind

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    # -- the splice
    def project(self, signals: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``signals [B, 12, T]`` (the encoder's unit, as float32), ``lead_mask [B, 12]`` bool (None = all kept) -> ``[B, K, H]``."""
        if signals.dim() != 3 or signals.shape[1] != N_LEADS:
            raise ValueError(f"signals must be [B, {N_LEADS}, T], got {list(signals.shape)}")
        signals = signals.to(self.device, torch.float32)
        if lead_mask is None:
            lead_mask = torch.ones(signals.shape[:2], dtype=torch.bool, device=self.device)  # [B, 12]
        lead_mask = lead_mask.to(self.device, torch.bool)
        if self.encoder_checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            features = checkpoint(self.encoder.forward_features, signals, lead_mask, use_reentrant=False)
        else:
            features = self.encoder.forward_features(signals, lead_mask)  # [B, D]
        return self.projector(features, self.llm.get_input_embeddings().weight)  # [B, K, H]

    def embed(
        self, input_ids: torch.Tensor, signals: torch.Tensor | None = None, lead_mask: torch.Tensor | None = None,
        ecg_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``input_ids [B, L]`` -> ``inputs_embeds [B, L, H]`` (the LLM's dtype) with the ECGs spliced in.

        Rows at ``<ecg>`` positions are the projected embeddings (row ``b``'s ``K`` embeddings in order),
        every other row is the LLM's token embedding. ``ecg_embeds [B, K, H]`` (what :meth:`project` gave,
        for texts that share an ECG) stand in for ``signals``. Without either there must be no ``<ecg>``
        token. Raises ValueError naming the counts when the number of ``<ecg>`` tokens is not
        ``B * K``, or a row does not hold exactly ``K``.
        """
        input_ids = input_ids.to(self.device)
        embeds = self.llm.get_input_embeddings()(input_ids)  # [B, L, H]
        is_ecg = input_ids == self.ecg_token_id  # [B, L] (LLaVA's special_image_mask)
        n_tokens = int(is_ecg.sum())
        if ecg_embeds is not None:
            signals = ecg_embeds
        if signals is None:
            if n_tokens:
                raise ValueError(f"input_ids hold {n_tokens} {ECG_TOKEN} tokens but no ECG signals were given")
            return embeds
        batch = input_ids.shape[0]
        if signals.shape[0] != batch:
            raise ValueError(f"{signals.shape[0]} ECG signals for a batch of {batch} texts")
        # a row whose lead mask keeps no lead is a text without an ECG (a chat turn about no recording)
        has_ecg = torch.ones(batch, dtype=torch.bool, device=input_ids.device)  # [B]
        if lead_mask is not None and ecg_embeds is None:
            has_ecg = lead_mask.to(input_ids.device, torch.bool).any(dim=1)
        expected = int(has_ecg.sum()) * self.num_ecg_tokens
        if n_tokens != expected:
            raise ValueError(
                f"input_ids hold {n_tokens} {ECG_TOKEN} tokens, expected {expected} "
                f"({int(has_ecg.sum())} rows with an ECG x num_ecg_tokens {self.num_ecg_tokens})"
            )
        per_row = is_ecg.sum(dim=1)  # [B]
        bad = (per_row != has_ecg.long() * self.num_ecg_tokens).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"rows {bad} hold {per_row[bad].tolist()} {ECG_TOKEN} tokens, expected {self.num_ecg_tokens} each "
                "(0 where the lead mask keeps no lead)"
            )
        if ecg_embeds is not None:
            ecg = ecg_embeds  # [B, K, H]
        elif bool(has_ecg.all()):
            ecg = self.project(signals, lead_mask)  # [B, K, H]
        else:
            rows = has_ecg.nonzero().flatten().to(signals.device)
            ecg = self.project(signals[rows], lead_mask[rows])  # [B', K, H] the rows with an ECG
        return embeds.masked_scatter(is_ecg.unsqueeze(-1), ecg.to(embeds.dtype))  # [B, L, H]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        signals: torch.Tensor | None = None,
        lead_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ECGLMOutput:
        """Run the frozen LLM on the spliced embeddings; ``labels [B, L]`` (-100 = ignored) give the next-token loss.

        The loss is the mean cross-entropy (float32) of predicting ``labels[:, 1:]`` from positions
        ``:-1`` over the labelled tokens of the whole batch.
        """
        inputs_embeds = self.embed(input_ids, signals, lead_mask)  # [B, L, H]
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        out = self.llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False)
        logits = out.logits  # [B, L, V]
        if labels is None:
            return ECGLMOutput(None, logits, 0)
        target = labels.to(self.device)[:, 1:]  # [B, L-1]
        keep = target != IGNORE_INDEX  # [B, L-1]
        n_targets = int(keep.sum())
        if n_targets == 0:
            return ECGLMOutput(logits.sum() * 0.0, logits, 0)
        picked = logits[:, :-1][keep].float()  # [M, V]
        loss = nn.functional.cross_entropy(picked, target[keep], reduction="mean")
        return ECGLMOutput(loss, logits, n_targets)

    # -- persistence
    def config_dict(self) -> dict[str, Any]:
        """What :meth:`save` writes to ``config.json``."""
        projector: dict[str, Any] = {"kind": self.projector_kind, "num_ecg_tokens": self.num_ecg_tokens}
        if isinstance(self.projector, VocabProjector):
            projector["temperature"] = self.projector.temperature
            projector["vocab_excluded_ids"] = self.projector.excluded_ids
            projector["hard"] = self.projector.hard
        emb = self.llm.get_input_embeddings().weight
        return {
            "format": FORMAT,
            "base_llm": self.llm_source.to_dict(),
            "llm": {"class": type(self.llm).__name__, "hidden_size": self.hidden_size, "vocab_rows": int(emb.shape[0])},
            "ecg_token": ECG_TOKEN,
            "ecg_token_id": self.ecg_token_id,
            "projector": projector,
            "encoder": {"feature_dim": self.feature_dim, **self.encoder_spec},
            **({"adapter": self.adapter} if self.adapter is not None else {}),
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/model.safetensors`` (encoder + projector only) and ``folder/config.json``, atomically."""
        from safetensors.torch import save_file

        if self.merged:
            raise StageError(f"{folder}: a model whose adapters were merged into the LLM is for inference only, "
                             "not saved (save it before merge_adapters)")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.trainable_state_dict().items()
                 if not k.startswith("llm.")}  # the adapters: in peft's format, below  # fmt: skip
        with atomic_path(folder / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": FORMAT})
        if self.adapter is not None:
            from ecglm.core.atomic import staged_folder

            with staged_folder(folder / ADAPTER_DIR) as tmp:
                # the adapters only: never the (resized, untrained) embedding matrices, which peft would
                # otherwise add because load_llm grew them by the <ecg> row
                self.llm.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False)
        write_text_atomic(folder / CONFIG_NAME, json.dumps(self.config_dict(), indent=2) + "\n")
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        llm: nn.Module,
        *,
        encoder: nn.Module | None = None,
        tokenizer=None,
        encoder_checkpointing: bool = False,
    ) -> "ECGLM":
        """Rebuild a saved model around ``llm`` (the same base LLM, loaded with :func:`ecglm.models.llm.load_llm`).

        The encoder is ``encoder`` if given (its weights are replaced), else built from the saved
        ``encoder.target`` (a class of the ``ecglm`` package) and ``encoder.kwargs``. Raises StageError,
        naming the file, on a missing/corrupt file, an LLM of another hidden size or vocabulary, a
        tokenizer whose ``<ecg>`` id differs, or tensors that do not match the model.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        cfg = _read_config(cfg_path)
        hidden = llm.get_input_embeddings().weight.shape[1]
        rows = llm.get_input_embeddings().weight.shape[0]
        if hidden != cfg["llm"]["hidden_size"] or rows != cfg["llm"]["vocab_rows"]:
            raise StageError(
                f"{cfg_path}: saved for an LLM with hidden size {cfg['llm']['hidden_size']} and "
                f"{cfg['llm']['vocab_rows']} embedding rows ({cfg['base_llm']['name_or_path']}), "
                f"got {hidden} and {rows}"
            )
        if tokenizer is not None and tokenizer.convert_tokens_to_ids(ECG_TOKEN) != cfg["ecg_token_id"]:
            raise StageError(
                f"{cfg_path}: saved with {ECG_TOKEN} id {cfg['ecg_token_id']}, the tokenizer has "
                f"{tokenizer.convert_tokens_to_ids(ECG_TOKEN)}"
            )
        current = recorded_llm_source(llm)
        if current.name_or_path and current.name_or_path != cfg["base_llm"]["name_or_path"]:
            log.warning(
                "%s was aligned with LLM %s, loading it with %s",
                folder, cfg["base_llm"]["name_or_path"], current.name_or_path,
            )
        try:
            enc_cfg = dict(cfg["encoder"])
            feature_dim = int(enc_cfg.pop("feature_dim"))
            proj = cfg["projector"]
            proj_kind = proj["kind"]
            if proj_kind not in PROJECTORS:
                raise StageError(f"{cfg_path}: field projector.kind {proj_kind!r} is not one of {PROJECTORS}")
            if encoder is None:
                encoder = build_encoder(enc_cfg, where=str(cfg_path))
            adapter = cfg.get("adapter")
            if adapter is not None:
                llm = _with_adapter(llm, folder, adapter, cfg_path)
            model = cls(
                encoder,
                llm,
                int(cfg["ecg_token_id"]),
                projector=proj_kind,
                num_ecg_tokens=int(proj["num_ecg_tokens"]),
                temperature=float(proj.get("temperature", 1.0)),
                vocab_excluded_ids=proj.get("vocab_excluded_ids"),
                vocab_hard=bool(proj.get("hard", False)),
                feature_dim=feature_dim,
                encoder_spec=enc_cfg,
                llm_source=LLMSource(cfg["base_llm"]["name_or_path"], cfg["base_llm"].get("revision")),
                encoder_checkpointing=encoder_checkpointing,
            )
        except KeyError as err:
            raise StageError(f"{cfg_path}: not a valid ECG-LM config: field {err} is missing") from err
        except (TypeError, ValueError) as err:
            raise StageError(f"{cfg_path}: not a valid ECG-LM config: {err}") from err
        try:
            state = load_file(str(weights_path), device=str(model.device))
        except (OSError, SafetensorError) as err:
            raise StageError(f"{weights_path}: cannot read the ECG-LM weights: {err}") from err
        _load_parts(model, state, weights_path)
        if adapter is not None:
            model._adapter = adapter
        return model


def _with_adapter(llm: nn.Module, folder: Path, adapter: Any, cfg_path: Path) -> nn.Module:
    """The base LLM with the saved LoRA adapters of ``folder/adapter`` (safetensors only, frozen)."""
    from peft import PeftModel

    if not isinstance(adapter, dict) or adapter.get("folder") != ADAPTER_DIR:
        raise StageError(f"{cfg_path}: field adapter must name the folder {ADAPTER_DIR!r}, got {adapter!r}")
    where = folder / ADAPTER_DIR
    if not (where / ADAPTER_WEIGHTS).is_file():
        raise StageError(f"{where}: no {ADAPTER_WEIGHTS} (the LoRA adapters are loaded from safetensors only)")
    try:
        with warnings.catch_warnings():  # peft asks transformers 5 for a deprecated property name
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return PeftModel.from_pretrained(llm, str(where), is_trainable=False, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise StageError(f"{where}: cannot load the LoRA adapters onto {type(llm).__name__}: {err}") from err


def _read_config(cfg_path: Path) -> dict[str, Any]:
    """A saved model's config.json, or StageError naming the file when it is unreadable or of another format."""
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise StageError(f"{cfg_path}: cannot read the ECG-LM config: {err}") from err
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        found = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise StageError(f"{cfg_path}: not an ECG-LM config (format {found!r}, expected {FORMAT!r})")
    return cfg


def _load_parts(model: ECGLM, state: dict[str, torch.Tensor], weights_path: Path) -> None:
    """Load the saved encoder and projector tensors into ``model`` (strict), naming the file on a mismatch."""
    enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    proj_state = {k[len("projector."):]: v for k, v in state.items() if k.startswith("projector.")}
    stray = sorted(k for k in state if not k.startswith(("encoder.", "projector.")))
    if stray:
        raise StageError(f"{weights_path}: unexpected tensors {stray[:5]}")
    for name, module, part in (("encoder", model.encoder, enc_state), ("projector", model.projector, proj_state)):
        try:
            module.load_state_dict(part, strict=True)
        except RuntimeError as err:
            raise StageError(f"{weights_path}: the {name} tensors do not match the model: {err}") from err


def _encoder_registry() -> dict[str, type[nn.Module]]:
    """The encoders a saved model may name as ``encoder.target``: a fixed table, never a free import path.

    The names are stable identifiers, kept as they were first written (``ecglm.encoder:ResNet1d18``)
    so that saved models stay loadable wherever the class lives in the package."""
    from ecglm.models.encoder import ResNet1d18

    return {"ecglm.encoder:ResNet1d18": ResNet1d18}


#: The values a saved config may give each encoder argument: (type, lowest, highest). The bounds keep a
#: crafted folder from asking for a model that would exhaust the memory.
_ENCODER_ARGS: dict[str, tuple[type, int, int]] = {
    "n_classes": (int, 1, 10_000), "base_width": (int, 1, 1_024), "n_leads": (int, 1, 12), "dilation": (int, 1, 64),
}


def build_encoder(spec: dict[str, Any], *, where: str = "config") -> nn.Module:
    """Build the encoder named by ``spec`` (``{"target": "ecglm.encoder:ResNet1d18", "kwargs": {...}}``).

    ``target`` must be a key of the fixed encoder registry and ``kwargs`` plain JSON scalars named by the
    class's constructor: a model folder can choose among known encoders and their sizes, never run an
    arbitrary callable. Raises StageError naming ``where`` and the field.
    """
    registry = _encoder_registry()
    target = spec.get("target") if isinstance(spec, dict) else None
    if not isinstance(target, str) or target not in registry:
        raise StageError(
            f"{where}: field encoder.target {target!r} is not a known encoder (known: {sorted(registry)}); "
            "a model folder names its encoder from this fixed list, never a free import path "
            "(for another encoder class, build it and pass encoder=)"
        )
    cls = registry[target]
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise StageError(f"{where}: field encoder.kwargs must be a mapping, got {type(kwargs).__name__}")
    allowed = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    for key, value in kwargs.items():
        if key not in allowed or key not in _ENCODER_ARGS:
            raise StageError(f"{where}: field encoder.kwargs.{key} is not an argument of {target} ({allowed})")
        tp, low, high = _ENCODER_ARGS[key]
        if isinstance(value, bool) or not isinstance(value, tp) or not low <= value <= high:
            raise StageError(
                f"{where}: field encoder.kwargs.{key} must be an integer in [{low}, {high}], got {value!r}"
            )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise StageError(f"{where}: field encoder.kwargs does not build {target}: {err}") from err


# ----------------------------------------------------------------------------------------- scoring
def _as_text_and_spans(item) -> tuple[str, Sequence]:
    if hasattr(item, "text") and hasattr(item, "spans"):
        return item.text, item.spans
    text, spans = item
    return text, spans


def _batches(n: int, size: int) -> Iterable[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class _EvalMode:
    """Context: the model in eval mode, gradients off; the previous mode restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.model.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def _slice_signals(signals, lead_mask, sl: slice) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if signals is None:
        return None, None
    sig = torch.as_tensor(signals[sl], dtype=torch.float32)  # [b, 12, T]
    mask = None if lead_mask is None else torch.as_tensor(lead_mask[sl], dtype=torch.bool)  # [b, 12]
    return sig, mask


def sequence_logprob(
    model: ECGLM,
    tokenizer,
    texts: Sequence,
    signals: torch.Tensor | None = None,
    lead_mask: torch.Tensor | None = None,
    *,
    batch_size: int = 8,
    max_length: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of the target-span tokens of each text: ``(logprob [N] float64, n_tokens [N] long)``.

    ``texts``: ``PromptText`` or ``(text, spans)``; ``signals [N, 12, T]`` (the encoder's unit) and ``lead_mask
    [N, 12]`` (texts with ``<ecg>``) or None (text-only). The span tokens are those
    :func:`ecglm.models.tokenize_pairs.encode_sample` labels (``strict``: a token crossing the start of a span
    raises), each scored given everything before it. Batched forward passes, eval mode, no gradient.
    """
    pad_id = tokenizer.pad_token_id
    n = len(texts)
    logprob = torch.zeros(n, dtype=torch.float64)
    counts = torch.zeros(n, dtype=torch.long)
    with _EvalMode(model):
        for sl in _batches(n, batch_size):
            samples = []
            for item in texts[sl]:
                text, spans = _as_text_and_spans(item)
                samples.append(
                    encode_sample(tokenizer, text, spans, max_length, num_ecg_tokens=model.num_ecg_tokens, strict=True)
                )
            batch = collate(samples, pad_id)
            sig, mask = _slice_signals(signals, lead_mask, sl)
            out = model(batch["input_ids"], batch["attention_mask"], sig, mask)
            logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)  # [b, L-1, V]
            target = batch["labels"][:, 1:].to(logp.device)  # [b, L-1]
            keep = target != IGNORE_INDEX
            picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep  # [b, L-1]
            logprob[sl] = picked.sum(dim=1).double().cpu()
            counts[sl] = keep.sum(dim=1).cpu()
    return logprob, counts


def continuation_logprob(
    model: ECGLM,
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[str],
    signals: torch.Tensor | None = None,
    lead_mask: torch.Tensor | None = None,
    *,
    batch_size: int = 8,
    max_length: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each continuation after each prompt: ``(logprob [N, C] float64, n_tokens [N, C])``.

    The text scored is ``prompt + continuation`` (so write the space into the continuation, e.g. " A");
    the continuation's characters are the target span. One forward pass per (prompt, continuation).
    """
    texts = [(p + c, [(len(p), len(p) + len(c))]) for p in prompts for c in continuations]
    n_cont = len(continuations)
    sig = mask = None
    if signals is not None:
        sig = torch.as_tensor(signals).repeat_interleave(n_cont, dim=0)  # [N*C, 12, T]
        if lead_mask is not None:
            mask = torch.as_tensor(lead_mask).repeat_interleave(n_cont, dim=0)  # [N*C, 12]
    logprob, counts = sequence_logprob(
        model, tokenizer, texts, sig, mask, batch_size=batch_size, max_length=max_length
    )
    return logprob.view(len(prompts), n_cont), counts.view(len(prompts), n_cont)


def next_token_ids(tokenizer, prompt: str, candidates: Sequence[str], *, num_ecg_tokens: int = 1, max_length: int = 2048) -> list[int]:
    """The id each candidate takes as the single next token after ``prompt`` (tokenised together).

    Raises ValueError when ``prompt + candidate`` does not tokenise as the prompt's tokens plus exactly
    one token (then use :func:`continuation_logprob`).
    """
    base = encode_sample(tokenizer, prompt, [], max_length, num_ecg_tokens=num_ecg_tokens)["input_ids"]
    ids = []
    for cand in candidates:
        full = encode_sample(
            tokenizer, prompt + cand, [(len(prompt), len(prompt) + len(cand))], max_length + 1,
            num_ecg_tokens=num_ecg_tokens, strict=True,
        )
        labelled = (full["labels"] != IGNORE_INDEX).nonzero().flatten().tolist()
        if len(full["input_ids"]) != len(base) + 1 or not torch.equal(full["input_ids"][:-1], base) or labelled != [len(base)]:
            raise ValueError(f"candidate {cand!r} is not one token after the prompt; use continuation_logprob")
        ids.append(int(full["input_ids"][-1]))
    return ids


def score_next_token(
    model: ECGLM,
    tokenizer,
    prompts: Sequence[str],
    candidates: Sequence[str],
    signals: torch.Tensor | None = None,
    lead_mask: torch.Tensor | None = None,
    *,
    batch_size: int = 8,
    max_length: int = 2048,
) -> torch.Tensor:
    """Next-token log-probability of each candidate after each prompt: ``[N, C]`` float64.

    One forward pass per prompt (the `mcq` reading: candidates " A" ... " E" after "Answer:"). Each
    candidate must be a single token after the prompt (:func:`next_token_ids`); the value equals
    :func:`continuation_logprob` for such candidates.
    """
    pad_id = tokenizer.pad_token_id
    n = len(prompts)
    scores = torch.zeros(n, len(candidates), dtype=torch.float64)
    with _EvalMode(model):
        for sl in _batches(n, batch_size):
            samples, cand_ids = [], []
            for prompt in prompts[sl]:
                samples.append(encode_sample(tokenizer, prompt, [], max_length, num_ecg_tokens=model.num_ecg_tokens))
                cand_ids.append(
                    next_token_ids(tokenizer, prompt, candidates, num_ecg_tokens=model.num_ecg_tokens, max_length=max_length)
                )
            batch = collate(samples, pad_id)
            sig, mask = _slice_signals(signals, lead_mask, sl)
            out = model(batch["input_ids"], batch["attention_mask"], sig, mask)
            last = batch["attention_mask"].sum(dim=1) - 1  # [b] position of each prompt's last token
            rows = torch.arange(len(samples))
            logp = torch.log_softmax(out.logits[rows, last.to(out.logits.device)].float(), dim=-1)  # [b, V]
            index = torch.tensor(cand_ids, dtype=torch.long, device=logp.device)  # [b, C]
            scores[sl] = logp.gather(-1, index).double().cpu()
    return scores


def padding_id(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its end-of-sequence token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def left_pad(rows: Sequence[Sequence[int] | torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids [n, L], attention_mask [n, L])`` of token id rows LEFT-padded to the longest, so that every
    row ends at the last column (where a continuation or generation goes on)."""
    length = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, length - len(ids) :] = torch.as_tensor(ids, dtype=torch.long)
        attention_mask[i, length - len(ids) :] = 1
    return input_ids, attention_mask


def generate_greedy(
    model: ECGLM,
    tokenizer,
    prompts: Sequence[str],
    signals: torch.Tensor | None = None,
    lead_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    max_length: int = 2048,
) -> list[str]:
    """The greedy continuation of each prompt (decoded, special tokens dropped): ``[N]`` strings.

    ``model``: an :class:`ECGLM` (prompts with ``<ecg>``, ``signals [N, 12, T]``) or any object with
    ``llm`` and ``embed(input_ids, signals, lead_mask)`` such as the evaluation's text-only wrapper.
    Batches are LEFT-padded so every row continues from its last prompt token; the LLM's own
    ``generate`` runs on the spliced embeddings (KV cache, ``do_sample=False``), stopping a row at the
    tokenizer's end-of-sequence token. A row's result does not depend on the batch it is in.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    pad_id, eos_id = padding_id(tokenizer), tokenizer.eos_token_id
    texts: list[str] = []
    with _EvalMode(model):
        for sl in _batches(len(prompts), batch_size):
            samples = [
                encode_sample(tokenizer, p, [], max_length, num_ecg_tokens=model.num_ecg_tokens)["input_ids"]
                for p in prompts[sl]
            ]
            input_ids, attention_mask = left_pad(samples, pad_id)  # [b, L]
            sig, mask = _slice_signals(signals, lead_mask, sl)
            embeds = model.embed(input_ids, sig, mask)  # [b, L, H]
            new = model.llm.generate(
                inputs_embeds=embeds, attention_mask=attention_mask.to(embeds.device), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=eos_id,
            )  # [b, <= max_new_tokens]: only the new tokens (the prompt was given as embeddings)
            texts += tokenizer.batch_decode(new.cpu(), skip_special_tokens=True)
    return texts
