# Paths and helpers shared by the rules. Everything is derived from the validated config.

import glob
import os
import shlex

from ecglm.physionet import PROJECTS

RUN = config["run"]
RESULTS = f"results/{RUN}"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
FS = config["data"]["fs"]
RATES = " ".join(str(r) for r in config["data"]["sampling_rates"])
DATA_SOURCE = config["data"]["source"]

PHYSIONET = config["physionet"]
PTBXL = PROJECTS["ptbxl"]
PTBXL_PLUS = PROJECTS["ptbxl_plus"]

# The two worlds never overwrite each other: the real data under resources/physionet/, the
# synthetic world of each run under resources/demo/{run}/, in the same layout.
if DATA_SOURCE == "demo":
    DEMO_DIR = f"resources/demo/{RUN}"
    PTBXL_DIR = f"{DEMO_DIR}/{PTBXL.slug}/{PTBXL.version}"
    PTBXL_PLUS_DIR = f"{DEMO_DIR}/{PTBXL_PLUS.slug}/{PTBXL_PLUS.version}"
    PTBXL_PLUS_ENABLED = True
else:
    PTBXL_DIR = f"resources/physionet/{PTBXL.slug}/{PHYSIONET['ptbxl']['version']}"
    PTBXL_PLUS_DIR = f"resources/physionet/{PTBXL_PLUS.slug}/{PHYSIONET['ptbxl_plus']['version']}"
    PTBXL_PLUS_ENABLED = PHYSIONET["ptbxl_plus"]["enabled"]

# Written by `ecglm download` / `ecglm verify` once every selected file is verified. The data
# files themselves stay out of the declared outputs, so a failed job deletes nothing and a
# re-run resumes.
MANIFEST = "ecglm-manifest.json"
PTBXL_PLUS_FEATURES = f"{PTBXL_PLUS_DIR}/features/12sl_features.csv"
PTBXL_PLUS_INCLUDE = " ".join(shlex.quote(p) for p in PHYSIONET["ptbxl_plus"]["include"])

def repo_path(path):
    """A config path to a file shipped with the workflow (config/...), relative to the Snakefile."""
    return path if os.path.isabs(path) else os.path.join(workflow.basedir, path)


GUIDELINES = repo_path(config["text"]["guidelines"])

RESOURCES = config["resources"]
# The software environment of every rule (snakemake --software-deployment-method conda).
ENV = "../environment.yml"


def cpu_mem_mb(factor=1.0):
    """Memory of a CPU job, doubled on each retry (resources: mem_mb=cpu_mem_mb())."""
    return lambda wildcards, attempt: int(RESOURCES["mem_mb"] * factor * 2 ** (attempt - 1))


def final_outputs():
    """What `snakemake` (rule all) builds with this config."""
    return [
        f"{RESULTS}/data/records.parquet",
        f"{RESULTS}/data/signals_{FS}.npy",
        f"{RESULTS}/data/features_measured.parquet",
        f"{RESULTS}/text/reports_en.parquet",
        f"{RESULTS}/text/findings.parquet",
        f"{RESULTS}/pairs",
    ]


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


def ptbxl_plus_manifest():
    """The PTB-XL+ manifest when PTB-XL+ is used (describe then reads its 12SL table first)."""
    return [f"{PTBXL_PLUS_DIR}/{MANIFEST}"] if PTBXL_PLUS_ENABLED else []


def features_args(wildcards, input):
    """`ecglm describe --features ...`: PTB-XL+'s 12SL table first (when used), then our measurement."""
    tables = [PTBXL_PLUS_FEATURES] if PTBXL_PLUS_ENABLED else []
    tables.append(input.measured)
    return " ".join(f"--features {shlex.quote(t)}" for t in tables)


def translate_args():
    """`ecglm translate` options of the openai backend (the glossary backend needs none)."""
    text = config["text"]
    if text["backend"] != "openai":
        return ""
    args = [
        f"--api-key-env {shlex.quote(text['api_key_env'])}",
        "--cache-dir resources/cache/translate",
    ]
    if text["model"]:
        args.append(f"--model {shlex.quote(text['model'])}")
    if text["base_url"]:
        args.append(f"--base-url {shlex.quote(text['base_url'])}")
    if text["max_requests"]:
        args.append(f"--max-requests {text['max_requests']}")
    return " ".join(args)
