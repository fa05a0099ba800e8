"""The ResNet-18 1D encoder, the ECG dataset and `ecglm train-encoder`, on small synthetic stores."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from ecglm.cli import main
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS
from ecglm.data.ecg_data import EcgDataset, check_store, multi_hot, random_lead_masks
from ecglm.data.labels import SUPERCLASSES
from ecglm.data.prepare import TABLE_METADATA_KEY
from ecglm.models.encoder import ResNet1d18, count_parameters, lead_mask_from_names
from ecglm.train.train_encoder import (
    CONFIG_FILE,
    EVAL_LEAD_SETS,
    METRICS_FILE,
    MODEL_FILE,
    EncoderConfig,
    load_encoder,
    predict,
    train_encoder,
)

FS = 100
#: Frequency (Hz) of the sine each superclass adds to every lead of the synthetic store.
CLASS_HZ = {"NORM": 1.0, "MI": 3.0, "STTC": 6.0, "CD": 11.0, "HYP": 17.0}


def write_store(root: Path, n: int = 200, t: int = 400, seed: int = 0) -> tuple[Path, Path]:
    """A prepare-shaped store: records.parquet (+ prepare's metadata) and int16 [n, 12, t] microvolts.

    Classes are separable: each present class adds its own sine (CLASS_HZ) to every lead, with a
    per-lead gain, over noise and a baseline offset. Splits ~70/15/15; ecg_ids have gaps.
    """
    rng = np.random.default_rng(seed)
    time = np.arange(t) / FS
    labels = rng.random((n, len(SUPERCLASSES))) < 0.35  # [n, 5]
    labels[~labels.any(axis=1), 0] = True
    labels[:3] = False  # a few unlabeled ECGs, as in PTB-XL
    signals = rng.normal(0, 120, (n, 12, t)) + rng.normal(0, 300, (n, 12, 1))  # [n, 12, t]
    gains = rng.uniform(0.5, 1.5, (n, 12, 1))
    for j, code in enumerate(SUPERCLASSES):
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        wave = 400 * np.sin(2 * np.pi * CLASS_HZ[code] * time[None, None, :] + phase)  # [n, 1, t]
        signals += labels[:, j, None, None] * gains * wave
    split = np.where(np.arange(n) % 20 < 14, "train", np.where(np.arange(n) % 20 < 17, "val", "test"))
    table = pl.DataFrame(
        {
            "ecg_id": pl.Series((np.arange(n) * 2 + 1).astype(np.int32), dtype=pl.Int32),
            "split": split.tolist(),
            "diagnostic_superclass": [[c for c, on in zip(SUPERCLASSES, row) if on] for row in labels],
            "rhythm": [["SR"]] * n,
        },
        schema={"ecg_id": pl.Int32, "split": pl.String, "diagnostic_superclass": pl.List(pl.String),
                "rhythm": pl.List(pl.String)},  # fmt: skip
    )
    root.mkdir(parents=True, exist_ok=True)
    # short records (t samples) for speed: the file states no sampling rate, so none is checked against T
    records, npy = root / "records.parquet", root / "signals.npy"
    arrow = table.to_arrow()
    info = {"signals": npy.name, "shape": [n, 12, t], "leads": list(LEADS), "units": "uV", "dtype": "int16"}
    pq.write_table(arrow.replace_schema_metadata({TABLE_METADATA_KEY: json.dumps(info)}), records)
    np.save(npy, np.clip(np.round(signals), -32768, 32767).astype(np.int16))
    return records, npy


def tiny_cfg(**kw) -> EncoderConfig:
    base = dict(epochs=2, lr=3e-3, batch_size=16, base_width=4, seed=7, lead_dropout=0.5, lead_dropout_k=[1, 11])
    return EncoderConfig(**{**base, **kw})


# --------------------------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def model() -> ResNet1d18:
    torch.manual_seed(0)
    m = ResNet1d18(n_classes=5, base_width=4)
    # give the FiLM and the last BNs non-trivial values so every path is exercised
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def test_shapes_for_full_dropped_and_single_lead(model: ResNet1d18) -> None:
    x = torch.randint(-2000, 2000, (3, 12, 250), dtype=torch.int16)  # [B, 12, T]
    full = torch.ones(3, 12, dtype=torch.bool)
    dropped = random_lead_masks(3, 1.0, (4, 6), torch.Generator().manual_seed(1))
    single = lead_mask_from_names(["I"], batch=3)
    assert model.embed_dim == 32
    for mask in (None, full, dropped, single):
        emb = model.forward_features(x, mask)
        logits = model(x, mask)
        assert emb.shape == (3, 32) and emb.dtype == torch.float32
        assert logits.shape == (3, 5)
        assert torch.isfinite(logits).all()
    # None means all 12 leads; different subsets give different outputs
    assert torch.equal(model(x, None), model(x, full))
    assert not torch.allclose(model(x, full), model(x, single))
    # any length T works (global pooling)
    assert model(torch.zeros(2, 12, 1000, dtype=torch.int16)).shape == (2, 5)


def _last_stage_receptive_field(m: ResNet1d18, t: int = 2048) -> int:
    """Input samples that reach the middle output position of the last stage (gradient != 0), measured
    through ``forward_features`` (a forward hook keeps the last stage's output before the pooling)."""
    x = torch.zeros(1, 12, t, requires_grad=True)
    with torch.no_grad():  # a non-zero input and weights so that no path is exactly zero
        x += 1000 * torch.randn(1, 12, t)
    kept: list[torch.Tensor] = []
    handle = m.stages.register_forward_hook(lambda _module, _inputs, output: kept.append(output))
    try:
        m.forward_features(x)
    finally:
        handle.remove()
    (h,) = kept  # [1, 8w, ~t/32]
    h[0, :, h.shape[2] // 2].sum().backward()
    hit = torch.nonzero(x.grad[0].abs().sum(dim=0)).flatten()
    return int(hit.max() - hit.min() + 1)


def test_dilation_widens_the_receptive_field_at_the_same_parameters() -> None:
    torch.manual_seed(0)
    plain, dilated = ResNet1d18(base_width=4), ResNet1d18(base_width=4, dilation=4)
    for m in (plain, dilated):  # non-zero residual branches (bn2 starts at 0)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
        m.eval()
    assert count_parameters(plain) == count_parameters(dilated)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in dilated.state_dict().items()}
    assert _last_stage_receptive_field(plain) <= 435  # the standard ResNet-18: 435 samples
    assert 900 <= _last_stage_receptive_field(dilated) <= 1011  # dilation 4: 1,011 samples
    x = torch.randint(-2000, 2000, (2, 12, 1000), dtype=torch.int16)
    assert dilated.forward_features(x).shape == plain.forward_features(x).shape == (2, 32)
    with pytest.raises(ValueError, match="dilation"):
        ResNet1d18(dilation=0)


def test_masked_leads_have_no_influence(model: ResNet1d18) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(-3000, 3000, (6, 12, 200), dtype=torch.int16, generator=gen)
    mask = random_lead_masks(6, 1.0, (1, 11), gen)
    mask[0] = lead_mask_from_names(["V2"])[0]  # a single lead
    other = torch.randint(-32768, 32767, x.shape, dtype=torch.int16, generator=gen)
    changed = torch.where(mask[:, :, None], x, other)  # same kept leads, anything else elsewhere
    assert not torch.equal(changed, x)
    assert torch.equal(model(x, mask), model(changed, mask))
    assert torch.equal(model.forward_features(x, mask), model.forward_features(changed, mask))
    # even NaN and inf in a missing lead (float microvolts) cannot leak through
    poisoned = torch.where(mask[:, :, None], x.float(), torch.tensor(float("nan")))
    poisoned[:, :, 0] = torch.where(mask, poisoned[:, :, 0], torch.tensor(float("inf")))
    assert torch.equal(model(poisoned, mask), model(x, mask))
    # the kept leads do matter
    assert not torch.equal(model(x, mask), model(x + mask[:, :, None] * 500, mask))


def test_input_is_scaled_to_millivolts_and_by_kept_leads(model: ResNet1d18) -> None:
    x = torch.full((2, 12, 10), 1000, dtype=torch.int16)  # 1 mV everywhere
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 3:] = False  # 3 leads kept
    scaled, _ = model.prepare_input(x, mask)
    assert torch.allclose(scaled[0], torch.ones(12, 10))
    assert torch.allclose(scaled[1, :3], torch.full((3, 10), 2.0))  # sqrt(12 / 3)
    assert torch.equal(scaled[1, 3:], torch.zeros(9, 10))
    with pytest.raises(ValueError, match=r"\[B, 12, T\]"):
        model(torch.zeros(2, 11, 10))
    with pytest.raises(ValueError, match="lead mask"):
        model(torch.zeros(2, 12, 10), torch.ones(2, 11, dtype=torch.bool))


def test_random_lead_masks() -> None:
    masks = random_lead_masks(500, 1.0, (4, 6), torch.Generator().manual_seed(0))  # [500, 12]
    dropped = 12 - masks.sum(dim=1)
    assert set(dropped.tolist()) == {4, 5, 6}
    assert masks.float().mean(dim=0).min() > 0.4  # every lead is dropped and kept sometimes
    assert random_lead_masks(50, 0.0, (1, 11), torch.Generator()).all()
    half = random_lead_masks(2000, 0.5, (11, 11), torch.Generator().manual_seed(1)).sum(dim=1)
    assert set(half.tolist()) == {1, 12} and 0.45 < (half == 1).float().mean() < 0.55
    again = random_lead_masks(500, 1.0, (4, 6), torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)
    with pytest.raises(ValueError):
        random_lead_masks(2, 1.0, (4, 12), torch.Generator())


# ---------------------------------------------------------------------------------------------- data


def test_ecg_dataset_maps_rows_masks_and_targets(tmp_path: Path) -> None:
    records, npy = write_store(tmp_path, n=20, t=50)
    signals = np.load(npy, mmap_mode="r")
    masks = np.ones((3, 12), dtype=bool)
    masks[1, 6:] = False
    targets = np.eye(3, 5, dtype=np.float32)
    ds = EcgDataset(npy, [5, 0, 19], targets=targets, lead_masks=masks)
    assert len(ds) == 3
    item = ds[1]
    assert item["row"] == 0 and item["index"] == 1
    assert item["signal"].dtype == torch.int16 and item["signal"].shape == (12, 50)
    assert np.array_equal(item["signal"].numpy(), signals[0])
    assert item["lead_mask"].tolist() == masks[1].tolist()
    assert item["target"].tolist() == targets[1].tolist()
    assert ds[2]["lead_mask"].all() and "target" not in EcgDataset(npy, [1])[0]
    clone = pickle.loads(pickle.dumps(ds))  # workers get the path, not the mapped array
    assert clone._signals is None and np.array_equal(clone[0]["signal"].numpy(), signals[5])
    with pytest.raises(StageError, match="row 20 is out of range"):
        EcgDataset(npy, [1, 20])
    empty = masks.copy()
    empty[2] = False
    with pytest.raises(StageError, match="keeps no lead"):
        EcgDataset(npy, [5, 0, 19], lead_masks=empty)
    assert check_store(records, 20, npy) == (20, 50)


def test_store_mismatches_are_clear_errors(tmp_path: Path) -> None:
    records, npy = write_store(tmp_path, n=20, t=50)
    with pytest.raises(StageError, match="has 20 rows but .* has 21"):
        check_store(records, 21, npy)
    bad = tmp_path / "float.npy"
    np.save(bad, np.zeros((20, 12, 50), dtype=np.float32))
    with pytest.raises(StageError, match="expected int16 signals"):
        check_store(records, 20, bad)
    with pytest.raises(StageError, match="not found"):
        check_store(records, 20, tmp_path / "missing.npy")
    other, _ = write_store(tmp_path / "other", n=20, t=60)
    with pytest.raises(StageError, match="describes signals"):
        check_store(other, 20, npy)  # metadata says T=60, the array holds 50


def test_multi_hot_reports_unknown_labels() -> None:
    y, ignored = multi_hot([["MI", "NORM"], [], None, ["XYZ", "CD"]], SUPERCLASSES)
    assert y.tolist() == [[1, 1, 0, 0, 0], [0] * 5, [0] * 5, [0, 0, 0, 1, 0]]
    assert ignored == {"XYZ": 1}


# -------------------------------------------------------------------------------------------- config


def test_config_from_yaml_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "enc.yaml"
    path.write_text("epochs: 3\nlr: 1e-3\nlearning_rate: 0.1\n")
    with pytest.raises(StageError, match="unknown key.*'learning_rate'"):
        EncoderConfig.from_yaml(path)
    path.write_text("epochs: 3\nlr: 1e-3\nmax_train_records: null\n")
    cfg = EncoderConfig.from_yaml(path)
    assert cfg.epochs == 3 and cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)
    assert cfg.batch_size == 64 and cfg.classes == list(SUPERCLASSES)  # untouched keys keep their defaults
    path.write_text("epochs: three\n")
    with pytest.raises(StageError, match="epochs = 'three': input should be a valid integer"):
        EncoderConfig.from_yaml(path)
    path.write_text("lead_dropout: 1.5\n")
    with pytest.raises(StageError, match="lead_dropout = 1.5: input should be less than or equal to 1"):
        EncoderConfig.from_yaml(path)


