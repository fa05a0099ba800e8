"""`ecglm qa-table`: the paper's Table 3 (ECG-QA exact match: S-Verify, S-Choose, S-Query, average) from the
`ecglm evaluate-qa` results of a run, with intervals, the paired differences and the protocol.

Inputs: ``--results NAME=FILE`` (repeatable): ``ecg`` (the fine-tuned ECG-LM, required), and any of
``blind`` (fine-tuned on the questions alone), ``shuffled`` (ECG-LM with the ECGs permuted across
questions) and ``majority`` (the most frequent training answer set per template). Rows: each model and
reading, the ECG-LM on the test questions whose ECG the alignment never saw, and the paper's figures
(published, on the full real test set: not comparable with a demo world's). Below the table: the paired
difference ECG-LM minus blind (and ECG-LM minus shuffled) per type, the same questions on both sides, with
a patient bootstrap interval; then the protocol.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ecglm.core.atomic import write_text_atomic
from ecglm.core.errors import StageError
from ecglm.core.stats import pooled_group_bootstrap
from ecglm.eval.evaluate import BOOTSTRAP_LEVEL, BOOTSTRAP_REPS
from ecglm.eval.protocol import code_version, config_digest, data_description, parse_config_json
from ecglm.eval.qa import TYPES, read_result

NAMES = {"ecg": "ECG-LM", "blind": "blind (questions only)", "shuffled": "ECG-LM, shuffled ECGs",
         "majority": "majority answer"}  # fmt: skip
#: The paper's Table 3 (Yang et al. 2025): ECG-LM's exact match on ECG-QA's full real test split.
PAPER = {"single-verify": 0.758, "single-choose": 0.574, "single-query": 0.399, "avg": 0.577}
COLUMNS = (*TYPES, "avg")


def _cell(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    interval = entry.get("interval")
    return f"{entry['value']:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _summary_cells(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any] | None]:
    return {**{t: summary["by_type"].get(t) for t in TYPES}, "avg": summary.get("avg")}


def table_rows(docs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model and reading (and the unseen-ECG rows of the ECG-LM): label, reading, n, cells, unparsed."""
    rows = []
    for name in (n for n in NAMES if n in docs):
        doc = docs[name]
        for reading, result in doc["readings"].items():
            rows.append({"model": NAMES[name], "reading": reading, "n": doc["n_questions"],
                         "cells": _summary_cells(result["summary"]), "unparsed": result["unparsed_rate"]})  # fmt: skip
    for reading, result in docs["ecg"]["readings"].items():
        if result.get("unseen"):
            n = sum(v["n"] for v in result["unseen"]["by_type"].values())
            rows.append({"model": "ECG-LM, ECGs the alignment never saw", "reading": reading, "n": n,
                         "cells": _summary_cells(result["unseen"]), "unparsed": None})  # fmt: skip
    rows.append({"model": "ECG-LM (paper, published: full real test set)", "reading": "generate", "n": 41093,
                 "cells": {k: {"value": v, "interval": None} for k, v in PAPER.items()}, "unparsed": None})  # fmt: skip
    return rows


def paired_differences(a: Mapping[str, Any], b: Mapping[str, Any], seed: int) -> dict[str, dict[str, Any]]:
    """Per reading both docs have: per type and avg, the exact match of ``a`` minus ``b`` on the same questions,
    with a patient bootstrap interval (both sides on the same draws)."""
    if a["questions"]["sample_id"] != b["questions"]["sample_id"]:
        raise StageError("the paired difference needs the same questions on both sides (same split, subset and seed)")
    types = np.asarray(a["questions"]["question_type"])
    groups = np.asarray(a["questions"]["group"])
    out = {}
    for reading in (r for r in a["readings"] if r in b["readings"]):
        diff = (np.asarray(a["readings"][reading]["correct"], dtype=np.float64)
                - np.asarray(b["readings"][reading]["correct"], dtype=np.float64))  # [n] per question  # fmt: skip

        def mean_of(t: str, d: np.ndarray = diff):
            return lambda rows: float(d[rows[types[rows] == t]].mean()) if (types[rows] == t).any() else None

        stats = {t: [mean_of(t)] for t in TYPES if (types == t).any()}
        if len(stats) == len(TYPES):
            parts = [mean_of(t) for t in TYPES]
            stats["avg"] = [lambda rows, p=parts: None if any(f(rows) is None for f in p) else
                            float(np.mean([f(rows) for f in p]))]  # fmt: skip
        boots = pooled_group_bootstrap(stats, [groups], seed=seed, reps=BOOTSTRAP_REPS, level=BOOTSTRAP_LEVEL)
        everything = np.arange(len(diff))
        out[reading] = {k: {"value": stats[k][0](everything),
                            "interval": None if v["low"] is None else [v["low"], v["high"]]} for k, v in boots.items()}  # fmt: skip
    return out


