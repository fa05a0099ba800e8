#!/usr/bin/env python
"""Write (or check) the sections of the settings schema that the training stages' typed configs define.

Each setting of the encoder, the demo LLM, the alignment and the fine-tuning is written once, as a field of its config
class (``ecglm.core.stage_config.setting``: type, default, description, constraints). This script renders
those classes into their sections of ``ecglm/core/config.schema.yaml``, which Snakemake validates the config
against; the other sections of that file are hand-written there, their only copy.

    python scripts/settings_schema.py          # rewrite the generated sections in place
    python scripts/settings_schema.py --check  # exit 1, naming the sections, if the committed file differs
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

from ecglm.core.atomic import write_text_atomic
from ecglm.core.config import SCHEMA_PATH
from ecglm.train.align import AlignConfig
from ecglm.train.demo_llm import DemoLLMConfig
from ecglm.train.finetune import ChatFinetuneConfig, FinetuneConfig
from ecglm.train.mets import METSConfig
from ecglm.train.simclr import SimCLRConfig
from ecglm.train.train_encoder import EncoderConfig

#: config section -> the class that defines it
SECTIONS = {"encoder": EncoderConfig, "simclr": SimCLRConfig, "mets": METSConfig, "demo_llm": DemoLLMConfig, "align": AlignConfig, "finetune_qa": FinetuneConfig,
           "finetune_chat": ChatFinetuneConfig}
_TOP_KEY = re.compile(r"^  [A-Za-z_]+:", re.MULTILINE)  # a key of the schema's top-level properties


def render(section: str, cls: type) -> str:
    """The YAML text of one section, as it stands in the schema file (key line included)."""
    origin = f"{cls.__module__.replace('.', '/')}.py"
    body = yaml.safe_dump(cls.schema_section(), sort_keys=False, width=110, allow_unicode=True)
    lines = [f"  {section}:", f"    # written by scripts/settings_schema.py from {cls.__name__} ({origin}): edit the class"]
    lines += [f"    {line}" if line else line for line in body.splitlines()]
    return "\n".join(lines) + "\n"


def generated(text: str) -> tuple[str, list[str]]:
    """``text`` with every generated section re-rendered, and the names of the sections that changed."""
    changed = []
    for section, cls in SECTIONS.items():
        start = re.search(rf"^  {section}:\n", text, re.MULTILINE)
        if start is None:
            raise SystemExit(f"{SCHEMA_PATH}: no top-level section {section!r} to write")
        following = _TOP_KEY.search(text, start.end())
        end = following.start() if following else len(text)
        new = render(section, cls)
        if text[start.start():end] != new:
            changed.append(section)
            text = text[: start.start()] + new + text[end:]
    return text, changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the committed schema differs")
    parser.add_argument("--schema", type=Path, default=SCHEMA_PATH, help="the schema file (default: %(default)s)")
    args = parser.parse_args(argv)
    text = args.schema.read_text(encoding="utf-8")
    new, changed = generated(text)
    if args.check:
        if changed:
            print(f"{args.schema}: section(s) {', '.join(changed)} differ from their config classes; "
                  "run python scripts/settings_schema.py", file=sys.stderr)
            return 1
        print(f"{args.schema}: sections {', '.join(SECTIONS)} match their config classes")
        return 0
    if changed:
        yaml.safe_load(new)  # still one YAML document
        write_text_atomic(args.schema, new)
    print(f"{args.schema}: wrote {', '.join(changed) or 'nothing (already current)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
