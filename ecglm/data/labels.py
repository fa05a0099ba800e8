"""PTB-XL labels: the scp_codes column, scp_statements.csv, and the standard label aggregation.

The aggregation is the PTB-XL benchmark's (Strodthoff et al., ``compute_label_aggregations``): a
code counts when it is present in a record's scp_codes, whatever its likelihood (0.0 included);
``diagnostic`` lists the record's codes flagged diagnostic in scp_statements.csv,
``diagnostic_subclass`` / ``diagnostic_superclass`` their ``diagnostic_subclass`` /
``diagnostic_class``, ``rhythm`` and ``form`` the codes flagged so. Codes missing from
scp_statements.csv count for no task. Every list is sorted and holds each label once.
"""

from __future__ import annotations

import ast
import csv
import functools
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ecglm.core.errors import StageError

#: The 5 diagnostic superclasses, in the order the paper and PTB-XL list them.
SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
#: The label-list columns of records.parquet, in order.
LABEL_COLUMNS: tuple[str, ...] = ("diagnostic", "diagnostic_subclass", "diagnostic_superclass", "rhythm", "form")

_REQUIRED = ("description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")


class ScpCodesError(ValueError):
    """A scp_codes cell is not a dict literal of code -> likelihood; the message says why."""


def parse_scp_codes(text: str | None) -> dict[str, float]:
    """Parse a ptbxl_database.csv scp_codes cell (``"{'NORM': 100.0, 'SR': 0.0}"``) safely.

    Uses ``ast.literal_eval`` (never ``eval``). Guarantees a dict of non-empty str -> finite float,
    in the order written; raises ScpCodesError for anything else (an empty cell included).
    """
    if text is None or not str(text).strip():
        raise ScpCodesError("scp_codes is empty")
    return dict(_parse_scp_codes(str(text)))


