"""The faults a probe found (issue 15): crafted model folders, sampling rates taken on trust, variant
settings checked late, and weak messages. Each test fails on the behaviour before the fix."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from tiny_llm import build_tiny_llm

from ecglm.cli import describe_os_error, main
from ecglm.core.config import validate_config
from ecglm.core.errors import REDACTED, StageError, register_secret, scrub_secrets
from ecglm.data.ecg_data import check_rate, check_store, open_signals
from ecglm.models.llm import llm_location, load_llm
from ecglm.models.multimodal import ECGLM, build_encoder
from ecglm.text.prompts import ECG_TOKEN

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------ 1. a model folder runs no code
@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny")


@pytest.fixture(scope="module")
def aligned(llm_dir, tmp_path_factory) -> Path:
    """A genuine aligned model folder (a small pipeline encoder) to tamper with."""
    from ecglm.models.encoder import ResNet1d18

    llm, tokenizer = load_llm(llm_dir, dtype="float32")
    torch.manual_seed(0)
    model = ECGLM(ResNet1d18(n_classes=5, base_width=4), llm, tokenizer.convert_tokens_to_ids(ECG_TOKEN))
    return model.save(tmp_path_factory.mktemp("aligned") / "model")


def tampered(aligned: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "crafted"
    folder.mkdir()
    config = json.loads((aligned / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((aligned / "model.safetensors").read_bytes())
    return folder


def test_a_crafted_encoder_target_writes_no_file(aligned, llm_dir, tmp_path):
    victim = tmp_path / "written-by-the-folder.txt"

    def edit(config):
        config["encoder"]["target"] = "ecglm.core.atomic:write_text_atomic"
        config["encoder"]["kwargs"] = {"path": str(victim), "text": "pwned"}

    folder = tampered(aligned, tmp_path, edit)
    llm, tokenizer = load_llm(llm_dir, dtype="float32")
    with pytest.raises(StageError, match=r"config\.json: field encoder\.target 'ecglm\.core\.atomic:write_text_atomic' is not a known encoder"):
        ECGLM.load(folder, llm, tokenizer=tokenizer)
    assert not victim.exists()


def test_a_crafted_folder_cannot_turn_on_remote_code(aligned, llm_dir, tmp_path):
    """The probe's second case: the encoder 'target' named load_llm with trust_remote_code true, over a
    folder holding Python: nothing runs, and the message names the field."""
    code_dir = tmp_path / "remote"
    code_dir.mkdir()
    marker = tmp_path / "remote-code-ran"
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (code_dir / name).write_bytes((llm_dir / name).read_bytes())
    (code_dir / "modeling_x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (code_dir / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": {"AutoConfig": "modeling_x.C"}}))

    def edit(config):
        config["encoder"]["target"] = "ecglm.models.llm:load_llm"
        config["encoder"]["kwargs"] = {"name_or_path": str(code_dir), "trust_remote_code": True}

    folder = tampered(aligned, tmp_path, edit)
    llm, tokenizer = load_llm(llm_dir, dtype="float32")
    with pytest.raises(StageError, match=r"field encoder\.target 'ecglm\.models\.llm:load_llm' is not a known encoder"):
        ECGLM.load(folder, llm, tokenizer=tokenizer)
    assert not marker.exists()


def test_encoder_kwargs_are_only_the_constructor_arguments_as_plain_values():
    base = {"target": "ecglm.encoder:ResNet1d18"}
    with pytest.raises(StageError, match=r"field encoder\.kwargs\.evil is not an argument"):
        build_encoder({**base, "kwargs": {"evil": 1}}, where="x/config.json")
    with pytest.raises(StageError, match=r"field encoder\.kwargs\.base_width must be an integer in \[1, 1024\]"):
        build_encoder({**base, "kwargs": {"base_width": {"nested": 1}}}, where="x/config.json")
    for bad in (-1, True, 10**6, 2.5):  # a bool is no width; a huge one would exhaust the memory
        with pytest.raises(StageError, match=r"field encoder\.kwargs\.base_width must be an integer"):
            build_encoder({**base, "kwargs": {"base_width": bad}}, where="x/config.json")
    assert build_encoder({**base, "kwargs": {"base_width": 2, "dilation": 2}}).dilation == 2


def test_a_crafted_projector_kind_is_named(aligned, llm_dir, tmp_path):
    folder = tampered(aligned, tmp_path, lambda c: c["projector"].update(kind="os.system"))
    llm, tokenizer = load_llm(llm_dir, dtype="float32")
    with pytest.raises(StageError, match=r"field projector\.kind 'os\.system' is not one of"):
        ECGLM.load(folder, llm, tokenizer=tokenizer)


def test_the_genuine_folder_still_loads(aligned, llm_dir):
    llm, tokenizer = load_llm(llm_dir, dtype="float32")
    assert ECGLM.load(aligned, llm, tokenizer=tokenizer).encoder.base_width == 4


# ------------------------------------------------------------------------ 2. the sampling rate is checked
def write_records(path: Path, fs: int, n: int, t: int) -> Path:
    """A records.parquet with ecglm prepare's signals metadata."""
    from ecglm.data.prepare import _write_table

    table = pa.table({"ecg_id": pa.array(range(1, n + 1), pa.int64())})
    _write_table(table, path, {"fs": fs, "signals": f"signals_{fs}.npy", "shape": [n, 12, t]})
    return path


