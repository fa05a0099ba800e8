"""`ecglm train-mets` and the METS / LLM + METS baselines (the paper's Table 2 zero-shot rows)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from test_encoder import write_store
from tiny_llm import build_tiny_llm

from ecglm.core.errors import StageError
from ecglm.data.demo.ptbxl import SCP_STATEMENTS
from ecglm.data.labels import class_description, load_scp_statements
from ecglm.eval.baselines import evaluate_baseline
from ecglm.text.prompts import CLASS_PHRASES, clean_phrase
from ecglm.train.mets import METSConfig, class_descriptions, clip_loss, load_mets, read_pairs, train_mets


def tiny(**kw) -> METSConfig:
    return METSConfig.from_dict({"epochs": 3, "base_width": 4, "batch_size": 32, "projection_dim": 16, "text_dim": 8,
                                 "lr": 3e-3, "device": "cpu", **kw})  # fmt: skip


def write_reports(records: Path, path: Path, *, drop: int = 0) -> Path:
    """reports_en.parquet whose report names the ECG's diagnostic classes ("sinus rhythm. normal"), a report
    per ECG but the first ``drop`` (no row) and one empty report."""
    table = pl.read_parquet(records, columns=["ecg_id", "diagnostic_superclass"])
    texts = ["sinus rhythm. " + ", ".join(CLASS_PHRASES[c] for c in codes) for codes in table["diagnostic_superclass"]]
    texts[drop] = ""
    pl.DataFrame({"ecg_id": table["ecg_id"].to_list()[drop:], "report_en": texts[drop:]}).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("mets-store")
    records, signals = write_store(root, n=200, t=400)
    return records, signals, write_reports(records, root / "reports_en.parquet", drop=1)


def test_clip_loss_rewards_matching_pairs_and_cannot_split_identical_reports():
    e = torch.eye(4)  # four orthogonal ECG embeddings
    matched = clip_loss(e, e.clone(), temperature=0.5).item()
    # each row: its own text at cosine 1, the 3 others at 0 -> -log(e^2 / (e^2 + 3)), both directions
    assert matched == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 3)), rel=1e-5)
    assert clip_loss(e, e[[1, 2, 3, 0]], temperature=0.5).item() > matched
    # ECGs 0 and 1 share a report (one text embedding): the loss is the same whichever of the two ECGs lies
    # nearer that text, so it never pushes one of them away for being the other's
    t = e.clone()
    t[1] = t[0]
    near0 = e.clone()
    near0[1] = torch.tensor([0.6, 0.8, 0.0, 0.0])
    near1 = near0[[1, 0, 2, 3]]
    assert clip_loss(near0, t, 0.5).item() == pytest.approx(clip_loss(near1, t, 0.5).item(), rel=1e-6)


def test_class_descriptions_are_ptbxl_s_own_words():
    described = class_descriptions()
    assert described["rhythm"]["AFIB"] == "atrial fibrillation" and described["form"]["LNGQT"] == "long QT-interval"
    assert described["diagnostic"]["NORM"] == "normal ECG"
    assert described["diagnostic"]["MI"].startswith("inferior myocardial infarction, anteroseptal myocardial")
    statements = load_scp_statements(SCP_STATEMENTS)
    with pytest.raises(StageError, match="'XYZ' is neither an SCP statement nor a diagnostic superclass"):
        class_description(statements, "XYZ")


def test_pairs_leave_out_ecgs_without_a_report_and_count_them(store, tmp_path):
    records, signals, reports = store
    pairs, missing = read_pairs(records, reports, signals, tiny())
    split = pl.read_parquet(records, columns=["split"])["split"].to_list()
    assert split[0] == "train" and split[1] == "train"  # ECG 0: empty report, ECG 1: no row
    assert missing == {"train": 2, "val": 0} and len(pairs["train"].rows) == split.count("train") - 2
    assert 0 not in pairs["train"].rows and 1 not in pairs["train"].rows
    p = pairs["train"]
    codes = pl.read_parquet(records, columns=["diagnostic_superclass"])["diagnostic_superclass"].to_list()
    assert [p.reports[i] for i in p.text] == [
        clean_phrase("sinus rhythm. " + ", ".join(CLASS_PHRASES[c] for c in codes[row])) for row in p.rows
    ]  # each ECG points at its own report's text
    assert len(p.reports) == len(set(p.reports)) < len(p.rows)  # distinct texts, shared by several ECGs
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"ecg_id": [1, 1], "report_en": ["a", "b"]}).write_parquet(bad)
    with pytest.raises(StageError, match="bad.parquet: ecg_id"):
        read_pairs(records, bad, signals, tiny())
    with pytest.raises(StageError, match="nowhere.parquet: English reports not found"):
        read_pairs(records, tmp_path / "nowhere.parquet", signals, tiny())


def test_training_is_bit_identical_and_the_baseline_classifies_zero_shot(store, tmp_path):
    records, signals, reports = store
    metrics = train_mets(tiny(epochs=20), records, reports, signals, tmp_path / "a", progress=False, threads=1)
    train_mets(tiny(epochs=20), records, reports, signals, tmp_path / "b", progress=False, threads=1)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert metrics["best_epoch"] == 1 + int(np.argmin(metrics["val_loss"]))
    assert metrics["text_encoder"]["name"] == "tfidf-rp" and metrics["without_report"]["train"] == 2
    recall = metrics["recall_at_5"]
    assert recall["n_ecgs"] == metrics["n"]["val"] and recall["low"] <= recall["value"] <= recall["high"]
    assert recall["chance"] == pytest.approx(5 / recall["n_reports"]) and recall["low"] > recall["chance"]  # learnt
    mets = load_mets(tmp_path / "a")
    assert set(mets.class_text) == {"diagnostic", "rhythm", "form"} and mets.class_text["rhythm"].shape == (5, 16)
    doc = evaluate_baseline("mets", records, "diagnostic", signals=signals, encoder=tmp_path / "a",
                            out=tmp_path / "mets.json", progress=False)  # fmt: skip
    assert json.loads((tmp_path / "mets.json").read_text())["accuracy"] == doc["accuracy"]
    assert doc["model"]["text_encoder"]["name"] == "tfidf-rp" and "cosine" in doc["scoring"]
    # the classes are separable sines and the reports name them: zero-shot must beat chance (0.2)
    assert doc["balanced_accuracy"] > 0.3, doc["balanced_accuracy"]
    with pytest.raises(StageError, match="text encoder 'tfidf'; --kind llm-mets needs 'llm'"):
        evaluate_baseline("llm-mets", records, "diagnostic", signals=signals, encoder=tmp_path / "a", progress=False)
    (tmp_path / "a" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(StageError, match="model.safetensors: not a readable safetensors file"):
        load_mets(tmp_path / "a")


def test_the_llm_text_encoder_embeds_the_reports_with_the_given_llm(store, tmp_path):
    records, signals, reports = store
    llm = build_tiny_llm(tmp_path / "llm")
    with pytest.raises(StageError, match="text_encoder llm needs llm"):
        tiny(text_encoder="llm")
    metrics = train_mets(tiny(text_encoder="llm", llm=str(llm), epochs=1), records, reports, signals, tmp_path / "m",
                         progress=False, threads=1)  # fmt: skip
    assert metrics["text_encoder"]["name"] == "llm" and metrics["text_encoder"]["llm"] == str(llm)
    assert metrics["text_encoder"]["dim"] == 32  # the tiny LLM's hidden size
    doc = evaluate_baseline("llm-mets", records, "rhythm", signals=signals, encoder=tmp_path / "m", progress=False)
    assert doc["model"]["text_encoder"]["llm"] == str(llm) and str(llm) in doc["scoring"]


TFIDF_BITS = """
import hashlib, sys
from ecglm.train.mets import METSConfig, tfidf_embeddings
words = ["sinus", "rhythm", "normal", "ecg", "left", "axis", "deviation", "atrial", "fibrillation", "st", "elevation"]
reports = [" ".join(words[(i * k) % len(words)] for k in range(1, 2 + i % 7)) + f" {i % 13}" for i in range(300)]
train, (other,), identity = tfidf_embeddings(reports, [["normal ecg", "atrial fibrillation"]], METSConfig.from_dict({}))
print(hashlib.sha256(train.tobytes() + other.tobytes()).hexdigest(), identity["cosine_distortion"])
"""


def test_tfidf_text_embeddings_are_the_same_bits_whatever_blas_starts_with():
    """The METS row's text encoder under another start-up BLAS thread count (as a SLURM job step sets it):
    the same bits (ARPACK's SVD, its first version, gave other bits under OPENBLAS_NUM_THREADS 1 and 2)."""
    import os
    import subprocess
    import sys

    def run(env_threads: str) -> str:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": env_threads, "OMP_NUM_THREADS": env_threads,
               "MKL_NUM_THREADS": env_threads}  # fmt: skip
        done = subprocess.run([sys.executable, "-c", TFIDF_BITS], env=env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    one = run("1")
    assert one == run("2")
    assert 0 < float(one.split()[1]) < 0.1  # a 256-d projection keeps the TF-IDF cosines within ~1/16
