"""`ecglm build-demo-llm`: the demo world's tiny pretrained causal LM (text only).

In the demo world there is no real pretrained LLM, so this stage builds one that plays its part (the
paper's BioMedGPT-LM-7B): a byte-level BPE tokenizer and a tiny Llama-architecture causal LM, trained
on TEXT ONLY from the training split. It knows the language of the reports and findings and the format
of the zero-shot questions; it never sees an ECG.

The corpus (one document per item, training split only; all wording from :mod:`ecglm.text.prompts`):

- ``slot_training``: the paper's training template with the ECG's findings written in the slot where
  the ECG token will stand ("The ECG signal is sinus tachycardia, lead V2: ST elevation."), so that the
  model learns to read the report and the lead descriptions from what stands in that place (without
  this, a later alignment of a projected ECG embedding into the slot does not learn). There is no
  document with the ``<ecg>`` token itself in the slot: the model would learn there that the slot says
  nothing (the report's prior, mostly "sinus rhythm"), and the aligned model never shows it that token;
- ``key_training``: the same template with only one key word of the ECG's class in the slot
  (:func:`key_word`; the task drawn per ECG among ``key_training_tasks``, default rhythm and
  diagnostic): what one projected ECG token can say. The slot findings name every lead, which one
  token cannot; with these documents the right key word is the best single word in the slot (measured
  with ``bench/probe_alignment.py``: mean loss over the alignment targets 0.477 with the right rhythm
  word, 0.781 with a wrong one). With ``key_slot: all`` the slot holds the key words of every task of
  ``key_training_tasks`` instead, in that order ("bradycardia infarction"): what
  ``align.num_ecg_tokens: 2`` can say, one word per token (:func:`key_words`);
- ``mcq_slot`` / ``mcq_slot_findings`` / ``mcq_text`` / ``mcq_key``: the zero-shot multiple-choice prompt
  of each task for which the ECG has exactly one of the task's classes, followed by the correct answer
  letter; the findings stand in the slot (``slot``), in the slot and in the findings list
  (``slot_findings``), only in the findings list without an ECG sentence (``text``), or the slot holds
  only the key word of the answer's class (``key``, :func:`key_word`: what a single projected ECG token
  can say; with ``key_slot: all``, the ECG's key words as in its ``key_training`` document, so the
  question teaches which word answers which task; its likelihood sentence has the same slot). The options
  keep the evaluation's fixed A-E order; instead the questions are resampled per class (every class of
  a task the same number of items) so that the letters are balanced and "always A" is not a solution;
- ``likelihood`` / ``likelihood_key``: the `likelihood` scoring sentence ("... The ECG report indicates
  sinus rhythm.") after the slot findings (after the key word alone for the items of the ``key``
  variant), one per question item (so balanced the same way): the class-balanced lesson that the report
  names what the slot says.

Output (``--out``, swapped in as a whole only once complete): ``config.json``, ``model.safetensors``,
``generation_config.json`` (``save_pretrained``), ``tokenizer.json``, ``tokenizer_config.json``,
``demo_llm_config.yaml`` (the :class:`DemoLLMConfig` used), ``corpus_stats.json`` (documents per kind,
answer letters per task), ``train_log.csv`` (the loss of every step), ``metrics.json`` (training time
and losses, and the check: balanced accuracy of the zero-shot questions on validation ECGs, answered
from the findings in the slot by the next-token argmax over " A" .. " E") and ``skipped.csv``.
``AutoTokenizer.from_pretrained(out)`` and ``AutoModelForCausalLM.from_pretrained(out)`` load it
without remote code.

Reproducibility: the corpus is a function of the inputs and the seed; training is deterministic on CPU
for a seed and a thread count.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Mapping, Sequence

import numpy as np

from ecglm.core.atomic import atomic_path, staged_folder, write_text_atomic
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS
from ecglm.core.stage_config import StageConfig, setting
from ecglm.data.ecg_data import read_records
from ecglm.models.gguf import MANIFEST as LLM_MANIFEST
from ecglm.text.expand import load_inputs, missing_reasons
from ecglm.text.prompts import (
    CLASS_PHRASES,
    ECG_SENTENCE,
    ECG_TOKEN,
    TASK_LABEL_COLUMNS,
    TASK_NAMES,
    TASKS,
    Patient,
    answer_text,
    clean_phrase,
    general_description,
    likelihood_text,
    training_text,
    zero_shot_prompt,
)
from ecglm.train.runtime import torch_threads

if TYPE_CHECKING:  # polars is imported where it is used (a fast `ecglm --help`)
    import polars as pl

log = logging.getLogger(__name__)

#: Mixed into every seed of this stage so that its random streams differ from other stages' with the same seed.
_STAGE_KEY = 0x64656D6F6C6C6D  # "demollm"

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
#: The special tokens, in id order (0 .. 4); ``<ecg>`` is one token that the alignment stage replaces.
SPECIAL_TOKENS: tuple[str, ...] = (BOS, EOS, PAD, UNK, ECG_TOKEN)
#: The option letters of every zero-shot task (A-E), in order.
LETTERS: tuple[str, ...] = tuple(letter for letter, _, _ in TASKS["rhythm"])
#: The records.parquet label column of each zero-shot task.
LEAD_COLUMNS = tuple(f"lead_{lead}" for lead in LEADS)

#: The question variants: where the findings stand (see the module docstring).
MCQ_VARIANTS: tuple[str, ...] = ("slot", "slot_findings", "text", "key")
#: Document kinds of the corpus.
KINDS: tuple[str, ...] = ("slot_training", "key_training", *(f"mcq_{v}" for v in MCQ_VARIANTS), "likelihood", "likelihood_key")

#: What the slot of the key documents holds (:attr:`DemoLLMConfig.key_slot`).
KEY_SLOTS: tuple[str, ...] = ("one", "all")

CONFIG_FILE = "demo_llm_config.yaml"


# ---------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class DemoLLMConfig(StageConfig):
    """Everything that decides the demo LLM (saved beside the model as ``demo_llm_config.yaml``).

    Read with :meth:`load` (YAML file, then ``--set key=value``); unknown keys and wrong types raise
    StageError naming the key (:class:`ecglm.core.stage_config.StageConfig`), bad values name the rule broken.
    """

    LABEL: ClassVar[str] = "demo LLM config"
    SECTION_DESCRIPTION: ClassVar[str] = "The demo world's tiny LLM (ecglm build-demo-llm), used when llm.source is demo."

    seed: int = setting(1234, "Random seed (the rules pass the top-level seed).", by_rule=True, ge=0)
    mcq_per_class: int = setting(0, """Question items per class of each task; 0 = the mean class count of the task
        in the training split.""", ge=0)
    mcq_variants: list[Literal[MCQ_VARIANTS]] = setting(list(MCQ_VARIANTS), """Which question variants the corpus
        holds, assigned in turn to a class's items: the findings in the ECG slot, in the slot and the findings
        list, in the findings list only, or the slot holding only the answer's class phrase.""", unique=True)
    key_training_tasks: list[Literal[TASK_NAMES]] = setting(["rhythm", "diagnostic"], """The tasks whose class key
        word may stand alone in the slot of an ECG's key_training document (the training template with one word
        where the ECG token will stand; one task drawn per ECG among those of which it has exactly one class).
        [] = no such documents.""", unique=True)
    key_slot: Literal[KEY_SLOTS] = setting("one", """What the slot of a key_training document and of a key question
        holds. one: one key word (of a task drawn per ECG among key_training_tasks; of a question, the asked
        task's). all: the key words of every task of key_training_tasks the ECG has exactly one class of, in that
        order ("bradycardia infarction"), what align.num_ecg_tokens equal to their number can say, one word per
        token.""")
    vocab_size: int = setting(2048, "BPE vocabulary size, special tokens and the 256 byte symbols included.",
                              ge=256 + len(SPECIAL_TOKENS) + len(LETTERS))
    hidden_size: int = setting(128, "Hidden size of the tiny Llama (a multiple of num_heads).", ge=1)
    num_layers: int = setting(4, "Decoder layers.", ge=1)
    num_heads: int = setting(4, "Attention heads.", ge=1)
    intermediate_size: int = setting(512, "MLP width.", ge=1)
    epochs: float = setting(3.0, "Passes over the corpus (fractions allowed); max_steps > 0 stops earlier.", gt=0)
    max_steps: int = setting(0, "Stop after this many optimizer steps (0 = run all epochs).", ge=0)
    batch_size: int = setting(16, "Sequences per optimizer step.", ge=1)
    learning_rate: float = setting(3e-3, "Peak learning rate (AdamW, cosine schedule).", gt=0)
    weight_decay: float = setting(0.01, "AdamW weight decay.", ge=0)
    warmup_steps: int = setting(30, "Linear warm-up steps.", ge=0)
    grad_clip: float = setting(1.0, "Gradient-norm clip.", ge=0)
    answer_loss_weight: float = setting(5.0, """Loss weight of a question's answer letter (every other token weighs
        1): the letter is one token of ~150 in a question. On the demo world 5 learnt the answers in fewer steps
        than 1 (unweighted) and than 20 (whose noisy letter gradients made the answers swing between
        letters).""", ge=0)
    threads: int = setting(2, "Torch CPU threads for training and the check.", ge=1)
    check_task: Literal[TASK_NAMES] = setting("rhythm", """The check after training: this task's questions on
        validation ECGs, findings in the slot.""")
    check_min_balanced_accuracy: float = setting(0.9, "The balanced accuracy the check after training expects.",
                                                 ge=0, le=1)
    check_strict: bool = setting(False, """true: a failed check stops the stage (StageError); false: a warning,
        recorded in metrics.json.""")
    eval_max_per_class: int = setting(200, """At most this many validation questions per class for each task's
        evaluation (0 = all).""", ge=0)

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise StageError(f"invalid demo LLM config: hidden_size {self.hidden_size} must be a multiple of "
                             f"num_heads {self.num_heads}")

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> "DemoLLMConfig":
        """The defaults, updated by the YAML file ``path`` (if given), then by ``key=value`` overrides."""
        config = cls.from_yaml(path) if path is not None else cls()
        return config.with_overrides(overrides) if overrides else config


