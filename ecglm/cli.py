"""The `ecglm` command: one subcommand per pipeline stage.

Each stage module exposes ``register(subparsers)``, which adds its subparser and sets
``func`` to the function that runs it. Stage modules keep heavy imports (torch, wfdb)
inside their functions so that ``ecglm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

from ecglm.core.errors import SecretFilter, StageError, scrub_secrets

# The stage modules, in pipeline order. Each one registers its own subcommand(s).
STAGE_MODULES = [
    "ecglm.data.download",
    "ecglm.data.demo.cli",
    "ecglm.data.prepare",
    "ecglm.data.measure",
    "ecglm.data.qa",
    "ecglm.text.translate.cli",
    "ecglm.text.describe",
    "ecglm.text.expand",
    "ecglm.text.scrub",
    "ecglm.train.train_encoder",
    "ecglm.train.simclr",
    "ecglm.train.mets",
    "ecglm.models.fetch_llm",
    "ecglm.train.demo_llm",
    "ecglm.train.align",
    "ecglm.train.finetune",
    "ecglm.eval.evaluate",
    "ecglm.eval.qa",
    "ecglm.eval.qa_table",
    "ecglm.eval.baselines",
    "ecglm.eval.tables",
    "ecglm.eval.report_figures",
    "ecglm.chat.cli",
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


def describe_os_error(err: OSError) -> str:
    """One line for an OSError: the path(s), what went wrong, and for the usual cases what to do."""
    paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    what = err.strerror or " ".join(str(err).split())  # one line, whatever the library wrote
    hint = {
        errno.ENOSPC: "free some space or point the output elsewhere",
        errno.ENOTDIR: "a part of this path is a file, not a folder",
        errno.EISDIR: "this path is a folder; name a file",
        errno.EEXIST: "something is already there",
        errno.EACCES: "no permission",
        errno.EROFS: "the file system is read-only",
    }.get(err.errno)
    if err.errno in (errno.EEXIST, errno.ENOTDIR) and err.filename is not None and os.path.isfile(err.filename):
        what, hint = "is a file", "a folder is needed at this path: move the file or choose another output"
    return f"{paths + ': ' if paths else ''}{what}{' (' + hint + ')' if hint else ''}"


def _install_secret_filter() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _install_secret_filter()
    try:
        result = args.func(args)
    except StageError as err:
        print(f"ecglm {args.stage}: error: {scrub_secrets(str(err))}", file=sys.stderr)
        return 1
    except OSError as err:  # an output path that is a file, a full disk, no permission: one line, no traceback
        logging.getLogger("ecglm").debug("traceback of the error below", exc_info=True)
        print(f"ecglm {args.stage}: error: {scrub_secrets(describe_os_error(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ecglm {args.stage}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
