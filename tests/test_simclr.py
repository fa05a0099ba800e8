"""`ecglm train-simclr` and the SimCLR / random-probe baselines (the paper's Table 2 few-shot row)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_encoder import write_store

from ecglm.core.errors import StageError
from ecglm.core.seeding import torch_generator
from ecglm.eval.baselines import evaluate_baseline, probe_subset
from ecglm.train.simclr import SimCLRConfig, augment, load_simclr_encoder, nt_xent, train_simclr


def tiny(**kw) -> SimCLRConfig:
    return SimCLRConfig.from_dict({"epochs": 2, "base_width": 4, "batch_size": 32, "device": "cpu", **kw})


def test_views_are_seeded_masked_and_timed_out():
    x = torch.full((6, 12, 400), 1000.0)  # [B, 12, T] uV
    cfg = tiny(noise_mv=0.0, scale_range=[1.0, 1.0], timeout_fraction=0.5, lead_dropout=1.0, lead_dropout_k=[11, 11])
    view, mask = augment(x, cfg, torch_generator(1, "simclr_views"))
    again, mask2 = augment(x, cfg, torch_generator(1, "simclr_views"))
    assert torch.equal(view, again) and torch.equal(mask, mask2)  # a seed gives the same views
    assert view.shape == x.shape and mask.shape == (6, 12) and (mask.sum(dim=1) == 1).all()  # 11 leads dropped
    zeroed = (view == 0).all(dim=1).sum(dim=1)  # [B] time-out samples
    assert (zeroed <= 200).all() and (view[view != 0] == 1000.0).all()  # a shifted constant stays itself


def test_nt_xent_rewards_matching_views():
    z = torch.eye(4)  # four orthogonal projections
    matched = nt_xent(z, z.clone(), temperature=0.5).item()
    # each row: its pair at cosine 1, the 6 others at cosine 0 -> -log(e^2 / (e^2 + 6))
    assert matched == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 6)), rel=1e-5)
    shuffled = nt_xent(z, z[[1, 2, 3, 0]], temperature=0.5).item()
    assert shuffled > matched


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, Path]:
    return write_store(tmp_path_factory.mktemp("simclr-store"), n=200, t=400)


def test_training_writes_a_bit_identical_encoder_that_loads_back(store, tmp_path):
    records, signals = store
    metrics = train_simclr(tiny(), records, signals, tmp_path / "a", progress=False, threads=1)
    train_simclr(tiny(), records, signals, tmp_path / "b", progress=False, threads=1)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert len(metrics["train_loss"]) == 2 and all(math.isfinite(v) for v in metrics["train_loss"] + metrics["val_loss"])
    assert metrics["best_epoch"] == 1 + int(np.argmin(metrics["val_loss"]))
    model, cfg = load_simclr_encoder(tmp_path / "a")
    assert cfg.base_width == 4 and model.embed_dim == 32
    x = torch.from_numpy(np.load(signals)[:3].astype(np.float32))
    assert torch.equal(model.forward_features(x), load_simclr_encoder(tmp_path / "a")[0].forward_features(x))
    (tmp_path / "a" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(StageError, match="model.safetensors: not a readable safetensors file"):
        load_simclr_encoder(tmp_path / "a")


def test_the_probe_subset_is_stratified_and_seeded():
    y = np.array([0] * 100 + [1] * 40 + [2] * 3)
    pick = probe_subset(y, 0.05, seed=7)
    assert [int((y[pick] == c).sum()) for c in range(3)] == [5, 2, 1]  # 5% per class, at least one
    assert np.array_equal(pick, probe_subset(y, 0.05, seed=7)) and not np.array_equal(pick, probe_subset(y, 0.05, seed=8))


def test_simclr_and_random_probe_baselines_write_evaluation_jsons(store, tmp_path):
    records, signals = store
    train_simclr(tiny(epochs=3), records, signals, tmp_path / "enc", progress=False, threads=1)
    docs = {}
    for kind in ("simclr", "random-probe"):
        docs[kind] = evaluate_baseline(kind, records, "diagnostic", signals=signals, encoder=tmp_path / "enc",
                                       out=tmp_path / f"{kind}.json", progress=False, probe_fraction=0.5, seed=3)  # fmt: skip
        assert json.loads((tmp_path / f"{kind}.json").read_text())["accuracy"] == docs[kind]["accuracy"]
    simclr, random = docs["simclr"], docs["random-probe"]
    assert simclr["model"]["encoder"]["weights_sha256"] and random["model"]["encoder"]["random_init"]
    probe = simclr["model"]["probe"]
    assert probe["fraction"] == 0.5 and 0 < probe["training_ecgs"] < probe["of"] and simclr["seed"] == 3
    # the probes read the encoders' embeddings: the pretrained and the random encoder score differently
    assert simclr["predictions"]["probabilities"] != random["predictions"]["probabilities"]
    assert "linear probe" in simclr["scoring"] and "randomly initialised" in random["scoring"]
    rows = np.array(simclr["predictions"]["probabilities"])
    assert np.allclose(rows.sum(axis=1), 1.0)
    with pytest.raises(StageError, match="needs --encoder"):
        evaluate_baseline("simclr", records, "diagnostic", signals=signals, progress=False)
