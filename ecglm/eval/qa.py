"""`ecglm evaluate-qa`: exact match of the answer SET on ECG-QA's test questions, the paper's Table 3 metric.

A question is answered correctly when the set of answers the model gives equals the set of the
question's answers (order and repeats do not count: ``["a", "b"]`` matches ``["b", "a"]``, ``["a"]`` does
not match ``["a", "b"]``). Scores per question type (S-Verify, S-Choose, S-Query) and per attribute type;
"Avg" is the unweighted mean of the three types (the paper's 0.577). Every score has a 95% percentile
bootstrap interval that resamples the test PATIENTS (:func:`ecglm.core.stats.pooled_group_bootstrap`, the
helper the classification tables use). Two readings, both reported:

- ``generate`` (the paper's): greedy decoding after :func:`ecglm.text.prompts.qa_prompt`, up to
  ``max_new_tokens``; the text is split at ";" into answers, each matched (case and surrounding space
  ignored) against the template's valid answers. An answer that is empty or not a valid answer of the
  template makes the whole reply unparsed: it counts as wrong, and the rate of such replies is reported.
- ``constrained`` (ours): every valid answer ``a`` of the question's template is scored by a
  log-probability. Verify and choose questions (one answer each, but for a handful of choose questions)
  score " a" followed by the end of the reply (EOS), the whole reply, so that "no" does not take the mass
  of "not sure", and take the best. A query scores " a" as the FIRST answer of the reply; the scores are
  normalised over the template's answers (softmax) into ``q`` and the query takes every answer with
  ``q_a >= q_max / 2``: the fine-tuning writes each answer set in a random order per question
  (:mod:`ecglm.train.qa_data`), so a model that knows the set gives each of its ``k`` members about
  ``1/k`` of the first place and the others about 0, and half the best share separates the two (answers
  whose text begins another's, "lead I" and "lead II", share the mass of that prefix). This reading is
  never unparsed.

Models: a fine-tuned ECG-LM (``ecglm finetune-qa``; one trained with ``ecg: false`` is the blind baseline
and is asked without the ECG sentence), optionally with ``--control shuffled`` (each question gets the ECG
of another, the distinct ECGs deranged by a seeded cycle: chance for the ECG's part), or ``--baseline
majority`` (the most frequent training answer set of the question's template; of its type when the
template has no training question). The questions can be a seeded subset, stratified by type
(``--max-questions``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ecglm.core.errors import StageError
from ecglm.core.seeding import numpy_rng
from ecglm.core.stats import pooled_group_bootstrap
from ecglm.eval.evaluate import BOOTSTRAP_LEVEL, BOOTSTRAP_REPS, write_result

log = logging.getLogger(__name__)

FORMAT = "ecglm-qa-eval/1"
TYPES = ("single-verify", "single-choose", "single-query")
TYPE_LABELS = {"single-verify": "S-Verify", "single-choose": "S-Choose", "single-query": "S-Query"}
READINGS = ("generate", "constrained")
CONTROLS = ("none", "shuffled")
#: A query's constrained answer set: the answers with at least this share of the best one's first-place mass.
QUERY_SHARE = 0.5
QUESTION_COLUMNS = ("sample_id", "question_id", "template_id", "question_type", "attribute_type", "question",
                    "answer", "valid_answers", "ecg_id", "patient_id", "row", "seen_in_alignment")  # fmt: skip


# ------------------------------------------------------------------------------------------- scoring


def exact_match(predicted: Sequence[str] | None, answer: Sequence[str]) -> bool:
    """Whether the predicted answer SET equals the answer set (None, an unparsed reply, never matches)."""
    return predicted is not None and set(predicted) == set(answer)


def parse_reply(text: str, valid: Sequence[str]) -> list[str] | None:
    """The answers of a generated reply (split at ";", matched case-insensitively against ``valid``), or None
    when a part is empty or not a valid answer of the template."""
    from ecglm.text.prompts import ANSWER_SEPARATOR

    by_key = {v.strip().lower(): v for v in valid}
    parts = [p.strip().lower() for p in text.strip().split(ANSWER_SEPARATOR.strip())]
    if not parts or any(p not in by_key for p in parts):
        return None
    return sorted({by_key[p] for p in parts})


def constrained_answer(scores: np.ndarray, valid: Sequence[str], question_type: str) -> list[str]:
    """The constrained reading's answer set from the first-answer log-probabilities ``scores [A]`` of ``valid``."""
    q = np.exp(scores - scores.max())
    q /= q.sum()  # [A] softmax over the template's answers
    if question_type != "single-query":
        return [valid[int(np.argmax(q))]]
    return sorted(valid[i] for i in np.flatnonzero(q >= QUERY_SHARE * q.max()))


