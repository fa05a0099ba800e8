"""`ecglm download` and `ecglm verify`: a PhysioNet project, fetched and verified by SHA-256.

``download_project`` fetches ``SHA256SUMS.txt`` fresh from ``{base_url}/{slug}/{version}/``, selects the
files this pipeline needs (:func:`select_files`), fetches them several at a time (or extracts them from the
project's one published ZIP), and finishes with exactly the check ``verify_project`` runs on a tree made
any other way (the demo world): :func:`verify_dest`. Every file reaches its final name only after its
hash matched; a rerun skips verified files without a request and resumes partial ones.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath
from typing import Iterable
from urllib.parse import quote, unquote, urlparse

from ecglm.core.atomic import exclusive_lock, write_text_atomic
from ecglm.core.errors import StageError
from ecglm.data.http_fetch import RetryPolicy, SessionPool, Stopped, fetch_file, part_path
from ecglm.data.physionet import (
    CHECKSUMS,
    DEFAULT_BASE_URL,
    PROJECTS,
    Project,
    format_checksums,
    parse_checksums,
    sha256_file,
)

log = logging.getLogger(__name__)

RATES = (100, 500)
DEFAULT_RATES = (100,)
# Path prefixes fetched besides the top-level files. PTB-XL's records come from --rates instead.
DEFAULT_INCLUDE: dict[str, tuple[str, ...]] = {"ptbxl": (), "ptbxl_plus": ("features/", "labels/")}
VIA = ("files", "zip")
LOCK_FILE = ".ecglm-download.lock"  # held by the download writing into a folder (ecglm.core.atomic.exclusive_lock)


# --------------------------------------------------------------------------------------------- selection
#: The ECG-QA repository (not a PhysioNet project: ecglm/data/ecgqa_download.py).
ECGQA = "ecgqa"


def resolve_project(project_key: str, version: str | None = None) -> Project:
    """The project named ``project_key`` (``ptbxl``, ``ptbxl_plus``), at ``version`` if given."""
    if project_key not in PROJECTS:
        raise StageError(f"unknown project {project_key!r} (choose from {', '.join(PROJECTS)})")
    project = PROJECTS[project_key]
    if version and version != project.version:
        zip_name = project.zip_name.replace(project.version, version)
        project = dataclasses.replace(project, version=version, zip_name=zip_name)
    return project


def _normalise_include(project_key: str, include: Iterable[str] | None) -> tuple[str, ...]:
    prefixes = DEFAULT_INCLUDE[project_key] if include is None else tuple(include)
    out = []
    for prefix in prefixes:
        prefix = prefix.strip()
        prefix = prefix[2:] if prefix.startswith("./") else prefix
        if not prefix or prefix.startswith("/") or ".." in PurePosixPath(prefix).parts:
            raise StageError(f"--include {prefix!r}: not a relative path prefix inside the project")
        out.append(prefix)
    return tuple(dict.fromkeys(out))


def _normalise_rates(project_key: str, rates: Iterable[int] | None) -> tuple[int, ...]:
    if project_key != "ptbxl":
        return ()
    chosen = tuple(sorted(set(DEFAULT_RATES if rates is None else rates)))
    bad = [r for r in chosen if r not in RATES]
    if bad or not chosen:
        raise StageError(f"--rates {list(rates or [])}: PTB-XL has records at 100 and 500 Hz only")
    return chosen


def select_files(
    sums: dict[str, str],
    project_key: str,
    rates: Iterable[int] | None = None,
    include: Iterable[str] | None = None,
) -> list[str]:
    """The relative paths of ``sums`` (a parsed SHA256SUMS.txt) that this pipeline needs, sorted.

    Always every top-level file listed (no ``/`` in its path). For ``ptbxl`` also ``records{fs}/`` for each
    rate in ``rates`` (default 100). For every project also the paths under the ``include`` prefixes
    (default: none for ptbxl; ``features/`` and ``labels/`` for ptbxl_plus, so not ``median_beats/`` or
    ``fiducial_points/``). A prefix names a folder (a trailing ``/`` is implied) unless it is a listed file.
    Raises StageError when a rate or prefix selects nothing (a typo or the wrong tree).
    """
    if project_key not in PROJECTS:
        raise StageError(f"unknown project {project_key!r} (choose from {', '.join(PROJECTS)})")
    prefixes: list[str] = []
    for fs in _normalise_rates(project_key, rates):
        prefixes.append(f"records{fs}/")
    for prefix in _normalise_include(project_key, include):
        prefixes.append(prefix if prefix.endswith("/") or prefix in sums else prefix + "/")
    selected = {rel for rel in sums if "/" not in rel and rel != CHECKSUMS}
    for prefix in prefixes:
        matched = {rel for rel in sums if rel == prefix or rel.startswith(prefix)}
        if not matched:
            raise StageError(f"{CHECKSUMS} of {PROJECTS[project_key].slug} lists no file under {prefix!r}")
        selected |= matched
    return sorted(selected)


# ------------------------------------------------------------------------------------------ verification
def verify_files(
    root: str | Path,
    sums: dict[str, str],
    selection: list[str],
    threads: int = 4,
    progress: bool = False,
) -> dict[str, str]:
    """Hash ``root/<rel>`` for every ``rel`` in ``selection`` (``threads`` at once) against ``sums``.

    Returns {rel: sha256} of the selection when every file is present and matches; otherwise raises one
    StageError naming the bad files (missing, or mismatching with both hashes).
    """
    from tqdm import tqdm

    root = Path(root)

    def check(rel: str) -> str | None:
        if rel not in sums:
            return f"{rel}: not listed in {CHECKSUMS}"
        path = root / rel
        if not path.is_file():
            return f"{path}: missing"
        got = sha256_file(path)
        if got != sums[rel]:
            return f"{path}: SHA-256 mismatch (expected {sums[rel]}, got {got})"
        return None

    problems: list[str] = []
    with ThreadPoolExecutor(max(1, threads)) as pool, tqdm(
        total=len(selection), unit="file", desc=f"verify {root.name}", disable=not progress, leave=False
    ) as bar:
        for problem in pool.map(check, selection):
            bar.update(1)
            if problem:
                problems.append(problem)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise StageError(f"{len(problems)} of {len(selection)} files failed verification against "
                         f"{root / CHECKSUMS}: {shown}")
    return {rel: sums[rel] for rel in selection}


def verify_dest(
    dest: str | Path,
    project_key: str,
    rates: Iterable[int] | None = None,
    include: Iterable[str] | None = None,
    threads: int = 4,
    progress: bool = False,
) -> dict[str, str]:
    """Read ``dest/SHA256SUMS.txt``, select the files (:func:`select_files`) and verify them.

    The one final check of both ``ecglm download`` and ``ecglm verify``. Returns {rel: sha256}.
    """
    sums_path = Path(dest) / CHECKSUMS
    if not sums_path.is_file():
        raise StageError(f"{sums_path}: missing; cannot verify {dest}")
    sums = parse_checksums(sums_path.read_text(encoding="utf-8"), str(sums_path))
    selection = select_files(sums, project_key, rates, include)
    return verify_files(dest, sums, selection, threads=threads, progress=progress)


def _manifest(project: Project, via: str, source: dict, rates: tuple[int, ...], include: tuple[str, ...],
              dest: Path, files: dict[str, str]) -> dict:
    manifest: dict = {"project": project.key, "slug": project.slug, "version": project.version, **source,
                      "via": via, "dest": str(dest)}
    if project.key == "ptbxl":
        manifest["rates"] = list(rates)
    manifest["include"] = list(include)
    manifest["n_files"] = len(files)
    manifest["files"] = dict(sorted(files.items()))
    return manifest


def _write_manifest(path: str | Path | None, manifest: dict) -> None:
    if path is not None:
        write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")
        log.info("wrote %s (%d files)", path, manifest["n_files"])


def verify_project(
    project_key: str,
    dest: str | Path,
    rates: Iterable[int] | None = None,
    include: Iterable[str] | None = None,
    manifest: str | Path | None = None,
    threads: int = 4,
    version: str | None = None,
    progress: bool = True,
) -> dict:
    """Check the selected files of ``dest`` against ``dest/SHA256SUMS.txt`` without fetching anything.

    Returns the manifest (written atomically to ``manifest`` when given); raises StageError naming each
    missing or mismatching file.
    """
    project = resolve_project(project_key, version)
    dest = Path(dest)
    files = verify_dest(dest, project_key, rates, include, threads=threads, progress=progress)
    log.info("%s: %d files verified against %s", dest, len(files), dest / CHECKSUMS)
    result = _manifest(project, "verify", {}, _normalise_rates(project_key, rates),
                       _normalise_include(project_key, include), dest, files)
    _write_manifest(manifest, result)
    return result


# -------------------------------------------------------------------------------------------- files mode
class _Progress:
    """A thread-safe tqdm bar over files, showing the megabytes received."""

    def __init__(self, total: int, desc: str, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="file", desc=desc, disable=not enabled)
        self.lock = threading.Lock()
        self.nbytes = 0

    def add_bytes(self, n: int) -> None:
        with self.lock:
            self.nbytes += n

    def file_done(self) -> None:
        with self.lock:
            self.bar.set_postfix_str(f"{self.nbytes / 1e6:.1f} MB", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _run_parallel(items: list[str], work, threads: int) -> Counter:
    """Run ``work(rel, stop) -> outcome`` over ``items`` in ``threads`` threads; count the outcomes.

    The first failure stops the rest (workers see ``stop``); files already in flight finish. Raises the
    first real failure, saying how many others failed.
    """
    stop = threading.Event()
    counts: Counter = Counter()
    errors: list[StageError] = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        futures = {pool.submit(work, rel, stop): rel for rel in items}
        try:
            for future in as_completed(futures):
                rel = futures[future]
                try:
                    counts[future.result()] += 1
                except Stopped:
                    counts["stopped"] += 1
                except StageError as err:
                    errors.append(err)
                    stop.set()
                except OSError as err:
                    errors.append(StageError(f"{rel}: {err}"))
                    stop.set()
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
    if errors:
        more = f" ({len(errors) - 1} more file(s) failed too)" if len(errors) > 1 else ""
        raise StageError(f"{errors[0]}{more}") from errors[0]
    return counts


def _fetch_text_fresh(url: str, dest: Path, policy: RetryPolicy, sessions: SessionPool) -> str:
    """Fetch a small file (SHA256SUMS.txt) anew, write it atomically into ``dest`` and return its text."""
    final = dest / CHECKSUMS
    tmp = dest / f".{CHECKSUMS}.fresh"  # never the final name: a failed fetch leaves the old one alone
    fetch_file(url, tmp, None, policy=policy, sessions=sessions, label=CHECKSUMS, resume=False)
    try:
        text = tmp.read_text(encoding="utf-8")
        parse_checksums(text, url)  # refuse a page that is not a checksum list before it replaces ours
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return text


def _check_url(option: str, url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https", "file"):
        raise StageError(f"{option} {url!r}: use an http://, https:// or file:// URL")
    if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
        raise StageError(f"{option} {url!r}: a file:// URL needs an absolute path (file:///mnt/mirror/)")


def _download_files(project: Project, base_url: str, dest: Path, rates, include, policy: RetryPolicy,
                    connections: int, progress: bool) -> Counter:
    url = project.url(base_url)
    sessions = SessionPool()
    try:
        text = _fetch_text_fresh(url + CHECKSUMS, dest, policy, sessions)
        sums = parse_checksums(text, url + CHECKSUMS)
        selection = select_files(sums, project.key, rates, include)
        log.info("%s %s: %d of %d listed files selected", project.slug, project.version, len(selection),
                 len(sums))
        bar = _Progress(len(selection), f"{project.slug} {project.version}", progress)

        def work(rel: str, stop: threading.Event) -> str:
            if stop.is_set():
                raise Stopped(f"{rel}: not fetched because another file failed")
            final = dest / rel
            try:
                if final.is_file():
                    got = sha256_file(final)
                    if got == sums[rel]:
                        with contextlib.suppress(FileNotFoundError):
                            part_path(final).unlink()
                        return "skipped"
                    log.warning("%s: SHA-256 %s, expected %s; fetching it again", final, got, sums[rel])
                    final.unlink()
                result = fetch_file(url + quote(rel), final, sums[rel], policy=policy, sessions=sessions,
                                    label=rel, on_bytes=bar.add_bytes, stop=stop)
                return result.how
            finally:
                bar.file_done()

        try:
            counts = _run_parallel(selection, work, connections)
        finally:
            bar.close()
    finally:
        sessions.close()
    return counts


# ---------------------------------------------------------------------------------------------- ZIP mode
def _zip_prefix(zf: zipfile.ZipFile, source: str) -> str:
    """The folder of the ZIP that holds SHA256SUMS.txt (PhysioNet's one top folder), with its ``/``."""
    candidates = [n for n in zf.namelist() if PurePosixPath(n).name == CHECKSUMS]
    if not candidates:
        raise StageError(f"{source}: the ZIP holds no {CHECKSUMS}; it is not a PhysioNet project ZIP")
    best = min(candidates, key=lambda n: (n.count("/"), n))
    return best[: -len(CHECKSUMS)]


def _extract_verified(zf: zipfile.ZipFile, member: str, final: Path, expected: str, label: str) -> None:
    """Extract ``member`` to ``.<name>.part``, check its SHA-256, and only then rename it to ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(final)
    h = hashlib.sha256()
    try:
        with zf.open(member) as src, open(tmp, "wb") as out:
            while block := src.read(1 << 20):
                h.update(block)
                out.write(block)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise StageError(f"{label}: cannot extract from the ZIP: {err}") from err
    got = h.hexdigest()
    if got != expected:
        tmp.unlink()
        raise StageError(f"{label}: SHA-256 mismatch in the ZIP (expected {expected}, got {got})")
    os.replace(tmp, final)


def _already_verified(dest: Path, project_key: str, rates, include, threads: int) -> dict[str, str] | None:
    """The verified files when ``dest`` already holds a SHA256SUMS.txt that every selected file matches."""
    if not (dest / CHECKSUMS).is_file():
        return None
    try:
        return verify_dest(dest, project_key, rates, include, threads=threads)
    except StageError as err:
        log.debug("existing tree not complete: %s", err)
        return None


def _fetch_zip(zip_url: str, zip_path: Path, name: str, policy: RetryPolicy, progress: bool) -> None:
    """Fetch the ZIP (resumably, with a progress bar) unless an earlier run left it complete."""
    from tqdm import tqdm

    if zip_path.is_file():
        log.info("%s: using the ZIP left by an earlier run", zip_path)
        return
    sessions = SessionPool()
    with tqdm(total=None, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:

        def on_total(total: int) -> None:
            bar.total = total
            bar.refresh()

        try:
            fetch_file(zip_url, zip_path, None, policy=policy, sessions=sessions, label=name,
                       on_bytes=bar.update, on_total=on_total)  # fmt: skip
        finally:
            sessions.close()


def _zip_listing(zip_path: Path, zip_url: str) -> tuple[str, set[str], str]:
    """``(the folder prefix inside the ZIP, its member names, its SHA256SUMS.txt)``; a broken ZIP is removed
    with a StageError (a rerun fetches it again)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            prefix = _zip_prefix(zf, zip_url)
            return prefix, set(zf.namelist()), zf.read(prefix + CHECKSUMS).decode("utf-8")
    except zipfile.BadZipFile as err:
        zip_path.unlink()
        raise StageError(f"{zip_url}: the downloaded file is not a valid ZIP ({err}); removed it, "
                         f"rerun to fetch it again") from err


def _download_zip(project: Project, zip_url: str, dest: Path, rates, include, policy: RetryPolicy,
                  threads: int, progress: bool) -> tuple[Counter, Path | None]:
    """Fetch (resumably) and extract the project's ZIP. Returns the counts and the ZIP to remove."""
    done = _already_verified(dest, project.key, rates, include, threads)
    if done is not None:
        log.info("%s: all %d selected files are already verified; the ZIP is not needed", dest, len(done))
        return Counter(skipped=len(done)), None
    name = unquote(PurePosixPath(urlparse(zip_url).path).name) or f"{project.slug}-{project.version}.zip"
    zip_path = dest / name
    _fetch_zip(zip_url, zip_path, name, policy, progress)
    prefix, names, sums_text = _zip_listing(zip_path, zip_url)
    sums = parse_checksums(sums_text, f"{zip_url}:{prefix}{CHECKSUMS}")
    selection = select_files(sums, project.key, rates, include)
    write_text_atomic(dest / CHECKSUMS, format_checksums(sums))
    log.info("%s: %d of %d listed files selected; extracting", name, len(selection), len(sums))
    bar = _Progress(len(selection), f"extract {project.slug}", progress)
    local = threading.local()
    handles: list[zipfile.ZipFile] = []
    handles_lock = threading.Lock()

    def work(rel: str, stop: threading.Event) -> str:
        if stop.is_set():
            raise Stopped(f"{rel}: not extracted because another file failed")
        try:
            final = dest / rel
            if final.is_file() and sha256_file(final) == sums[rel]:
                return "skipped"
            member = prefix + rel
            if member not in names:
                raise StageError(f"{rel}: listed in {CHECKSUMS} but absent from the ZIP {name}")
            zf = getattr(local, "zf", None)
            if zf is None:  # one handle per thread: a ZipFile's reads are not thread-safe
                zf = local.zf = zipfile.ZipFile(zip_path)
                with handles_lock:
                    handles.append(zf)
            _extract_verified(zf, member, final, sums[rel], rel)
            return "extracted"
        finally:
            bar.file_done()

    try:
        counts = _run_parallel(selection, work, threads)
    finally:
        bar.close()
        for zf in handles:
            zf.close()
    return counts, zip_path


# ------------------------------------------------------------------------------------------ the download
def download_project(
    project_key: str,
    *,
    base_url: str = DEFAULT_BASE_URL,
    version: str | None = None,
    dest: str | Path | None = None,
    rates: Iterable[int] | None = None,
    include: Iterable[str] | None = None,
    via: str = "files",
    zip_url: str | None = None,
    connections: int = 8,
    retries: int = 5,
    timeout_s: float = 60.0,
    retry_delay_s: float | None = None,
    manifest: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Fetch a PhysioNet project into ``dest`` and verify it; return (and optionally write) its manifest.

    On return every selected file is present under ``dest`` and matches ``dest/SHA256SUMS.txt`` (checked by
    :func:`verify_dest`, the same code as ``ecglm verify``). On failure a StageError names the file and
    reason; no final name holds an unverified file, and partial downloads are kept for the rerun.
    ``retry_delay_s``: first backoff of a transient error (None: ``$ECGLM_RETRY_DELAY_S`` or 1 s).
    """
    project = resolve_project(project_key, version)
    if via not in VIA:
        raise StageError(f"--via {via!r}: choose files or zip")
    if connections < 1:
        raise StageError(f"--connections {connections}: need at least 1")
    rates_n = _normalise_rates(project_key, rates)
    include_n = _normalise_include(project_key, include)
    dest = Path(dest) if dest is not None else project.dest()
    dest.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(dest / LOCK_FILE, f"downloading into {dest}"):
        return _download_locked(project, project_key, base_url, dest, rates_n, include_n, via, zip_url, connections,
                                RetryPolicy(retries=retries, timeout_s=timeout_s, delay_s=retry_delay_s),
                                manifest, progress)


def _download_locked(project, project_key, base_url, dest, rates_n, include_n, via, zip_url, connections, policy,
                     manifest, progress) -> dict:
    """:func:`download_project`'s work, run while it holds the destination's lock."""
    if via == "files":
        _check_url("--base-url", base_url)
        counts = _download_files(project, base_url, dest, rates_n, include_n, policy, connections, progress)
        source = {"base_url": base_url, "url": project.url(base_url)}
        log.info("%s %s: %d already verified (skipped), %d fetched, %d resumed", project.slug,
                 project.version, counts["skipped"], counts["fetched"], counts["resumed"])
        to_remove = None
    else:
        zip_url = zip_url or project.default_zip_url()
        _check_url("--zip-url", zip_url)
        counts, to_remove = _download_zip(project, zip_url, dest, rates_n, include_n, policy, connections,
                                          progress)
        source = {"zip_url": zip_url}
        log.info("%s %s: %d already verified (skipped), %d extracted from the ZIP", project.slug,
                 project.version, counts["skipped"], counts["extracted"])
    files = verify_dest(dest, project_key, rates_n, include_n, threads=connections, progress=progress)
    log.info("%s: %d files present and verified", dest, len(files))
    if to_remove is not None:
        to_remove.unlink()
    result = _manifest(project, via, source, rates_n, include_n, dest, files)
    _write_manifest(manifest, result)
    return result


# ------------------------------------------------------------------------------------------------- CLI
def _add_selection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rates", type=int, nargs="+", choices=RATES, metavar="HZ",
                        help="ptbxl only: record sets to take, 100 and/or 500 Hz (default: 100)")
    parser.add_argument("--include", nargs="+", metavar="PREFIX",
                        help="path prefixes to take besides the top-level files (default: none for ptbxl; "
                             "'features/ labels/' for ptbxl_plus; add 'median_beats/' or "
                             "'fiducial_points/' for those)")
    parser.add_argument("--manifest", metavar="FILE",
                        help="after success, write a JSON manifest (project, source, selection, "
                             "{path: sha256}) to FILE, atomically")


def _cmd_download(args: argparse.Namespace) -> int:
    if args.project == ECGQA:
        from ecglm.data.ecgqa_download import download_ecgqa

        download_ecgqa(args.dest, url=args.zip_url, manifest_path=args.git_manifest, retries=args.retries,
                       timeout_s=args.timeout, progress=not args.no_progress)  # fmt: skip
        return 0
    if args.rates and args.project != "ptbxl":
        log.warning("--rates applies to ptbxl only; ignored for %s", args.project)
    download_project(
        args.project, base_url=args.base_url, version=args.version, dest=args.dest, rates=args.rates,
        include=args.include, via=args.via, zip_url=args.zip_url, connections=args.connections,
        retries=args.retries, timeout_s=args.timeout, retry_delay_s=args.retry_delay,
        manifest=args.manifest, progress=not args.no_progress,
    )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    if args.rates and args.project != "ptbxl":
        log.warning("--rates applies to ptbxl only; ignored for %s", args.project)
    verify_project(args.project, args.dest, rates=args.rates, include=args.include, manifest=args.manifest,
                   threads=args.threads, version=args.version, progress=not args.no_progress)
    return 0


def register(subparsers) -> None:
    """Add the ``download`` and ``verify`` subcommands."""
    p = subparsers.add_parser(
        "download",
        help="fetch a PhysioNet project (PTB-XL, PTB-XL+) and verify it by SHA-256, or ECG-QA at its pinned commit",
        description=(
            "Fetch SHA256SUMS.txt from {base-url}/{slug}/{version}/, select the files the pipeline needs "
            "(top-level files, PTB-XL records at --rates, PTB-XL+ folders in --include), fetch them over "
            "several connections (or extract them from the project's ZIP with --via zip), verify each "
            "against SHA256SUMS.txt before it gets its final name, and finish with the same check as "
            "`ecglm verify`. Reruns skip verified files without a request and resume partial ones; "
            "transient errors are retried with exponential backoff (first delay: $ECGLM_RETRY_DELAY_S "
            "or --retry-delay). `ecglm download ecgqa` fetches ECG-QA's repository archive at the commit the "
            "package pins (--zip-url overrides the address) and extracts its PTB-XL files into --dest "
            "(default resources/ecgqa/<commit>/), each checked against the git blob id the commit records."
        ),
    )
    p.add_argument("project", choices=[*PROJECTS, ECGQA], help="which project to fetch")
    p.add_argument("--git-manifest", metavar="FILE", default=None,
                   help="ecgqa only: the commit and git blob ids to check against (default: the packaged "
                        "ecglm/data/ecgqa_manifest.json)")  # fmt: skip
    p.add_argument("--base-url", default=DEFAULT_BASE_URL,
                   help="base of a PhysioNet-shaped tree: http(s):// or file:// (default: %(default)s)")
    p.add_argument("--version", help="project version (default: ptbxl 1.0.3, ptbxl_plus 1.0.1)")
    p.add_argument("--dest", help="folder that receives the project's files as laid out on PhysioNet "
                                  "(default: resources/physionet/<slug>/<version>/)")
    _add_selection_args(p)
    p.add_argument("--via", choices=VIA, default="files",
                   help="files: fetch the selected files one by one; zip: fetch the one published ZIP "
                        "(resumable) and extract the selected files (default: %(default)s)")
    p.add_argument("--zip-url", help="URL of the project's ZIP for --via zip (default: PhysioNet's "
                                     "static/published-projects/<slug>/<zip name>)")
    p.add_argument("--connections", type=int, default=8,
                   help="concurrent connections in files mode (and extraction threads) (default: %(default)s)")
    p.add_argument("--retries", type=int, default=5,
                   help="retries of a transient error (connection, timeout, HTTP 429/5xx) per file "
                        "(default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait to connect and for each read (default: %(default)s)")
    p.add_argument("--retry-delay", type=float, default=None, metavar="S",
                   help="first backoff in seconds, doubled on each retry (default: $ECGLM_RETRY_DELAY_S or 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_download)

    v = subparsers.add_parser(
        "verify",
        help="check a downloaded or generated project tree against its SHA256SUMS.txt",
        description=(
            "Check the selected files of DIR against DIR/SHA256SUMS.txt (the same selection and hashing as "
            "`ecglm download`'s final check), without fetching anything. Exits 1 naming every missing or "
            "mismatching file."
        ),
    )
    v.add_argument("project", choices=list(PROJECTS), help="which project the tree holds")
    v.add_argument("--dest", required=True, help="the project folder holding SHA256SUMS.txt")
    _add_selection_args(v)
    v.add_argument("--version", help="project version recorded in the manifest (default: the project's)")
    v.add_argument("--threads", type=int, default=4, help="files hashed at once (default: %(default)s)")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=_cmd_verify)
