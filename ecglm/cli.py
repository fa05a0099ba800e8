"""The `ecglm` command: one subcommand per pipeline stage.

Each stage module exposes ``register(subparsers)``, which adds its subparser and sets
``func`` to the function that runs it. Stage modules keep heavy imports (torch, wfdb)
inside their functions so that ``ecglm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ecglm.errors import StageError

# The stage modules, in pipeline order. Each one registers its own subcommand(s).
STAGE_MODULES = [
    "ecglm.download",
    "ecglm.demo.cli",
    "ecglm.prepare",
    "ecglm.measure",
    "ecglm.translate.cli",
    "ecglm.describe",
    "ecglm.expand",
    "ecglm.train_encoder",
    "ecglm.fetch_llm",
    "ecglm.demo_llm",
    "ecglm.align",
    "ecglm.evaluate",
    "ecglm.tables",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecglm",
        description=(
            "ECG-LM pipeline stages. Snakemake runs them in order (see README.md); every stage can also "
            "be run by hand. `ecglm <stage> --help` explains each one."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    from ecglm import __version__

    parser.add_argument("--version", action="version", version=f"ecglm {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="<stage>", required=True)
    for name in STAGE_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = args.func(args)
    except StageError as err:
        print(f"ecglm {args.stage}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ecglm {args.stage}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