def majority_answers(train: Any) -> tuple[dict[int, list[str]], dict[str, list[str]]]:
    """The most frequent training answer set per template, and per question type (ties: the first in sorted order)."""
    by_template: dict[int, Counter] = {}
    by_type: dict[str, Counter] = {}
    for template, qtype, answer in zip(train["template_id"].to_list(), train["question_type"].to_list(),
                                       train["answer"].to_list()):  # fmt: skip
        key = tuple(sorted(answer))
        by_template.setdefault(int(template), Counter())[key] += 1
        by_type.setdefault(qtype, Counter())[key] += 1

    def top(counter: Counter) -> list[str]:
        best = max(counter.values())
        return list(min(k for k, v in counter.items() if v == best))

    return {t: top(c) for t, c in by_template.items()}, {t: top(c) for t, c in by_type.items()}


# ------------------------------------------------------------------------------------------- questions


def load_questions(qa_dir: str | os.PathLike, split: str = "test", max_questions: int = 0, seed: int = 0) -> Any:
    """The questions of one split (all, or a seeded subset of ``max_questions`` drawn per type in proportion)."""
    from ecglm.train.qa_data import read_questions

    table = read_questions(Path(qa_dir) / f"{split}.parquet", QUESTION_COLUMNS)
    if table.height == 0:
        raise StageError(f"{Path(qa_dir) / f'{split}.parquet'}: no question to evaluate (the {split} split is empty)")
    if not max_questions or table.height <= max_questions:
        return table
    rng = numpy_rng(seed, "eval_subset")
    keep: list[int] = []
    types = np.asarray(table["question_type"].to_list())
    for t in TYPES:
        rows = np.flatnonzero(types == t)
        take = round(max_questions * len(rows) / table.height)
        keep += rng.permutation(rows)[:take].tolist()
    return table[sorted(keep)]


def ecg_permutation(rows: np.ndarray, seed: int) -> np.ndarray:
    """The shuffled control's signal rows: each distinct ECG replaced by another (a seeded derangement of the
    distinct rows), so that no question keeps its own ECG."""
    from ecglm.eval.evaluate import shuffle_permutation

    distinct = np.unique(rows)
    perm = shuffle_permutation(len(distinct), seed)
    other = dict(zip(distinct.tolist(), distinct[perm].tolist()))
    return np.asarray([other[int(r)] for r in rows], dtype=np.int64)


# ------------------------------------------------------------------------------------------- the model


def load_finetuned(model_dir: Path, llm_path: str, device: str = "auto") -> tuple[Any, Any, bool]:
    """``(model, tokenizer, ecg)``: the fine-tuned ECG-LM, its adapters merged into the LLM for inference, and
    whether it reads the ECG."""
    from ecglm.models.llm import load_llm
    from ecglm.models.multimodal import ECGLM
    from ecglm.train.finetune import FinetuneConfig
    from ecglm.train.runtime import resolve_device

    settings = FinetuneConfig.from_yaml(model_dir / "config.yaml")  # the fine-tuning's resolved, checked settings
    llm, tokenizer = load_llm(llm_path, dtype=settings.dtype, device=resolve_device(device))
    model = ECGLM.load(model_dir, llm, tokenizer=tokenizer)
    if model.adapter is None:
        raise StageError(f"{model_dir}: no LoRA adapters (not an `ecglm finetune-qa` output)")
    model.merge_adapters()  # the same answers, faster: no separate adapter products in every layer
    model.eval()
    return model, tokenizer, bool(settings.ecg)