def render_markdown(docs: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any] | None) -> str:
    """The whole qa.md: title, table, paired differences, protocol."""
    seed = int(docs["ecg"]["seed"])
    lines = ["# ECG-QA: exact match of the answer set (the paper's Table 3)", "",
             "Each cell: exact match on the test questions [95% patient-bootstrap interval]. Avg: the unweighted "
             "mean of the three types. unparsed: the share of generated replies that are not an answer set of the "
             "template (counted as wrong).", "",
             "| model | reading | questions | S-Verify | S-Choose | S-Query | Avg | unparsed |",
             "|---|---|---:|---|---|---|---|---:|"]  # fmt: skip
    for row in table_rows(docs):
        unparsed = "–" if row["unparsed"] is None else f"{row['unparsed']:.3f}"
        cells = " | ".join(_cell(row["cells"][c]) for c in COLUMNS)
        lines.append(f"| {row['model']} | {row['reading']} | {row['n']:,} | {cells} | {unparsed} |")
    for other in ("blind", "shuffled"):
        if other not in docs:
            continue
        lines += ["", f"## ECG-LM minus {NAMES[other]}, paired (the same questions, the same patient draws)", "",
                  "| reading | S-Verify | S-Choose | S-Query | Avg |", "|---|---|---|---|---|"]  # fmt: skip
        for reading, diff in paired_differences(docs["ecg"], docs[other], seed).items():
            lines.append(f"| {reading} | " + " | ".join(_signed(diff.get(c)) for c in COLUMNS) + " |")
    lines += ["", render_protocol(docs, config)]
    return "\n".join(lines)


def _signed(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    interval = entry.get("interval")
    return f"{entry['value']:+.3f}" + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else "")


def render_protocol(docs: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any] | None) -> str:
    ecg = docs["ecg"]
    code = code_version()
    subset = (f"a seeded subset of {ecg['n_questions']:,} test questions drawn per type in proportion"
              if ecg.get("max_questions") else f"all {ecg['n_questions']:,} single questions of the test split")  # fmt: skip
    qa = (config or {}).get("qa", {})
    rows = [
        ("data", f"ECG-QA 1.0.2 for PTB-XL ({qa.get('wording', 'paraphrased')} wording; source "
                 f"{qa.get('source', 'not recorded')}) on {data_description(config)}"),
        ("split and selection", f"ECG-QA's test split (by patient at random, not PTB-XL's folds): {subset}; "
                                "single-verify, single-choose and single-query questions only"),
        ("scoring", "exact match of the answer set; generate: greedy decoding split at ';', an answer outside the "
                    "template's answers makes the reply unparsed (wrong); constrained: the template's answers "
                    "scored by log-probability, as the whole reply (verify, choose) or as its first answer (query; "
                    "ecglm/eval/qa.py)"),
        ("baselines", "blind: the same fine-tuning without the ECG (same data, steps, seed); shuffled: the ECG-LM "
                      "given another question's ECG; majority: the most frequent training answer set per template"),
        ("seeds", f"run {None if config is None else config.get('seed')}; evaluation {ecg['seed']}"),
        ("intervals", f"{BOOTSTRAP_LEVEL:.0%} percentile bootstrap, {BOOTSTRAP_REPS:,} draws of the test patients "
                      "with replacement (a patient's questions drawn together)"),
        ("config", "not given" if config is None else f"SHA-256 {config_digest(config)[:16]} of the validated config"),
        ("code", f"ecglm {code['ecglm']}, git commit {code['git_commit'] or 'unknown'}"
                 + (", with uncommitted changes" if code["git_dirty"] else "")),
    ]  # fmt: skip
    lines = ["## Protocol", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value.replace('|', '/')} |" for key, value in rows]
    return "\n".join(lines) + "\n"


def render_csv(docs: Mapping[str, Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["model", "reading", "questions", "unparsed"]
    for c in COLUMNS:
        header += [c, f"{c}_low", f"{c}_high"]
    writer.writerow(header)
    for row in table_rows(docs):
        out = [row["model"], row["reading"], row["n"], "" if row["unparsed"] is None else f"{row['unparsed']:.6f}"]
        for c in COLUMNS:
            entry = row["cells"][c] or {}
            interval = entry.get("interval") or ["", ""]
            value = entry.get("value")
            out += ["" if value is None else f"{value:.6f}",
                    *("" if v == "" else f"{v:.6f}" for v in interval)]  # fmt: skip
        writer.writerow(out)
    return buf.getvalue()


def write_qa_table(results: Mapping[str, str | os.PathLike], out: str | os.PathLike,
                   config: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """Write ``out`` (.md) and its .csv from the named evaluate-qa results."""
    unknown = sorted(set(results) - set(NAMES))
    if unknown or "ecg" not in results:
        raise StageError(f"--results: names must be among {', '.join(NAMES)} and include ecg, got {sorted(results)}")
    docs = {name: read_result(Path(path)) for name, path in results.items()}
    out = Path(out)
    write_text_atomic(out, render_markdown(docs, config))
    write_text_atomic(out.with_suffix(".csv"), render_csv(docs))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "qa-table",
        help="the ECG-QA table (the paper's Table 3) from evaluate-qa results, with intervals and paired differences",
        description=(
            "Write the ECG-QA table (the paper's Table 3: S-Verify, S-Choose, S-Query, Avg) and its CSV from "
            "`ecglm evaluate-qa` results: a row per model and reading, the ECG-LM on the test questions whose "
            "ECG the alignment never saw, the paper's published figures, the paired differences ECG-LM minus "
            "blind and minus shuffled (the same questions and patient draws), and the protocol."
        ),
    )
    p.add_argument("--results", action="append", default=[], metavar="NAME=FILE", required=True,
                   help=f"an evaluate-qa result; NAME one of {', '.join(NAMES)} (repeatable; ecg required)")
    p.add_argument("--out", type=Path, required=True, help="the markdown table (the .csv is written beside it)")
    p.add_argument("--config-json", default=None,
                   help="the run's validated config as JSON (the workflow passes it): its SHA-256 and its data go "
                        "into the protocol block")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    results = {}
    for item in args.results:
        name, sep, path = item.partition("=")
        if not sep:
            raise StageError(f"--results {item!r}: expected NAME=FILE")
        results[name] = path
    write_qa_table(results, args.out, parse_config_json(args.config_json))
    return 0
