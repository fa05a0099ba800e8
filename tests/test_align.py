"""`ecglm align`: alignment training against a frozen tiny LLM, on CPU.

A tiny random Llama (tests/tiny_llm.py), a ResNet-18 1D encoder of base width 4, and a small pairs folder
written with ecglm.text.expand's own row builder and shard writer, beside an int16 signals array.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from tiny_llm import build_tiny_llm

import ecglm.models.llm
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS, N_LEADS
from ecglm.models.tokenize_pairs import IGNORE_INDEX
from ecglm.text.expand import Expansion, ShardWriter, sample_rows
from ecglm.train.align import AlignConfig, align
from ecglm.train.loop import BestEpoch, epoch_order, lr_factor, micro_batches, step_indices
from ecglm.train.pairs_data import PairsDataset, collate_pairs

T = 64  # samples per lead
REPO = Path(__file__).resolve().parent.parent

REPORTS = ["sinus rhythm, normal ecg", "atrial fibrillation", "left ventricular hypertrophy", "st depression"]
FINDINGS = ["st elevation", "q wave", "inverted t wave", "normal"]


def sharpen(folder: Path) -> None:
    """Scale the tiny LLM's attention value/output projections and LM head by 10: in the random model the
    token embeddings (std 1) swamp the attention output (std 0.02 weights), so no input token, the ECG's
    included, could move the loss by more than 1e-4. Still a frozen LLM; only its random init differs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
        for layer in model.model.layers:
            layer.self_attn.v_proj.weight.mul_(10.0)
            layer.self_attn.o_proj.weight.mul_(10.0)
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """``llm`` folder, ``pairs`` folder (train: 6 ECGs x 2 samples, val: 3 ECGs), ``signals`` .npy."""
    root = tmp_path_factory.mktemp("align")
    llm = build_tiny_llm(root / "llm")
    sharpen(llm)
    n_ecg = 9
    rng = np.random.default_rng(0)
    t = np.arange(T) / T
    signals = np.zeros((n_ecg, N_LEADS, T), dtype=np.int16)
    for i in range(n_ecg):  # the report class decides the wave shape, so the ECG carries information
        kind = i % len(REPORTS)
        wave = np.sin(2 * np.pi * (kind + 1) * t) * 800 + rng.normal(0, 50, (N_LEADS, T))
        signals[i] = wave.astype(np.int16)
    np.save(root / "signals.npy", signals)  # T = 64: a name that states no rate (a signals_<fs>.npy must be 10 s)
    writers = {split: ShardWriter(root / "pairs" / split, split, 5, set(range(1, n_ecg + 1))) for split in ("train", "val", "test")}
    for i in range(n_ecg):
        split = "train" if i < 6 else "val"
        row = {
            "ecg_id": i + 1, "age": 40 + i, "age_over_89": False, "sex": "male" if i % 2 else "female",
            "height": None, "weight": None, "split": split, "signal_row": i,
            "report": REPORTS[i % len(REPORTS)], "general": "prolonged qt" if i % 3 == 0 else None,
        }  # fmt: skip
        for j, lead in enumerate(LEADS):
            row[f"lead_{lead}"] = FINDINGS[(i + j) % len(FINDINGS)] if j % 2 == 0 else None
        writers[split].add(sample_rows(row, Expansion(copies=1, drop_k=(4,)), seed=7))
    for w in writers.values():
        w.close()
    rhythms = [["SR"], ["SR"], ["AFIB"], ["SR"], ["SR", "SARRH"], ["SR"], ["SR"], ["AFIB"], []]
    pl.DataFrame({"ecg_id": list(range(1, n_ecg + 1)), "rhythm": rhythms}).write_parquet(root / "records.parquet")
    return {"llm": llm, "pairs": root / "pairs", "signals": root / "signals.npy", "records": root / "records.parquet"}