def _answer_groups(model: Any, tokenizer: Any, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
                   whole: Sequence[bool], max_length: int) -> dict[tuple[int, tuple[int, ...]], list[tuple[int, list[int]]]]:  # fmt: skip
    """``{(prompt index, prompt token ids): [(candidate position, answer token ids)]}``: each text tokenized whole
    (prompt and answer together, as the fine-tuning saw it) and split before its first answer token."""
    from ecglm.models.tokenize_pairs import IGNORE_INDEX, encode_sample
    from ecglm.text.prompts import qa_answer_text

    groups: dict[tuple[int, tuple[int, ...]], list[tuple[int, list[int]]]] = {}
    for i, cands in enumerate(candidates):
        for j, a in enumerate(cands):
            answer = qa_answer_text([a])
            enc = encode_sample(tokenizer, prompts[i] + answer, [(len(prompts[i]), len(prompts[i]) + len(answer))],
                                max_length, num_ecg_tokens=model.num_ecg_tokens, add_eos=whole[i])  # fmt: skip
            ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
            first = next((k for k, t in enumerate(labels) if t != IGNORE_INDEX), None)
            if not first or any(t == IGNORE_INDEX for t in labels[first:]):
                raise StageError(f"the answer {a!r} of prompt {prompts[i]!r} is not the end of its tokens (max_length "
                                 f"{max_length} too small?)")  # fmt: skip
            groups.setdefault((i, tuple(ids[:first])), []).append((j, ids[first:]))
    return groups


def _run_prompts(model: Any, prefixes: Sequence[Sequence[int]], ecg: Any, pad_id: int) -> tuple[Any, Any, Any]:
    """``(log-probabilities of the next token [n, V], KV cache, attention mask [n, P])`` of the prompts, left-padded
    to one width P, each position counted from the prompt's first real token."""
    import torch

    from ecglm.models.multimodal import left_pad

    ids, mask = left_pad(prefixes, pad_id)  # [n, P]
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # [n, P]
    dev = model.device
    out = model.llm(inputs_embeds=model.embed(ids, ecg_embeds=ecg), attention_mask=mask.to(dev),
                    position_ids=positions.to(dev), use_cache=True)  # fmt: skip
    return torch.log_softmax(out.logits[:, -1].float(), dim=-1), out.past_key_values, mask


def _continuation_scores(model: Any, prompt: tuple[Any, Any, Any], which: Any, conts: Sequence[Sequence[int]],
                         pad_id: int) -> Any:  # fmt: skip
    """Log-probability ``[c]`` of each token sequence ``conts[c]`` after prompt row ``which[c]`` of ``prompt`` (what
    :func:`_run_prompts` gave): its first token from the prompt's last position, the rest in one pass that
    continues from the prompt's cached keys and values."""
    import torch

    from ecglm.models.tokenize_pairs import IGNORE_INDEX

    first_logp, cache, mask = prompt
    dev = model.device
    score = first_logp[which.to(dev), torch.tensor([c[0] for c in conts]).to(dev)].cpu()  # [c]
    more = max(len(c) for c in conts) - 1  # M: the tokens fed after the prompt
    if more == 0:
        return score
    feed = torch.full((len(conts), more), pad_id, dtype=torch.long)  # [c, M] right-padded
    target = torch.full((len(conts), more), IGNORE_INDEX, dtype=torch.long)
    for c, cont in enumerate(conts):
        feed[c, : len(cont) - 1] = torch.tensor(cont[:-1])
        target[c, : len(cont) - 1] = torch.tensor(cont[1:])
    keep = target != IGNORE_INDEX  # [c, M]
    attention = torch.cat([mask[which], keep.long()], dim=1)  # [c, P + M]
    positions = mask.sum(dim=1)[which][:, None] + torch.arange(more)[None, :]  # [c, M]
    with warnings.catch_warnings():  # transformers 5.25 renames past_key_values (removed in 5.40)
        warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
        logits = model.llm(inputs_embeds=model.embed(feed), attention_mask=attention.to(dev), use_cache=True,
                           position_ids=positions.to(dev), past_key_values=_cache_rows(cache, which.to(dev))).logits  # fmt: skip
    logp = torch.log_softmax(logits.float(), dim=-1)  # [c, M, V]
    picked = logp.gather(-1, target.clamp(min=0).to(dev).unsqueeze(-1)).squeeze(-1)  # [c, M]
    return score + (picked * keep.to(dev)).sum(dim=1).cpu()