def test_set_overrides_are_typed() -> None:
    cfg = EncoderConfig().with_overrides(
        ["lr=1e-2", "epochs=3", "batch_size=8.0", "amp=false", "max_train_records=100",
         "lead_dropout_k=[2, 5]", "classes=NORM,MI", "device=cpu"]
    )  # fmt: skip
    assert cfg.lr == 0.01 and type(cfg.lr) is float
    assert cfg.epochs == 3 and type(cfg.epochs) is int and cfg.batch_size == 8 and type(cfg.batch_size) is int
    assert cfg.amp is False and cfg.max_train_records == 100
    assert cfg.lead_dropout_k == [2, 5] and cfg.classes == ["NORM", "MI"] and cfg.device == "cpu"
    assert cfg.with_overrides(["max_train_records=null"]).max_train_records is None
    for bad, message in [
        ("epochs=2.5", "epochs = 2.5: input should be a valid integer"),
        ("epochs=true", "epochs = True: value error, expected a number"),
        ("amp=maybe", "amp = 'maybe': value error, expected true or false"),
        ("lr=fast", "lr = 'fast': input should be a valid number"),
        ("lead_dropout_k=[1, 2, 3]", "lead_dropout_k = .*at most 2 items"),
        ("classes=[NORM, NORM]", "classes = .*distinct"),
        ("lr", "expected KEY=VALUE"),
        ("width=3", "unknown key 'width'"),
        ("device=tpu", "device = 'tpu': string should match pattern"),
    ]:
        with pytest.raises(StageError, match=message):
            EncoderConfig().with_overrides([bad])


