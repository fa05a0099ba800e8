"""`ecglm download ecgqa`: ECG-QA's PTB-XL files from its GitHub repository at a pinned commit, hash-checked.

ECG-QA (Oh et al., NeurIPS 2023 Datasets and Benchmarks; CC-BY 4.0) is published as a git repository,
not on PhysioNet. The pinned commit and the git blob id of every file the pipeline reads
(``ecgqa/ptbxl/**`` and the licence) ship with the package (``ecgqa_manifest.json``): the ids the commit's
own tree records, so a file is checked against the commit itself (git's blob id: SHA-1 of ``"blob
<size>\\0"`` followed by the bytes). The repository's archive of that commit (one ZIP, fetched resumably
with the download stage's retries) is read member by member: only the manifest's paths are extracted
(a member named outside them is never written), each is hashed while it is written into a staging
folder, and the folder replaces ``DEST`` only when every file matched, with ``ecglm-manifest.json``
written last. A mismatching or missing file stops the stage naming it (and both ids); nothing
half-verified is left under ``DEST``. A rerun whose ``DEST`` already holds the commit's manifest does
nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from ecglm.core.atomic import staged_folder, write_text_atomic
from ecglm.core.errors import StageError

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "ecglm-git-manifest/1"
DONE = "ecglm-manifest.json"
DEFAULT_URL = "https://codeload.github.com/{repository}/zip/{commit}"


def packaged_manifest() -> Path:
    """The manifest of the pinned ECG-QA commit that ships with the package."""
    from ecglm.core.resources import packaged

    return packaged("ecglm.data", "ecgqa_manifest.json")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """A git manifest (repository, commit, {path: blob id}); StageError naming the file when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise StageError(f"{path}: not a readable manifest ({err})") from err
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("files"), dict):
        raise StageError(f"{path}: not an {MANIFEST_FORMAT} manifest")
    for name, blob in doc["files"].items():
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts or "\\" in name:
            raise StageError(f"{path}: file {name!r} is not a relative path inside the repository")
        if not (isinstance(blob, str) and len(blob) == 40 and all(c in "0123456789abcdef" for c in blob)):
            raise StageError(f"{path}: file {name!r} has no git blob id (40 hex digits), got {blob!r}")
    return doc


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's bytes (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def default_dest(manifest: dict[str, Any]) -> Path:
    return Path("resources") / "ecgqa" / manifest["commit"]


def _archive_prefix(zf: zipfile.ZipFile, source: str) -> str:
    """The archive's one top folder (GitHub's ``<repo>-<commit>/``), with its ``/``."""
    tops = {n.split("/", 1)[0] for n in zf.namelist() if n.strip("/")}
    if len(tops) != 1:
        raise StageError(f"{source}: not a repository archive (expected one top folder, found {len(tops)})")
    return tops.pop() + "/"


def extract_verified(zip_path: Path, manifest: dict[str, Any], dest: Path, source: str) -> None:
    """Extract the manifest's files of the archive into ``dest`` (replaced whole), each checked by its git blob id."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise StageError(f"{source}: not a readable ZIP archive ({err}); delete {zip_path} to fetch it again") from err
    with zf, staged_folder(dest) as tmp:
        prefix = _archive_prefix(zf, source)
        names = set(zf.namelist())
        missing = [name for name in manifest["files"] if prefix + name not in names]
        if missing:
            raise StageError(f"{source}: {len(missing)} file(s) of commit {manifest['commit']} are not in the archive, "
                             f"first {missing[0]}")  # fmt: skip
        for name, expected in manifest["files"].items():
            try:
                data = zf.read(prefix + name)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise StageError(f"{source}: {name}: cannot extract ({err})") from err
            got = git_blob_id(data)
            if got != expected:
                raise StageError(f"{source}: {name}: git blob id mismatch (commit {manifest['commit'][:12]} records "
                                 f"{expected}, the archive holds {got})")  # fmt: skip
            target = tmp / PurePosixPath(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        record = {"repository": manifest["repository"], "commit": manifest["commit"], "version": manifest.get("version"),
                  "source": source, "n_files": len(manifest["files"]), "files": manifest["files"]}  # fmt: skip
        write_text_atomic(tmp / DONE, json.dumps(record, indent=1) + "\n")


def download_ecgqa(dest: str | os.PathLike | None = None, *, url: str | None = None,
                   manifest_path: str | os.PathLike | None = None, retries: int = 5, timeout_s: float = 60.0,
                   progress: bool = True) -> Path:  # fmt: skip
    """Fetch and verify the pinned ECG-QA files into ``dest`` (default ``resources/ecgqa/<commit>/``); return it."""
    from ecglm.data.download import _fetch_zip
    from ecglm.data.http_fetch import RetryPolicy

    manifest = read_manifest(manifest_path or packaged_manifest())
    dest = Path(dest) if dest is not None else default_dest(manifest)
    done = dest / DONE
    if done.is_file():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            if json.loads(done.read_text(encoding="utf-8")).get("files") == manifest["files"]:
                log.info("%s: already holds ECG-QA at commit %s, verified", dest, manifest["commit"][:12])
                return dest
    url = url or DEFAULT_URL.format(repository=manifest["repository"], commit=manifest["commit"])
    zip_path = dest.parent / f".{dest.name}.zip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    _fetch_zip(url, zip_path, f"ECG-QA {manifest['commit'][:12]}", RetryPolicy(retries=retries, timeout_s=timeout_s),
               progress)  # fmt: skip
    extract_verified(zip_path, manifest, dest, url)
    zip_path.unlink()
    log.info("%s: %d files of %s at commit %s, each matching its git blob id", dest, len(manifest["files"]),
             manifest["repository"], manifest["commit"][:12])  # fmt: skip
    return dest