def answer_scores(model: Any, tokenizer: Any, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
                  signals: Any, whole: Sequence[bool], *, batch_size: int, max_length: int) -> list[np.ndarray]:  # fmt: skip
    """Log-probability of " a" after each prompt, for each candidate ``a`` of that prompt: ``[A_i]`` per prompt;
    as the whole reply (followed by EOS) where ``whole[i]``, else as its first answer.

    Each prompt, with its ECG spliced in, runs once (``batch_size`` prompts per pass); its candidates then
    continue from the prompt's cached keys and values (``4 * batch_size`` per pass): a template with 50
    answers costs about one prompt, not 50.
    """
    import torch

    from ecglm.models.multimodal import padding_id

    pad_id = padding_id(tokenizer)
    groups = _answer_groups(model, tokenizer, prompts, candidates, whole, max_length)
    keys = list(groups)
    out = [np.zeros(len(c)) for c in candidates]
    with torch.no_grad():
        for start in range(0, len(keys), batch_size):
            chunk = keys[start : start + batch_size]
            ecg = None if signals is None else model.project(torch.as_tensor(signals[[i for i, _ in chunk]]))  # [n, K, H]
            prompt = _run_prompts(model, [prefix for _, prefix in chunk], ecg, pad_id)
            rows = [(r, j, cont) for r, key in enumerate(chunk) for j, cont in groups[key]]
            for s in range(0, len(rows), 4 * batch_size):
                part = rows[s : s + 4 * batch_size]
                score = _continuation_scores(model, prompt, torch.tensor([r for r, _, _ in part]),
                                             [cont for _, _, cont in part], pad_id)  # fmt: skip
                for c, (r, j, _) in enumerate(part):
                    out[chunk[r][0]][j] = float(score[c])
    return out


def _cache_rows(cache: Any, rows: Any) -> Any:
    """A copy of the LLM's KV ``cache`` holding the batch rows ``rows`` (repeats allowed): a transformers Cache,
    or the legacy per-layer ``(key, value)`` tuples older versions return."""
    import copy

    if isinstance(cache, tuple):
        from transformers import DynamicCache

        return DynamicCache.from_legacy_cache(tuple((k[rows], v[rows]) for k, v in cache))
    cache = copy.deepcopy(cache)
    cache.batch_select_indices(rows)
    return cache


def read_signals(signals_path: Path, rows: np.ndarray) -> np.ndarray:
    """The int16 ECGs ``[N, 12, T]`` of ``rows`` (read from the memory-mapped array in row order)."""
    from ecglm.data.ecg_data import open_signals

    array = open_signals(signals_path)
    return np.asarray(array[np.asarray(rows, dtype=np.int64)])


def model_answers(model: Any, tokenizer: Any, questions: Any, signals: np.ndarray | None, readings: Sequence[str],
                  *, batch_size: int, max_new_tokens: int, max_length: int) -> dict[str, dict[str, list]]:  # fmt: skip
    """Per reading: ``{"predicted": [answer list or None], "reply": [text]}`` for each question."""
    import torch

    from ecglm.models.multimodal import generate_greedy
    from ecglm.text.prompts import qa_prompt

    prompts = [qa_prompt(q, ecg=signals is not None) for q in questions["question"].to_list()]
    valid = questions["valid_answers"].to_list()
    types = questions["question_type"].to_list()
    out: dict[str, dict[str, list]] = {}
    if "generate" in readings:
        sig = None if signals is None else torch.as_tensor(signals)
        replies = generate_greedy(model, tokenizer, prompts, sig, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  max_length=max_length)  # fmt: skip
        out["generate"] = {"predicted": [parse_reply(r, v) for r, v in zip(replies, valid)], "reply": replies}
    if "constrained" in readings:
        scores = answer_scores(model, tokenizer, prompts, valid, signals, [t != "single-query" for t in types],
                               batch_size=batch_size, max_length=max_length)  # fmt: skip
        out["constrained"] = {"predicted": [constrained_answer(s, v, t) for s, v, t in zip(scores, valid, types)],
                              "reply": None}  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------- summary


def _type_mean(correct: np.ndarray, types: np.ndarray, t: str):
    def statistic(rows: np.ndarray) -> float | None:
        mine = rows[types[rows] == t]
        return float(correct[mine].mean()) if len(mine) else None

    return statistic


def _avg(correct: np.ndarray, types: np.ndarray):
    parts = [_type_mean(correct, types, t) for t in TYPES]

    def statistic(rows: np.ndarray) -> float | None:
        values = [p(rows) for p in parts]
        return None if any(v is None for v in values) else float(np.mean(values))

    return statistic


