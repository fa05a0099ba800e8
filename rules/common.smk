# Paths and helpers shared by the rules. Everything is derived from the validated config.

import glob
import json
import os
import shlex

from ecglm.text.prompts import TASK_LABEL_COLUMNS, TASKS
from ecglm.core.config import mets_llm, run_llms, variant_llm, variant_seed
from ecglm.core.errors import StageError
from ecglm.models.fetch_llm import gguf_dir_for, local_dir_for
from ecglm.models.gguf import resolve_gguf
from ecglm.data.ecgqa_download import packaged_manifest, read_manifest
from ecglm.data.physionet import PROJECTS
from ecglm.text.guidelines import DEFAULT_GUIDELINES
from ecglm.text.translate.glossary import DEFAULT_GLOSSARY_DIR


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
    DEMO_CONVERSATIONS = f"{DEMO_DIR}/healthcaremagic/HealthCareMagic-100k.json"  # its HealthCareMagic look-alike
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


# null = the rules shipped in the package; a user's own file wins
GUIDELINES = repo_path(config["text"]["guidelines"]) if config["text"]["guidelines"] else str(DEFAULT_GUIDELINES)

RESOURCES = config["resources"]
# A torch job is passed the number of threads the config asks for (--threads {params.threads}), not the
# rule's {threads}: Snakemake lowers {threads} (and OMP_NUM_THREADS) to --cores, and a floating-point
# reduction splits its work by the number of threads, so the same config would give other bits under
# --cores 1 (the ci encoder's weights: one SHA-256 with 1 thread, another with 2, on one machine).
ALIGN_THREADS = RESOURCES["align_threads"] or RESOURCES["threads"]
BASELINE_THREADS = RESOURCES["baseline_threads"] or RESOURCES["threads"]
# The software environment of every rule (snakemake --software-deployment-method conda).
ENV = "../environment.yml"


def cpu_mem_mb(factor=1.0):
    """Memory of a CPU job, doubled on each retry (resources: mem_mb=cpu_mem_mb())."""
    return lambda wildcards, attempt: int(RESOURCES["mem_mb"] * factor * 2 ** (attempt - 1))


def llm_weights_mb(folder):
    """Size (MB) of an LLM's safetensors weights on disk; 0 while they are not there yet."""
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(folder, "*.safetensors"))) / 1e6


def llm_mem_mb(factor=1.0, processes=1, variant=None):
    """Memory of a job that loads its variant's LLM: cpu_mem_mb(factor)'s plus twice the LLM's weights per
    process (each loads the whole LLM into host memory before moving it to its GPU; in float32 on a CPU),
    doubled on each retry. Snakemake evaluates it again when the job is scheduled, after fetch-llm or
    build-demo-llm wrote the weights (a 7B model in 16 bits: ~13.5 GB on disk, so ~27 GB more). The LLM is
    that of the job's variant wildcard, or of ``variant`` when given."""
    return lambda wildcards, attempt: int(
        (RESOURCES["mem_mb"] * factor
         + 2 * processes * llm_weights_mb(LLM_DIRS[VARIANT_LLMS[variant or wildcards.variant]]))
        * 2 ** (attempt - 1)
    )


#: The `gpu` resource of a GPU stage that runs one process (all but align, which runs one per GPU).
ONE_GPU = min(RESOURCES["gpus"], 1)


def align_launcher():
    """What runs `align`: plain `ecglm` with 0 or 1 GPU; with resources.gpus > 1, torchrun starting one
    DDP process per GPU of the job (`--standalone`: one node, a free rendezvous port per job, so jobs
    sharing a node do not collide). The process count is the job's `gpu` resource, formatted when the
    job runs. The signals go in as --signals-npy: torchrun's parser takes --signals for its own option."""
    if RESOURCES["gpus"] > 1:
        return "torchrun --standalone --nproc-per-node {resources.gpu} -m ecglm"
    return "ecglm"


# ---------------------------------------------------------------------------------------- the model
VARIANTS = config["variants"]
EVALUATE = config["evaluate"]
TASK_NAMES = EVALUATE["tasks"]
MODES = EVALUATE["modes"]
BASELINES = EVALUATE["baselines"]
# Variants that train their own aligned model (the others evaluate another variant's, or none).
ALIGNED = [v for v, s in VARIANTS.items() if s["align_from"] is None and s["prompt"] != "text-only"]

