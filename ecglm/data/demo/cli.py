"""`ecglm demo-data`: write the synthetic demo world (PTB-XL, PTB-XL+, ECG-QA, HealthCareMagic look-alikes)."""

from __future__ import annotations

import argparse
import os

from ecglm.data.demo.world import DEFAULT_MIN_PER_CLASS, DEFAULT_RECORDS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo-data",
        help="generate the synthetic demo world (no download needed)",
        description=(
            "Generate a synthetic world with the real datasets' layouts, formats and quirks: PTB-XL 1.0.3 "
            "(ptbxl_database.csv, WFDB records at 100 and 500 Hz, reports in German, English and Swedish), "
            "PTB-XL+ 1.0.1 (12SL-named features measured from the signals), ECG-QA 1.0.2 and a "
            "HealthCareMagic-style conversation file, plus truth.csv (the generator's truth per record). "
            "The signals come from a cardiac dipole model and carry their labels (rhythm, MI territory, "
            "ST-T changes, conduction, hypertrophy). The same seed gives byte-identical files whatever --workers."
        ),
    )
    p.add_argument("--dest", default="resources/demo",
                   help="output folder; its ptb-xl/, ptb-xl-plus/, ecg-qa/, healthcaremagic/ and truth.csv are "
                        "replaced (default: %(default)s)")
    p.add_argument("--n-records", type=int, default=DEFAULT_RECORDS,
                   help="records drawn with PTB-XL's class frequencies, before oversampling (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1234, help="random seed of the world (default: %(default)s)")
    p.add_argument("--min-per-class", type=int, default=DEFAULT_MIN_PER_CLASS,
                   help="add records until every class of the three zero-shot tasks (diagnostic, rhythm, form) has at "
                        "least this many records holding exactly that one class of the task, in each split "
                        "(train = folds 1-8, val = 9, test = 10); 0 disables oversampling (default: %(default)s)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes for synthesis and measurement (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ecglm.data.demo.world import generate_world

    summary = generate_world(args.dest, n_records=args.n_records, seed=args.seed, min_per_class=args.min_per_class,
                             workers=args.workers, progress=not args.no_progress)
    print(summary.describe())
    return 0