def score_summary(correct: Sequence[bool], types: Sequence[str], attributes: Sequence[str], groups: Sequence[Any],
                  seed: int) -> dict[str, Any]:  # fmt: skip
    """Exact match per type, per attribute type and "avg" (the unweighted mean of the three types), each
    ``{"value", "interval": [low, high] or None, "n"}``; intervals resample ``groups`` (patients)."""
    correct = np.asarray(correct, dtype=np.float64)
    types, attributes = np.asarray(types), np.asarray(attributes)
    stats: dict[str, list] = {t: [_type_mean(correct, types, t)] for t in TYPES if (types == t).any()}
    if len(stats) == len(TYPES):
        stats["avg"] = [_avg(correct, types)]
    for a in sorted(set(attributes.tolist())):
        stats[f"attribute:{a}"] = [_type_mean(correct, attributes, a)]
    boots = pooled_group_bootstrap(stats, [np.asarray(groups)], seed=seed, reps=BOOTSTRAP_REPS, level=BOOTSTRAP_LEVEL)
    everything = np.arange(len(correct))
    out: dict[str, Any] = {"by_type": {}, "by_attribute": {}, "avg": None}
    for name, boot in boots.items():
        entry = {"value": stats[name][0](everything), "interval": None if boot["low"] is None else [boot["low"], boot["high"]]}
        if name == "avg":
            out["avg"] = entry
        elif name.startswith("attribute:"):
            a = name.split(":", 1)[1]
            out["by_attribute"][a] = {**entry, "n": int((attributes == a).sum())}
        else:
            out["by_type"][name] = {**entry, "n": int((types == name).sum())}
    return out


def question_groups(questions: Any) -> list[Any]:
    """The bootstrap's resampling unit per question: its patient (its ECG where the patient is unknown)."""
    patients = questions["patient_id"].to_list()
    ecgs = questions["ecg_id"].to_list()
    return [f"p{int(p)}" if p is not None and p == p else f"e{int(e)}" for p, e in zip(patients, ecgs)]


def reading_result(predicted: Sequence[list[str] | None], questions: Any, seed: int) -> dict[str, Any]:
    """A reading's per-question answers and correctness, and its summary (all questions, and the questions whose
    ECG the alignment never saw)."""
    answers = questions["answer"].to_list()
    correct = [exact_match(p, a) for p, a in zip(predicted, answers)]
    types, attrs = questions["question_type"].to_list(), questions["attribute_type"].to_list()
    groups = question_groups(questions)
    unseen = [i for i, s in enumerate(questions["seen_in_alignment"].to_list()) if not s]
    result = {
        "summary": score_summary(correct, types, attrs, groups, seed),
        "unparsed_rate": float(np.mean([p is None for p in predicted])),
        "correct": correct,
        "predicted": predicted,
        "unseen": None,
    }
    if unseen:
        result["unseen"] = score_summary([correct[i] for i in unseen], [types[i] for i in unseen],
                                         [attrs[i] for i in unseen], [groups[i] for i in unseen], seed)  # fmt: skip
    return result


