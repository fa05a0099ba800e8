"""`ecglm tables`: the paper's Table 2 (zero-shot classification) regenerated from the eval JSONs.

Reads every ``{eval_dir}/{variant}/*.json`` written by `ecglm evaluate` / `evaluate-baseline` (the task
and mode come from each file's content, the variant from its folder) and writes, atomically:

- ``{out}.md``: one table per task, one row per (variant, mode), sorted: the accuracy, macro precision,
  recall, F1, balanced accuracy and macro AUC, each with its 95% bootstrap interval over patients
  (3 decimals, "n/a" where a value is missing or null), with the paper's own numbers (which come with
  no interval) as the first, reference row (:data:`PAPER_ROW`);
- ``{out}.csv``: the same rows with one column per (task, metric), its interval's ``_low`` and ``_high``,
  and the number of ECGs per task (empty cell where missing);
- ``{out}.protocol.json``: the protocol under the markdown tables (:mod:`ecglm.eval.protocol`: data,
  split, scoring, LLMs, seeds, bootstrap, the config's SHA-256 and the whole config, the code's version).

``--out results/{run}/tables/classification`` gives ``classification.md`` and ``classification.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ecglm.core.atomic import write_text_atomic
from ecglm.core.config import SEED_SUFFIX
from ecglm.core.errors import StageError
from ecglm.eval.evaluate import DEFAULT_SEED, seed_mean_intervals
from ecglm.eval.protocol import parse_config_json, protocol_facts, render_protocol

log = logging.getLogger(__name__)

TASK_ORDER = ("diagnostic", "rhythm", "form")
#: (JSON key, markdown header, CSV column suffix)
METRICS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "acc", "acc"),
    ("precision", "P", "precision"),
    ("recall", "R", "recall"),
    ("f1", "F1", "f1"),
    ("balanced_accuracy", "bal. acc", "balanced_acc"),
    ("macro_auc", "AUC", "macro_auc"),
)
PAPER_LABEL = "paper (real PTB-XL, BioMedGPT-LM-7B)"
#: The paper's Table 2 (acc / P / R / F1 per task); it reports no balanced accuracy or AUC.
PAPER_ROW: dict[str, dict[str, float]] = {
    "diagnostic": {"accuracy": 0.693, "precision": 0.652, "recall": 0.642, "f1": 0.647},
    "rhythm": {"accuracy": 0.670, "precision": 0.509, "recall": 0.540, "f1": 0.524},
    "form": {"accuracy": 0.698, "precision": 0.573, "recall": 0.568, "f1": 0.570},
}
MISSING = "n/a"


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StageError(f"{where}: expected a finite number or null, got {value!r}")
    return float(value)


def read_docs(eval_dir: str | os.PathLike) -> list[tuple[Path, dict[str, Any]]]:
    """``[(path, JSON document)]`` of every ``{eval_dir}/{variant}/*.json``, sorted by path.

    Raises StageError naming the file for unreadable JSON or a missing task/mode, and when there is no file.
    """
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise StageError(f"{eval_dir}: no such evaluation folder (run `ecglm evaluate` first)")
    files = sorted(eval_dir.glob("*/*.json"))
    if not files:
        raise StageError(f"{eval_dir}: no evaluation JSON in {eval_dir}/<variant>/")
    docs = []
    for path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise StageError(f"{path}: not a readable evaluation JSON ({err})") from err
        if not isinstance(doc, dict) or "task" not in doc or "mode" not in doc:
            raise StageError(f"{path}: not an evaluation JSON (no 'task' and 'mode')")
        docs.append((path, doc))
    return docs


