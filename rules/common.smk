# Paths and helpers shared by the rules. Everything is derived from the validated config.

import os
import shlex

from ecglm.physionet import PROJECTS

RUN = config["run"]
RESULTS = f"results/{RUN}"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
FS = config["data"]["fs"]

PHYSIONET = config["physionet"]
PTBXL_DIR = f"resources/physionet/{PROJECTS['ptbxl'].slug}/{PHYSIONET['ptbxl']['version']}"
PTBXL_PLUS_DIR = f"resources/physionet/{PROJECTS['ptbxl_plus'].slug}/{PHYSIONET['ptbxl_plus']['version']}"
# Written by `ecglm download` once every selected file is verified (the download rules' output:
# the data files themselves stay out of the declared outputs, so a failed job deletes nothing
# and a re-run resumes).
MANIFEST = "ecglm-manifest.json"

RESOURCES = config["resources"]
# The software environment of every rule (snakemake --software-deployment-method conda).
ENV = "../environment.yml"


def final_outputs():
    """What `snakemake` (rule all) builds with this config."""
    outputs = [
        f"{RESULTS}/data/records.parquet",
        f"{RESULTS}/data/signals_{FS}.npy",
    ]
    if PHYSIONET["ptbxl_plus"]["enabled"]:
        outputs.append(f"{PTBXL_PLUS_DIR}/{MANIFEST}")
    return outputs


def download_args(project):
    """The `ecglm download` options shared by both PhysioNet projects."""
    zip_url = PHYSIONET[project]["zip_url"]
    args = [
        f"--base-url {shlex.quote(PHYSIONET['base_url'])}",
        f"--version {shlex.quote(PHYSIONET[project]['version'])}",
        f"--via {PHYSIONET['via']}",
        f"--connections {PHYSIONET['connections']}",
        f"--retries {PHYSIONET['retries']}",
        f"--timeout {PHYSIONET['timeout_s']}",
    ]
    if zip_url:
        args.append(f"--zip-url {shlex.quote(zip_url)}")
    return " ".join(args)
