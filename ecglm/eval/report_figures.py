"""`ecglm report-figures`: the figures of the run's HTML report (`snakemake --report`), as plain SVG.

Three files into ``--out`` (no plotting library: SVG text, the same bytes for the same inputs):

- ``curves.svg``: the training curves: the encoder's pretraining (training loss and validation macro AUC per
  epoch, from its metrics.json) and each alignment (training loss per step, a 20-step moving average, and
  the validation loss at each epoch's end, from the log.jsonl beside its metrics.json);
- ``confusion.svg``: the confusion matrix of one variant and scoring mode per task (rows: the true class,
  columns: the answer, "none" where the model named no class), each cell's count shaded by its share of
  the row;
- ``ecgs.svg``: a few test ECGs (the first test ECG, by ecg_id, of each of the first diagnostic classes
  that the evaluation holds), 12 leads each with the per-lead findings beside them, the general findings,
  and for every task the true class and the model's answer.
"""

from __future__ import annotations

import argparse
import json
import logging
from html import escape
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ecglm.core.atomic import write_text_atomic
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS

log = logging.getLogger(__name__)

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
FONT = "font-family:DejaVu Sans,Arial,sans-serif"
SMOOTH_STEPS = 20
N_ECGS = 3


# ---------------------------------------------------------------------------------------------- SVG pieces


def _svg(width: float, height: float, body: Sequence[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" style="{FONT};background:#fff">\n'
            f'<rect width="100%" height="100%" fill="#fff"/>\n' + "\n".join(body) + "\n</svg>\n")  # fmt: skip


def _text(
    x: float, y: float, s: str, size: int = 11, anchor: str = "start", bold: bool = False, color: str = "#222"
) -> str:
    weight = ' font-weight="bold"' if bold else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{color}"{weight}>'
            f"{escape(s)}</text>")  # fmt: skip


def _polyline(xs: np.ndarray, ys: np.ndarray, color: str, width: float = 1.2) -> str:
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="{width}"/>'