def config(world, **kw) -> AlignConfig:
    base = dict(
        llm=str(world["llm"]), dtype="float32", encoder_base_width=4, max_length=256, epochs=4, warmup_epochs=1,
        lr=3e-3, weight_decay=0.0, batch_size=2, grad_accum=2, checkpoint_every=0, seed=3, device="cpu",
    )  # fmt: skip
    base.update(kw)
    return AlignConfig(**base)


def log_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------- data
def test_pairs_dataset_joins_shards_to_signals(world):
    _, tokenizer = ecglm.models.llm.load_llm(world["llm"], dtype="float32")
    data = PairsDataset(world["pairs"], "train", world["signals"], tokenizer, 256)
    assert len(data) == 12  # 6 ECGs, original + 1 copy
    item = data[1]  # the copy of ECG 1: 4 leads dropped
    assert item["signal"].dtype == torch.int16 and item["signal"].shape == (N_LEADS, T)
    assert int(item["lead_mask"].sum()) == N_LEADS - 4
    assert (item["labels"] != IGNORE_INDEX).any()
    batch = collate_pairs([data[0], data[1]], tokenizer.pad_token_id)
    assert batch["signal"].shape == (2, N_LEADS, T) and batch["lead_mask"].shape == (2, N_LEADS)
    assert batch["input_ids"].shape == batch["labels"].shape


def test_pairs_dataset_names_bad_input(world, tmp_path):
    _, tokenizer = ecglm.models.llm.load_llm(world["llm"], dtype="float32")
    with pytest.raises(StageError, match="no part-"):
        PairsDataset(tmp_path, "train", world["signals"], tokenizer, 256)
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((3, N_LEADS, T), dtype=np.int16))
    with pytest.raises(StageError, match="out of range"):
        PairsDataset(world["pairs"], "train", small, tokenizer, 256)
    import polars as pl

    bad = tmp_path / "bad" / "train"
    bad.mkdir(parents=True)
    shard = pl.read_parquet(world["pairs"] / "train" / "part-00000.parquet")
    shard.with_columns(pl.col("text").str.replace("<ecg>", "ECG")).write_parquet(bad / "part-00000.parquet")
    with pytest.raises(StageError, match="00001-c0 does not hold exactly one <ecg>"):
        PairsDataset(tmp_path / "bad", "train", world["signals"], tokenizer, 256)
    data = PairsDataset(world["pairs"], "train", world["signals"], tokenizer, 3)
    with pytest.raises(StageError, match="00001-c0"):
        data[0]


# ------------------------------------------------------------------------------------------- pure parts
def test_best_epoch_keeps_the_lowest_score_and_copies_only_the_winners():
    best, copied = BestEpoch(), []

    def state(epoch):
        copied.append(epoch)
        return {"epoch": epoch}

    for epoch, score in enumerate([3.0, 2.0, 2.0, 2.5, 1.0, 1.5], start=1):
        best.update(score, epoch, lambda e=epoch: state(e))
    assert (best.epoch, best.score, best.state) == (5, 1.0, {"epoch": 5}) and copied == [1, 2, 5]  # a tie keeps epoch 2


def test_schedule_and_data_order():
    assert lr_factor(0, 10, 2) == 0.5 and lr_factor(1, 10, 2) == 1.0
    # no warm-up: the cosine from 1 to 0 that the encoder, SimCLR and METS stages use, 0 after the last step
    assert lr_factor(0, 8, 0) == 1.0 and lr_factor(4, 8, 0) == pytest.approx(0.5) and lr_factor(9, 8, 0) == 0.0
    assert lr_factor(10, 10, 2) == pytest.approx(0.0) and 0 < lr_factor(6, 10, 2) < 1
    a, b = epoch_order(10, 1, 0), epoch_order(10, 1, 1)
    assert sorted(a) == list(range(10)) and not np.array_equal(a, b)
    assert np.array_equal(a, epoch_order(10, 1, 0))
    idx = step_indices(a, 0, 8)
    one = micro_batches(idx, 2, 4, 1, 0)
    two = [micro_batches(idx, 2, 2, 2, r) for r in (0, 1)]
    assert one == [two[0][0], two[1][0], two[0][1], two[1][1]]  # the same micro-batches, split over ranks


