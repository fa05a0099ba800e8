#!/usr/bin/env python
"""Print the translate stage's three figures on the real PTB-XL sample, per part.

The parts: the held-out fifth (ecg_id % 5 == 0, never used to write ecglm/text/translate/glossary/) and the rest.
Figures: language detection vs. an independent labelling (Hunspell + hand labels), the share of
non-English reports left with no German/Swedish word, and the share of clinical concepts the English
keeps. Needs Debian's hunspell-de-de, hunspell-sv and hunspell-en-us.

    python scripts/translation_figures.py [--shared ../shared/ptbxl-sample] [--details]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from ecglm.text.translate import hunspell
    from ecglm.text.translate.evaluation import HELD_OUT, REST, glossary_figures

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "ptbxl-sample"),
                        help="folder with ptbxl_database.csv and ptbxl_database.reports-dev.csv")
    parser.add_argument("--labels", default=str(REPO / "tests" / "data" / "language_labels.csv"),
                        help="hand-checked language labels (ecg_id,language)")
    parser.add_argument("--details", action="store_true", help="also list every miss")
    args = parser.parse_args(argv)
    missing = hunspell.missing_message()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    figures, _ = glossary_figures(args.shared, args.labels, hunspell.load_all())
    print(f"{'figure':52s} {'held-out fifth':>20s} {'rest':>20s}")
    rows = [
        ("language detection agrees with the labelling", "language_agree", "language_total", "language_rate"),
        ("non-English reports with no German/Swedish word left", "clean", "translated", "clean_rate"),
        ("clinical concepts named in the English too", "concepts_kept", "concepts_total", "concept_rate"),
    ]
    for title, num, den, rate in rows:
        cells = [
            f"{getattr(figures[p], rate):7.2%} ({getattr(figures[p], num)}/{getattr(figures[p], den)})"
            for p in (HELD_OUT, REST)
        ]
        print(f"{title:52s} {cells[0]:>20s} {cells[1]:>20s}")
    if args.details:
        for part in (HELD_OUT, REST):
            fig = figures[part]
            print(f"\n[{part}] language disagreements (ecg_id, label, detected): {fig.disagreements}")
            print(f"[{part}] leftover words: {fig.leftovers}")
            print(f"[{part}] lost concepts: {fig.lost_concepts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
