"""Shared fixtures: the real data in ../shared (skipped with a reason where absent) and the repo paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# CI clones the repo beside ../shared; a user's fresh clone has none (tests that need it skip).
SHARED = Path(os.environ.get("ECGLM_SHARED", REPO_ROOT.parent / "shared"))
PTBXL_SAMPLE = SHARED / "ptbxl-sample"
ECGQA_SAMPLE = SHARED / "ecgqa-sample"
CHATDOCTOR_SAMPLE = SHARED / "chatdoctor-sample"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set ECGLM_SHARED to the folder that holds ptbxl-sample/)")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def ptbxl_sample() -> Path:
    """The real PTB-XL 1.0.3 sample: 300 records at 100 Hz (ids 1-300), 100 at 500 Hz (ids 1-100)."""
    return _need(PTBXL_SAMPLE)


@pytest.fixture(scope="session")
def ecgqa_sample() -> Path:
    return _need(ECGQA_SAMPLE)


@pytest.fixture(scope="session")
def chatdoctor_sample() -> Path:
    return _need(CHATDOCTOR_SAMPLE)


#: The one demo world of a test session (test_demo.py checks its counts against these settings).
DEMO_WORLD = {"n_records": 220, "seed": 7, "min_per_class": 3}


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory) -> Path:
    """A small demo world (ecglm demo-data), generated once per test session: the folder holding
    ptb-xl/1.0.3/, ptb-xl-plus/1.0.1/, ecg-qa/, healthcaremagic/ and truth.csv."""
    from ecglm.data.demo.world import generate_world

    dest = tmp_path_factory.mktemp("demo-world")
    generate_world(dest, n_records=DEMO_WORLD["n_records"], seed=DEMO_WORLD["seed"],
                   min_per_class=DEMO_WORLD["min_per_class"], workers=2, progress=False)  # fmt: skip
    return dest


@pytest.fixture(scope="session", params=["real", "demo"])
def ptbxl_tree(request) -> Path:
    """A PTB-XL 1.0.3-shaped folder: the real sample (skipped where absent) or the demo world's, so a
    test that reads PTB-XL runs on both with the same code."""
    if request.param == "real":
        return request.getfixturevalue("ptbxl_sample")
    return request.getfixturevalue("demo_world") / "ptb-xl" / "1.0.3"


@pytest.fixture(scope="session")
def ci_snakemake():
    """`run(workdir, *args)`: `snakemake` on config/ci.yaml in `workdir` on 2 local cores, as a user runs it
    (the repo's Snakefile; its default workflow profile applies). Returns the CompletedProcess."""
    import subprocess
    import sys

    def run(workdir: Path, *args: str, timeout: float = 1800) -> "subprocess.CompletedProcess[str]":
        cmd = [
            sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(REPO_ROOT / "config" / "ci.yaml"),
            "--cores", "2", *args,
        ]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def ci_local_run(ci_snakemake, tmp_path_factory) -> Path:
    """The whole ci DAG (config/ci.yaml) run locally ONCE per test session, in a temporary working
    directory: shared by tests/test_workflow_demo.py and tests/test_slurm.py (whose SLURM run must give
    the same tables). Tests must not change it (copy it first)."""
    workdir = tmp_path_factory.mktemp("ci-local-run")
    proc = ci_snakemake(workdir)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return workdir
