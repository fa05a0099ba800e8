"""Turn a text and the character spans of its loss targets into ``input_ids``, ``attention_mask``, ``labels``.

The texts come from :mod:`ecglm.text.prompts` (``PromptText``) or from the expansion shards
(``results/{run}/pairs/{split}/part-*.parquet``: ``text`` and ``target_spans``). The rules:

- Tokenisation is the fast tokenizer's, with its special tokens: a BOS that the tokenizer's
  post-processor prepends (Llama's ``<s>``) is kept and is never a target.
- A token is a target (its label is its id) when its character range, with whitespace trimmed from
  both ends, overlaps a target span. The trimming matters: SentencePiece-style tokenizers give
  ``"▁normal"`` the offsets of ``" normal"``, space included, while the span starts at the ``n``. A
  token of whitespace only is a target when its untrimmed range lies inside a span (a space between
  two words of a report). A token that crosses a span boundary (BPE merges a word with the punctuation
  beside it: ``"▁normal,"``) IS a target: labelling only tokens wholly inside a span would drop such a
  description from the loss entirely (in the demo tokenizer every "normal" before a comma), while
  the overlap rule costs one punctuation mark of context in the target. ``strict=True`` (the scorers
  use it) raises when a token crosses the START of a span, where the score of a continuation would
  include the prompt's last characters. Everything else is -100: the ``<ecg>`` placeholder, the
  prompt and template words, special tokens (BOS), padding.
- Each ``<ecg>`` token becomes ``num_ecg_tokens`` consecutive ``<ecg>`` ids (LLaVA's expansion of the
  image token), one per projected ECG embedding. The text must hold as many ``<ecg>`` tokens as
  ``ECG_TOKEN`` substrings (else the tokenizer splits the placeholder: ValueError).
- EOS: NOT appended by default. The alignment texts end in template punctuation that is context, not a
  target, and the zero-shot scorers read log-probabilities, never generate, so an EOS target would only
  teach the model to stop after the last lead's "." (the paper does not say it trains one).
  ``add_eos=True`` appends the tokenizer's EOS as a target (for fine-tuning stages whose answers end
  the text and whose model must learn to stop).
- Truncation keeps the first ``max_length`` tokens (targets past it are lost) and raises
  :class:`EcgTokenTruncated` if it would cut any ``<ecg>`` token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ecglm.text.prompts import ECG_TOKEN

if TYPE_CHECKING:
    import torch

#: The label of a token that is not a loss target (PyTorch's cross-entropy ``ignore_index``).
IGNORE_INDEX = -100

SpanLike = Any  # TargetSpan, {"start", "end", ...} mapping, or (start, end[, kind]) tuple


class EcgTokenTruncated(ValueError):
    """Truncation to ``max_length`` would cut an ``<ecg>`` token (raise ``max_length``)."""


class StraddlingToken(ValueError):
    """A token crosses the start of a target span and ``strict=True`` was asked."""


def span_bounds(spans: Iterable[SpanLike], text_length: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each span (TargetSpan, mapping or tuple); ValueError if one is not within the text."""
    bounds = []
    for span in spans:
        if isinstance(span, Mapping):
            start, end = span["start"], span["end"]
        elif hasattr(span, "start") and hasattr(span, "end"):
            start, end = span.start, span.end
        else:
            start, end = span[0], span[1]
        start, end = int(start), int(end)
        if not 0 <= start <= end <= text_length:
            raise ValueError(f"target span ({start}, {end}) is not within the text of {text_length} characters")
        bounds.append((start, end))
    return bounds