def test_config_rejects_unknown_keys_and_types_overrides(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("lr: 1e-3\nbogus: 1\n")
    with pytest.raises(StageError, match="bogus"):
        AlignConfig.from_yaml(path)
    path.write_text("lr: 1e-3\nencoder_dir: null\n")
    cfg = AlignConfig.from_yaml(path).with_overrides(["batch_size=3", "max_steps=5", "freeze_encoder=true"])
    assert (cfg.lr, cfg.batch_size, cfg.max_steps, cfg.freeze_encoder) == (1e-3, 3, 5, True)
    assert AlignConfig().lr == 1e-4 and AlignConfig().grad_accum == 8 and AlignConfig().weight_decay == 0.03
    with pytest.raises(StageError, match="batch_size"):
        cfg.with_overrides(["batch_size=0"])
    with pytest.raises(StageError, match="projector"):
        cfg.with_overrides(["projector=mlp"])
    with pytest.raises(StageError, match="llm must name"):
        align(AlignConfig(), tmp_path, tmp_path / "signals.npy", tmp_path / "out")


def test_worker_processes_do_not_change_the_result(world, tmp_path):
    weights = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        align(config(world, epochs=1, num_workers=workers), world["pairs"], world["signals"], out, progress=False, threads=1)
        weights.append((out / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]


# ------------------------------------------------------------------------------------------- training
def test_short_run_lowers_the_loss_writes_outputs_and_leaves_the_llm_untouched(world, tmp_path, monkeypatch):
    real_load = ecglm.models.llm.load_llm
    loaded = _spy_llm(monkeypatch)
    out = tmp_path / "out"
    # global batch 12 = the whole train split: every step sees the same samples, so losses compare
    cfg = config(world, batch_size=3, grad_accum=4, epochs=12, warmup_epochs=1, lr=1e-2)
    metrics = align(cfg, world["pairs"], world["signals"], out, progress=False, threads=1)

    lines = log_lines(out)
    losses = [entry["train_loss"] for entry in lines]
    assert len(losses) == 12 and metrics["steps"] == 12
    assert max(losses[-3:]) < losses[0] - 0.03, losses
    assert all("val_loss" in entry for entry in lines)  # eval_every 0: every epoch (= every step here)
    assert metrics["final_val_loss"] is not None and metrics["n_train_samples"] == 12 and metrics["n_val_samples"] == 3

    tensors = load_file(str(out / "model.safetensors"))
    assert tensors and all(k.startswith(("encoder.", "projector.")) for k in tensors)
    saved_cfg = json.loads((out / "config.json").read_text())
    assert saved_cfg["base_llm"]["name_or_path"] == str(world["llm"])
    assert AlignConfig.from_yaml(out / "config.yaml") == cfg
    assert json.loads((out / "metrics.json").read_text())["final_train_loss"] == losses[-1]
    check = json.loads((out / "metrics.json").read_text())["ecg_check"]  # 3 val samples of 3 records
    assert check["n_samples"] == check["n_records"] == 3 and check["of_val_samples"] == 3
    assert check["difference"]["mean"] == pytest.approx(check["loss_shuffled"] - check["loss_true"])
    assert check["difference"]["low"] <= check["difference"]["mean"] <= check["difference"]["high"]

    (trained_llm,) = loaded
    fresh, _ = real_load(world["llm"], dtype="float32")
    for name, value in fresh.state_dict().items():
        assert torch.equal(trained_llm.state_dict()[name], value), name
    assert not any(p.requires_grad for p in trained_llm.parameters())

    from ecglm.models.multimodal import ECGLM

    model = ECGLM.load(out, fresh)
    for k, v in model.trainable_state_dict().items():
        assert torch.equal(v, tensors[k]), k


@pytest.mark.parametrize("balanced", [False, True], ids=["permutation", "balanced-draws"])
def test_resume_after_interruption_ends_bit_identical(world, tmp_path, balanced):
    cfg = config(world, epochs=3, checkpoint_every=2)  # 12 samples / global batch 4 = 3 steps/epoch, 9 steps
    if balanced:
        cfg = config(world, epochs=3, checkpoint_every=2, balance_tasks=["rhythm"], encoder_lr_scale=3.0)
    kw = dict(progress=False, threads=1, records=world["records"])
    ref = tmp_path / "ref"
    align(cfg, world["pairs"], world["signals"], ref, tmp_path / "ref-resume", **kw)
    assert not (tmp_path / "ref-resume").exists()  # removed after a successful end

    out, resume = tmp_path / "out", tmp_path / "resume"

    class Killed(Exception):
        pass

    def kill_at_5(step: int) -> None:
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        align(cfg, world["pairs"], world["signals"], out, resume, on_step=kill_at_5, **kw)
    assert (resume / "latest").read_text().strip() == "step-00000004"
    assert not (out / "model.safetensors").exists()
    state = torch.load(resume / "step-00000004" / "state.pt", weights_only=True)
    assert state["step"] == 4 and state["epoch"] == 1 and state["position"] == 1  # next: epoch 1 (0-based), step 1 of 3

    align(cfg, world["pairs"], world["signals"], out, resume, **kw)
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    lines = log_lines(out)
    assert [e for e in lines if "event" in e] == [{"event": "resumed", "step": 4, "from": str(resume / "step-00000004")}]
    assert [e["step"] for e in lines if "event" not in e] == list(range(1, 10))
    assert [e["train_loss"] for e in lines if "event" not in e] == [e["train_loss"] for e in log_lines(ref)]
    assert json.loads((out / "metrics.json").read_text())["resumed"] is True
    assert not resume.exists()


def test_balanced_draws_follow_the_records_labels(world, tmp_path):
    cfg = config(world, epochs=2, balance_tasks=["rhythm"])
    with pytest.raises(StageError, match="balance_tasks.*--records"):
        align(cfg, world["pairs"], world["signals"], tmp_path / "none", progress=False)
    out = tmp_path / "out"
    metrics = align(cfg, world["pairs"], world["signals"], out, progress=False, threads=1, records=world["records"])
    # train ECGs 1-6: SR x4 (ids 1 2 4 6), AFIB (3), SR+SARRH (5: two classes, so "other"); 2 samples each
    assert metrics["balanced_draws"]["rhythm"] == pytest.approx({"SR": 1 / 3, "AFIB": 1 / 3, "other": 1 / 3})
    assert json.loads((out / "metrics.json").read_text())["balanced_draws"] == metrics["balanced_draws"]
    assert AlignConfig.from_yaml(out / "config.yaml").balance_tasks == ["rhythm"]
    plain = align(config(world, epochs=2), world["pairs"], world["signals"], tmp_path / "plain", progress=False, threads=1)
    assert plain["balanced_draws"] == {}
    assert (out / "model.safetensors").read_bytes() != (tmp_path / "plain" / "model.safetensors").read_bytes()
    with pytest.raises(StageError, match="balance_tasks"):
        config(world, balance_tasks=["rhythm", "rhythm"])
    with pytest.raises(StageError, match="balance_tasks"):
        config(world, balance_tasks=["beats"])
    with pytest.raises(StageError, match="balance_power"):
        config(world, balance_power=2.0)


def saved_encoder(folder: Path):
    """A random width-4 encoder saved as a train-encoder folder (model.safetensors + config.yaml)."""
    from safetensors.torch import save_file

    from ecglm.models.encoder import ResNet1d18
    from ecglm.train.train_encoder import EncoderConfig

    folder.mkdir()
    torch.manual_seed(0)
    encoder = ResNet1d18(n_classes=5, base_width=4)
    save_file(encoder.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.yaml").write_text(EncoderConfig(base_width=4).to_yaml())
    return encoder


def test_encoder_lr_scale_sets_the_encoders_step_size(world, tmp_path):
    enc_dir = tmp_path / "encoder"
    encoder = saved_encoder(enc_dir)
    moved = {}
    for scale in (1e-9, 1.0, 10.0):
        out = tmp_path / f"s{scale}"
        align(config(world, epochs=1, encoder_dir=str(enc_dir), encoder_lr_scale=scale), world["pairs"],
              world["signals"], out, progress=False, threads=1)  # fmt: skip
        saved = load_file(str(out / "model.safetensors"))
        moved[scale] = max(float((saved[f"encoder.{k}"] - p.detach()).abs().max()) for k, p in encoder.named_parameters())
        assert any(k.startswith("projector.") for k in saved)
    # AdamW moves each weight by about lr x scale per step (3 steps of lr <= 3e-3 here)
    assert moved[1e-9] < 1e-9 < moved[1.0] < moved[10.0]
    assert [e["lr"] for e in log_lines(tmp_path / "s10.0")] == [e["lr"] for e in log_lines(tmp_path / "s1.0")]  # the projector's
    with pytest.raises(StageError, match="encoder_lr_scale"):
        config(world, encoder_lr_scale=0.0)


def test_resume_refuses_a_checkpoint_of_another_config(world, tmp_path):
    cfg = config(world, epochs=2, checkpoint_every=1)
    resume = tmp_path / "resume"

    def stop(step: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        align(cfg, world["pairs"], world["signals"], tmp_path / "out", resume, progress=False, on_step=stop)
    with pytest.raises(StageError, match="another configuration"):
        align(config(world, epochs=2, checkpoint_every=1, lr=5e-3), world["pairs"], world["signals"],
              tmp_path / "out", resume, progress=False)  # fmt: skip


def _spy_llm(monkeypatch) -> list:
    """Wrap the real ecglm.models.llm.load_llm to keep the models it returns."""
    loaded = []
    real_load = ecglm.models.llm.load_llm

    def spy(*args, **kwargs):
        model, tok = real_load(*args, **kwargs)
        loaded.append(model)
        return model, tok

    monkeypatch.setattr(ecglm.models.llm, "load_llm", spy)
    return loaded


def test_gradient_checkpointing_recomputes_the_llm_and_trains_the_same(world, tmp_path, monkeypatch):
    calls: list[int] = []
    real_load = ecglm.models.llm.load_llm

    def counting(*args, **kwargs):
        model, tok = real_load(*args, **kwargs)
        # a submodule of a decoder layer: its hooks run again when the backward pass recomputes the layer
        model.model.layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
        return model, tok

    monkeypatch.setattr(ecglm.models.llm, "load_llm", counting)
    runs = {}
    for flag in (False, True):
        calls.clear()
        out = tmp_path / str(flag)
        align(config(world, epochs=2, eval_every=100, gradient_checkpointing=flag, ecg_check_samples=0), world["pairs"], world["signals"],
              out, progress=False, threads=1)  # fmt: skip
        runs[flag] = (len(calls), log_lines(out), load_file(str(out / "model.safetensors")))
    (n_plain, log_plain, w_plain), (n_ckpt, log_ckpt, w_ckpt) = runs[False], runs[True]
    # 6 steps x 2 micro-batches; the final validation pass (2 batches) runs without a gradient
    assert n_plain == 6 * 2 + 2 and n_ckpt == 6 * 2 * 2 + 2  # checkpointed layers run again in backward
    for a, b in zip(log_plain, log_ckpt):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    for k in w_plain:
        assert torch.allclose(w_plain[k].float(), w_ckpt[k].float(), rtol=1e-5, atol=1e-6), k


def test_freeze_encoder_trains_the_projector_only(world, tmp_path):
    enc_dir = tmp_path / "encoder"
    encoder = saved_encoder(enc_dir)
    saved = {}
    for name, steps in (("one", 1), ("six", None)):
        out = tmp_path / name
        align(config(world, epochs=2, max_steps=steps, encoder_dir=str(enc_dir), freeze_encoder=True, projector="vocab"),
              world["pairs"], world["signals"], out, progress=False, threads=1)  # fmt: skip
        saved[name] = load_file(str(out / "model.safetensors"))
    for k, v in encoder.state_dict().items():
        for name in saved:
            assert torch.equal(saved[name][f"encoder.{k}"], v), k  # weights AND BatchNorm statistics unchanged
    assert json.loads((out / "config.json").read_text())["projector"]["kind"] == "vocab"
    assert not torch.equal(saved["one"]["projector.logits.weight"], saved["six"]["projector.logits.weight"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(world, out: Path, *sets: str, resume: Path | None = None, signals_flag: str = "--signals") -> list[str]:
    cmd = ["--pairs", str(world["pairs"]), signals_flag, str(world["signals"]), "--out", str(out),
           "--threads", "1", "--no-progress"]  # fmt: skip
    if resume is not None:
        cmd += ["--resume-dir", str(resume)]
    base = [f"llm={world['llm']}", "dtype=float32", "encoder_base_width=4", "max_length=256", "warmup_epochs=1",
            "lr=3e-3", "weight_decay=0.0", "seed=3", "device=cpu"]  # fmt: skip
    for s in base + list(sets):
        cmd += ["--set", s]
    return cmd


@pytest.mark.slow  # a subprocess: runs in CI; -m 'not slow' skips it
def test_cli_resumes_after_sigkill(world, tmp_path):
    sets = ("epochs=30", "batch_size=2", "grad_accum=2", "checkpoint_every=3")  # 90 steps
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out, resume = tmp_path / "out", tmp_path / "resume"
    proc = subprocess.Popen([sys.executable, "-m", "ecglm", "align", *_cli(world, out, *sets, resume=resume)],
                            env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while not (resume / "latest").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if (out / "model.safetensors").exists():
        pytest.fail("the run finished before it could be killed")
    killed_at = (resume / "latest").read_text().strip()
    done = subprocess.run([sys.executable, "-m", "ecglm", "align", *_cli(world, out, *sets, resume=resume)],
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    ref = tmp_path / "ref"
    done = subprocess.run([sys.executable, "-m", "ecglm", "align", *_cli(world, ref, *sets)],
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    events = [e for e in log_lines(out) if "event" in e]
    assert len(events) == 1 and events[0]["from"].endswith(killed_at)


@pytest.mark.slow  # a subprocess: runs in CI; -m 'not slow' skips it
def test_ddp_two_processes_match_one_process(world, tmp_path):
    """2 gloo processes x grad_accum 2 == 1 process x grad_accum 4 (global batch 8): same losses, rtol 1e-5."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp_out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "ecglm", "align",
           *_cli(world, ddp_out, "epochs=3", "batch_size=2", "grad_accum=2", signals_flag="--signals-npy")]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    one = tmp_path / "one"
    align(config(world, epochs=3, batch_size=2, grad_accum=4), world["pairs"], world["signals"], one,
          progress=False, threads=1)  # fmt: skip

    two_log, one_log = log_lines(ddp_out), log_lines(one)
    assert len(two_log) == len(one_log) == 3  # 12 samples // global batch 8 = 1 step per epoch
    for a, b in zip(two_log, one_log):
        assert a["n_tokens"] == b["n_tokens"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] is not None  # not compared: BatchNorm running statistics are rank 0's under DDP
    ddp_metrics = json.loads((ddp_out / "metrics.json").read_text())
    assert ddp_metrics["global_batch"] == 8 and ddp_metrics["world_size"] == 2
    a, b = load_file(str(ddp_out / "model.safetensors")), load_file(str(one / "model.safetensors"))
    for k in b:
        if "running_" in k or "num_batches" in k:
            continue
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
