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
    """``(model, tokenizer, ecg)``: the fine-tuned ECG-LM with its adapters, and whether it reads the ECG."""
    from ecglm.models.llm import load_llm
    from ecglm.models.multimodal import ECGLM
    from ecglm.train.finetune import FinetuneConfig
    from ecglm.train.runtime import resolve_device

    settings = FinetuneConfig.from_yaml(model_dir / "config.yaml")  # the fine-tuning's resolved, checked settings
    llm, tokenizer = load_llm(llm_path, dtype=settings.dtype, device=resolve_device(device))
    model = ECGLM.load(model_dir, llm, tokenizer=tokenizer)
    if model.adapter is None:
        raise StageError(f"{model_dir}: no LoRA adapters (not an `ecglm finetune-qa` output)")
    model.eval()
    return model, tokenizer, bool(settings.ecg)


def answer_scores(model: Any, tokenizer: Any, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
                  signals: Any, whole: Sequence[bool], *, batch_size: int, max_length: int) -> list[np.ndarray]:  # fmt: skip
    """Log-probability of " a" after each prompt, for each candidate ``a`` of that prompt: ``[A_i]`` per prompt;
    as the whole reply (followed by EOS) where ``whole[i]``, else as its first answer. Each ECG is projected
    once and shared by its prompt's candidates."""
    import torch

    from ecglm.models.tokenize_pairs import IGNORE_INDEX, collate, encode_sample
    from ecglm.text.prompts import qa_answer_text

    pairs = [(i, a) for i, cands in enumerate(candidates) for a in cands]
    out = [np.zeros(len(c)) for c in candidates]
    position = [j for cands in candidates for j in range(len(cands))]
    with torch.no_grad():
        ecg = None
        if signals is not None:
            ecg = torch.cat([model.project(torch.as_tensor(signals[s : s + batch_size]))
                             for s in range(0, len(prompts), batch_size)])  # [N, K, H]  # fmt: skip
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            samples = []
            for i, a in chunk:
                answer = qa_answer_text([a])
                samples.append(encode_sample(tokenizer, prompts[i] + answer, [(len(prompts[i]), len(prompts[i]) + len(answer))],
                                             max_length, num_ecg_tokens=model.num_ecg_tokens, add_eos=whole[i]))  # fmt: skip
            batch = collate(samples, tokenizer.pad_token_id)
            embeds = model.embed(batch["input_ids"], ecg_embeds=None if ecg is None else ecg[[i for i, _ in chunk]])
            logits = model.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"].to(embeds.device),
                               use_cache=False).logits  # [b, L, V]  # fmt: skip
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [b, L-1, V]
            target = batch["labels"][:, 1:].to(logp.device)  # [b, L-1]
            keep = target != IGNORE_INDEX
            picked = (logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep).sum(dim=1)  # [b]
            for k, (i, _) in enumerate(chunk):
                out[i][position[start + k]] = float(picked[k])
    return out


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