def evaluate_qa(qa_dir: str | os.PathLike, *, model_dir: str | os.PathLike | None = None, llm: str | None = None,
                signals: str | os.PathLike | None = None, baseline: str | None = None, control: str = "none",
                readings: Sequence[str] = READINGS, max_questions: int = 0, seed: int = 0, batch_size: int = 32,
                max_new_tokens: int = 32, max_length: int = 256, device: str = "auto",
                threads: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Score a fine-tuned model (or the majority baseline) on the test questions: the result document."""
    qa_dir = Path(qa_dir)
    questions = load_questions(qa_dir, "test", max_questions, seed)
    doc: dict[str, Any] = {"format": FORMAT, "qa": str(qa_dir), "split": "test", "seed": seed,
                           "max_questions": max_questions, "n_questions": questions.height,
                           "bootstrap": {"level": BOOTSTRAP_LEVEL, "reps": BOOTSTRAP_REPS, "resampled": "patient_id"},
                           "questions": {"sample_id": questions["sample_id"].to_list(),
                                         "question_type": questions["question_type"].to_list(),
                                         "attribute_type": questions["attribute_type"].to_list(),
                                         "group": question_groups(questions),
                                         "seen_in_alignment": questions["seen_in_alignment"].to_list()}}  # fmt: skip
    if baseline is not None:
        if baseline != "majority":
            raise StageError(f"--baseline must be majority, got {baseline!r}")
        train = load_questions(qa_dir, "train")
        by_template, by_type = majority_answers(train)
        predicted = [by_template.get(int(t), by_type.get(q)) for t, q in zip(questions["template_id"].to_list(),
                                                                              questions["question_type"].to_list())]  # fmt: skip
        doc.update(model=None, baseline="majority", ecg=False, control="none",
                   readings={"majority": reading_result(predicted, questions, seed)})  # fmt: skip
        return doc
    if model_dir is None or llm is None or signals is None:
        raise StageError("evaluate-qa: --model, --llm and --signals are required (or --baseline majority)")
    if control not in CONTROLS:
        raise StageError(f"--control must be one of {', '.join(CONTROLS)}, got {control!r}")
    from ecglm.train.runtime import torch_threads

    with torch_threads(threads):
        model, tokenizer, ecg = load_finetuned(Path(model_dir), llm, device)
        if control == "shuffled" and not ecg:
            raise StageError(f"{model_dir}: a blind model (ecg: false) has no ECG to shuffle")
        rows = questions["row"].to_numpy().astype(np.int64)
        if control == "shuffled":
            rows = ecg_permutation(rows, seed)
        ecgs = read_signals(Path(signals), rows) if ecg else None
        answers = model_answers(model, tokenizer, questions, ecgs, readings, batch_size=batch_size,
                                max_new_tokens=max_new_tokens, max_length=max_length)  # fmt: skip
    doc.update(model=str(model_dir), llm=llm, baseline=None, ecg=ecg, control=control,
               readings={r: {**reading_result(a["predicted"], questions, seed), "reply": a["reply"]}
                         for r, a in answers.items()})  # fmt: skip
    return doc


def log_summary(doc: Mapping[str, Any]) -> None:
    for reading, result in doc["readings"].items():
        s = result["summary"]
        parts = [f"{TYPE_LABELS[t]} {v['value']:.3f}" for t, v in s["by_type"].items()]
        avg = f", avg {s['avg']['value']:.3f}" if s["avg"] else ""
        log.info("%s: %s%s; unparsed %.3f (%d questions)", reading, ", ".join(parts), avg, result["unparsed_rate"],
                 doc["n_questions"])  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate-qa",
        help="exact match of a fine-tuned ECG-LM (or a baseline) on ECG-QA's test questions, with intervals",
        description=(
            "Score a `ecglm finetune-qa` model on the test split of `ecglm qa-data`: exact match of the answer "
            "set per question type and attribute type, and the unweighted average of the three types, each with "
            "a 95%% bootstrap interval resampled by patient. Two readings: generate (greedy decoding parsed into "
            "an answer set; unparsed replies count as wrong and their rate is reported) and constrained (the "
            "template's answers scored by log-probability). --control shuffled gives each question another "
            "ECG; --baseline majority answers the most frequent training answer set of the template."
        ),
    )
    p.add_argument("--qa", required=True, type=Path, help="the `ecglm qa-data` folder")
    p.add_argument("--model", type=Path, default=None, help="the `ecglm finetune-qa` output folder")
    p.add_argument("--llm", default=None, help="its base LLM (a folder or hf:NAME)")
    p.add_argument("--signals", type=Path, default=None, help="signals_{fs}.npy written by `ecglm prepare`")
    p.add_argument("--baseline", choices=["majority"], default=None, help="score a baseline instead of a model")
    p.add_argument("--control", choices=CONTROLS, default="none", help="shuffled: each question gets another ECG")
    p.add_argument("--readings", default=",".join(READINGS), help="comma-separated: generate, constrained "
                   "(default: %(default)s)")  # fmt: skip
    p.add_argument("--max-questions", type=int, default=0,
                   help="a seeded subset of this many test questions, drawn per type in proportion (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="the subset's, the shuffle's and the bootstrap's seed")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="generate: reply length cap (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", type=Path, required=True, help="the result JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    readings = [r.strip() for r in args.readings.split(",") if r.strip()]
    unknown = [r for r in readings if r not in READINGS]
    if unknown or not readings:
        raise StageError(f"--readings: unknown {unknown or readings} (choose from {', '.join(READINGS)})")
    doc = evaluate_qa(args.qa, model_dir=args.model, llm=args.llm, signals=args.signals, baseline=args.baseline,
                      control=args.control, readings=readings, max_questions=args.max_questions, seed=args.seed,
                      batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, device=args.device,
                      threads=args.threads)  # fmt: skip
    log_summary(doc)
    write_result(doc, args.out)
    return 0


def read_result(path: Path) -> dict[str, Any]:
    """A result written by :func:`run`; StageError naming the file otherwise."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise StageError(f"{path}: not a readable evaluate-qa result ({err})") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StageError(f"{path}: not an evaluate-qa result (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    return doc
