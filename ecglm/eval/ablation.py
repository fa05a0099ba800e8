"""The paper's Table 5 (ablations), from the same eval JSONs as Table 2: ``results/{run}/tables/ablation.md``.

The paper ablates three parts of ECG-LM: the encoder's pretraining, the LLM (LLaMA2-Chat instead of
BioMedGPT-LM-7B) and the lead-drop expansion of the training samples. A variant of the config is such a
row when it is aligned on its own (no ``align_from``), with the full prompt and no control, and differs
from the reference variant ``full`` in one of those settings (``encoder_pretrain: false``, another
``llm``, ``expansion: false``); any other setting it differs in (an ``align`` override, a smoke-scale
test subset, a seed) is named under the table, so that a row is never read as a clean ablation when it
is not one. The rows of Table 5 that a config does not run are named too.

Each row has the classification table's figures with their intervals and, beside them, its paired
difference from ``full`` in the same scoring mode: both evaluations scored on every bootstrap draw of
the test patients (:func:`ecglm.eval.evaluate.paired_difference_intervals`), on the test ECGs both
scored (a smoke-scale row's subset: the full model's predictions on the same ECGs). A difference whose
interval holds 0 is not a finding.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from ecglm.core.errors import StageError
from ecglm.eval.evaluate import DEFAULT_SEED, paired_difference_intervals, table_metric, task_classes
from ecglm.eval.tables import MISSING, TASK_ORDER, collect, doc_arrays, fmt_interval, row_ecgs, row_llm

log = logging.getLogger(__name__)

REFERENCE = "full"
#: (variant setting, its value in the full model, the row's name in Table 5), in the paper's order
ABLATIONS: tuple[tuple[str, Any, str], ...] = (
    ("encoder_pretrain", True, "without encoder pretraining"),
    ("llm", None, "LLM swapped"),
    ("expansion", True, "without lead-drop expansion"),
)
#: the variant settings and their schema defaults that make a variant something other than an ablation row
_DEFAULTS: dict[str, Any] = {"encoder_pretrain": True, "expansion": True, "llm": None, "prompt": "full",
                             "control": "none", "align_from": None, "align": {}, "seed": None,
                             "max_test_ecgs": None}  # fmt: skip
#: (JSON key, header) of the figures shown; the difference is of DIFF_METRIC
SHOWN = (("accuracy", "acc"), ("f1", "F1"), ("balanced_accuracy", "bal. acc"), ("macro_auc", "AUC"))
DIFF_METRIC = "balanced_accuracy"


class Ablation(NamedTuple):
    """How a variant is a row of Table 5: its name there, the other settings it differs from full in, and
    the parts it leaves out (labels of :data:`ABLATIONS`)."""

    text: str
    others: list[str]
    parts: tuple[str, ...]


def _settings(variant: Mapping[str, Any]) -> dict[str, Any]:
    return {key: variant.get(key, default) for key, default in _DEFAULTS.items()}


def ablation_variants(config: Mapping[str, Any]) -> dict[str, Ablation]:
    """``{variant: Ablation}`` of the config's ``variants``: each variant that is a row of Table 5; {} when
    there is no variant ``full``. A variant that ablates two parts at once is named
    by both ("without encoder pretraining, LLM swapped")."""
    variants = config.get("variants") or {}
    if REFERENCE not in variants:
        return {}
    llms = config.get("llms") or {}
    ref = _settings(variants[REFERENCE])
    out = {}
    for name, raw in variants.items():
        s = _settings(raw)
        if name == REFERENCE or s["align_from"] or s["prompt"] != ref["prompt"] or s["control"] != "none":
            continue
        parts = tuple(label for key, _, label in ABLATIONS if s[key] != ref[key])
        if not parts:
            continue
        swapped = (llms.get(s["llm"]) or {}).get("label") or s["llm"]
        text = ", ".join(f"{label} ({swapped})" if label == "LLM swapped" else label for label in parts)
        others = [f"{key}: {s[key]}" for key in _DEFAULTS if key not in {k for k, _, _ in ABLATIONS}
                  and key != "seed" and s[key] != ref[key]]  # fmt: skip
        out[name] = Ablation(text, others, parts)
    return out


def ablation_rows(
    collected: Mapping[tuple[str, str], Mapping[str, Mapping[str, Any]]], roles: Mapping[str, Ablation]
) -> list[tuple[str, str, str, dict]]:
    """``[(variant, what it ablates, mode, {task: values})]``: full's rows first, then each ablation's in
    the order of :data:`ABLATIONS`, each in its scoring modes (sorted)."""
    order = {label: i for i, (_, _, label) in enumerate(ABLATIONS)}
    names = sorted(roles, key=lambda v: (min(order[part] for part in roles[v].parts), v))
    rows = []
    for variant, role in [(REFERENCE, "the full model")] + [(v, roles[v].text) for v in names]:
        rows += [(variant, role, mode, dict(collected[(variant, mode)]))
                 for (v, mode) in sorted(collected) if v == variant]  # fmt: skip
    return rows


def differences(
    docs: list[tuple[Path, dict[str, Any]]], rows: list[tuple[str, str, str, dict]]
) -> dict[tuple[str, str, str], tuple[float, tuple[float, float] | None] | None]:
    """``{(variant, mode, task): (value - full's, its paired 95% interval, the ECGs compared, whether they are
    a subset of either's) or None}`` of :data:`DIFF_METRIC`, on the test ECGs that both evaluations scored (a
    smoke-scale row's subset: full's predictions on the same ECGs); None where they share none."""
    by_key = {(path.parent.name, str(doc["mode"]), str(doc["task"])): doc for path, doc in docs}
    out: dict[tuple[str, str, str], tuple[float, tuple[float, float] | None] | None] = {}
    for variant, _, mode, tasks in rows:
        if variant == REFERENCE:
            continue
        for task in tasks:
            a, b = by_key.get((variant, mode, task)), by_key.get((REFERENCE, mode, task))
            if a is None or b is None:
                out[(variant, mode, task)] = None
                continue
            ids_a, ids_b = list(a["predictions"]["ecg_id"]), list(b["predictions"]["ecg_id"])
            common = sorted(set(ids_a) & set(ids_b))
            if not common:
                out[(variant, mode, task)] = None
                continue
            arr_a, arr_b = _rows(doc_arrays(a), ids_a, common), _rows(doc_arrays(b), ids_b, common)
            k = len(task_classes(task))
            value = (table_metric(DIFF_METRIC, arr_a["y_true"], arr_a["y_pred"], arr_a["probs"], k)(np.arange(len(common)))
                     - table_metric(DIFF_METRIC, arr_b["y_true"], arr_b["y_pred"], arr_b["probs"], k)(np.arange(len(common))))  # fmt: skip
            seed = DEFAULT_SEED if a.get("seed") is None else int(a["seed"])
            interval = paired_difference_intervals(arr_a, arr_b, task, seed)[DIFF_METRIC]
            out[(variant, mode, task)] = (float(value), None if interval is None else (interval[0], interval[1]),
                                          len(common), len(ids_a) != len(ids_b) or set(ids_a) != set(ids_b))  # fmt: skip
    return out


def _rows(arrays: Mapping[str, np.ndarray], ids: list, keep: list) -> dict[str, np.ndarray]:
    """``arrays`` (one row per ECG of ``ids``) restricted to the ECGs ``keep``, in that order."""
    where = {ecg: i for i, ecg in enumerate(ids)}
    index = np.array([where[ecg] for ecg in keep])
    return {name: np.asarray(values)[index] for name, values in arrays.items()}


def _fmt_diff(diff: tuple[float, tuple[float, float] | None] | None) -> str:
    if diff is None:
        return MISSING
    value, interval, n, subset = diff
    bounds = MISSING if interval is None else f"{interval[0]:+.3f}, {interval[1]:+.3f}"
    return f"{value:+.3f} [{bounds}]" + (f" on its {n} ECGs" if subset else "")


def render_markdown(
    rows: list[tuple[str, str, str, dict]],
    roles: Mapping[str, Ablation],
    diffs: Mapping[tuple[str, str, str], Any],
) -> str:
    header = ["variant", "ablation", "mode", "LLM", "test ECGs", *(h for _, h in SHOWN), "Δ bal. acc vs full"]
    lines = [
        "# Ablations (the paper's Table 5)",
        "",
        "The full model beside the variants of this run that leave out one of its parts. Figures as in the "
        "classification table (test-split ECGs, each with its 95% bootstrap interval over the test patients). "
        "Δ bal. acc vs full: the row's balanced accuracy minus the full model's in the same scoring mode, with "
        "its paired 95% interval (both scored on every draw of the test patients); an interval that holds 0 "
        'shows no difference. A smoke-scale row ("n of m" test ECGs) is compared with the full model\'s '
        'predictions on the same n ECGs ("on its n ECGs"), and its own figures are not comparable with the '
        f"full rows'. {MISSING} = not defined. The paper reports this table without intervals; its "
        "figures are on the real PTB-XL with BioMedGPT-LM-7B and are not repeated here.",
    ]
    ran = {part for ablation in roles.values() for part in ablation.parts}
    missing = [label for _, _, label in ABLATIONS if label not in ran]
    for task in TASK_ORDER:
        lines += ["", f"## {task}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] * 5 + ["---:"] * (len(header) - 5)) + "|"]  # fmt: skip
        for variant, role, mode, tasks in rows:
            if task not in tasks:
                continue
            values = tasks[task]
            intervals = values.get("intervals") or {}
            cells = [variant, role, mode, row_llm(tasks), row_ecgs({task: values}, (task,))]
            cells += [fmt_interval(values.get(m), intervals.get(m), False, None) for m, _ in SHOWN]
            cells.append("-" if variant == REFERENCE else _fmt_diff(diffs.get((variant, mode, task))))
            lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- `{v}` also differs from `full` in: {'; '.join(others)}." for v, (_, others, _) in roles.items() if others]
    if missing:
        notes.append(f"- Not run by this config: {', '.join(missing)} (a variant with "
                     + ", ".join({'without encoder pretraining': '`encoder_pretrain: false`', 'LLM swapped': '`llm: <another>`',
                                  'without lead-drop expansion': '`expansion: false`'}[m] for m in missing)
                     + " adds the row).")  # fmt: skip
    if not roles:
        notes.append(f"- This config runs no ablation of `{REFERENCE}`: the table holds the full model only.")
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


def render_csv(rows: list[tuple[str, str, str, dict]], diffs: Mapping[tuple[str, str, str], Any]) -> str:
    """CSV: variant, ablation, mode, llm, then per task the shown figures with ``_low``/``_high``, the
    difference from full with its interval (empty where not defined) and ``_n``/``_of``."""
    header = ["variant", "ablation", "mode", "llm"]
    for task in TASK_ORDER:
        header += [f"{task}_{m}{end}" for m, _ in SHOWN for end in ("", "_low", "_high")]
        header += [f"{task}_diff_{DIFF_METRIC}{end}" for end in ("", "_low", "_high")] + [f"{task}_n", f"{task}_of"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    num = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for variant, role, mode, tasks in rows:
        llm = row_llm(tasks)
        cells = [variant, role, mode, "" if llm == "-" else llm]
        for task in TASK_ORDER:
            values = tasks.get(task, {})
            intervals = values.get("intervals") or {}
            for m, _ in SHOWN:
                pair = intervals.get(m) or (None, None)
                cells += [num(values.get(m)), num(pair[0]), num(pair[1])]
            diff = diffs.get((variant, mode, task))
            pair = (diff[1] or (None, None)) if diff else (None, None)  # the CSV's _n says how many ECGs
            cells += [num(diff[0] if diff else None), num(pair[0]), num(pair[1])]
            cells += [
                "" if values.get("n") is None else str(values["n"]),
                "" if values.get("of") is None else str(values["of"]),
            ]
        writer.writerow(cells)
    return buf.getvalue()


def ablation_tables(docs: list[tuple[Path, dict[str, Any]]], config: Mapping[str, Any] | None) -> tuple[str, str]:
    """(markdown, CSV) of the ablation table from the eval JSONs ``docs`` and the run's validated ``config``
    (whose ``variants`` say which rows are ablations). Raises StageError without a config."""
    if not config:
        raise StageError(
            "the ablation table needs the run's config (--config-json): its variants say which rows are ablations"
        )
    roles = ablation_variants(config)
    rows = ablation_rows(collect(docs), roles)
    diffs = differences(docs, rows)
    log.info("ablation table: %d rows (%s)", len(rows), ", ".join(sorted(roles)) or "no ablation")
    return render_markdown(rows, roles, diffs), render_csv(rows, diffs)
