"""`ecglm qa-data`: ECG-QA 1.0.2's single questions on PTB-XL, joined to the prepared signals.

Input: a folder in the layout of the ECG-QA repository (``ecgqa/ptbxl/`` or the ``ptbxl/`` folder itself):
``{paraphrased,template}/{train,valid,test}/NNNNN.json`` (JSON arrays of questions), ``answers.csv`` and
``answers_for_each_template.csv`` (each template's valid answers). ECG-LM keeps the single questions
(``single-verify``, ``single-choose``, ``single-query``; the paper's 159,306 train / 31,137 valid / 41,093
test questions on the full dataset) and counts what it drops by type.

Each question is joined by its ``ecg_id`` to the row of the prepared store (``records.parquet``, whose
rows are those of ``signals_{fs}.npy``). ECG-QA refers to PTB-XL 1.0.1's ids: a question whose ECG is not
in the store is listed in ``missing_ecgs.csv`` with its id and counted, never dropped in silence. A
malformed question stops the stage with a message naming the file and the ``question_id``.

ECG-QA's split is by patient at random, not by PTB-XL's ``strat_fold``: its test questions refer to ECGs
that the alignment (PTB-XL folds 1-8) trained on. Each question therefore carries ``seen_in_alignment``
(its ECG is in the store's train split) and the summary counts them per split, so that a QA table can
show the questions whose ECGs the alignment never saw.

Output folder (written whole, then renamed into place): ``{train,valid,test}.parquet`` (columns below),
``missing_ecgs.csv`` and ``summary.json`` (counts kept and dropped per split and type, ECGs missing,
questions seen by the alignment, the wording, the input folder).
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ecglm.core.atomic import staged_folder, write_text_atomic
from ecglm.core.errors import StageError
from ecglm.data.ecg_data import read_records, read_records_schema

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
WORDINGS = ("paraphrased", "template")
KEPT_TYPES = ("single-verify", "single-choose", "single-query")
ALL_TYPES = (*KEPT_TYPES, "comparison_consecutive-verify", "comparison_consecutive-query",
             "comparison_irrelevant-verify", "comparison_irrelevant-query")  # fmt: skip
#: The PTB-XL split (records.parquet) whose ECGs the alignment trains on.
ALIGNMENT_SPLIT = "train"
REQUIRED = {"template_id": int, "question_id": int, "sample_id": int, "question_type": str, "attribute_type": str,
            "question": str, "answer": list, "ecg_id": list}  # fmt: skip


def find_root(folder: Path) -> Path:
    """The ``ptbxl`` folder of an ECG-QA checkout given the checkout, its ``ecgqa`` folder or ``ptbxl`` itself."""
    for candidate in (folder, folder / "ptbxl", folder / "ecgqa" / "ptbxl"):
        if (candidate / "answers_for_each_template.csv").is_file():
            return candidate
    raise StageError(f"{folder}: not an ECG-QA folder (no ptbxl/answers_for_each_template.csv; the layout of "
                     "the ECG-QA repository: ecgqa/ptbxl/{paraphrased,template}/{train,valid,test}/*.json)")


def template_answers(root: Path) -> dict[int, list[str]]:
    """Each template's valid answers (``answers_for_each_template.csv``: template_id, a Python-list string)."""
    path = root / "answers_for_each_template.csv"
    out: dict[int, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                classes = ast.literal_eval(row["classes"])  # a list literal, never executed
                out[int(row["template_id"])] = [str(c) for c in classes]
            except (KeyError, ValueError, SyntaxError, TypeError) as err:
                raise StageError(f"{path}: line {line} is not template_id,classes ({err})") from None
    return out


def check_question(q: Any, path: Path, index: int) -> None:
    """StageError naming the file and question_id (or the position) when ``q`` is not an ECG-QA question."""
    where = f"{path}: question_id {q.get('question_id')!r}" if isinstance(q, dict) else f"{path}: item {index}"
    if not isinstance(q, dict):
        raise StageError(f"{where} is not an object")
    for key, kind in REQUIRED.items():
        if not isinstance(q.get(key), kind) or isinstance(q.get(key), bool):
            raise StageError(f"{where}: field {key!r} must be a {kind.__name__}, got {q.get(key)!r}")
    if q["question_type"] not in ALL_TYPES:
        raise StageError(f"{where}: unknown question_type {q['question_type']!r}")
    if not q["answer"] or not all(isinstance(a, str) for a in q["answer"]):
        raise StageError(f"{where}: answer must be a non-empty list of strings (['none'] when empty)")
    if not q["ecg_id"] or not all(isinstance(e, int) and not isinstance(e, bool) for e in q["ecg_id"]):
        raise StageError(f"{where}: ecg_id must be a non-empty list of integers")
    attribute = q.get("attribute")
    if attribute is not None and not (isinstance(attribute, list) and all(isinstance(a, str) for a in attribute)):
        raise StageError(f"{where}: attribute must be a list of strings or null, got {attribute!r}")


def read_split(root: Path, wording: str, split: str) -> tuple[list[Path], list[tuple[Path, dict[str, Any]]]]:
    """(the chunk files, [(file, question)]) of one split, in file order."""
    files = sorted((root / wording / split).glob("*.json"))
    questions = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StageError(f"{path}: not a readable JSON file ({err})") from None
        if not isinstance(data, list):
            raise StageError(f"{path}: expected a JSON array of questions, got {type(data).__name__}")
        for i, q in enumerate(data):
            check_question(q, path, i)
            questions.append((path, q))
    return files, questions


def prepare_qa(folder: str | os.PathLike, records: str | os.PathLike, out: str | os.PathLike,
               wording: str = "paraphrased") -> dict[str, Any]:
    """Write the single questions of every split, joined to the store, into ``out``; return the summary."""
    import polars as pl

    if wording not in WORDINGS:
        raise StageError(f"--wording must be one of {', '.join(WORDINGS)}, got {wording!r}")
    root = find_root(Path(folder))
    valid = template_answers(root)
    has_patients = "patient_id" in read_records_schema(Path(records))
    table = read_records(Path(records), ["ecg_id", "split", *(["patient_id"] if has_patients else [])], patients=False)
    patient = table["patient_id"].to_list() if has_patients else [None] * table.height
    row_of = {int(e): i for i, e in enumerate(table["ecg_id"].to_list())}
    split_of = table["split"].to_list()
    summary: dict[str, Any] = {"input": str(root), "wording": wording, "records": str(records), "splits": {}}
    missing_rows = []
    frames: dict[str, Any] = {}
    for split in SPLITS:
        files, questions = read_split(root, wording, split)
        types = Counter(q["question_type"] for _, q in questions)
        rows, missing = [], Counter()
        for path, q in questions:
            if q["question_type"] not in KEPT_TYPES:
                continue
            if q["template_id"] not in valid:
                raise StageError(f"{path}: question_id {q['question_id']}: template_id {q['template_id']} is not in "
                                 f"{root / 'answers_for_each_template.csv'}")  # fmt: skip
            ecg = q["ecg_id"][0]
            if ecg not in row_of:
                missing[ecg] += 1
                missing_rows.append((split, q["question_id"], q["sample_id"], ecg))
                continue
            r = row_of[ecg]
            rows.append({"question_id": q["question_id"], "sample_id": q["sample_id"], "template_id": q["template_id"],
                         "question_type": q["question_type"], "attribute_type": q["attribute_type"],
                         "question": q["question"], "answer": [str(a) for a in q["answer"]],
                         "valid_answers": valid[q["template_id"]],
                         "attribute": None if q.get("attribute") is None else [str(a) for a in q["attribute"]],
                         "ecg_id": ecg, "patient_id": patient[r], "row": r,
                         "seen_in_alignment": split_of[r] == ALIGNMENT_SPLIT})  # fmt: skip
        frames[split] = pl.DataFrame(rows, schema=_schema(pl), orient="row") if rows else pl.DataFrame(schema=_schema(pl))
        kept = Counter(row["question_type"] for row in rows)
        summary["splits"][split] = {
            "files": len(files),
            "questions": len(questions),
            "kept": {t: kept.get(t, 0) for t in KEPT_TYPES},
            "kept_total": len(rows),
            "dropped_by_type": {t: types.get(t, 0) for t in ALL_TYPES if t not in KEPT_TYPES and types.get(t)},
            "ecg_missing": {"questions": sum(missing.values()), "ecgs": len(missing)},
            "seen_in_alignment": sum(row["seen_in_alignment"] for row in rows),
        }
        if not files:
            log.warning("%s: the %s split is empty (no %s/%s/*.json)", root, split, wording, split)
        elif not rows:
            log.warning("%s: the %s split holds no single question (%d questions, all dropped: %s)", root, split,
                        len(questions), summary["splits"][split]["dropped_by_type"])  # fmt: skip
        else:
            log.info("%s: %d questions, %d kept (%s), %d dropped (%s), %d with an ECG missing from the store, "
                     "%d whose ECG the alignment trained on", split, len(questions), len(rows), dict(kept),
                     sum(summary["splits"][split]["dropped_by_type"].values()),
                     summary["splits"][split]["dropped_by_type"], sum(missing.values()),
                     summary["splits"][split]["seen_in_alignment"])  # fmt: skip
    _write(Path(out), frames, missing_rows, summary)
    return summary


def _schema(pl: Any) -> dict[str, Any]:
    return {"question_id": pl.Int64, "sample_id": pl.Int64, "template_id": pl.Int64, "question_type": pl.String,
            "attribute_type": pl.String, "question": pl.String, "answer": pl.List(pl.String),
            "valid_answers": pl.List(pl.String), "attribute": pl.List(pl.String), "ecg_id": pl.Int64,
            "patient_id": pl.Float64, "row": pl.Int64, "seen_in_alignment": pl.Boolean}  # fmt: skip


def _write(out: Path, frames: dict[str, Any], missing_rows: list[tuple], summary: dict[str, Any]) -> None:
    with staged_folder(out) as tmp:
        for split, frame in frames.items():
            frame.write_parquet(tmp / f"{split}.parquet")
        with open(tmp / "missing_ecgs.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["split", "question_id", "sample_id", "ecg_id"])
            writer.writerows(missing_rows)
        write_text_atomic(tmp / "summary.json", json.dumps(summary, indent=2) + "\n")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "qa-data",
        help="ECG-QA's single questions on PTB-XL, joined to the prepared signals, as Parquet per split",
        description=(
            "Read ECG-QA 1.0.2 for PTB-XL (the layout of the ECG-QA repository), keep the single-verify, "
            "single-choose and single-query questions (counting what is dropped by type), join each to its "
            "row of records.parquet by ecg_id (questions whose ECG is absent are listed in missing_ecgs.csv), "
            "mark the questions whose ECG the alignment trained on, and write {train,valid,test}.parquet, "
            "missing_ecgs.csv and summary.json into --out."
        ),
    )
    p.add_argument("--ecgqa", required=True, type=Path, help="the ECG-QA folder (ecgqa/, ecgqa/ptbxl/ or a checkout)")
    p.add_argument("--records", required=True, type=Path, help="records.parquet written by `ecglm prepare`")
    p.add_argument("--out", required=True, type=Path, help="output folder (replaced as a whole)")
    p.add_argument("--wording", choices=WORDINGS, default="paraphrased",
                   help="the questions' wording: paraphrased (ECG-LM's) or template (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prepare_qa(args.ecgqa, args.records, args.out, args.wording)
    return 0