# ---------------------------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Doc:
    """One corpus document: its text, its kind (:data:`KINDS`), the ECG it came from and, for a question,
    the task and the correct letter."""

    text: str
    kind: str
    ecg_id: int
    task: str | None = None
    answer: str | None = None


def _leads(row: Mapping) -> dict[str, str | None]:
    return {lead: row.get(col) for lead, col in zip(LEADS, LEAD_COLUMNS)}


def slot_findings(general: str | None, leads: Mapping[str, str | None]) -> str:
    """The findings written where the ECG token will stand: the general findings, then each described lead.

    "sinus tachycardia, lead V2: ST elevation, lead V3: ST elevation"; "no abnormality" when there is no
    finding at all. Leads without a description are left out (the slot stays short).
    """
    parts = [general_description(general)]
    parts += [f"lead {lead}: {clean_phrase(leads.get(lead))}" for lead in LEADS if clean_phrase(leads.get(lead))]
    return ", ".join(parts)


def fill_slot(text: str, findings: str) -> str:
    """``text`` with its ECG sentence ("The ECG signal is <ecg>.") holding ``findings`` instead of the token.

    Raises ValueError unless the text holds exactly one ECG sentence.
    """
    if text.count(ECG_SENTENCE) != 1:
        raise ValueError(f"expected exactly one {ECG_SENTENCE!r} in the text, found {text.count(ECG_SENTENCE)}")
    return text.replace(ECG_SENTENCE, ECG_SENTENCE.replace(ECG_TOKEN, findings))


