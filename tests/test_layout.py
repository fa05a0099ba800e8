"""The package reads like the DAG (issue 16): subpackages by stage family, imports only downward (an
import-linter contract that a reversed import breaks), a fast `ecglm --help`, and the files the code reads
shipped inside the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "ecglm"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter with the repository's contracts, on the package found under ``root``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=root, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(root), "PATH": ""},
    )  # fmt: skip


def test_at_most_ten_top_level_modules_and_one_subpackage_per_stage_family():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 10, modules
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert packages == ["chat", "core", "data", "eval", "models", "text", "train"]


def test_the_import_contract_holds():
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_a_reversed_import_breaks_the_contract(tmp_path):
    copy = tmp_path / "ecglm"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    leads = copy / "core" / "leads.py"
    leads.write_text(leads.read_text() + "\nfrom ecglm.eval import evaluate  # noqa: E402,F401 (core importing eval)\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and "ecglm.core.leads -> ecglm.eval.evaluate" in proc.stdout


def test_help_imports_no_torch_transformers_or_polars():
    code = (
        "import sys\n"
        "from ecglm.cli import build_parser\n"
        "build_parser().format_help()\n"
        "print(sorted(m for m in ('torch', 'transformers', 'polars') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "package, name",
    [("ecglm.core", "config.schema.yaml"), ("ecglm.text", "guidelines.yaml"),
     ("ecglm.text.translate", "glossary"), ("ecglm.data.demo", "scp_statements.csv"),
     ("ecglm.data", "ecgqa_manifest.json")],
)  # fmt: skip
def test_the_files_the_code_reads_are_packaged_and_the_only_copies(package, name):
    from ecglm.core.resources import packaged

    path = packaged(package, name)
    assert path.is_relative_to(PACKAGE) and path.exists()
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    copies = [t for t in tracked if Path(t).name == path.name and not (REPO / t).is_symlink()
              and (REPO / t).resolve() != path.resolve() and not (REPO / t).is_relative_to(path)]  # fmt: skip
    assert copies == [], f"a second copy of {name}: {copies}"


def test_the_workflow_schema_is_the_packaged_one():
    link = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert link.resolve() == (PACKAGE / "core" / "config.schema.yaml").resolve()