# Every LLM of the run by name (the llm section is "base"), and the one each variant uses.
LLMS = run_llms(config)
VARIANT_LLMS = {variant: variant_llm(config, variant) for variant in VARIANTS}
METS_LLM = mets_llm(config)  # the text encoder of the llm-mets baseline (evaluate.mets_variant's LLM)
USED_LLMS = sorted(set(VARIANT_LLMS.values()))
DEMO_LLM = any(LLMS[name]["source"] == "demo" for name in USED_LLMS)


def check_stage_settings():
    """Build every stage's typed settings as its job will (range and cross-field checks included, e.g.
    align.warmup_epochs <= align.epochs), so that `snakemake -n` stops on a bad value, not the job."""
    from ecglm.core.errors import StageError
    from ecglm.train.align import AlignConfig
    from ecglm.train.demo_llm import DemoLLMConfig
    from ecglm.train.finetune import ChatFinetuneConfig, FinetuneConfig
    from ecglm.train.mets import METSConfig
    from ecglm.train.simclr import SimCLRConfig
    from ecglm.train.train_encoder import EncoderConfig

    seed = {"seed": config["seed"]}
    checks = [(EncoderConfig, config["encoder"], "config key 'encoder'")]
    if DEMO_LLM:
        checks.append((DemoLLMConfig, config["demo_llm"], "config key 'demo_llm'"))
    for variant in ALIGNED:
        merged = {**config["align"], **VARIANTS[variant]["align"]}
        checks.append((AlignConfig, merged, f"config key 'variants.{variant}.align' (merged over 'align')"))
    if config["qa"]["source"] and config["qa"]["align_from"]:
        checks.append((FinetuneConfig, config["finetune_qa"], "config key 'finetune_qa'"))
    if config["chat"]["align_from"]:
        checks.append((ChatFinetuneConfig, config["finetune_chat"], "config key 'finetune_chat'"))
    if {"simclr", "random-probe"} & set(BASELINES):
        checks.append((SimCLRConfig, config["simclr"], "config key 'simclr'"))
    if {"mets", "llm-mets"} & set(BASELINES):
        checks.append((METSConfig, config["mets"], "config key 'mets'"))
    for cls, settings, where in checks:
        try:
            cls.from_dict({**settings, **seed}, source=where)
        except StageError as err:
            message = str(err)
            raise WorkflowError(message if message.startswith(where) else f"{where}: {message}") from None


check_stage_settings()


def llm_folder(spec):
    """Where an LLM's model folder is: the demo LLM in the run, a hub model or GGUF file under resources/llm/
    (shared by runs), a local save_pretrained folder where it is (checked by fetch-llm, not copied)."""
    if spec["source"] == "demo":
        return f"{RESULTS}/llm"
    if spec["source"] == "gguf":
        found = resolve_gguf(spec["gguf_path"], spec["gguf_package"], spec["gguf_file"], spec["sha256"])
        return str(gguf_dir_for(found.path.name, found.sha256))
    if os.path.isdir(spec["name"]):
        return spec["name"]
    return str(local_dir_for(spec["name"].removeprefix("hf:"), spec["revision"]))


def _llm_folders():
    try:
        return {name: llm_folder(LLMS[name]) for name in USED_LLMS}
    except StageError as err:
        raise WorkflowError(str(err)) from None


LLM_DIRS = _llm_folders()
# What a job that loads an LLM waits for: the demo LLM's config, or the manifest fetch-llm writes last.
LLM_INPUTS = {
    name: f"{RESULTS}/llm/config.json" if LLMS[name]["source"] == "demo" else f"{RESULTS}/llms/{name}.json"
    for name in USED_LLMS
}
FETCHED_LLMS = [name for name in USED_LLMS if LLMS[name]["source"] != "demo"]


def fetch_llm_args(name):
    """`ecglm fetch-llm` options of the LLM ``name`` (a hub model, a local folder or a GGUF file)."""
    spec, out = LLMS[name], LLM_DIRS[name]
    if spec["source"] == "gguf":
        args = [f"--gguf {shlex.quote(spec['gguf_path'])}"] if spec["gguf_path"] else [
            f"--gguf-package {shlex.quote(spec['gguf_package'])}", f"--gguf-file {shlex.quote(spec['gguf_file'])}"
        ]
        args += [f"--sha256 {spec['sha256']}"] if spec["sha256"] else []
        args += [f"--label {shlex.quote(spec['label'])}"] if spec["label"] else []
        return " ".join(args + [f"--out {shlex.quote(out)}"])
    args = [shlex.quote(spec["name"]), f"--out {shlex.quote(out)}"]
    args += [f"--revision {shlex.quote(spec['revision'])}"] if spec["revision"] else []
    args += ["--trust-remote-code"] if spec["trust_remote_code"] else []
    return " ".join(args)