@functools.lru_cache(maxsize=65536)  # PTB-XL repeats the same few thousand strings
def _parse_scp_codes(text: str) -> tuple[tuple[str, float], ...]:
    try:
        value = ast.literal_eval(str(text).strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ScpCodesError(f"scp_codes {_short(text)} is not a Python dict literal") from None
    if not isinstance(value, dict):
        raise ScpCodesError(f"scp_codes {_short(text)} is a {type(value).__name__}, not a dict")
    codes: dict[str, float] = {}
    for code, likelihood in value.items():
        if not isinstance(code, str) or not code.strip():
            raise ScpCodesError(f"scp_codes {_short(text)}: key {code!r} is not a code name")
        if isinstance(likelihood, bool) or not isinstance(likelihood, (int, float)) or not math.isfinite(likelihood):
            raise ScpCodesError(f"scp_codes {_short(text)}: likelihood of {code} is {likelihood!r}, not a number")
        codes[code] = float(likelihood)
    return tuple(codes.items())


def _short(text: object, limit: int = 80) -> str:
    s = repr(str(text))
    return s if len(s) <= limit else s[: limit - 4] + "...'"


@dataclass(frozen=True)
class ScpStatement:
    """One row of scp_statements.csv (the fields the aggregation uses)."""

    code: str
    description: str
    diagnostic: bool
    form: bool
    rhythm: bool
    diagnostic_class: str | None  # superclass (NORM MI STTC CD HYP) of a diagnostic code
    diagnostic_subclass: str | None


def _flag(value: str, path: Path, code: str, column: str) -> bool:
    value = value.strip()
    if not value:
        return False
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if number == 1.0:
        return True
    if number == 0.0:
        return False
    raise StageError(f"{path}: code {code}: column {column} holds {value!r}, expected 1.0 or empty")


def load_scp_statements(path: str | os.PathLike) -> dict[str, ScpStatement]:
    """Read scp_statements.csv (first column, under an EMPTY header cell, is the code, read as str).

    Guarantees: one entry per code, codes exactly as written (``1AVB``, ``LAO/LAE``, ``PRC(S)``);
    every diagnostic code has a diagnostic_class and a diagnostic_subclass. Raises StageError naming
    the file and the reason for a missing file, a missing column, a repeated code or a bad flag.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise StageError(f"{path}: missing (scp_statements.csv of PTB-XL is needed for the labels)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise StageError(f"{path}: cannot read ({err})") from None
    if not rows:
        raise StageError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in _REQUIRED if c not in header[1:]]
    if missing:
        raise StageError(f"{path}: missing column(s) {', '.join(missing)} (header: {rows[0]})")
    col = {name: header.index(name) for name in _REQUIRED}
    statements: dict[str, ScpStatement] = {}
    for lineno, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise StageError(f"{path}: line {lineno} has {len(row)} fields, expected {len(header)}")
        code = row[0].strip()
        if not code:
            raise StageError(f"{path}: line {lineno} has no code in its first column")
        if code in statements:
            raise StageError(f"{path}: code {code} is listed twice (line {lineno})")
        st = ScpStatement(
            code=code,
            description=row[col["description"]].strip(),
            diagnostic=_flag(row[col["diagnostic"]], path, code, "diagnostic"),
            form=_flag(row[col["form"]], path, code, "form"),
            rhythm=_flag(row[col["rhythm"]], path, code, "rhythm"),
            diagnostic_class=row[col["diagnostic_class"]].strip() or None,
            diagnostic_subclass=row[col["diagnostic_subclass"]].strip() or None,
        )
        if st.diagnostic and (st.diagnostic_class is None or st.diagnostic_subclass is None):
            raise StageError(f"{path}: diagnostic code {code} lacks its diagnostic_class or diagnostic_subclass")
        statements[code] = st
    if not statements:
        raise StageError(f"{path}: no codes listed")
    return statements


def aggregate_labels(codes: Iterable[str], statements: dict[str, ScpStatement]) -> dict[str, list[str]]:
    """The standard PTB-XL label lists of one record, keyed by ``LABEL_COLUMNS``.

    ``codes``: the record's SCP codes (the keys of its scp_codes; likelihoods do not matter).
    Guarantees: every list is sorted and duplicate-free; codes unknown to ``statements`` are ignored.
    """
    found: dict[str, set[str]] = {name: set() for name in LABEL_COLUMNS}
    for code in codes:
        st = statements.get(code)
        if st is None:
            continue
        if st.diagnostic:
            found["diagnostic"].add(code)
            found["diagnostic_subclass"].add(st.diagnostic_subclass)  # type: ignore[arg-type]
            found["diagnostic_superclass"].add(st.diagnostic_class)  # type: ignore[arg-type]
        if st.rhythm:
            found["rhythm"].add(code)
        if st.form:
            found["form"].add(code)
    return {name: sorted(found[name]) for name in LABEL_COLUMNS}


def class_description(statements: dict[str, ScpStatement], code: str) -> str:
    """A class in PTB-XL's own words (scp_statements.csv's ``description``): a statement's description
    (``AFIB`` -> "atrial fibrillation"), or for a diagnostic superclass the descriptions of its statements,
    in the file's order (``HYP`` -> "left ventricular hypertrophy, left atrial overload/enlargement, ...").
    Raises StageError for a code that is neither."""
    if code in statements:
        return statements[code].description
    members = [s.description for s in statements.values() if s.diagnostic and s.diagnostic_class == code]
    if not members:
        raise StageError(f"class {code!r} is neither an SCP statement nor a diagnostic superclass of scp_statements.csv")
    return ", ".join(members)


def codes_of_task(statements: dict[str, ScpStatement], task: str) -> list[str]:
    """The sorted label vocabulary of one of ``LABEL_COLUMNS`` under ``statements``."""
    if task not in LABEL_COLUMNS:
        raise ValueError(f"unknown label task {task!r} (expected one of {', '.join(LABEL_COLUMNS)})")
    if task == "diagnostic_superclass":
        return sorted({s.diagnostic_class for s in statements.values() if s.diagnostic})  # type: ignore[type-var]
    if task == "diagnostic_subclass":
        return sorted({s.diagnostic_subclass for s in statements.values() if s.diagnostic})  # type: ignore[type-var]
    flag = {"diagnostic": "diagnostic", "rhythm": "rhythm", "form": "form"}[task]
    return sorted(code for code, s in statements.items() if getattr(s, flag))


def single_class_index(label_lists: Sequence[Sequence[str] | None], classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Which entries hold exactly one of ``classes``: ``(index [M] int64, class index [M] int64, n_multi, n_none)``.

    Labels outside ``classes`` are ignored; a missing list (None) holds none of them.
    """
    position = {c: j for j, c in enumerate(classes)}
    index, y = [], []
    n_multi = n_none = 0
    for i, labels in enumerate(label_lists):
        hits = sorted({position[label] for label in (labels or []) if label in position})
        if len(hits) == 1:
            index.append(i)
            y.append(hits[0])
        elif hits:
            n_multi += 1
        else:
            n_none += 1
    return np.asarray(index, dtype=np.int64), np.asarray(y, dtype=np.int64), n_multi, n_none
