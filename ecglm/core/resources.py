"""Files shipped inside the package (the settings schema, the guideline rules, the glossary, the demo
world's statement table), read with importlib.resources so that a wheel installed anywhere finds them.
They are the only copies; a user's own file, named on the command line or in the config, wins."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ecglm.core.errors import StageError


def packaged(package: str, name: str) -> Path:
    """The path of ``name`` shipped in ``package`` (e.g. ``packaged("ecglm.text", "guidelines.yaml")``).

    An installed package is a folder on disk (pip unpacks wheels), so the file has a real path that the
    stages can pass on (to Snakemake rules, to another process). Raises StageError if it is missing.
    """
    path = Path(str(resources.files(package).joinpath(name)))
    if not path.exists():
        raise StageError(f"{path}: a file of the ecglm package is missing (a broken install? reinstall ecglm)")
    return path