def target_token_mask(
    text: str, offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> tuple[list[bool], list[int]]:
    """Which tokens are targets (the rule of the module docstring), and the indices of tokens that start
    before a span and reach into it (they cross the span's start).

    ``offsets`` are the tokens' ``(start, end)`` character ranges (``(0, 0)`` or empty for special tokens,
    which are never targets).
    """
    targets: list[bool] = []
    crossing_start: list[int] = []
    for i, (a, b) in enumerate(offsets):
        if b <= a or not spans:
            targets.append(False)
            continue
        piece = text[a:b]
        lo = a + (len(piece) - len(piece.lstrip()))
        hi = b - (len(piece) - len(piece.rstrip()))
        if hi <= lo:  # whitespace only: inside a span, or not a target
            targets.append(any(s <= a and b <= e for s, e in spans))
            continue
        hit = [(s, e) for s, e in spans if lo < e and s < hi]
        targets.append(bool(hit))
        if any(lo < s for s, _ in hit):
            crossing_start.append(i)
    return targets, crossing_start


def encode_sample(
    tokenizer,
    text: str,
    spans: Iterable[SpanLike],
    max_length: int,
    *,
    num_ecg_tokens: int = 1,
    add_eos: bool = False,
    strict: bool = False,
) -> dict[str, "torch.Tensor"]:
    """Encode one sample: ``input_ids [L]``, ``attention_mask [L]`` (all 1), ``labels [L]`` (long tensors).

    ``labels[i] == input_ids[i]`` on target tokens and :data:`IGNORE_INDEX` elsewhere (module docstring);
    ``L <= max_length``. Raises :class:`EcgTokenTruncated` if truncation would cut an ``<ecg>`` token,
    :class:`StraddlingToken` (``strict``) if a token crosses the start of a span, ValueError if a span lies
    outside the text or the tokenizer does not encode ``<ecg>`` as one token.
    """
    import torch

    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if num_ecg_tokens < 1:
        raise ValueError(f"num_ecg_tokens must be >= 1, got {num_ecg_tokens}")
    bounds = span_bounds(spans, len(text))
    enc = tokenizer(
        text, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True, truncation=False
    )
    ids: list[int] = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    special = list(enc["special_tokens_mask"])
    ecg_id = tokenizer.convert_tokens_to_ids(ECG_TOKEN)
    n_ecg = ids.count(ecg_id)
    if n_ecg != text.count(ECG_TOKEN):
        raise ValueError(
            f"the text holds {text.count(ECG_TOKEN)} {ECG_TOKEN} but its tokens hold {n_ecg} {ECG_TOKEN} ids "
            f"(id {ecg_id}): the tokenizer does not treat {ECG_TOKEN} as one special token (use ecglm.models.llm.load_llm)"
        )
    targets, crossing = target_token_mask(text, offsets, bounds)
    if strict and crossing:
        pieces = [repr(text[offsets[i][0] : offsets[i][1]]) for i in crossing]
        raise StraddlingToken(f"token(s) {', '.join(pieces)} cross the start of a target span in {text!r}")

    out_ids: list[int] = []
    out_labels: list[int] = []
    for tok, is_target, is_special in zip(ids, targets, special):
        if tok == ecg_id:
            out_ids.extend([ecg_id] * num_ecg_tokens)
            out_labels.extend([IGNORE_INDEX] * num_ecg_tokens)
        else:
            out_ids.append(tok)
            out_labels.append(tok if is_target and not is_special else IGNORE_INDEX)
    if add_eos:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("add_eos=True but the tokenizer has no EOS token")
        out_ids.append(eos)
        out_labels.append(eos)

    if len(out_ids) > max_length:
        last_ecg = max((i for i, t in enumerate(out_ids) if t == ecg_id), default=-1)
        if last_ecg >= max_length:
            raise EcgTokenTruncated(
                f"truncating {len(out_ids)} tokens to max_length {max_length} would cut the {ECG_TOKEN} token "
                f"at position {last_ecg}; raise max_length"
            )
        out_ids, out_labels = out_ids[:max_length], out_labels[:max_length]
    input_ids = torch.tensor(out_ids, dtype=torch.long)  # [L]
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),  # [L]
        "labels": torch.tensor(out_labels, dtype=torch.long),  # [L]
    }


def encode_row(tokenizer, row: Mapping[str, Any], max_length: int, **kwargs) -> dict[str, "torch.Tensor"]:
    """:func:`encode_sample` of a pairs-shard row (``text``, ``target_spans``), with ``lead_mask [12]`` (bool) added."""
    import torch

    sample = encode_sample(tokenizer, row["text"], row["target_spans"], max_length, **kwargs)
    if "lead_mask" in row and row["lead_mask"] is not None:
        sample["lead_mask"] = torch.as_tensor(list(row["lead_mask"]), dtype=torch.bool)  # [12]
    return sample


def collate(
    batch: Sequence[Mapping[str, Any]], pad_id: int, *, pad_to_multiple_of: int | None = None
) -> dict[str, Any]:
    """Right-pad a list of :func:`encode_sample` dicts into a batch.

    ``input_ids`` [B, L] padded with ``pad_id``, ``attention_mask`` [B, L] 0 on padding, ``labels`` [B, L]
    :data:`IGNORE_INDEX` on padding; ``L`` = the longest sample (rounded up to ``pad_to_multiple_of``).
    Other keys: tensors of one shape are stacked ([B, ...]), numbers become a tensor [B], anything else
    a list.
    """
    import torch

    if not batch:
        raise ValueError("cannot collate an empty batch")
    length = max(len(s["input_ids"]) for s in batch)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    out: dict[str, Any] = {}
    for key, value in fill.items():
        padded = torch.full((len(batch), length), value, dtype=torch.long)  # [B, L]
        for i, sample in enumerate(batch):
            seq = torch.as_tensor(sample[key], dtype=torch.long)
            padded[i, : len(seq)] = seq
        out[key] = padded
    for key in batch[0]:
        if key in fill:
            continue
        values = [s[key] for s in batch]
        if all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            out[key] = torch.stack(values)
        elif all(isinstance(v, (int, float, bool)) for v in values):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out