# ------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, dict]:
    root = tmp_path_factory.mktemp("separable")
    records, npy = write_store(root / "data", n=300, t=400, seed=1)
    cfg = tiny_cfg(epochs=8, base_width=8, lr=1e-2, batch_size=16)
    metrics = train_encoder(cfg, records, npy, root / "encoder", progress=False, threads=1)
    return records, npy, root / "encoder", metrics


def test_training_separates_classes_and_writes_its_files(trained) -> None:
    records, npy, out, metrics = trained
    assert sorted(p.name for p in out.iterdir()) == sorted([MODEL_FILE, CONFIG_FILE, METRICS_FILE])
    on_disk = json.loads((out / METRICS_FILE).read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for key in ("classes", "n", "train_loss", "val_macro_auc_per_epoch", "best_epoch", "lead_sets", "val", "test"):
        assert key in on_disk, key
    assert on_disk["classes"] == list(SUPERCLASSES)
    assert on_disk["n"] == {"train": 207, "val": 45, "test": 45}  # 300 rows, 3 unlabeled train ECGs left out
    assert on_disk["n_unlabeled"] == {"train": 3, "val": 0, "test": 0}
    assert len(on_disk["train_loss"]) == 8 and on_disk["train_loss"][-1] < on_disk["train_loss"][0]
    assert set(on_disk["lead_sets"]) == set(EVAL_LEAD_SETS) and on_disk["lead_sets"]["I"] == ["I"]
    for split in ("val", "test"):
        assert set(on_disk[split]) == set(EVAL_LEAD_SETS)
        for report in on_disk[split].values():
            assert set(report["per_class_auc"]) == set(SUPERCLASSES)
            assert report["n"] == on_disk["n"][split]
    val = on_disk["val"]["all12"]
    assert val["macro_auc"] > 0.9, val
    assert on_disk["test"]["all12"]["macro_auc"] > 0.9
    assert on_disk["val"]["I"]["macro_auc"] > 0.7  # lead dropout in training: one lead still works
    best = on_disk["best_epoch"]
    assert on_disk["val_macro_auc_per_epoch"][best - 1] == max(on_disk["val_macro_auc_per_epoch"])
    assert val["macro_auc"] == pytest.approx(on_disk["val_macro_auc_per_epoch"][best - 1])


def test_config_round_trips_and_load_encoder_reproduces_predictions(trained) -> None:
    from torch.utils.data import DataLoader

    records, npy, out, metrics = trained
    cfg = EncoderConfig.from_yaml(out / CONFIG_FILE)
    assert cfg == tiny_cfg(epochs=8, base_width=8, lr=1e-2, batch_size=16)
    model, loaded_cfg = load_encoder(out)
    assert loaded_cfg == cfg and not model.training
    assert model.embed_dim == 64 and model.n_classes == 5
    table = pl.read_parquet(records)
    rows = np.flatnonzero((table["split"] == "test").to_numpy())
    targets, _ = multi_hot(table["diagnostic_superclass"].to_list(), SUPERCLASSES)
    loader = DataLoader(EcgDataset(npy, rows), batch_size=16)
    probs = predict(model, loader, {"I": ("I",)}, torch.device("cpu"), amp=False)["I"]
    from sklearn.metrics import roc_auc_score

    auc = np.mean([roc_auc_score(targets[rows, j], probs[:, j]) for j in range(5)])
    assert auc == pytest.approx(metrics["test"]["I"]["macro_auc"], abs=1e-6)


def test_load_encoder_rebuilds_the_saved_dilation(trained, tmp_path: Path) -> None:
    _, _, out, _ = trained
    (tmp_path / MODEL_FILE).write_bytes((out / MODEL_FILE).read_bytes())  # same tensor shapes at any dilation
    (tmp_path / CONFIG_FILE).write_text((out / CONFIG_FILE).read_text().replace("dilation: 1", "dilation: 4"))
    model, cfg = load_encoder(tmp_path)
    assert cfg.dilation == 4 and model.dilation == 4
    assert model.stages[3][1].conv2.dilation == (4,) and model.stages[1][1].conv2.dilation == (1,)
    with pytest.raises(StageError, match="dilation = 0: input should be greater than or equal to 1"):
        EncoderConfig().with_overrides(["dilation=0"])


def test_load_encoder_rejects_mismatched_weights(trained, tmp_path: Path) -> None:
    _, _, out, _ = trained
    (tmp_path / MODEL_FILE).write_bytes((out / MODEL_FILE).read_bytes())
    (tmp_path / CONFIG_FILE).write_text((out / CONFIG_FILE).read_text().replace("base_width: 8", "base_width: 16"))
    with pytest.raises(StageError, match="do not match"):
        load_encoder(tmp_path)
    (tmp_path / MODEL_FILE).write_bytes(b"not safetensors")
    with pytest.raises(StageError, match="not a readable safetensors"):
        load_encoder(tmp_path)


def test_same_seed_gives_bit_identical_weights(tmp_path: Path) -> None:
    records, npy = write_store(tmp_path / "data", n=60, t=200, seed=2)
    cfg = tiny_cfg(epochs=2, max_train_records=30)
    for name, c in [("a", cfg), ("b", cfg), ("workers", tiny_cfg(epochs=2, max_train_records=30, num_workers=2)),
                    ("other_seed", tiny_cfg(epochs=2, max_train_records=30, seed=8))]:  # fmt: skip
        train_encoder(c, records, npy, tmp_path / name, progress=False, threads=1)
    weights = {name: (tmp_path / name / MODEL_FILE).read_bytes() for name in ("a", "b", "workers", "other_seed")}
    assert weights["a"] == weights["b"]
    assert weights["a"] == weights["workers"]  # the data loader's worker count does not change the result
    assert weights["a"] != weights["other_seed"]
    assert json.loads((tmp_path / "a" / METRICS_FILE).read_text())["n"]["train"] == 30


def test_cli_trains_with_typed_overrides_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    records, npy = write_store(tmp_path / "data", n=40, t=100, seed=3)
    conf = tmp_path / "enc.yaml"
    conf.write_text("epochs: 5\nbase_width: 4\nbatch_size: 16\n")
    out = tmp_path / "enc"
    argv = ["train-encoder", "--records", str(records), "--signals", str(npy), "--out", str(out),
            "--config", str(conf), "--set", "epochs=1", "--set", "lr=1e-3", "--threads", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    cfg = EncoderConfig.from_yaml(out / CONFIG_FILE)
    assert (cfg.epochs, cfg.lr, cfg.base_width, cfg.batch_size) == (1, 1e-3, 4, 16)
    assert len(json.loads((out / METRICS_FILE).read_text())["train_loss"]) == 1
    assert main([*argv[:-1], "--set", "widht=3"]) == 1
    assert "unknown key 'widht'" in capsys.readouterr().err
    conf.write_text("epochs: 1\nbogus: 2\n")
    assert main(argv) == 1
    assert "'bogus'" in capsys.readouterr().err
    wrong = tmp_path / "short.npy"
    np.save(wrong, np.zeros((39, 12, 100), dtype=np.int16))
    assert main(["train-encoder", "--records", str(records), "--signals", str(wrong), "--out", str(tmp_path / "x")]) == 1
    assert "has 39 rows but" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