def collect(eval_dir: str | os.PathLike | list[tuple[Path, dict[str, Any]]]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """``{(variant, mode): {task: {metric: value or None, "intervals": ..., "n": int, ...}}}`` from every eval
    JSON under ``eval_dir`` (or from its :func:`read_docs`).

    Raises StageError naming the file for an unknown task, a non-finite metric, a missing interval, or two
    files for the same (variant, mode, task); and as :func:`read_docs` does.
    """
    docs = read_docs(eval_dir) if not isinstance(eval_dir, list) else eval_dir
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    seen: dict[tuple[str, str, str], Path] = {}
    for path, doc in docs:
        task, mode, variant = str(doc["task"]), str(doc["mode"]), path.parent.name
        if task not in TASK_ORDER:
            raise StageError(f"{path}: unknown task {task!r} (expected one of {', '.join(TASK_ORDER)})")
        key = (variant, mode, task)
        if key in seen:
            raise StageError(f"{path} and {seen[key]} both hold variant {variant}, mode {mode}, task {task}")
        seen[key] = path
        values: dict[str, Any] = {m: _number(doc.get(m), f"{path}: {m}") for m, _, _ in METRICS}
        values["intervals"] = _intervals(doc, path)
        values["n"] = int(doc["n"]) if isinstance(doc.get("n"), int) else None
        subset = doc.get("subset")
        values["of"] = int(subset["of"]) if isinstance(subset, dict) and isinstance(subset.get("of"), int) else None
        model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
        values["llm"] = model.get("llm_label") or (model.get("llm") or {}).get("name_or_path") if model else None
        rows.setdefault((variant, mode), {})[task] = values
    return rows


def _intervals(doc: Mapping[str, Any], path: Path) -> dict[str, tuple[float, float] | None]:
    """``{metric: (low, high) or None}`` from an eval JSON's ``intervals`` (written by ecglm evaluate)."""
    block = doc.get("intervals")
    if not isinstance(block, dict) or not isinstance(block.get("metrics"), dict):
        raise StageError(f"{path}: no bootstrap intervals (written by an older ecglm evaluate: rerun it)")
    out: dict[str, tuple[float, float] | None] = {}
    for m, _, _ in METRICS:
        pair = block["metrics"].get(m)
        if pair is None:
            out[m] = None
        elif isinstance(pair, list) and len(pair) == 2:
            out[m] = (_number(pair[0], f"{path}: intervals.{m}"), _number(pair[1], f"{path}: intervals.{m}"))
        else:
            raise StageError(f"{path}: intervals.metrics.{m} must be [low, high] or null, got {pair!r}")
    return out


def _fmt(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def fmt_interval(value: float | None, interval: tuple[float, float] | None, paper: bool,
                  sd: float | None = None) -> str:
    """``0.817 [0.752, 0.880]``, or with the standard deviation over seeds ``0.817 ± 0.021 [0.752, 0.880]``;
    the paper's figures come without an interval."""
    if value is None:
        return MISSING
    if paper:
        return f"{value:.3f}"
    spread = "" if sd is None else f" ± {sd:.3f}"
    bounds = f"{interval[0]:.3f}, {interval[1]:.3f}" if interval else MISSING
    return f"{value:.3f}{spread} [{bounds}]"


def _seed_base(variant: str, variants: set[str]) -> str | None:
    """The variant that ``variant`` is a seed replica of (V for V-seed7, when V is there), else None."""
    match = re.fullmatch(rf"(.+){re.escape(SEED_SUFFIX)}\d+", variant)
    return match.group(1) if match and match.group(1) in variants else None


def seed_summaries(docs: list[tuple[Path, dict[str, Any]]]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """A row per (variant, mode) evaluated with several seeds (V and its replicas V-seed<S>): per task the
    mean of each metric over the seeds, its standard deviation (``sd``) and the interval of the mean over
    the test patients (:func:`ecglm.eval.evaluate.seed_mean_intervals`)."""
    variants = {path.parent.name for path, _ in docs}
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for path, doc in docs:
        base = _seed_base(path.parent.name, variants) or path.parent.name
        groups.setdefault((base, str(doc["mode"]), str(doc["task"])), []).append(doc)
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for (base, mode, task), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        seeds = sorted(str(m.get("seed")) for m in members)
        subset = members[0].get("subset") if isinstance(members[0].get("subset"), dict) else {}
        values: dict[str, Any] = {"sd": {}, "n": members[0].get("n"), "of": subset.get("of"),
                                  "llm": (members[0].get("model") or {}).get("llm_label")}  # fmt: skip
        for m, _, _ in METRICS:
            got = [doc.get(m) for doc in members]
            defined = all(isinstance(v, (int, float)) for v in got)
            values[m] = float(np.mean(got)) if defined else None
            values["sd"][m] = float(np.std(got, ddof=1)) if defined else None
        values["intervals"] = seed_mean_intervals([doc_arrays(doc) for doc in members], task,
                                                  seed=DEFAULT_SEED if members[0].get("seed") is None else int(members[0]["seed"]))  # fmt: skip
        rows.setdefault((f"{base} (mean of {len(members)} seeds: {', '.join(seeds)})", mode), {})[task] = values
    return rows


def doc_arrays(doc: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """An eval JSON's predictions as the arrays of :func:`seed_mean_intervals`."""
    letters = list(doc["options"])
    index = {letter: i for i, letter in enumerate(letters)} | {"none": -1}
    predictions = doc["predictions"]
    return {"y_true": np.array([index[t] for t in predictions["true"]]),
            "y_pred": np.array([index[p] for p in predictions["predicted"]]),
            "probs": np.array(predictions["probabilities"], dtype=np.float64),
            "groups": np.array(predictions.get("group", predictions["ecg_id"]))}  # fmt: skip


def table_rows(collected: Mapping[tuple[str, str], Mapping[str, Mapping[str, Any]]]) -> list[tuple[str, str, dict]]:
    """The paper's row first, then (variant, mode) in sorted order: ``[(variant, mode, {task: values})]``."""
    paper = {task: {**{m: None for m, _, _ in METRICS}, **vals, "n": None} for task, vals in PAPER_ROW.items()}
    rows = [(PAPER_LABEL, "", paper)]
    rows += [(variant, mode, dict(collected[(variant, mode)])) for variant, mode in sorted(collected)]
    return rows


def row_llm(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    """The LLM of a row (its evaluations name it); "-" for the baselines, which use none."""
    names = sorted({str(v["llm"]) for v in tasks.values() if v.get("llm")})
    return " / ".join(names) if names else "-"


def row_ecgs(tasks: Mapping[str, Mapping[str, Any]], order: tuple[str, ...] = TASK_ORDER) -> str:
    """Test ECGs per task of a row, "n of all" where an evaluation drew a smoke-scale subset."""
    cells = []
    for task in order:
        values = tasks.get(task, {})
        n, of = values.get("n"), values.get("of")
        cells.append(MISSING if n is None else (f"{n} of {of}" if of else str(n)))
    return " / ".join(cells)


def render_markdown(rows: list[tuple[str, str, dict]]) -> str:
    """GitHub markdown, one table per task: variant, mode, LLM, test ECGs, then the :data:`METRICS` columns,
    each figure with its 95% interval; the rows that evaluated the task."""
    header = ["variant", "mode", "LLM", "test ECGs"] + [label for _, label, _ in METRICS]
    lines = [
        "# Zero-shot classification (the paper's Table 2)",
        "",
        "Test-split ECGs with exactly one of the task's five classes. acc = accuracy; P / R / F1 = macro "
        "precision / recall / F1; bal. acc = balanced accuracy; AUC = macro one-vs-rest AUC. Each figure is "
        "followed by its 95% percentile bootstrap interval (1,000 draws of the test patients with replacement, "
        "a patient's ECGs drawn together). Intervals that overlap do not show two rows equal, nor do they "
        "show them different: that takes a paired comparison on the same draws. The "
        f"paper reports no intervals. {MISSING} = not reported or not defined. \"n of m\": a smoke-scale row, "
        "scored on a class-stratified subset of n of the m test ECGs (its figures are not comparable with the "
        "full rows').",
    ]
    for task in TASK_ORDER:
        lines += ["", f"## {task}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] * 4 + ["---:"] * (len(header) - 4)) + "|"]  # fmt: skip
        for variant, mode, tasks in rows:
            is_paper = variant == PAPER_LABEL
            if task not in tasks:
                continue  # a row that has no evaluation of this task
            values = tasks[task]
            cells = [variant, mode or "-", "BioMedGPT-LM-7B" if is_paper else row_llm(tasks),
                     "-" if is_paper else row_ecgs({task: values}, (task,))]  # fmt: skip
            intervals, sd = values.get("intervals") or {}, values.get("sd") or {}
            cells += [fmt_interval(values.get(m), intervals.get(m), is_paper, sd.get(m)) for m, _, _ in METRICS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_csv(rows: list[tuple[str, str, dict]]) -> str:
    """CSV: variant, mode, llm, then ``{task}_{metric}`` (3 decimals) with its interval's ``_low`` and
    ``_high`` and, on a row of several seeds, its standard deviation over them (``_sd``), ``{task}_n`` and
    ``{task}_of`` (the test ECGs a smoke-scale subset was drawn from); empty cell = missing."""
    header = ["variant", "mode", "llm"]
    for task in TASK_ORDER:
        header += [f"{task}_{suffix}{end}" for _, _, suffix in METRICS for end in ("", "_low", "_high", "_sd")]
        header += [f"{task}_n", f"{task}_of"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for variant, mode, tasks in rows:
        llm = "BioMedGPT-LM-7B" if variant == PAPER_LABEL else row_llm(tasks)
        cells = [variant, mode, "" if llm == "-" else llm]
        for task in TASK_ORDER:
            values = tasks.get(task, {})
            intervals, sd = values.get("intervals") or {}, values.get("sd") or {}
            for m, _, _ in METRICS:
                pair = intervals.get(m) or ("", "")
                cells += ["" if values.get(m) is None else f"{values[m]:.3f}",
                          *("" if v == "" else f"{v:.3f}" for v in pair),
                          "" if sd.get(m) is None else f"{sd[m]:.3f}"]  # fmt: skip
            cells.append("" if values.get("n") is None else str(values["n"]))
            cells.append("" if values.get("of") is None else str(values["of"]))
        writer.writerow(cells)
    return buf.getvalue()


def _stem(path: str | os.PathLike) -> Path:
    """``path`` without a .md or .csv suffix (the tables' ``--out`` names the pair either way)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".md", ".csv") else path


def write_tables(eval_dir: str | os.PathLike, out: str | os.PathLike, config: Mapping[str, Any] | None = None,
                 ablation: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write ``{out}.md`` (the tables and their protocol block), ``{out}.csv`` and ``{out}.protocol.json``
    (the protocol's facts, ``config`` included: the run's validated config) atomically from ``eval_dir``,
    and with ``ablation`` the ablation table ``{ablation}.md`` (with the same protocol block) and
    ``{ablation}.csv`` (:mod:`ecglm.eval.ablation`; it needs ``config``); return the paths of the first two."""
    out = _stem(out)
    docs = read_docs(eval_dir)
    rows = table_rows({**collect(docs), **seed_summaries(docs)})
    md, csv_path = out.with_name(out.name + ".md"), out.with_name(out.name + ".csv")
    facts_path = out.with_name(out.name + ".protocol.json")
    facts = protocol_facts((doc for _, doc in docs), config)
    write_text_atomic(md, render_markdown(rows) + "\n" + render_protocol(facts, facts_path.name))
    write_text_atomic(csv_path, render_csv(rows))
    write_text_atomic(facts_path, json.dumps(facts, indent=2, sort_keys=False) + "\n")
    if ablation is not None:
        from ecglm.eval.ablation import ablation_tables

        ablation = _stem(ablation)
        ab_md, ab_csv = ablation_tables(docs, config)
        protocol = render_protocol(facts, os.path.relpath(facts_path, ablation.parent))
        write_text_atomic(ablation.with_name(ablation.name + ".md"), ab_md + "\n" + protocol)
        write_text_atomic(ablation.with_name(ablation.name + ".csv"), ab_csv)
    log.info("wrote %s, %s and %s (%d rows besides the paper's)", md, csv_path, facts_path.name, len(rows) - 1)
    return md, csv_path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tables",
        help="regenerate the paper's zero-shot classification table from the eval JSONs",
        description=(
            "Collect every <eval-dir>/<variant>/*.json written by `ecglm evaluate` and `ecglm evaluate-baseline` "
            "and write <out>.md and <out>.csv: one row per variant and mode (sorted), per task accuracy, macro "
            "precision, recall, F1, balanced accuracy and macro AUC, with the paper's numbers as a reference row."
        ),
    )
    p.add_argument("--eval-dir", required=True, type=Path, help="folder holding <variant>/<task>-<mode>.json (results/{run}/eval)")
    p.add_argument("--out", required=True, type=Path,
                   help="output path without extension: writes <out>.md, <out>.csv and <out>.protocol.json "
                        "(e.g. results/{run}/tables/classification)")  # fmt: skip
    p.add_argument("--config-json", default=None,
                   help="the run's validated config as JSON (the workflow passes it): its SHA-256 and its data go "
                        "into the protocol block, the whole config into <out>.protocol.json")  # fmt: skip
    p.add_argument("--ablation-out", default=None, type=Path,
                   help="also write the ablation table (the paper's Table 5) to <ablation-out>.md and .csv: the "
                        "full model beside the variants that leave out one of its parts (needs --config-json)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    write_tables(args.eval_dir, args.out, parse_config_json(args.config_json), args.ablation_out)
    return 0
