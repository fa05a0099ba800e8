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


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` for the block, or raise StageError at once if another process
    holds it (``what`` says what that process is doing, for the message).

    The lock is the operating system's (``flock``): it is released when the block ends or the holder
    dies, so a killed run never leaves a stale lock behind. The file keeps the holder's pid for the message.
    """
    import fcntl

    from ecglm.core.errors import StageError

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise StageError(
                f"{lock_file}: another process (pid {holder}) is {what}; wait for it to finish, "
                "or choose another destination"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def swap_in_folder(tmp: Path, out: Path) -> None:
    """Replace the folder ``out`` by the complete folder ``tmp`` (renames only; the old folder is removed after)."""
    import shutil

    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out`` to fill: when the block ends normally it replaces ``out``
    whole (:func:`swap_in_folder`); when it raises, it is removed and ``out`` stays as it was."""
    import shutil

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(out)
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run of the same pid
    tmp.mkdir()
    try:
        yield tmp
        swap_in_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