def task_class(labels: Sequence[str] | None, task: str) -> str | None:
    """The ECG's class code for ``task`` when it holds exactly one of the task's classes, else None."""
    codes = {code for _, code, _ in TASKS[task]}
    mine = {c for c in (labels or ()) if c in codes}
    return next(iter(mine)) if len(mine) == 1 else None


def row_class(row: Mapping, task: str) -> str | None:
    """:func:`task_class` of the row's ``task`` label column (a missing column: no class)."""
    return task_class(row.get(TASK_LABEL_COLUMNS[task]), task)


def letter_of(task: str, code: str) -> str:
    """The option letter of class ``code`` in ``task`` (the fixed A-E order of :data:`TASKS`)."""
    for letter, c, _ in TASKS[task]:
        if c == code:
            return letter
    raise ValueError(f"{code!r} is not a class of task {task!r}")


def key_word(task: str, code: str) -> str:
    """The one word of class ``code``'s phrase (:data:`ecglm.text.prompts.CLASS_PHRASES`) that names it among the
    task's five: the longest word found in no other class phrase of the task, the later one on a tie
    ("sinus tachycardia" -> "tachycardia", "digitalis-effect" -> "digitalis"); the longest word when
    none is unique.

    The slot of the ``key`` question variant and of its likelihood sentence holds this word alone: one
    projected ECG token can carry about one word, and without documents where a single word in the slot
    decides the answer, a tiny LM never learns to read one (measured on the demo world: with one word
    embedding in the slot, the LM trained without them named 3 of the 5 rhythm classes and 1 of 5
    diagnostic classes; a projected ECG token then carried no class at all).
    """
    if task not in TASKS:
        raise ValueError(f"unknown zero-shot task {task!r} (expected one of {sorted(TASKS)})")
    codes = [c for _, c, _ in TASKS[task]]
    if code not in codes:
        raise ValueError(f"{code!r} is not a class of task {task!r}")

    def words(c: str) -> list[str]:
        return [w for w in re.split(r"[\s/-]+", CLASS_PHRASES[c]) if w]

    others = {w.lower() for c in codes if c != code for w in words(c)}
    unique = [w for w in words(code) if w.lower() not in others]
    candidates = unique or words(code)
    return max(reversed(candidates), key=len)


def key_words(row: Mapping, tasks: Sequence[str]) -> dict[str, str]:
    """Task -> key word (:func:`key_word`) of the ECG's class, for each of ``tasks`` of which it has
    exactly one class, in the order of ``tasks``."""
    codes = {t: row_class(row, t) for t in tasks}
    return {t: key_word(t, code) for t, code in codes.items() if code is not None}


def key_slot(row: Mapping, task: str, code: str, slot_tasks: Sequence[str] = ()) -> str:
    """What the slot of a ``key`` question of ``task`` (answer ``code``) holds: the ECG's key words of
    ``slot_tasks`` (:func:`key_words`; ``key_slot: all``) when ``task`` is one of them and ``code`` is the
    ECG's class, else ``code``'s key word alone."""
    if task in slot_tasks and row_class(row, task) == code:
        return " ".join(key_words(row, slot_tasks).values())
    return key_word(task, code)


def mcq_prompt(row: Mapping, task: str, variant: str, code: str | None = None, slot_tasks: Sequence[str] = ()) -> str:
    """The zero-shot question of ``task`` for an ECG, ending in the answer stem (no answer).

    ``variant``: ``slot`` (findings in the ECG slot only), ``slot_findings`` (in the slot and in the
    findings list), ``text`` (findings list only, no ECG sentence) or ``key`` (the slot holds only the
    key word of the ECG's class ``code``, :func:`key_word`: what one projected ECG token can say; with
    ``slot_tasks``, the ECG's key words of those tasks, :func:`key_slot`).
    """
    patient = Patient.from_record(row)
    general, leads = row.get("general"), _leads(row)
    if variant == "text":
        return zero_shot_prompt(task, patient, general, leads, ecg=False, findings=True)
    if variant == "key":
        if code is None:
            raise ValueError("the key variant needs the class code")
        return fill_slot(zero_shot_prompt(task, patient, ecg=True, findings=False), key_slot(row, task, code, slot_tasks))
    if variant not in ("slot", "slot_findings"):
        raise ValueError(f"unknown question variant {variant!r} (expected one of {MCQ_VARIANTS})")
    prompt = zero_shot_prompt(task, patient, general, leads, ecg=True, findings=variant == "slot_findings")
    return fill_slot(prompt, slot_findings(general, leads))


def ecg_documents(row: Mapping, key_tasks: Sequence[str] = ()) -> list[Doc]:
    """The template documents of one ECG: ``slot_training``, the training template with the findings in
    the slot, and, when the ECG has exactly one class of some task of ``key_tasks``, ``key_training``, the
    same template with only those classes' key words (:func:`key_words`, in order) in the slot."""
    patient = Patient.from_record(row)
    general, leads = row.get("general"), _leads(row)
    plain = training_text(patient, row["report"], general, leads).text
    ecg_id = int(row["ecg_id"])
    docs = [Doc(fill_slot(plain, slot_findings(general, leads)), "slot_training", ecg_id)]
    words = key_words(row, key_tasks)
    if words:
        docs.append(Doc(fill_slot(plain, " ".join(words.values())), "key_training", ecg_id, "+".join(words)))
    return docs


def key_training_task(row: Mapping, tasks: Sequence[str], seed: int) -> str | None:
    """The task whose key word stands in the slot of this ECG's ``key_training`` document: one drawn
    (seeded by ``seed`` and the ecg_id) among ``tasks`` of which the ECG has exactly one class; None if none."""
    mine = [t for t in tasks if row_class(row, t) is not None]
    if not mine:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STAGE_KEY, 3, int(row["ecg_id"])]))
    return mine[int(rng.integers(len(mine)))]