def set_args(mapping):
    """`--set key=value` options (values in YAML flow syntax) for a dataclass-configured stage."""
    return " ".join(shlex.quote(f"--set={key}={json.dumps(value)}") for key, value in mapping.items())


def pairs_dir(variant):
    """The training samples a variant aligns on: expanded, or not (the no-expansion ablation)."""
    return f"{RESULTS}/pairs" if VARIANTS[variant]["expansion"] else f"{RESULTS}/pairs-noexp"


def aligned_model(variant):
    """The aligned model a variant is evaluated with (its own, or that of align_from)."""
    source = VARIANTS[variant]["align_from"] or variant
    return f"{RESULTS}/align/{source}/model.safetensors"


def eval_outputs():
    outputs = [
        f"{RESULTS}/eval/{variant}/{task}-{mode}.json"
        for variant in VARIANTS for task in TASK_NAMES for mode in MODES
    ]
    outputs += [f"{RESULTS}/eval/{kind}/{task}-{kind}.json" for kind in BASELINES for task in TASK_NAMES]
    return outputs


# The variant and scoring mode whose answers the report's figures show: full (else the first aligned
# variant) in the first of evaluate.modes
REPORT_VARIANT = "full" if "full" in VARIANTS else (ALIGNED or list(VARIANTS))[0]
REPORT_MODE = MODES[0]

QA = config["qa"]


# Where `ecglm download ecgqa` puts ECG-QA (qa.source: download): the pinned commit's folder.
ECGQA_DOWNLOAD_DIR = f"resources/ecgqa/{read_manifest(packaged_manifest())['commit']}"


def qa_folder():
    """The ECG-QA folder that qa-data reads: the demo world's, the downloaded one, or the user's (qa.source)."""
    if QA["source"] == "demo":
        return f"{DEMO_DIR}/ecg-qa"
    return ECGQA_DOWNLOAD_DIR if QA["source"] == "download" else QA["source"]


# The conversation fine-tuning (rules/chat.smk): the aligned variant it starts from and its inputs.
CHAT = config["chat"]
CHAT_FROM = CHAT["align_from"]
CHAT_QA = bool(QA["source"]) and CHAT["qa_turns"] > 0


def chat_conversations():
    """The conversation files: the user's (chat.conversations) and, on the demo world, its look-alike."""
    files = list(CHAT["conversations"])
    if DATA_SOURCE == "demo":
        files.append(DEMO_CONVERSATIONS)
    return files