def test_measure_refuses_a_100_hz_array_read_at_500_hz(tmp_path):
    from ecglm.data.measure import measure_array

    signals = np.zeros((2, 12, 1000), np.int16)  # 10 s at 100 Hz
    np.save(tmp_path / "x.npy", signals)
    records = tmp_path / "records.parquet"
    pq.write_table(pa.table({"ecg_id": [1, 2]}), records)
    with pytest.raises(StageError, match=r"1000 samples per lead is 2 s at 500 Hz .*--fs.*5000 samples were expected \(it fits 100 Hz\)"):
        measure_array(tmp_path / "x.npy", records, tmp_path / "out.parquet", fs=500)
    assert not (tmp_path / "out.parquet").exists()
    renamed = tmp_path / "signals_500.npy"
    np.save(renamed, signals)
    with pytest.raises(StageError, match=r"at 500 Hz \(the rate given by its file name\)"):
        measure_array(renamed, records, tmp_path / "out.parquet")
    with pytest.raises(StageError, match=r"stated as 100 Hz by --fs, 500 Hz by its file name"):
        measure_array(renamed, records, tmp_path / "out.parquet", fs=100)


def test_the_rate_recorded_by_prepare_must_match(tmp_path):
    np.save(tmp_path / "signals_100.npy", np.zeros((3, 12, 1000), np.int16))
    records = write_records(tmp_path / "records.parquet", fs=500, n=3, t=1000)
    with pytest.raises(StageError, match=r"100 Hz by its file name, 500 Hz by .*records\.parquet \(ecglm prepare\)"):
        check_store(records, 3, tmp_path / "signals_100.npy")
    good = write_records(tmp_path / "good.parquet", fs=100, n=3, t=1000)
    assert check_store(good, 3, tmp_path / "signals_100.npy") == (3, 1000)


def test_every_stage_that_opens_signals_checks_the_rate(tmp_path):
    np.save(tmp_path / "signals_500.npy", np.zeros((1, 12, 1000), np.int16))
    with pytest.raises(StageError, match="5000 samples were expected"):
        open_signals(tmp_path / "signals_500.npy")  # train-encoder, align, evaluate and baselines open through it
    assert check_rate(tmp_path / "anything.npy", 1000) is None  # nothing states a rate: nothing to check
    assert check_rate(tmp_path / "signals_100.npy", 1000) == 100


# ------------------------------------------------------------------------ 3. variants validated up front
@pytest.mark.parametrize(
    "variant, key",
    [
        ({"align": {"projectr": "linear"}}, "variants.bad.align.projectr"),
        ({"align": {"projector": "linearr"}}, "variants.bad.align.projector"),
        ({"align": {"epochs": 0}}, "variants.bad.align.epochs"),
    ],
)
def test_a_variants_settings_are_validated_with_the_config(variant, key):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["variants"]["bad"] = variant
    with pytest.raises(StageError, match=f"config key '{key}'"):
        validate_config(config)


def test_negative_epochs_are_refused():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["encoder"]["epochs"] = -3
    with pytest.raises(StageError, match="config key 'encoder.epochs': -3 is less than the minimum of 1"):
        validate_config(config)