def question_documents(row: Mapping, task: str, code: str, variant: str, slot_tasks: Sequence[str] = ()) -> list[Doc]:
    """A question item: the question with its answer (kind ``mcq_<variant>``) and the likelihood sentence
    (``slot_tasks``: the tasks whose key words the ``key`` variant's slot holds, :func:`key_slot`)."""
    ecg_id = int(row["ecg_id"])
    letter = letter_of(task, code)
    patient = Patient.from_record(row)
    slot = key_slot(row, task, code, slot_tasks) if variant == "key" else slot_findings(row.get("general"), _leads(row))
    sentence = fill_slot(likelihood_text(patient, code).text, slot)
    return [
        Doc(mcq_prompt(row, task, variant, code, slot_tasks) + answer_text(letter), f"mcq_{variant}", ecg_id, task, letter),
        Doc(sentence, "likelihood_key" if variant == "key" else "likelihood", ecg_id, task, letter),
    ]


def balanced_items(
    classes: Sequence[str | None], per_class: int, rng: np.random.Generator
) -> list[tuple[int, str]]:
    """Resample question items so that every class present gets the same number of items.

    ``classes[i]`` is row i's class (None = no question). Each present class gets ``per_class`` items
    (0 = the mean count of the present classes, rounded up): a larger class a random subset without
    repetition, a smaller one all its rows once and then random repeats. Returns (row, class) pairs
    ordered by class (the task's order of first appearance is irrelevant: the caller shuffles).
    """
    by_class: dict[str, list[int]] = {}
    for i, code in enumerate(classes):
        if code is not None:
            by_class.setdefault(code, []).append(i)
    if not by_class:
        return []
    target = per_class or math.ceil(sum(len(v) for v in by_class.values()) / len(by_class))
    items: list[tuple[int, str]] = []
    for code in sorted(by_class):
        rows = np.asarray(by_class[code])
        if len(rows) >= target:
            chosen = rng.choice(rows, size=target, replace=False)
        else:
            chosen = np.concatenate([rng.permutation(rows), rng.choice(rows, size=target - len(rows), replace=True)])
        items += [(int(i), code) for i in chosen]
    return items


def build_corpus(train: pl.DataFrame, config: DemoLLMConfig) -> list[Doc]:
    """The shuffled corpus of the training ECGs in ``train`` (rows of :func:`load_training_inputs`).

    Guarantees: every document comes from an ECG of ``train``, all of whose rows are in the training
    split (else StageError); each task's question items are balanced over the classes present;
    deterministic for ``config.seed``.
    """
    import polars as pl

    outside = train.filter(pl.col("split") != "train")
    if outside.height:
        raise StageError(f"the demo LLM corpus takes training ECGs only, got ecg_id(s) "
                         f"{outside['ecg_id'].head(20).to_list()} of split(s) {sorted(set(outside['split']))}")
    rows = list(train.iter_rows(named=True))
    slot_tasks = list(config.key_training_tasks) if config.key_slot == "all" else []
    docs: list[Doc] = []
    for row in rows:
        if slot_tasks:
            key_tasks = slot_tasks
        else:
            drawn = key_training_task(row, config.key_training_tasks, config.seed)
            key_tasks = [drawn] if drawn else []
        docs += ecg_documents(row, key_tasks)
    for t, task in enumerate(TASKS):
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STAGE_KEY, 1, t]))
        classes = [task_class(row[TASK_LABEL_COLUMNS[task]], task) for row in rows]
        items = balanced_items(classes, config.mcq_per_class, rng)
        turn: Counter = Counter()
        for i, code in items:
            k = turn[code] % len(config.mcq_variants)
            turn[code] += 1
            question, sentence = question_documents(rows[i], task, code, config.mcq_variants[k], slot_tasks)
            docs += [question, sentence]
    train_ids = set(train["ecg_id"].to_list())
    assert all(d.ecg_id in train_ids for d in docs), "a corpus document comes from outside the training split"
    order = np.random.default_rng(np.random.SeedSequence([config.seed, _STAGE_KEY, 2])).permutation(len(docs))
    return [docs[i] for i in order]


def corpus_stats(docs: Sequence[Doc]) -> dict:
    """Documents per kind, and the answer letters of the questions per task and over all tasks."""
    letters = {task: Counter() for task in TASKS}
    for d in docs:
        if d.kind.startswith("mcq_"):
            letters[d.task][d.answer] += 1
    overall = sum(letters.values(), Counter())
    total = sum(overall.values())
    return {
        "documents": len(docs),
        "ecgs": len({d.ecg_id for d in docs}),
        "kinds": {k: sum(d.kind == k for d in docs) for k in KINDS},
        "letters": {task: {x: c[x] for x in LETTERS} for task, c in letters.items()},
        "letters_overall": {x: overall[x] for x in LETTERS},
        "majority_letter_share": (max(overall.values()) / total) if total else None,
        "characters": sum(len(d.text) for d in docs),
    }


# ---------------------------------------------------------------------------------------------- inputs


def load_training_inputs(records: Path, reports: Path, findings: Path) -> pl.DataFrame:
    """records.parquet joined with reports_en and findings (:func:`ecglm.text.expand.load_inputs`) plus the
    zero-shot label columns (diagnostic_superclass, rhythm, form), in records order."""
    import polars as pl

    joined = load_inputs(records, reports, findings)
    labels = read_records(records, ["ecg_id", *TASK_LABEL_COLUMNS.values()], patients=False)
    labels = labels.with_columns(pl.col("ecg_id").cast(pl.Int64))
    return joined.join(labels, on="ecg_id", how="left").sort("signal_row")


# ---------------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Sequence[str], vocab_size: int, max_length: int | None = None):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped as a ``PreTrainedTokenizerFast``.

    Guarantees: ids 0-4 are ``<s> </s> <pad> <unk> <ecg>``; ``<ecg>`` and each option letter " A" .. " E"
    encode to one token (else StageError: the corpus holds too few questions); encoding adds ``<s>``
    (not ``</s>``); decoding gives the text back.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens=[ECG_TOKEN], model_max_length=max_length or 1_000_000, padding_side="right",
    )
    check_tokenizer(fast)
    return fast