def _scale(values: np.ndarray, lo: float, hi: float, out_lo: float, out_hi: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    return out_lo + (np.asarray(values, dtype=np.float64) - lo) / span * (out_hi - out_lo)


def line_panel(
    x0: float,
    y0: float,
    w: float,
    h: float,
    title: str,
    x_label: str,
    series: Sequence[tuple[str, Sequence[float], Sequence[float], bool]],
) -> list[str]:
    """A line chart at (x0, y0) of size w x h: ``series`` of (label, xs, ys, markers) on shared axes, the
    value range written at the axis ends; a panel with no data says so."""
    body = [f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
            _text(x0 + w / 2, y0 - 8, title, 12, "middle", bold=True)]  # fmt: skip
    points = [(np.asarray(xs, float), np.asarray(ys, float), label, markers) for label, xs, ys, markers in series
              if len(xs)]  # fmt: skip
    if not points:
        return body + [_text(x0 + w / 2, y0 + h / 2, "no data", 11, "middle", color="#888")]
    all_x = np.concatenate([p[0] for p in points])
    all_y = np.concatenate([p[1] for p in points])
    x_lo, x_hi, y_lo, y_hi = float(all_x.min()), float(all_x.max()), float(all_y.min()), float(all_y.max())
    pad = 0.05 * (y_hi - y_lo or 1.0)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    for i, (xs, ys, label, markers) in enumerate(points):
        color = COLORS[i % len(COLORS)]
        px, py = _scale(xs, x_lo, x_hi, x0 + 4, x0 + w - 4), _scale(ys, y_lo, y_hi, y0 + h - 4, y0 + 4)
        body.append(_polyline(px, py, color, 1.4))
        if markers:
            body += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{color}"/>' for a, b in zip(px, py)]
        body.append(_text(x0 + w, y0 + h + 28 + 12 * i, f"— {label}", 10, "end", color=color))
    body += [_text(x0 - 4, y0 + 10, f"{y_hi:.3g}", 9, "end"), _text(x0 - 4, y0 + h, f"{y_lo:.3g}", 9, "end"),
             _text(x0, y0 + h + 12, f"{x_lo:g}", 9), _text(x0 + w, y0 + h + 12, f"{x_hi:g}", 9, "end"),
             _text(x0 + w / 2, y0 + h + 14, x_label, 10, "middle")]  # fmt: skip
    return body


# ---------------------------------------------------------------------------------------------- figures


def _moving_average(values: np.ndarray, n: int) -> np.ndarray:
    if len(values) < n:
        return values
    kernel = np.ones(n) / n
    return np.convolve(values, kernel, mode="valid")


def read_align_log(metrics: Path) -> list[dict[str, Any]]:
    """The per-step records of the log.jsonl beside an alignment's metrics.json (StageError naming it)."""
    path = Path(metrics).parent / "log.jsonl"
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as err:
        raise StageError(f"{path}: not a readable alignment log ({err})") from err


def curves_svg(encoder: Mapping[str, Any] | None, aligns: Mapping[str, list[dict[str, Any]]]) -> str:
    """The training curves: the encoder's two panels, then one panel per alignment."""
    w, h, gap = 360, 170, 80
    panels: list[tuple[str, str, list]] = []
    if encoder is not None:
        losses, aucs = encoder.get("train_loss") or [], encoder.get("val_macro_auc_per_epoch") or []
        panels.append(
            (
                "encoder pretraining: training loss",
                "epoch",
                [("training loss", range(1, len(losses) + 1), losses, True)],
            )
        )
        auc_pairs = [(i + 1, v) for i, v in enumerate(aucs) if v is not None]
        panels.append(("encoder pretraining: validation macro AUC", "epoch",
                       [("validation macro AUC", [p[0] for p in auc_pairs], [p[1] for p in auc_pairs], True)]))  # fmt: skip
    for variant, records in aligns.items():
        steps = np.array([r["step"] for r in records if r.get("train_loss") is not None], dtype=float)
        loss = np.array([r["train_loss"] for r in records if r.get("train_loss") is not None], dtype=float)
        smooth = _moving_average(loss, SMOOTH_STEPS)
        val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
        panels.append((f"alignment of {variant}: loss on the target spans", "step", [
            (f"training ({SMOOTH_STEPS}-step mean)" if len(loss) >= SMOOTH_STEPS else "training",
             steps[len(steps) - len(smooth):], smooth, False),
            ("validation", [v[0] for v in val], [v[1] for v in val], True)]))  # fmt: skip
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    body = []
    for i, (title, x_label, series) in enumerate(panels):
        x0, y0 = 60 + (i % cols) * (w + gap), 40 + (i // cols) * (h + gap)
        body += line_panel(x0, y0, w, h, title, x_label, series)
    return _svg(60 + cols * (w + gap), 40 + max(rows, 1) * (h + gap), body)


def confusion_svg(docs: Mapping[str, Mapping[str, Any]], title: str) -> str:
    """One confusion matrix per task (``docs``: task -> eval JSON with confusion_matrix and confusion_order)."""
    cell, body, x = 34, [_text(20, 22, title, 13, bold=True)], 90
    height = 60
    for task, doc in docs.items():
        matrix = np.asarray(doc["confusion_matrix"], dtype=np.int64)  # [k, k or k+1]: true x (answers, none)
        if matrix.ndim != 2 or matrix.shape[1] != len(doc["confusion_order"]):
            raise StageError(f"{task}: confusion_matrix {matrix.shape} does not match confusion_order "
                             f"{doc['confusion_order']}")  # fmt: skip
        options = dict(doc["options"])
        rows = [options[c] for c in doc["confusion_order"] if c in options]
        cols = [options.get(c, c) for c in doc["confusion_order"]]
        y0 = 70
        body.append(
            _text(x + cell * len(cols) / 2, y0 - 26, f"{task} ({int(matrix.sum())} ECGs)", 12, "middle", bold=True)
        )
        body.append(_text(x + cell * len(cols) / 2, y0 - 10, "answer", 10, "middle", color="#555"))
        for j, name in enumerate(cols):
            body.append(_text(x + cell * (j + 0.5), y0 + cell * len(rows) + 14, name, 9, "middle"))
        for i, name in enumerate(rows):
            body.append(_text(x - 4, y0 + cell * (i + 0.6), name, 9, "end"))
            total = max(1, int(matrix[i].sum()))
            for j in range(len(cols)):
                share = matrix[i, j] / total
                shade = int(255 - 200 * share)
                body.append(f'<rect x="{x + cell * j}" y="{y0 + cell * i}" width="{cell}" height="{cell}" '
                            f'fill="rgb({shade},{shade},255)" stroke="#fff"/>')  # fmt: skip
                body.append(_text(x + cell * (j + 0.5), y0 + cell * (i + 0.6), str(int(matrix[i, j])), 10, "middle",
                                  color="#fff" if share > 0.6 else "#222"))  # fmt: skip
        body.append(_text(x - 60, y0 + cell * len(rows) / 2, "true", 10, color="#555"))
        height = max(height, y0 + cell * len(rows) + 30)
        x += cell * len(cols) + 110
    return _svg(x, height, body)


def ecgs_svg(ecgs: Sequence[Mapping[str, Any]], fs: float) -> str:
    """``ecgs``: dicts with ``ecg_id``, ``signal`` [12, T] in uV, ``general``, ``leads`` (12 texts or None)
    and ``answers`` (lines). Each ECG: its lines of text, then the 12 leads stacked, 1 mV per 40 px."""
    width, trace_w, lane = 1100, 700, 34
    body, y = [], 10
    for ecg in ecgs:
        body.append(_text(10, y + 16, f"ECG {ecg['ecg_id']}: {ecg['general'] or 'no general finding'}", 13, bold=True))
        y += 22
        for line in ecg["answers"]:
            body.append(_text(10, y + 14, line, 11))
            y += 16
        signal = np.asarray(ecg["signal"], dtype=np.float64) / 1000.0  # [12, T] mV
        t = np.arange(signal.shape[1]) / fs
        xs = _scale(t, 0.0, float(t[-1]) if len(t) > 1 else 1.0, 50, 50 + trace_w)
        for li, lead in enumerate(LEADS):
            mid = y + lane * (li + 0.5)
            body.append(_text(44, mid + 4, lead, 10, "end", bold=True))
            trace = signal[li] - np.median(signal[li])
            body.append(_polyline(xs, mid - np.clip(trace, -2, 2) * 40 / 2.5, "#111", 0.7))
            text = ecg["leads"][li]
            if text:
                body.append(
                    _text(60 + trace_w, mid + 4, text if len(text) <= 60 else text[:57] + "...", 10, color="#b00")
                )
        y += lane * len(LEADS) + 26
    return _svg(width, y, body)


# ---------------------------------------------------------------------------------------------- inputs


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise StageError(f"{path}: not a readable {what} ({err})") from err


def pick_ecgs(docs: Mapping[str, Mapping[str, Any]], n: int = N_ECGS) -> list[int]:
    """The first test ECG (by ecg_id) of each of the first ``n`` classes of the first task evaluated
    (diagnostic where there is one), in class order; fewer where the task has fewer classes."""
    task = "diagnostic" if "diagnostic" in docs else next(iter(docs))
    preds = docs[task]["predictions"]
    first: dict[str, int] = {}
    for ecg, true in sorted(zip(preds["ecg_id"], preds["true"])):
        first.setdefault(true, int(ecg))
    return [first[letter] for letter in sorted(first)][:n]


def answers_of(docs: Mapping[str, Mapping[str, Any]], ecg_id: int, variant: str, mode: str) -> list[str]:
    """One line per task that scored ``ecg_id``: the true class and the model's answer."""
    lines = []
    for task, doc in docs.items():
        preds = doc["predictions"]
        if ecg_id not in preds["ecg_id"]:
            continue
        i = preds["ecg_id"].index(ecg_id)
        options = dict(doc["options"])
        true, answer = options.get(preds["true"][i], preds["true"][i]), options.get(preds["predicted"][i], "none")
        generated = (preds.get("generated") or [None] * (i + 1))[i]
        said = f' ("{generated.strip()[:80]}")' if generated else ""
        mark = "right" if true == answer else "wrong"
        lines.append(f"{task}: true {true}; {variant} ({mode}) answered {answer}{said}: {mark}")
    return lines


def write_report_figures(
    *,
    records: Path,
    signals: Path,
    findings: Path,
    fs: float,
    encoder_metrics: Path | None,
    align_metrics: Mapping[str, Path],
    eval_docs: Sequence[Path],
    variant: str,
    mode: str,
    out: Path,
) -> list[Path]:
    """Write curves.svg, confusion.svg and ecgs.svg into ``out`` (atomically); return their paths."""
    import polars as pl

    from ecglm.data.ecg_data import read_records

    docs = {}
    for path in eval_docs:
        doc = _read_json(path, "evaluation JSON")
        if "confusion_matrix" not in doc or "predictions" not in doc:
            raise StageError(f"{path}: not an evaluation JSON of `ecglm evaluate` (no confusion_matrix/predictions)")
        docs[str(doc["task"])] = doc
    if not docs:
        raise StageError("no evaluation JSON given (--eval)")
    encoder = _read_json(encoder_metrics, "encoder metrics.json") if encoder_metrics else None
    aligns = {name: read_align_log(path) for name, path in align_metrics.items()}

    ids = pick_ecgs(docs)
    table = read_records(records, ["ecg_id"], patients=False)
    row_of = {int(e): i for i, e in enumerate(table["ecg_id"].to_list())}
    arr = np.load(signals, mmap_mode="r")  # int16 [N, 12, T] uV
    text = pl.read_parquet(findings).filter(pl.col("ecg_id").is_in(ids))
    by_id = {row["ecg_id"]: row for row in text.iter_rows(named=True)}
    ecgs = []
    for ecg_id in ids:
        if ecg_id not in row_of:
            raise StageError(f"{records}: ecg_id {ecg_id} of the evaluation is not in the records table")
        row = by_id.get(ecg_id, {})
        ecgs.append({"ecg_id": ecg_id, "signal": np.asarray(arr[row_of[ecg_id]]), "general": row.get("general"),
                     "leads": [row.get(f"lead_{lead}") for lead in LEADS],
                     "answers": answers_of(docs, ecg_id, variant, mode)})  # fmt: skip

    out.mkdir(parents=True, exist_ok=True)
    files = {"curves.svg": curves_svg(encoder, aligns),
             "confusion.svg": confusion_svg(docs, f"{variant}, {mode}: test ECGs by true class and answer"),
             "ecgs.svg": ecgs_svg(ecgs, fs)}  # fmt: skip
    paths = []
    for name, svg in files.items():
        write_text_atomic(out / name, svg)
        paths.append(out / name)
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report-figures",
        help="the figures of the HTML report: training curves, confusion matrices, test ECGs with findings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--records", required=True, type=Path, help="records.parquet (results/{run}/data)")
    p.add_argument(
        "--signals", required=True, type=Path, help="the signals array of the evaluations (signals_<fs>.npy)"
    )
    p.add_argument("--fs", required=True, type=float, help="its sampling rate in Hz")
    p.add_argument("--findings", required=True, type=Path, help="findings.parquet (results/{run}/text)")
    p.add_argument("--encoder-metrics", type=Path, default=None, help="the pretrained encoder's metrics.json")
    p.add_argument(
        "--align",
        action="append",
        default=[],
        metavar="NAME=METRICS",
        help="an alignment's name and metrics.json (its log.jsonl is read beside it); repeatable",
    )
    p.add_argument(
        "--eval",
        action="append",
        default=[],
        type=Path,
        metavar="JSON",
        help="an evaluation JSON of the variant and mode shown (one per task); repeatable",
    )
    p.add_argument("--variant", required=True, help="the variant the evaluations are of (named in the figures)")
    p.add_argument("--mode", required=True, help="their scoring mode (named in the figures)")
    p.add_argument("--out", required=True, type=Path, help="output folder: curves.svg, confusion.svg, ecgs.svg")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    aligns = {}
    for item in args.align:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise StageError(f"--align {item!r}: expected NAME=PATH/metrics.json")
        aligns[name] = Path(path)
    write_report_figures(records=args.records, signals=args.signals, findings=args.findings, fs=args.fs,
                         encoder_metrics=args.encoder_metrics, align_metrics=aligns, eval_docs=args.eval,
                         variant=args.variant, mode=args.mode, out=args.out)  # fmt: skip
    return 0
