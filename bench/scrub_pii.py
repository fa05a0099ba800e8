#!/usr/bin/env python
"""How well `ecglm scrub-pii` finds personal data and keeps clinical text, on the two hand-written sets.

    python bench/scrub_pii.py

tests/data/pii_testset.json was written before the scrubber and its rules were tuned against it, so its
figures flatter; tests/data/pii_heldout.json was written after the rules were fixed and never used to tune
them: its figures are the honest ones (small: their Wilson intervals say how little they pin down). Prints
recall per kind (a string counts as found when it is gone and its kind's placeholder is there), the share
of clinical terms and of eponyms kept verbatim, with 95% Wilson intervals. A name counts as found only when
every word of it is gone ("[NAME] Williams" is a miss).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from ecglm.core.stats import wilson
from ecglm.text.scrub import KINDS, scrub_item

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def gone(value: str, out: str, kind: str) -> bool:
    """Whether ``value`` is out of ``out``: for a name, each of its words (as a word); else the whole string."""
    if kind != "NAME":
        return value not in out
    return not any(re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", out) for word in value.split())


def measure(path: Path) -> dict[str, tuple[int, int]]:
    """``{kind or "clinical terms" or "eponyms": (kept or found, total)}`` on one set."""
    found, total = Counter(), Counter()
    for item in json.loads(path.read_text())["items"]:
        out = scrub_item({"input": item["text"]}, Counter())["input"]
        for kind, values in item["pii"].items():
            for value in values:
                total[kind] += 1
                found[kind] += gone(value, out, kind) and f"[{kind}]" in out
        for key in ("keep", "eponyms"):
            name = "clinical terms" if key == "keep" else "eponyms"
            total[name] += len(item[key])
            found[name] += sum(term in out for term in item[key])
    return {name: (found[name], total[name]) for name in (*KINDS, "clinical terms", "eponyms")}


def main() -> int:
    for name in ("pii_testset.json", "pii_heldout.json"):
        print(f"{name}:")
        for kind, (k, n) in measure(DATA / name).items():
            if n:
                low, high = wilson(k, n)
                print(f"  {kind:15s} {k:3d} / {n:3d} = {k / n:.3f}  [{low:.2f}-{high:.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