def letter_token_ids(tokenizer) -> list[int]:
    """The ids of " A" .. " E" (:func:`ecglm.text.prompts.answer_text`); StageError unless each is one token."""
    ids = []
    for letter in LETTERS:
        enc = tokenizer(answer_text(letter), add_special_tokens=False)["input_ids"]
        if len(enc) != 1:
            raise StageError(f"the demo tokenizer splits the answer {answer_text(letter)!r} into {len(enc)} tokens; "
                             "the corpus holds too few questions (raise mcq_per_class or vocab_size)")
        ids.append(enc[0])
    return ids


def check_tokenizer(tokenizer) -> None:
    """Raise StageError unless the special tokens sit at ids 0-4, ``<ecg>`` is one token and the letters are."""
    for i, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.convert_tokens_to_ids(token) != i:
            raise StageError(f"the demo tokenizer has {token!r} at id {tokenizer.convert_tokens_to_ids(token)}, not {i}")
    enc = tokenizer(f"is {ECG_TOKEN}.", add_special_tokens=False)["input_ids"]
    if enc.count(tokenizer.convert_tokens_to_ids(ECG_TOKEN)) != 1:
        raise StageError(f"the demo tokenizer does not keep {ECG_TOKEN!r} as one token")
    letter_token_ids(tokenizer)


# ---------------------------------------------------------------------------------------------- model


def model_config(config: DemoLLMConfig, tokenizer, max_positions: int):
    """The LlamaConfig of the demo LLM (tied input/output embeddings, no dropout)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def max_positions_for(longest: int) -> int:
    """Positions the model is built for: the longest training sequence plus headroom, a multiple of 64."""
    return 64 * math.ceil((longest + 64) / 64)


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's batches of indices: shuffled, sorted by length within windows of 50 batches (little
    padding), then the batches shuffled. Every index appears exactly once."""
    order = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(sequences: Sequence[Sequence[int]], pad_id: int, answer_positions: Sequence[int] | None = None,
            answer_weight: float = 1.0):
    """Right-padded tensors, each [B, T]: ``input_ids``, ``attention_mask``, ``labels`` (pads -100) and the
    loss weight of each token as a target (pads 0, the token at ``answer_positions[i]`` ``answer_weight``,
    every other token 1; a negative position = no answer)."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    weights = mask.to(torch.float32)
    for i, pos in enumerate(answer_positions or ()):
        if pos >= 0:
            weights[i, pos] = answer_weight
    return ids, mask, labels, weights


def weighted_lm_loss(logits, labels, weights):
    """The next-token loss weighted per target token, and the plain (unweighted) mean over the same tokens.

    logits [B, T, V]; labels, weights [B, T] (token t is predicted from position t - 1; label -100 and weight 0
    mark padding). Returns (weighted loss, plain loss) as scalars.
    """
    import torch.nn.functional as F

    logits, labels, weights = logits[:, :-1], labels[:, 1:], weights[:, 1:]  # [B, T-1, V], [B, T-1], [B, T-1]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100,
                         reduction="none").view(labels.shape)  # [B, T-1]
    known = (labels != -100).to(ce.dtype)
    return (ce * weights).sum() / weights.sum(), (ce * known).sum() / known.sum()


def answer_positions_of(sequences: Sequence[Sequence[int]], docs: Sequence[Doc], letter_ids: Sequence[int]) -> list[int]:
    """The index of the answer letter in each question's sequence (``<s> ... Answer: X </s>``), -1 for other
    documents. Raises ValueError if a question's token before ``</s>`` is not its answer letter."""
    out = []
    for seq, doc in zip(sequences, docs):
        if doc.answer is None or not doc.kind.startswith("mcq_"):
            out.append(-1)
            continue
        if seq[-2] != letter_ids[LETTERS.index(doc.answer)]:
            raise ValueError(f"question of ECG {doc.ecg_id} does not end in the token of {answer_text(doc.answer)!r}")
        out.append(len(seq) - 2)
    return out


def pretrain(
    model, sequences: Sequence[Sequence[int]], config: DemoLLMConfig, pad_id: int,
    answer_positions: Sequence[int] | None = None, log_path: Path | None = None, progress: bool = True,
) -> list[tuple[float, float]]:
    """Train ``model`` (in place) as a causal LM on ``sequences`` (token ids with BOS/EOS).

    The objective is the next-token loss over every token, with the answer letters of the questions
    (``answer_positions``, see :func:`answer_positions_of`) weighted ``config.answer_loss_weight``. AdamW
    (no decay on norms and biases), linear warm-up then cosine decay to 0, gradient clipping; deterministic
    for ``config.seed`` on CPU. Returns (objective, plain LM loss) of every step and writes them per step
    (``step,epoch,loss,lm_loss,lr,tokens``) to ``log_path``.
    """
    import torch
    from tqdm import tqdm
    from transformers import get_cosine_schedule_with_warmup

    lengths = [len(s) for s in sequences]
    answers = list(answer_positions) if answer_positions is not None else [-1] * len(sequences)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STAGE_KEY, 3]))
    total = training_steps(len(sequences), config)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate, betas=(0.9, 0.98), eps=1e-8)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(config.warmup_steps, total // 2), total)
    losses: list[tuple[float, float]] = []
    log_file = open(log_path, "w", newline="", encoding="utf-8") if log_path else None
    try:
        writer = csv.writer(log_file) if log_file else None
        if writer:
            writer.writerow(["step", "epoch", "loss", "lm_loss", "lr", "tokens"])
        model.train()
        bar = tqdm(total=total, desc="build-demo-llm", unit="step", disable=not progress)
        step = epoch = 0
        while step < total:
            for batch in length_bucketed_batches(lengths, config.batch_size, rng):
                if step >= total:
                    break
                ids, mask, labels, weights = collate(  # each [B, T]
                    [sequences[i] for i in batch], pad_id, [answers[i] for i in batch], config.answer_loss_weight)
                logits = model(input_ids=ids, attention_mask=mask).logits  # [B, T, V]
                loss, lm_loss = weighted_lm_loss(logits, labels, weights)
                if not torch.isfinite(loss):
                    raise StageError(f"the demo LLM's loss became {loss.item()} at step {step + 1}; "
                                     "lower learning_rate")
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                lr = schedule.get_last_lr()[0]
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                losses.append((float(loss.item()), float(lm_loss.item())))
                if writer:
                    writer.writerow([step, epoch, f"{losses[-1][0]:.6f}", f"{losses[-1][1]:.6f}", f"{lr:.6g}",
                                     int(mask.sum())])
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1][0]:.3f}")
            epoch += 1
        bar.close()
    finally:
        if log_file:
            log_file.close()
    model.eval()
    return losses


