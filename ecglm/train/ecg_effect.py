"""Does the ECG reach the LLM? The validation loss with each sample's own ECG against another record's.

After alignment, :func:`ecg_effect` scores a seeded subset of the validation samples twice with the
trained model: with their own ECGs, and with the ECGs of other records (a fixed derangement that never
pairs a sample with a lead-drop copy of its own ECG). The loss of each sample is its mean next-token
cross-entropy over its target spans (the report and the lead descriptions). If the projected ECG
carries nothing the LLM uses, the two losses are equal in expectation; ``difference`` is
``shuffled - true`` per sample, with a bootstrap interval that resamples records (the copies of one
ECG are not independent). An interval above 0 says the ECG lowers the loss.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ecglm.core.seeding import numpy_rng
from ecglm.core.stats import group_bootstrap_mean
from ecglm.models.tokenize_pairs import IGNORE_INDEX

log = logging.getLogger(__name__)


def record_derangement(ecg_ids: np.ndarray) -> np.ndarray | None:
    """``partner [n]``: sample ``i`` takes the ECG of sample ``partner[i]``, always of another record.

    Samples are sorted by record and shifted by the largest number of samples of one record, so no sample
    lands on its own record; None when fewer than two records are present.
    """
    ecg_ids = np.asarray(ecg_ids)
    _, counts = np.unique(ecg_ids, return_counts=True)
    if len(counts) < 2:
        return None
    order = np.argsort(ecg_ids, kind="stable")  # [n]
    shift = int(counts.max())
    if shift * 2 > len(ecg_ids):  # one record holds over half the samples: pair in a cycle over records
        return None
    partner = np.empty(len(ecg_ids), dtype=np.int64)
    partner[order] = order[(np.arange(len(order)) + shift) % len(order)]
    if np.any(ecg_ids[partner] == ecg_ids):  # cannot happen with sorted groups; kept as a guard
        raise RuntimeError("record_derangement paired a sample with its own record")
    return partner


def sample_losses(model: Any, batch: dict[str, Any], signal: Any, lead_mask: Any) -> np.ndarray:
    """Mean next-token cross-entropy over each sample's labelled tokens: float64 ``[B]`` (NaN: none)."""
    import torch

    out = model(batch["input_ids"], batch["attention_mask"], signal, lead_mask)
    logits = out.logits[:, :-1].float()  # [B, L-1, V]
    target = batch["labels"][:, 1:].to(logits.device)  # [B, L-1]
    keep = target != IGNORE_INDEX  # [B, L-1]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [B, L-1]
    total = -(logp * keep).sum(dim=1)  # [B]
    n = keep.sum(dim=1).clamp(min=1)  # [B]
    losses = (total / n).double().cpu().numpy()
    losses[keep.sum(dim=1).cpu().numpy() == 0] = np.nan
    return losses


def ecg_effect(model: Any, dataset: Any, collate: Any, *, max_samples: int, batch_size: int, seed: int,
               device: Any, amp: bool) -> dict[str, Any] | None:
    """Validation losses with true and with other records' ECGs, and their paired difference (module docstring).

    ``dataset`` is a :class:`ecglm.train.pairs_data.PairsDataset` (its ``ecg_ids`` say each sample's
    record). Returns None when the check cannot be made (no samples, or fewer than two records).
    """
    import torch

    from ecglm.train.runtime import autocast

    n_all = len(dataset)
    if n_all == 0 or max_samples <= 0:
        return None
    rng = numpy_rng(seed, "ecg_check")
    chosen = np.sort(rng.permutation(n_all)[: min(max_samples, n_all)])  # [n] dataset indices
    ecg_ids = np.asarray(dataset.ecg_ids)[chosen]
    partner = record_derangement(ecg_ids)
    if partner is None:
        log.warning("ECG check skipped: the %d validation samples cannot be paired with other records (fewer than two records, or one holds over half)", len(chosen))
        return None
    true_loss, shuffled_loss = np.zeros(len(chosen)), np.zeros(len(chosen))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(chosen), batch_size):
            idx = np.arange(start, min(start + batch_size, len(chosen)))
            batch = collate([dataset[int(chosen[i])] for i in idx])
            other = collate([dataset[int(chosen[partner[i]])] for i in idx])
            with autocast(device, amp):
                true_loss[idx] = sample_losses(model, batch, batch["signal"], batch["lead_mask"])
                shuffled_loss[idx] = sample_losses(model, batch, other["signal"], other["lead_mask"])
    model.train(was_training)
    ok = np.isfinite(true_loss) & np.isfinite(shuffled_loss)
    diff = shuffled_loss[ok] - true_loss[ok]
    interval = group_bootstrap_mean(diff, ecg_ids[ok], seed=seed)
    result = {
        "what": "validation loss on the target spans, each sample's own ECG vs another record's (shuffled)",
        "n_samples": int(ok.sum()),
        "n_records": int(len(np.unique(ecg_ids[ok]))),
        "of_val_samples": int(n_all),
        "loss_true": float(true_loss[ok].mean()),
        "loss_shuffled": float(shuffled_loss[ok].mean()),
        "difference": interval,  # shuffled - true: mean and 95% bootstrap interval (records resampled)
        "ecg_lowers_loss": bool(interval["low"] > 0),
    }
    log.info("ECG check on %d val samples: loss %.4f with the true ECGs, %.4f shuffled; difference %.4f "
             "[%.4f, %.4f]", result["n_samples"], result["loss_true"], result["loss_shuffled"],
             interval["mean"], interval["low"], interval["high"])  # fmt: skip
    return result
