"""`ecglm fetch-llm`: local folders are checked and recorded; an unreachable hub is a clear error."""

from __future__ import annotations

import json

import pytest
from tiny_llm import build_tiny_llm

from ecglm.cli import main
from ecglm.core.errors import StageError
from ecglm.models.fetch_llm import check_model_dir, fetch_llm, local_dir_for


def test_local_folder_is_checked_and_recorded(tmp_path):
    model = build_tiny_llm(tmp_path / "tiny")
    manifest = tmp_path / "llm.json"
    assert main(["fetch-llm", str(model), "--manifest", str(manifest)]) == 0
    record = json.loads(manifest.read_text())
    assert record["path"] == str(model.resolve())
    assert "config.json" in record["files"] and any(f.endswith(".safetensors") for f in record["files"])


def test_pickled_weights_are_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(StageError, match="pickled weights pytorch_model.bin"):
        check_model_dir(folder)


def test_unreachable_hub_names_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(StageError, match="PharMolix/BioMedGPT-LM-7B@abc123"):
        fetch_llm("PharMolix/BioMedGPT-LM-7B", tmp_path / "out", revision="abc123")


def test_default_destination_is_pinned_by_revision():
    assert str(local_dir_for("PharMolix/BioMedGPT-LM-7B", "abc")) == "resources/llm/PharMolix--BioMedGPT-LM-7B/abc"