def training_steps(n_sequences: int, config: DemoLLMConfig) -> int:
    """Optimizer steps of a run: ``epochs`` passes of batches, capped by ``max_steps`` when that is > 0."""
    total = math.ceil(config.epochs * math.ceil(n_sequences / config.batch_size))
    return min(total, config.max_steps) if config.max_steps else total


# ---------------------------------------------------------------------------------------------- the check


def answer_letters(model, tokenizer, prompts: Sequence[str], batch_size: int = 32) -> list[str]:
    """The option letter each prompt (ending in the answer stem) is answered with: the argmax of the
    next-token logits over " A" .. " E"."""
    import torch

    letter_ids = torch.as_tensor(letter_token_ids(tokenizer))
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    order = np.argsort([len(e) for e in encoded], kind="stable")
    out: list[str | None] = [None] * len(prompts)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask, _, _ = collate([encoded[i] for i in idx], tokenizer.pad_token_id)  # [B, T]
            logits = model(input_ids=ids, attention_mask=mask).logits  # [B, T, V]
            last = mask.sum(dim=1) - 1  # [B]
            scores = logits[torch.arange(len(idx)), last][:, letter_ids]  # [B, 5]
            for i, best in zip(idx, scores.argmax(dim=1).tolist()):
                out[i] = LETTERS[best]
    return out  # type: ignore[return-value]


