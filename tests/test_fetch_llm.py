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


def test_a_gated_model_says_which_licence_step_to_take_and_never_prints_the_token(tmp_path):
    """A Hub that answers 403 "GatedRepo" (as for meta-llama/Llama-2-7b-chat-hf without access), on loopback."""
    import http.server
    import os
    import subprocess
    import sys
    import threading

    class Gated(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server name
            body = b'{"error": "Access to model meta-llama/Llama-2-7b-chat-hf is restricted."}'
            self.send_response(403)
            self.send_header("X-Error-Code", "GatedRepo")
            self.send_header("X-Error-Message", "Access to model meta-llama/Llama-2-7b-chat-hf is restricted.")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gated)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = "hf_secretTOKEN1234567890abcdef"
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "HF_TOKEN": token,
           "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "5"}  # fmt: skip
    env.pop("HF_HUB_OFFLINE", None)
    try:
        proc = subprocess.run([sys.executable, "-m", "ecglm", "fetch-llm", "meta-llama/Llama-2-7b-chat-hf",
                               "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        server.shutdown()
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "the model is gated (HF_TOKEN is set but this account has no access)" in output
    assert "https://huggingface.co/meta-llama/Llama-2-7b-chat-hf" in output
    assert token not in output
