"""Load a Hugging Face causal language model and its tokenizer, safely, for ECG-LM.

:func:`load_llm` is the one place the package loads an LLM (a local folder such as
``resources/llm/...`` or ``results/{run}/llm/``, or a Hub id with a pinned revision). It guarantees:

- no remote code: ``trust_remote_code`` is False unless the caller asks for it, for the model AND the
  tokenizer, so a checkpoint whose config names custom Python code is refused, not executed;
- no pickle: ``use_safetensors=True``, so a checkpoint with only ``pytorch_model.bin`` weights is refused;
- a fast tokenizer (the label masking of :mod:`ecglm.models.tokenize_pairs` needs its ``offset_mapping``);
- the ``<ecg>`` placeholder (:data:`ecglm.text.prompts.ECG_TOKEN`) is a special token that encodes to exactly
  one id. When the tokenizer lacks it, it is added, and the embedding matrices are resized ONLY if the
  new id does not fit in them (many checkpoints already have spare, padded rows). The ``<ecg>`` row
  of the input embeddings is never trained and never read: :class:`ecglm.models.multimodal.ECGLM` replaces it
  by the projected ECG at every ``<ecg>`` position before the LLM sees it. Its output (LM-head) row is
  never a label either (labels are -100 on ``<ecg>``);
- a pad token: the EOS token when one exists (padding is masked out of attention and labels, so its
  identity does not matter), else the UNK token, else a new ``<pad>`` special token;
- dtype: ``"auto"`` is bfloat16 on a CUDA device that supports it and float32 otherwise (CPU).

:func:`freeze` makes the LLM a fixed function: every parameter ``requires_grad=False`` and eval mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecglm.core.errors import StageError
from ecglm.text.prompts import ECG_TOKEN

if TYPE_CHECKING:  # heavy imports stay inside functions
    import torch
    from torch import nn

log = logging.getLogger(__name__)

DTYPES = ("auto", "bfloat16", "float32")
HUB_PREFIX = "hf:"


def check_model_dir(path: Path) -> list[str]:
    """The files of a save_pretrained folder; StageError naming what a causal LM needs and lacks."""
    if not (path / "config.json").is_file():
        present = sorted(p.name for p in path.iterdir())[:8] if path.is_dir() else []
        raise StageError(
            f"{path}: no config.json: not a Hugging Face model folder "
            f"({'it holds ' + ', '.join(present) if present else 'it is empty'})"
        )
    weights = sorted(p.name for p in path.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in path.glob("*.bin"))
        hint = f" (it holds pickled weights {', '.join(pickled)}, which this project never loads)" if pickled else ""
        raise StageError(f"{path}: no *.safetensors weights{hint}")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise StageError(f"{path}: no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)")
    return sorted(p.name for p in path.iterdir() if p.is_file())


def _looks_local(name: str) -> bool:
    """True for a name that reads as a path on this machine rather than a Hub id ``org/name``."""
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") != 1:
        return True  # absolute, relative, home, a bare word, or deeper than org/name
    first = name.split("/", 1)[0]
    return Path(first).is_dir()  # e.g. resources/llmx: its first part is a local folder


def llm_location(name: str | Path) -> tuple[Path | None, str]:
    """``(local folder or None, name)`` for an LLM named by a user: a local folder, or a Hub id.

    A Hub id is written ``org/name``, or ``hf:NAME`` to say so explicitly (``hf:gpt2``); the prefix is
    removed from the returned name. Anything else that is not an existing folder is an error, not a Hub
    id: a mistyped local folder (``llmx``, ``results/demo/lm``) must not be looked up on the network
    (where another model could answer to its name). An existing folder is checked
    (:func:`check_model_dir`).
    """
    text = str(name)
    if text.startswith(HUB_PREFIX):
        hub_id = text[len(HUB_PREFIX):]
        if not hub_id:
            raise StageError(f"LLM {text!r}: name the Hub model after {HUB_PREFIX}")
        return None, hub_id
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise StageError(f"LLM {text!r}: {path} is a file; name a model folder (save_pretrained layout)")
        check_model_dir(path)
        return path, text
    if _looks_local(text):
        raise StageError(
            f"LLM {text!r}: no such folder ({path.resolve()}). To load a model from the Hugging Face Hub, "
            f"name it as org/name (e.g. HuggingFaceTB/SmolLM2-135M-Instruct) or {HUB_PREFIX}NAME "
            f"({HUB_PREFIX}{text} if a local folder of that first name is in the way)"
        )
    return None, text


@dataclass(frozen=True)
class LLMSource:
    """Where an LLM came from: what :class:`ecglm.models.multimodal.ECGLM` records in its saved config."""

    name_or_path: str
    revision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name_or_path": self.name_or_path, "revision": self.revision}


def resolve_dtype(dtype: str, device: "str | torch.device") -> "torch.dtype":
    """The torch dtype for ``dtype`` on ``device``: ``auto`` = bfloat16 on a bf16-capable CUDA device, else float32."""
    import torch

    if dtype not in DTYPES:
        raise StageError(f"LLM dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "bfloat16":
        return torch.bfloat16
    if dtype == "float32":
        return torch.float32
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _dtype_kwarg(torch_dtype: "torch.dtype") -> dict[str, Any]:
    """``dtype=`` for transformers >= 4.56, ``torch_dtype=`` before (the same argument, renamed)."""
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: torch_dtype}


def llm_source(model: "nn.Module") -> LLMSource:
    """The :class:`LLMSource` that :func:`load_llm` recorded on ``model`` (else its config's name_or_path)."""
    source = getattr(model, "_ecglm_source", None)
    if isinstance(source, LLMSource):
        return source
    name = getattr(getattr(model, "config", None), "name_or_path", "") or ""
    return LLMSource(str(name), None)


def ensure_special_tokens(tokenizer, model: "nn.Module | None" = None) -> int:
    """Make ``<ecg>`` a single special token and give the tokenizer a pad token; return the ``<ecg>`` id.

    Resizes ``model``'s embeddings only when a new id does not fit in them (the new rows are never
    trained, see the module docstring). Raises StageError when ``<ecg>`` still does not encode to
    exactly one id (a tokenizer that normalises or splits special tokens).
    """
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    if ECG_TOKEN not in vocab:
        tokenizer.add_tokens([AddedToken(ECG_TOKEN, special=True, normalized=False)], special_tokens=True)
        log.info("added the special token %s to the tokenizer (id %d)", ECG_TOKEN, tokenizer.convert_tokens_to_ids(ECG_TOKEN))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_tokens([AddedToken("<pad>", special=True, normalized=False)], special_tokens=True)
            tokenizer.pad_token = "<pad>"
        log.info("the tokenizer had no pad token; using %r", tokenizer.pad_token)
    ecg_id = tokenizer.convert_tokens_to_ids(ECG_TOKEN)
    encoded = tokenizer(f"a {ECG_TOKEN} b", add_special_tokens=False)["input_ids"]
    if encoded.count(ecg_id) != 1:
        raise StageError(
            f"the tokenizer does not encode {ECG_TOKEN} as one token (id {ecg_id}): 'a {ECG_TOKEN} b' gives {encoded}"
        )
    if model is not None:
        rows = model.get_input_embeddings().weight.shape[0]
        needed = len(tokenizer)
        if needed > rows:
            log.info("resizing the LLM's token embeddings from %d to %d rows (new rows are never trained)", rows, needed)
            model.resize_token_embeddings(needed, mean_resizing=False)
    return ecg_id


def freeze(model: "nn.Module") -> "nn.Module":
    """Set ``requires_grad=False`` on every parameter and switch to eval mode; return ``model``."""
    for param in model.parameters():
        param.requires_grad_(False)
    model.eval()
    return model


def load_llm(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    dtype: str = "auto",
    device: "str | torch.device" = "cpu",
    trust_remote_code: bool = False,
    local_files_only: bool = False,
):
    """Load ``(model, tokenizer)``: a frozen causal LM on ``device`` and its fast tokenizer with ``<ecg>``.

    ``name_or_path`` is a local folder (``save_pretrained`` layout, safetensors weights) or a Hub id
    (then pin ``revision``). ``dtype`` is one of :data:`DTYPES`. The model is returned frozen
    (:func:`freeze`) and records its :class:`LLMSource` (see :func:`llm_source`). Raises StageError,
    naming the model, when it cannot be loaded: no safetensors weights, remote code required but not
    trusted, no fast tokenizer, or no such model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, hub_id = llm_location(name_or_path)
    if folder is not None:
        local_files_only = True  # a local folder never falls back to the network
    given = str(name_or_path)  # recorded as the user wrote it (hf:NAME, ~/..., a relative folder): reloadable
    name = str(folder) if folder is not None else hub_id
    torch_dtype = resolve_dtype(dtype, device)
    common = {"revision": revision, "trust_remote_code": bool(trust_remote_code), "local_files_only": local_files_only}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, use_fast=True, **common)
    except (OSError, ValueError) as err:
        raise StageError(f"cannot load the tokenizer of LLM {name!r}: {_first_line(err)}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise StageError(
            f"LLM {name!r} has no fast tokenizer (tokenizer.json); label masking needs its offset mapping"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(name, use_safetensors=True, **_dtype_kwarg(torch_dtype), **common)
    except (OSError, ValueError, EnvironmentError) as err:
        raise StageError(f"cannot load LLM {name!r} (safetensors only, remote code {'allowed' if trust_remote_code else 'refused'}): {_first_line(err)}") from err
    ensure_special_tokens(tokenizer, model)
    model.to(torch.device(device))
    freeze(model)
    model._ecglm_source = LLMSource(given, revision)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("loaded LLM %s (%s, %s parameters, %s on %s), frozen", name, type(model).__name__, f"{n_params:,}", torch_dtype, device)
    return model, tokenizer


def _first_line(err: BaseException) -> str:
    """The error's whole message on one line (a multi-line message joined, never cut mid-sentence)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__
