"""`ecglm fetch-llm`: put the base LLM on local disk before any compute job needs it.

Compute nodes of a cluster are often offline, so the real run fetches its Hugging Face model once, by a
local Snakemake rule, into ``resources/llm/<org>--<name>/<revision>/`` with huggingface_hub, pinned
to a revision, safetensors weights and tokenizer files only (never pickled ``*.bin`` weights, never
code unless the config allows remote code). A local folder in the save_pretrained layout works too:
it is checked and recorded, not copied.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ecglm.core.atomic import write_text_atomic
from ecglm.core.errors import StageError
from ecglm.models.llm import check_model_dir, llm_location

log = logging.getLogger(__name__)

# What a causal LM needs on disk: config, safetensors weights (sharded or not), tokenizer files.
ALLOW_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
]
CODE_PATTERNS = ["*.py"]
MANIFEST = "ecglm-llm.json"


def local_dir_for(name: str, revision: str | None, root: str | Path = "resources/llm") -> Path:
    """Where a hub model is kept: resources/llm/<org>--<name>/<revision or 'main'>/."""
    return Path(root) / name.replace("/", "--") / (revision or "main")


def fetch_llm(name: str, out: Path, revision: str | None = None, trust_remote_code: bool = False,
              manifest: Path | None = None) -> dict:
    """Fetch ``name`` (a hub id, or a local folder) into ``out`` and write a manifest; return it."""
    source, name = llm_location(name)
    if source is not None:
        files = check_model_dir(source)
        result = {"name": name, "revision": None, "path": str(source.resolve()), "files": files}
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        patterns = ALLOW_PATTERNS + (CODE_PATTERNS if trust_remote_code else [])
        try:
            path = snapshot_download(repo_id=name, revision=revision, local_dir=str(out), allow_patterns=patterns)
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
            raise StageError(f"{name}@{revision or 'main'}: cannot fetch from the Hugging Face Hub: {err}") from err
        files = check_model_dir(Path(path))
        result = {"name": name, "revision": revision, "path": str(Path(path).resolve()), "files": files}
    if manifest is not None:
        write_text_atomic(manifest, json.dumps(result, indent=2) + "\n")
    log.info("%s: %d files at %s", name, len(result["files"]), result["path"])
    return result


def _cmd(args: argparse.Namespace) -> int:
    out = args.out or local_dir_for(llm_location(args.name)[1], args.revision)
    fetch_llm(args.name, Path(out), args.revision, args.trust_remote_code, args.manifest)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fetch-llm",
        help="fetch the base LLM (Hugging Face id at a pinned revision, or a local folder) onto local disk",
        description=(
            "Fetch a Hugging Face causal LM with huggingface_hub into --out (default "
            "resources/llm/<org>--<name>/<revision>/), safetensors weights and tokenizer files only, so that "
            "offline compute nodes can load it. A local save_pretrained folder is checked and recorded instead. "
            "Writes --manifest (JSON: name, revision, path, files) once the folder is complete."
        ),
    )
    p.add_argument("name", help="Hugging Face model id as org/name or hf:NAME (e.g. PharMolix/BioMedGPT-LM-7B), or a local folder")
    p.add_argument("--revision", default=None, help="commit hash or tag to pin (default: main)")
    p.add_argument("--out", type=Path, default=None, help="destination folder (default: resources/llm/...)")
    p.add_argument("--manifest", type=Path, default=None, help="JSON manifest to write on success")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="also fetch the model's own Python files (only for models that need them)")
    p.set_defaults(func=_cmd)
