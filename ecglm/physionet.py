"""PhysioNet projects: where their files live, and how their SHA256SUMS.txt is read and checked.

Shared by the real download and the demo world (which is verified by the same code).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ecglm.errors import StageError

DEFAULT_BASE_URL = "https://physionet.org/files/"
CHECKSUMS = "SHA256SUMS.txt"


@dataclass(frozen=True)
class Project:
    """A PhysioNet project as this pipeline uses it."""

    key: str  # the CLI's name: ptbxl, ptbxl_plus
    slug: str  # PhysioNet's path: ptb-xl, ptb-xl-plus
    version: str
    zip_name: str  # the one published ZIP, under static/published-projects/<slug>/
    tables: tuple[str, ...]  # top-level files always fetched

    def url(self, base_url: str) -> str:
        """The project's files URL under a PhysioNet-shaped base (``<base>/<slug>/<version>/``)."""
        return f"{base_url.rstrip('/')}/{self.slug}/{self.version}/"

    def default_zip_url(self, base_url: str = "https://physionet.org/") -> str:
        return f"{base_url.rstrip('/')}/static/published-projects/{self.slug}/{self.zip_name}"

    def dest(self, resources: str | Path = "resources") -> Path:
        return Path(resources) / "physionet" / self.slug / self.version


PROJECTS: dict[str, Project] = {
    "ptbxl": Project(
        key="ptbxl",
        slug="ptb-xl",
        version="1.0.3",
        zip_name="ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3.zip",
        tables=("ptbxl_database.csv", "scp_statements.csv", "LICENSE.txt", "RECORDS", "example_physionet.py"),
    ),
    "ptbxl_plus": Project(
        key="ptbxl_plus",
        slug="ptb-xl-plus",
        version="1.0.1",
        zip_name="ptb-xl-a-comprehensive-electrocardiographic-feature-dataset-1.0.1.zip",
        tables=("LICENSE.txt", "RECORDS"),
    ),
}


def record_path(ecg_id: int, fs: int) -> str:
    """PTB-XL's relative record path (no extension): ``records100/00000/00001_lr``."""
    if fs not in (100, 500):
        raise ValueError(f"PTB-XL records exist at 100 or 500 Hz, not {fs}")
    folder = f"records{fs}/{(ecg_id // 1000) * 1000:05d}"
    return f"{folder}/{ecg_id:05d}_{'lr' if fs == 100 else 'hr'}"


def parse_checksums(text: str, source: str = CHECKSUMS) -> dict[str, str]:
    """Parse ``<sha256hex> <relative path>`` lines into {path: hex}. Raises StageError on a bad line."""
    sums: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdefABCDEF" for c in parts[0]):
            raise StageError(f"{source}: line {lineno} is not '<sha256> <path>': {raw!r}")
        digest, rel = parts[0].lower(), parts[1].strip().lstrip("*")
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise StageError(f"{source}: line {lineno} names an unsafe path {rel!r}")
        sums[rel] = digest
    if not sums:
        raise StageError(f"{source}: no checksums found")
    return sums


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def format_checksums(sums: dict[str, str]) -> str:
    """The inverse of parse_checksums, sorted by path (PhysioNet's layout)."""
    return "".join(f"{digest} {rel}\n" for rel, digest in sorted(sums.items()))


def write_checksums(root: str | Path, files: list[str] | None = None) -> dict[str, str]:
    """Hash every file under ``root`` (or the given relative paths) and write ``root/SHA256SUMS.txt``."""
    from ecglm.atomic import write_text_atomic

    root = Path(root)
    if files is None:
        files = sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != CHECKSUMS
        )
    sums = {rel: sha256_file(root / rel) for rel in files}
    write_text_atomic(root / CHECKSUMS, format_checksums(sums))
    return sums