def final_outputs():
    """What `snakemake` (rule all) builds with this config."""
    return [
        *([f"{RESULTS}/qa/data/summary.json"] if QA["source"] else []),
        *([f"{RESULTS}/tables/qa.md"] if QA["source"] and QA["align_from"] else []),
        *([f"{RESULTS}/chat/MODEL_CARD.md"] if config["chat"]["align_from"] else []),
        f"{RESULTS}/data/features_measured.parquet",
        f"{RESULTS}/text/reports_en.parquet",
        f"{RESULTS}/encoder/pretrained/metrics.json",
        f"{RESULTS}/tables/classification.md",
        f"{RESULTS}/tables/classification.csv",
        f"{RESULTS}/tables/ablation.md",
        f"{RESULTS}/report/curves.svg",
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


def align_sets(wildcards):
    variant = VARIANTS[wildcards.variant]
    settings = {**config["align"], **variant["align"], "seed": variant_seed(config, wildcards.variant)}
    llm = VARIANT_LLMS[wildcards.variant]
    settings["llm"] = LLM_DIRS[llm]
    settings["trust_remote_code"] = LLMS[llm]["trust_remote_code"]
    settings["encoder_dir"] = f"{RESULTS}/encoder/pretrained" if variant["encoder_pretrain"] else None
    return set_args(settings)


def zero_shot_inputs(wildcards):
    variant = VARIANTS[wildcards.variant]
    inputs = {
        "records": f"{RESULTS}/data/records.parquet",
        "signals": f"{RESULTS}/data/signals_{FS}.npy",
        "findings": f"{RESULTS}/text/findings.parquet",
        "llm": LLM_INPUTS[VARIANT_LLMS[wildcards.variant]],
    }
    if variant["prompt"] != "text-only":
        inputs["model"] = aligned_model(wildcards.variant)
    return inputs


def zero_shot_args(wildcards, input):
    variant = VARIANTS[wildcards.variant]
    llm = VARIANT_LLMS[wildcards.variant]
    args = [f"--prompt {variant['prompt']}", f"--control {variant['control']}", f"--llm {shlex.quote(LLM_DIRS[llm])}"]
    if variant["max_test_ecgs"]:
        args.append(f"--max-test-ecgs {variant['max_test_ecgs']} --subset-seed {config['seed']}")
    if "model" in input.keys():
        args.append(f"--align {shlex.quote(os.path.dirname(input.model))}")
    return " ".join(args)


#: The METS baselines and the text encoder each is trained with (rule train_mets's wildcard).
METS_TEXT = {"mets": "tfidf", "llm-mets": "llm"}


# In a run that builds the demo LLM, its config file; else nothing. An ordering input for the jobs that
# must not start before that build: the build (2 threads) heads the longest path, and Snakemake's greedy
# scheduler would start a 1-thread job on the first free core, and the next on the next, leaving the build
# to wait for both cores (measured: a default run of 41 instead of 29 minutes, the build started 10 minutes
# late behind SmolLM2's alignment). Such a job never reads the demo LLM.
DEMO_LLM_BUILT = [f"{RESULTS}/llm/config.json"] if DEMO_LLM else []
# The baselines' trainings wait for it when they run on fewer threads than the build (resources.baseline_threads).
BASELINE_AFTER = DEMO_LLM_BUILT if BASELINE_THREADS < RESOURCES["threads"] else []


def after_demo_llm(wildcards):
    """The alignment of a variant on another LLM waits for the demo LLM's build (:data:`DEMO_LLM_BUILT`)."""
    return [] if LLMS[VARIANT_LLMS[wildcards.variant]]["source"] == "demo" else DEMO_LLM_BUILT


def mets_inputs(wildcards):
    inputs = {"records": f"{RESULTS}/data/records.parquet", "reports": f"{RESULTS}/text/reports_en.parquet",
              "signals": f"{RESULTS}/data/signals_{FS}.npy"}
    if wildcards.text == "llm":
        inputs["llm"] = LLM_INPUTS[METS_LLM]
    inputs["after"] = BASELINE_AFTER
    return inputs


def mets_mem_mb(wildcards, attempt):
    """cpu_mem_mb's, plus twice the LLM's weights when the LLM is the text encoder (as llm_mem_mb)."""
    llm = 2 * llm_weights_mb(LLM_DIRS[METS_LLM]) if wildcards.text == "llm" else 0
    return int((RESOURCES["mem_mb"] + llm) * 2 ** (attempt - 1))


def mets_sets(wildcards):
    settings = {**config["mets"], "seed": config["seed"], "text_encoder": wildcards.text}
    if wildcards.text == "llm":
        settings["llm"] = LLM_DIRS[METS_LLM]
    return set_args(settings)


def baseline_inputs(wildcards):
    inputs = {"records": f"{RESULTS}/data/records.parquet"}
    if wildcards.kind == "supervised":
        inputs["signals"] = f"{RESULTS}/data/signals_{FS}.npy"
        inputs["encoder"] = f"{RESULTS}/encoder/supervised-{wildcards.task}/model.safetensors"
    elif wildcards.kind in ("simclr", "random-probe"):  # random-probe reads only the encoder's shape (config)
        inputs["signals"] = f"{RESULTS}/data/signals_{FS}.npy"
        inputs["encoder"] = f"{RESULTS}/encoder/simclr/" + ("model.safetensors" if wildcards.kind == "simclr" else "config.yaml")
    elif wildcards.kind in METS_TEXT:
        inputs["signals"] = f"{RESULTS}/data/signals_{FS}.npy"
        inputs["encoder"] = f"{RESULTS}/encoder/mets-{METS_TEXT[wildcards.kind]}/model.safetensors"
    return inputs


def baseline_args(wildcards, input):
    if wildcards.kind == "majority":
        return ""
    args = f"--signals {shlex.quote(input.signals)} --encoder {shlex.quote(os.path.dirname(input.encoder))}"
    if wildcards.kind in ("simclr", "random-probe"):
        args += f" --probe-fraction {EVALUATE['probe_fraction']} --seed {config['seed']}"
    return args
