"""The Snakemake workflow on the real path: download from a local PhysioNet mirror, then prepare.

The mirror is built from the real sample in ../shared (300 PTB-XL records at 100 Hz) plus a small
PTB-XL+-shaped tree, served on 127.0.0.1; Snakemake runs in a temporary working directory.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import yaml
from mirror import MirrorServer, build_ptbxl_mirror, build_tree

pytestmark = [pytest.mark.snakemake, pytest.mark.slow]

# The download and prepare stages (the rest of the DAG is run on the demo world elsewhere).
TARGETS = [
    "results/wf/data/records.parquet",
    "results/wf/data/signals_100.npy",
    "resources/physionet/ptb-xl-plus/1.0.1/ecglm-manifest.json",
]


def _ptbxl_plus_files() -> dict[str, bytes]:
    return {
        "LICENSE.txt": b"test licence\n",
        "RECORDS": b"median_beats/12sl/00000/00001_medians\n",
        "features/12sl_features.csv": b"RR_Mean_Global,ecg_id,HR__Global\n1000,2,60\n857,1,70\n",
        "labels/12sl_statements.csv": b"ecg_id,statements\n1,\"['SR']\"\n",
        "median_beats/12sl/00000/00001_medians.dat": b"\x00\x01" * 64,
        "fiducial_points/ecgdeli/00000/00001_points_lead_I.atr": b"\x00" * 16,
    }


def _snakemake(repo_root, workdir, configfile, *args):
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(configfile), "--cores", "2", *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_download_and_prepare_through_snakemake(repo_root, ptbxl_sample, tmp_path):
    mirror = tmp_path / "mirror"
    build_ptbxl_mirror(mirror, ptbxl_sample, ids=range(1, 301), rates=(100,))
    build_tree(mirror, "ptb-xl-plus", "1.0.1", _ptbxl_plus_files())
    workdir = tmp_path / "work"
    workdir.mkdir()

    with MirrorServer(mirror) as server:
        config = yaml.safe_load((repo_root / "config" / "ci.yaml").read_text())
        config["run"] = "wf"
        config["data"]["source"] = "physionet"
        config["data"]["sampling_rates"] = [100]
        config["physionet"]["base_url"] = server.base_url
        configfile = tmp_path / "config.yaml"
        configfile.write_text(yaml.safe_dump(config))

        proc = _snakemake(repo_root, workdir, configfile, *TARGETS)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        first_run_requests = len(server.requests)

        # a second run has nothing to do and sends nothing
        again = _snakemake(repo_root, workdir, configfile, *TARGETS)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "Nothing to be done" in again.stdout + again.stderr
        assert len(server.requests) == first_run_requests

    paths = {r.path for r in server.requests}
    assert "/ptb-xl/1.0.3/records100/00000/00300_lr.dat" in paths
    assert "/ptb-xl-plus/1.0.1/features/12sl_features.csv" in paths
    assert not any("median_beats" in p or "fiducial_points" in p for p in paths)

    data = workdir / "results" / "wf" / "data"
    records = pl.read_parquet(data / "records.parquet")
    signals = np.load(data / "signals_100.npy", mmap_mode="r")
    assert records.height == 300
    assert records["ecg_id"].to_list() == list(range(1, 301))
    assert signals.shape == (300, 12, 1000)
    assert signals.dtype == np.int16
    for name in ("download_ptbxl", "download_ptbxl_plus", "prepare_records"):
        assert (workdir / "results" / "wf" / "logs" / f"{name}.log").is_file()
        assert (workdir / "results" / "wf" / "benchmarks" / f"{name}.tsv").is_file()
    manifest = workdir / "resources" / "physionet" / "ptb-xl" / "1.0.3" / "ecglm-manifest.json"
    assert manifest.is_file()
