#!/usr/bin/env python
"""How faithful the demo world is: its pretrained encoder scored on real PTB-XL records.

    python bench/sim_to_real.py --encoder results/demo/encoder/pretrained [--sample ../shared/ptbxl-sample]

Prepares the real sample (`ecglm prepare`, 100 Hz) into a temporary folder, then prints the diagnostic
superclass macro ROC AUC on its labelled records, each with a 95% bootstrap interval over patients:

1. **sim -> real**: the encoder pretrained on the demo world (``--encoder``), applied as it is;
2. **real -> real**: the same architecture and settings (that encoder's config.yaml) trained on the real
   sample itself, in ``--folds``-fold cross-validation grouped by patient (out-of-fold predictions pooled;
   one fold of the training part is its validation split for the choice of epoch).

The real sample is small (300 records at 100 Hz), so (2) is a low bar that a few hundred real ECGs set, not
what the full PTB-XL gives; a (1) far below (2) says the demo world's signals or labels differ from the
real ones in what the encoder learns.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def macro_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(y[:, j], p[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(np.mean(aucs)) if aucs else None


def with_interval(y: np.ndarray, p: np.ndarray, patients: np.ndarray, seed: int = 0) -> str:
    from ecglm.core.stats import group_bootstrap

    ci = group_bootstrap(lambda rows: macro_auc(y[rows], p[rows]), patients, seed=seed, reps=1000)
    low = "n/a" if ci["low"] is None else f"{ci['low']:.3f}"
    high = "n/a" if ci["high"] is None else f"{ci['high']:.3f}"
    return f"{macro_auc(y, p):.3f} [{low}, {high}] ({len(y)} ECGs, {ci['groups']} patients)"


def predict_all(model, signals: np.ndarray, rows: np.ndarray) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(rows), 64):
            x = torch.from_numpy(np.asarray(signals[rows[start:start + 64]]))  # [B, 12, T] int16
            out.append(torch.sigmoid(model(x, torch.ones(x.shape[0], 12, dtype=torch.bool)).float()).numpy())
    return np.concatenate(out)


def cross_validated(cfg, records: Path, signals_path: Path, rows: np.ndarray, patients: np.ndarray, folds: int,
                    work: Path) -> np.ndarray:  # fmt: skip
    """Out-of-fold probabilities [len(rows), C] of the encoder trained on the other folds."""
    import polars as pl

    from ecglm.train.train_encoder import load_encoder, train_encoder

    table = pl.read_parquet(records)
    distinct = np.unique(patients)
    fold_of = {pid: i % folds for i, pid in enumerate(np.random.default_rng(0).permutation(distinct))}
    fold = np.array([fold_of[p] for p in patients])
    probs = np.zeros((len(rows), len(cfg.classes)), dtype=np.float32)
    signals = np.load(signals_path, mmap_mode="r")
    for k in range(folds):
        split = np.full(table.height, "unused", dtype=object)
        split[rows[fold == k]] = "test"
        split[rows[fold == (k + 1) % folds]] = "val"
        split[rows[(fold != k) & (fold != (k + 1) % folds)]] = "train"
        keep = split != "unused"
        sub = table.with_columns(pl.Series("split", split.tolist())).filter(pl.Series(keep))
        sub_signals = work / f"fold{k}" / "signals_100.npy"
        sub_signals.parent.mkdir(parents=True, exist_ok=True)
        np.save(sub_signals, np.asarray(signals[np.flatnonzero(keep)]))
        sub.write_parquet(sub_signals.with_name("records.parquet"))
        train_encoder(dataclasses.replace(cfg, device="cpu"), sub_signals.with_name("records.parquet"), sub_signals,
                      work / f"fold{k}" / "encoder", progress=False)  # fmt: skip
        model, _ = load_encoder(work / f"fold{k}" / "encoder")
        test_rows = np.flatnonzero(np.asarray(sub["split"].to_list()) == "test")
        probs[fold == k] = predict_all(model, np.load(sub_signals, mmap_mode="r"), test_rows)
        print(f"  fold {k + 1}/{folds}: {int((fold == k).sum())} test ECGs", flush=True)
    return probs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", type=Path, default=REPO / "results" / "demo" / "encoder" / "pretrained",
                        help="an ecglm train-encoder output folder trained on the demo world")
    parser.add_argument("--sample", type=Path, default=REPO.parent / "shared" / "ptbxl-sample",
                        help="a PTB-XL folder of real records (default: ../shared/ptbxl-sample)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: %(default)s)")
    args = parser.parse_args(argv)
    if not (args.sample / "ptbxl_database.csv").is_file():
        print(f"no real PTB-XL sample at {args.sample} (give --sample)", file=sys.stderr)
        return 2

    import polars as pl

    from ecglm.data.ecg_data import multi_hot
    from ecglm.data.labels import SUPERCLASSES
    from ecglm.data.prepare import prepare
    from ecglm.train.train_encoder import load_encoder

    model, cfg = load_encoder(args.encoder)
    if list(cfg.classes) != list(SUPERCLASSES) or cfg.label_column != "diagnostic_superclass":
        raise SystemExit(f"{args.encoder}: not a diagnostic superclass encoder ({cfg.label_column}: {cfg.classes})")
    with tempfile.TemporaryDirectory(prefix="sim2real-") as tmp:
        work = Path(tmp)
        prepare(args.sample, work / "data", fs=100, workers=1, skip_bad_records=True, progress=False)
        records, signals_path = work / "data" / "records.parquet", work / "data" / "signals_100.npy"
        table = pl.read_parquet(records)
        y_all, _ = multi_hot(table["diagnostic_superclass"].to_list(), cfg.classes)
        rows = np.flatnonzero(y_all.sum(axis=1) > 0)  # labelled records
        y, patients = y_all[rows], np.asarray(table["patient_id"].to_list())[rows]
        print(f"real sample {args.sample}: {len(rows)} labelled records of {table.height}; positives per class "
              + ", ".join(f"{c} {int(y[:, j].sum())}" for j, c in enumerate(cfg.classes)), flush=True)
        sim = predict_all(model, np.load(signals_path, mmap_mode="r"), rows)
        print(f"sim -> real  (demo-world encoder {args.encoder}): macro AUC {with_interval(y, sim, patients)}",
              flush=True)  # fmt: skip
        real = cross_validated(cfg, records, signals_path, rows, patients, args.folds, work)
        print(f"real -> real ({args.folds}-fold CV by patient, the same architecture and settings): macro AUC "
              f"{with_interval(y, real, patients)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