def classification_metrics(truth: Sequence[str], predicted: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy (mean recall over the true classes present), per-class recall, counts."""
    classes = sorted(set(truth))
    recall = {c: float(np.mean([p == c for t, p in zip(truth, predicted) if t == c])) for c in classes}
    return {
        "n": len(truth),
        "accuracy": float(np.mean([t == p for t, p in zip(truth, predicted)])) if truth else None,
        "balanced_accuracy": float(np.mean(list(recall.values()))) if recall else None,
        "recall": recall,
        "true_letters": dict(sorted(Counter(truth).items())),
        "predicted_letters": dict(sorted(Counter(predicted).items())),
    }


def question_rows(rows: Sequence[Mapping], task: str, max_per_class: int, seed: int) -> list[int]:
    """Indices of the rows with exactly one class of ``task``, at most ``max_per_class`` per class (0 = all,
    a random subset for ``seed``), in row order within each class."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STAGE_KEY, 4]))
    by_class: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        code = task_class(row[TASK_LABEL_COLUMNS[task]], task)
        if code is not None:
            by_class.setdefault(code, []).append(i)
    chosen: list[int] = []
    for code in sorted(by_class):
        idx = by_class[code]
        if max_per_class and len(idx) > max_per_class:
            idx = sorted(rng.choice(idx, size=max_per_class, replace=False).tolist())
        chosen += idx
    return chosen


def phrase_key(row: Mapping, task: str) -> tuple[str, ...]:
    """The classes of ``task`` whose phrase (:data:`ecglm.text.prompts.CLASS_PHRASES`) the ECG's slot findings
    name, as whole words, case-insensitive ("sinus rhythm, sinus arrhythmia" -> ("SR", "SARRH"))."""
    text = slot_findings(row.get("general"), _leads(row))
    return tuple(code for _, code, _ in TASKS[task]
                 if re.search(rf"(?<!\w){re.escape(CLASS_PHRASES[code])}(?!\w)", text, re.IGNORECASE))


def lookup_answers(train_rows: Sequence[Mapping], rows: Sequence[Mapping], task: str) -> list[str]:
    """A reference reader of the findings, no language model: the letter that a lookup table from
    :func:`phrase_key` to the class, fitted on ``train_rows`` with every class weighted 1 / its count (the
    balanced corpus's prior), gives each row (ties: the task's order). A key not seen in training gets the
    answer of the empty key, or the first class (A) when no training row had an empty key."""
    counts = Counter(task_class(r[TASK_LABEL_COLUMNS[task]], task) for r in train_rows)
    counts.pop(None, None)
    table: dict[tuple[str, ...], Counter] = {}
    for r in train_rows:
        code = task_class(r[TASK_LABEL_COLUMNS[task]], task)
        if code is not None:
            table.setdefault(phrase_key(r, task), Counter())[code] += 1.0 / counts[code]
    order = [code for _, code, _ in TASKS[task]]

    def best(weights: Counter) -> str:
        return max(order, key=lambda c: (weights.get(c, 0.0), -order.index(c)))

    fallback = best(table[()]) if () in table else order[0]
    return [letter_of(task, best(table[k]) if (k := phrase_key(r, task)) in table else fallback) for r in rows]


def evaluate_questions(model, tokenizer, rows: Sequence[Mapping], task: str, variant: str,
                       max_per_class: int, seed: int, train_rows: Sequence[Mapping] | None = None) -> dict:
    """The model's answers to ``task``'s questions (``variant``) for the rows of :func:`question_rows`, as
    :func:`classification_metrics`; with ``train_rows`` also those of :func:`lookup_answers` on the same
    rows (``lookup``), the reference of how far the findings text alone decides the class."""
    chosen = question_rows(rows, task, max_per_class, seed)
    picked = [rows[i] for i in chosen]
    truth = [letter_of(task, task_class(r[TASK_LABEL_COLUMNS[task]], task)) for r in picked]
    predicted = answer_letters(model, tokenizer, [mcq_prompt(r, task, variant) for r in picked])
    out = {"task": task, "variant": variant, **classification_metrics(truth, predicted)}
    if train_rows is not None:
        out["lookup"] = classification_metrics(truth, lookup_answers(train_rows, picked, task))
    return out


# ---------------------------------------------------------------------------------------------- the stage


def _skipped_lines(joined: pl.DataFrame, reports: Path, findings: Path, skip_missing: bool) -> list[tuple[int, str]]:
    """(ecg_id, reason) of training and validation ECGs without a report or findings; StageError unless
    ``skip_missing``."""
    import polars as pl

    used = joined.filter(pl.col("split").is_in(["train", "val"]))
    missing = missing_reasons(used, reports, findings)
    if missing and not skip_missing:
        shown = "; ".join(f"{i}: {r}" for i, r in missing[:10])
        raise StageError(f"{len(missing)} training/validation ECG(s) have no text ({shown}"
                         f"{' ...' if len(missing) > 10 else ''}); rerun the stage that writes it, or pass "
                         "--skip-missing to leave them out (listed in skipped.csv)")
    return missing


def select_inputs(records: Path, reports: Path, findings: Path, skip_missing: bool):
    """``(train, val_rows, skipped)``: the joined training ECGs, the validation rows, the ECGs left out."""
    import polars as pl

    joined = load_training_inputs(records, reports, findings)
    skipped = _skipped_lines(joined, reports, findings, skip_missing)
    if skipped:
        log.warning("leaving out %d ECG(s) without a report or findings (listed in skipped.csv)", len(skipped))
        joined = joined.filter(~pl.col("ecg_id").is_in([i for i, _ in skipped]))
    train = joined.filter(pl.col("split") == "train")
    val_rows = list(joined.filter(pl.col("split") == "val").iter_rows(named=True))
    if train.height == 0:
        raise StageError(f"{records}: no training ECG with a report and findings to build the demo LLM from")
    return train, val_rows, skipped


def corpus_of(train: pl.DataFrame, config: DemoLLMConfig, records: Path) -> tuple[list[Doc], dict]:
    """The corpus documents and their statistics; StageError when no document holds a question."""
    docs = build_corpus(train, config)
    stats = corpus_stats(docs)
    if not any(stats["letters_overall"].values()):
        raise StageError(f"{records}: no training ECG holds exactly one class of a zero-shot task; the demo LLM "
                         "would never see a question")
    log.info("corpus: %d documents of %d training ECGs (%s); answer letters %s (majority share %.2f)",
             stats["documents"], stats["ecgs"], ", ".join(f"{k} {v}" for k, v in stats["kinds"].items()),
             stats["letters_overall"], stats["majority_letter_share"])
    return docs, stats


def tokenize_corpus(docs: Sequence[Doc], config: DemoLLMConfig):
    """``(tokenizer, sequences, sizes)``: the BPE tokenizer trained on the corpus, the encoded documents
    (each ending with EOS), and ``{"longest", "positions", "tokens"}``."""
    texts = [d.text for d in docs]
    tokenizer = train_tokenizer(texts, config.vocab_size)
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    sequences = [e + [tokenizer.eos_token_id] for e in encoded]
    longest = max(len(s) for s in sequences)
    positions = max_positions_for(longest)
    tokenizer.model_max_length = positions
    tokens = sum(len(s) for s in sequences)
    log.info("tokenizer: %d tokens; corpus %d tokens, longest document %d tokens -> %d positions",
             len(tokenizer), tokens, longest, positions)
    return tokenizer, sequences, {"longest": longest, "positions": positions, "tokens": tokens}


def train_and_evaluate(config: DemoLLMConfig, tokenizer, sequences, docs, sizes: dict, train: pl.DataFrame,
                       val_rows: list[dict], log_path: Path, progress: bool):
    """``(model, losses, evaluations, train_seconds)``: the tiny Llama pretrained on the corpus, then asked
    every task's validation questions (findings in the slot), on ``config.threads`` threads."""
    import torch
    from transformers import LlamaForCausalLM

    with torch_threads(config.threads):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(model_config(config, tokenizer, sizes["positions"]))
        log.info("model: Llama, %d parameters (%s)", sum(p.numel() for p in model.parameters()),
                 f"hidden {config.hidden_size}, {config.num_layers} layers, {config.num_heads} heads")
        train_started = time.perf_counter()
        answers = answer_positions_of(sequences, docs, letter_token_ids(tokenizer))
        losses = pretrain(model, sequences, config, tokenizer.pad_token_id, answers, log_path, progress)
        train_seconds = time.perf_counter() - train_started
        train_rows = list(train.iter_rows(named=True))
        evaluations = {
            task: evaluate_questions(model, tokenizer, val_rows, task, "slot", config.eval_max_per_class,
                                     config.seed, train_rows)
            for task in TASKS
        }
    return model, losses, evaluations, train_seconds


def check_result(config: DemoLLMConfig, evaluations: dict) -> dict:
    """The check on ``config.check_task``: printed; below the threshold a warning, or with ``check_strict``
    a StageError."""
    check = evaluations[config.check_task]
    passed = check["balanced_accuracy"] is not None and check["balanced_accuracy"] >= config.check_min_balanced_accuracy
    msg = (f"demo LLM check: {config.check_task} questions of {check['n']} validation ECGs answered from the "
           f"findings in the slot: balanced accuracy {_fmt(check['balanced_accuracy'])} "
           f"(accuracy {_fmt(check['accuracy'])}; threshold {config.check_min_balanced_accuracy}; a lookup table of "
           f"the class phrases in the findings reaches {_fmt(check['lookup']['balanced_accuracy'])})")
    print(msg)
    if not passed:
        if config.check_strict:
            raise StageError(msg + " -- below the threshold (train longer: epochs, or a larger model)")
        log.warning("%s -- below the threshold", msg)
    return {
        "task": config.check_task, "variant": "slot", "split": "val",
        "balanced_accuracy": check["balanced_accuracy"], "accuracy": check["accuracy"], "n": check["n"],
        "lookup_balanced_accuracy": check["lookup"]["balanced_accuracy"],
        "threshold": config.check_min_balanced_accuracy, "passed": passed,
    }  # fmt: skip


def write_llm_folder(folder: Path, model, tokenizer, config: DemoLLMConfig, stats: dict, skipped, metrics: dict,
                     started: float) -> None:
    """The model (safetensors), the tokenizer, the config, the corpus statistics, the skipped ECGs and, last,
    the metrics with the stage's whole time since ``started``, into the temporary ``folder`` that is swapped
    in once complete."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_text_atomic(folder / CONFIG_FILE, config.to_yaml())
    write_text_atomic(folder / "corpus_stats.json", json.dumps(stats, indent=2) + "\n")
    n_params = sum(p.numel() for p in model.parameters())
    manifest = {"name": f"tiny demo Llama ({n_params / 1e6:.1f}M parameters, built from this run's text)", "source": "demo"}
    write_text_atomic(folder / LLM_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    with atomic_path(folder / "skipped.csv") as path, open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["ecg_id", "reason"])
        w.writerows(skipped)
    metrics["seconds_total"] = round(time.perf_counter() - started, 1)
    write_text_atomic(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def build_demo_llm(
    records: str | Path,
    reports: str | Path,
    findings: str | Path,
    out: str | Path,
    config: DemoLLMConfig = DemoLLMConfig(),
    *,
    skip_missing: bool = False,
    progress: bool = True,
) -> dict:
    """Build the corpus, the tokenizer and the model, check it, and write everything into ``out``.

    Returns the metrics (also ``out/metrics.json``). Nothing appears at ``out`` unless complete (built in a
    temporary sibling folder, then swapped in). Raises StageError for bad inputs, a training split without
    questions, or (with ``config.check_strict``) a failed check.
    """
    records, reports, findings, out = Path(records), Path(reports), Path(findings), Path(out)
    if out.exists() and not out.is_dir():
        raise StageError(f"{out}: exists and is not a folder")
    started = time.perf_counter()
    train, val_rows, skipped = select_inputs(records, reports, findings, skip_missing)
    docs, stats = corpus_of(train, config, records)
    tokenizer, sequences, sizes = tokenize_corpus(docs, config)

    with staged_folder(out) as tmp:
        model, losses, evaluations, train_seconds = train_and_evaluate(
            config, tokenizer, sequences, docs, sizes, train, val_rows, tmp / "train_log.csv", progress
        )
        n_params = sum(p.numel() for p in model.parameters())
        tail = np.asarray(losses[-min(len(losses), 20):])  # [n, 2]: objective, plain LM loss
        metrics = {
            "stage": "build-demo-llm",
            "inputs": {"records": str(records), "reports": str(reports), "findings": str(findings)},
            "check": check_result(config, evaluations),
            "evaluation": evaluations,
            "training": {
                "steps": len(losses), "epochs": config.epochs, "first_loss": losses[0][0],
                "final_loss": float(tail[:, 0].mean()), "first_lm_loss": losses[0][1],
                "final_lm_loss": float(tail[:, 1].mean()), "seconds": round(train_seconds, 1),
                "tokens_per_epoch": sizes["tokens"], "threads": config.threads,
            },
            "model": {"parameters": n_params, "vocab_size": len(tokenizer), "max_position_embeddings": sizes["positions"],
                      "longest_training_sequence": sizes["longest"]},
            "corpus": stats,
            "skipped": len(skipped),
        }  # fmt: skip
        write_llm_folder(tmp, model, tokenizer, config, stats, skipped, metrics, started)
    log.info("wrote %s: %d parameters, final loss %.3f after %d steps in %.0f s", out, n_params,
             metrics["training"]["final_loss"], len(losses), train_seconds)
    return metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    config = DemoLLMConfig.from_args(args)
    build_demo_llm(args.records, args.reports, args.findings, args.out, config,
                   skip_missing=args.skip_missing, progress=not args.no_progress)
    return 0


def register(subparsers) -> None:
    """Add the ``build-demo-llm`` subcommand."""
    p = subparsers.add_parser(
        "build-demo-llm",
        help="demo world: train the tiny text-only causal LM (BPE tokenizer + Llama) that stands in for the LLM",
        description=(
            "Build the demo world's pretrained LLM from the training split's TEXT only: a corpus of the "
            "training template (with the findings written in the ECG slot, and with the <ecg> token), the "
            "zero-shot questions answered from the findings (letters balanced by resampling per class) and "
            "the likelihood sentences; a byte-level BPE tokenizer with <ecg> as one special token; a tiny "
            "LlamaForCausalLM pretrained with AdamW and a cosine schedule. Then checks it on validation ECGs "
            "(zero-shot questions, findings in the slot) and saves it with save_pretrained (safetensors) and "
            "the tokenizer into OUT, which AutoModelForCausalLM / AutoTokenizer load. OUT is replaced only "
            "once complete."
        ),
    )
    p.add_argument("--records", required=True, type=Path, help="records.parquet written by `ecglm prepare`")
    p.add_argument("--reports", required=True, type=Path, help="reports_en.parquet written by `ecglm translate`")
    p.add_argument("--findings", required=True, type=Path, help="findings.parquet written by `ecglm describe`")
    p.add_argument("--out", required=True, type=Path, help="output folder, e.g. results/{run}/llm (replaced as a whole)")
    DemoLLMConfig.add_options(p)
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out training/validation ECGs without a report or findings and list them in "
                        "OUT/skipped.csv (default: stop with their ecg_ids)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