@pytest.mark.slow  # a subprocess: runs in CI; -m 'not slow' skips it
@pytest.mark.parametrize(
    "override, named",
    [({"projector": "linearr"}, "variants.typo.align.projector"),
     ({"warmup_epochs": 30}, "variants.typo.align' (merged over 'align'): align config: warmup_epochs must be in [0, epochs]")],
)  # fmt: skip
def test_snakemake_dry_run_fails_on_a_bad_variant(tmp_path, override, named):
    config = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    config.setdefault("variants", {})["typo"] = {"align": override}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "bad.yaml"), "--cores", "1", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert named in proc.stdout + proc.stderr


# ------------------------------------------------------------------------ 4. clear messages
HF_TOKEN_SHAPE = "hf_" + "Zq3" * 12  # 36 characters after hf_, as Hugging Face tokens are


def test_secrets_are_scrubbed_from_messages(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_KEY", "q8Zr-unusual-shape-123")
    register_secret("from-a-variable-of-any-name")
    text = (
        "{'Authorization': 'Bearer abc.def-ghi'} Authorization: Basic dXNlcjpwYXNz api_key=k1234567 "
        "sk-proj-ABCDEFGH12345678abcd " + HF_TOKEN_SHAPE + " and q8Zr-unusual-shape-123, "
        '{\\"x-api-key\\": \\"abcd1234efgh\\"} password=hunter22 from-a-variable-of-any-name'
    )
    scrubbed = scrub_secrets(text)
    for secret in ("abc.def-ghi", "dXNlcjpwYXNz", "k1234567", "sk-proj-ABCDEFGH12345678abcd", HF_TOKEN_SHAPE,
                   "q8Zr-unusual-shape-123", "abcd1234efgh", "hunter22", "from-a-variable-of-any-name"):  # fmt: skip
        assert secret not in scrubbed
    assert scrubbed.count(REDACTED) == 9


@pytest.mark.parametrize("text", ["the <ecg> token: id 5", "pad token: '<pad>'", "authorization: denied by the server",
                                  "hf_normalized", "sk-learn-is-not-a-key", "ecg_token_id 5, max_new_tokens=48"])
def test_ordinary_text_is_not_scrubbed(text):
    assert scrub_secrets(text) == text


def test_a_logged_traceback_is_scrubbed(capsys):
    import logging

    from ecglm.core.errors import SecretFilter

    logger = logging.getLogger("ecglm.test.scrub")
    handler = logging.StreamHandler()
    handler.addFilter(SecretFilter())
    logger.addHandler(handler)
    try:
        raise RuntimeError("request failed: Authorization: Bearer abcdefgh12345678")
    except RuntimeError:
        logger.error("failed", exc_info=True)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "RuntimeError" in err and "abcdefgh12345678" not in err and REDACTED in err


def test_a_mistyped_local_llm_folder_is_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resources").mkdir()
    for name in ("llmx", "./llm", "resources/llmx", "results/demo/llm", str(tmp_path / "nope")):
        with pytest.raises(StageError, match=r"no such folder .*org/name .*hf:NAME"):
            llm_location(name)
    assert llm_location("HuggingFaceTB/SmolLM2-135M-Instruct") == (None, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert llm_location("hf:gpt2") == (None, "gpt2")
    assert llm_location("hf:resources/real-hub-model") == (None, "resources/real-hub-model")  # past a same-named folder


def test_an_llm_is_recorded_as_named_and_home_folders_load(llm_dir, tmp_path, monkeypatch):
    from ecglm.models.llm import llm_source

    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "tiny").symlink_to(llm_dir, target_is_directory=True)
    monkeypatch.setenv("HOME", str(home))
    model, _ = load_llm("~/models/tiny", dtype="float32")
    assert llm_source(model).name_or_path == "~/models/tiny"  # as given: what a saved model reloads it by
    assert llm_location(llm_source(model).name_or_path)[0] == home / "models" / "tiny"


def test_an_empty_llm_folder_is_named_with_what_it_lacks(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageError) as info:
        load_llm(tmp_path / "empty")
    assert str(info.value) == f"{tmp_path / 'empty'}: no config.json: not a Hugging Face model folder (it is empty)"


def database_csv(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    from ecglm.data.physionet import DATABASE_COLUMNS

    source = tmp_path / "ptbxl"
    source.mkdir(parents=True)
    (source / "ptbxl_database.csv").write_bytes(text.replace("HEADER", ",".join(DATABASE_COLUMNS)).encode(encoding))
    return source


def test_prepare_names_the_separator_and_the_encoding(tmp_path):
    from ecglm.data.physionet import DATABASE_COLUMNS
    from ecglm.data.prepare import _database_rows

    semi = database_csv(tmp_path / "a", "HEADER\n".replace("HEADER", ";".join(DATABASE_COLUMNS)))
    with pytest.raises(StageError, match=r"missing column\(s\) .*separated by semicolons, not commas"):
        list(_database_rows(semi / "ptbxl_database.csv"))
    latin = database_csv(tmp_path / "b", "HEADER\n" + ",".join(["1"] + ["über"] * (len(DATABASE_COLUMNS) - 1)) + "\n",
                         encoding="latin-1")  # fmt: skip
    with pytest.raises(StageError, match=r"not UTF-8 text \(byte b'\\xfc' at offset \d+\)"):
        list(_database_rows(latin / "ptbxl_database.csv"))
    bom = database_csv(tmp_path / "c", "\ufeffHEADER\n" + ",".join(["7"] * len(DATABASE_COLUMNS)) + "\n")
    rows = list(_database_rows(bom / "ptbxl_database.csv"))
    assert rows[0][1]["ecg_id"] == "7"  # a byte-order mark is read past


def test_an_output_path_under_a_file_is_one_line(tmp_path, capsys):
    np.save(tmp_path / "signals_100.npy", np.zeros((1, 12, 1000), np.int16))
    pq.write_table(pa.table({"ecg_id": [1]}), tmp_path / "records.parquet")
    (tmp_path / "afile").write_text("x")
    rc = main(["measure", "--signals", str(tmp_path / "signals_100.npy"), "--records", str(tmp_path / "records.parquet"),
               "--out", str(tmp_path / "afile" / "features.parquet"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1].startswith("ecglm measure: error: ") and "afile" in err[-1] and "is a file (a folder is needed at this path" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_a_full_disk_is_one_line():
    line = describe_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out.parquet"))
    assert line == "/data/out.parquet: No space left on device (free some space or point the output elsewhere)"


def test_two_downloads_into_one_folder_are_refused(tmp_path):
    from ecglm.core.atomic import exclusive_lock
    from ecglm.data.download import LOCK_FILE, download_project

    dest = tmp_path / "dest"
    dest.mkdir()
    with exclusive_lock(dest / LOCK_FILE, "downloading"):
        with pytest.raises(StageError, match=rf"another process \(pid {os.getpid()}\) is downloading into"):
            download_project("ptbxl", base_url="http://127.0.0.1:9/", dest=dest, retries=0)
    with pytest.raises(StageError) as info:  # the lock is free again: the download itself runs (and fails here)
        download_project("ptbxl", base_url="http://127.0.0.1:9/", dest=dest, retries=0, timeout_s=2, progress=False)
    assert "another process" not in str(info.value)


def test_a_pickled_resume_checkpoint_is_refused_as_untrusted(tmp_path):
    from safetensors.torch import save_file

    from ecglm.train.loop import RESUME_HISTORY, RESUME_LATEST, RESUME_STATE, RESUME_WEIGHTS, load_checkpoint

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "resume" / "step-1"
    folder.mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, str(folder / RESUME_WEIGHTS))
    torch.save({"format": "ecglm-align-resume/1", "payload": Payload()}, folder / RESUME_STATE)
    (folder / RESUME_HISTORY).write_text("[]")
    (tmp_path / "resume" / RESUME_LATEST).write_text("step-1\n")
    with pytest.raises(StageError) as info:
        load_checkpoint(tmp_path / "resume")
    assert "not trusted" in str(info.value) and "weights_only" not in str(info.value)
    assert not marker.exists()


def test_a_corrupt_resume_checkpoint_is_not_called_untrusted(tmp_path):
    from safetensors.torch import save_file

    from ecglm.train.loop import RESUME_HISTORY, RESUME_LATEST, RESUME_STATE, RESUME_WEIGHTS, load_checkpoint

    folder = tmp_path / "resume" / "step-1"
    folder.mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, str(folder / RESUME_WEIGHTS))
    (folder / RESUME_STATE).write_bytes(b"\x80\x02garbage that is no checkpoint")
    (folder / RESUME_HISTORY).write_text("[]")
    (tmp_path / "resume" / RESUME_LATEST).write_text("step-1\n")
    with pytest.raises(StageError) as info:
        load_checkpoint(tmp_path / "resume")
    assert "not trusted" not in str(info.value) and "delete" in str(info.value)
