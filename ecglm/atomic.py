"""Write files so that a final name only ever holds a complete file.

Everything the pipeline writes goes through :func:`atomic_path`: the caller writes to a
temporary name beside the target, and the temporary file is renamed onto the target only
when the block finishes without an exception (and removed otherwise).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def tmp_name(path: Path) -> Path:
    """The temporary name used while ``path`` is being written (same folder, so rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` on success, delete it on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
