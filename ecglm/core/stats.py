"""Bootstrap intervals of a mean, resampling whole groups (records, patients) rather than single rows.

Rows that share a group (the lead-drop copies of one ECG, the ECGs of one patient) are not independent:
resampling rows would make an interval too narrow. :func:`group_bootstrap_mean` draws groups with
replacement, as many as there are, and takes the mean over all rows of the drawn groups.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ecglm.core.seeding import numpy_rng


def group_bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    *,
    seed: int,
    reps: int = 2000,
    level: float = 0.95,
) -> dict[str, float | int]:
    """``{"mean", "low", "high", "n", "groups", "reps", "level"}``: the mean of ``values`` and its percentile
    bootstrap interval, resampling ``groups`` (one label per value) with replacement ``reps`` times."""
    x = np.asarray(values, dtype=np.float64)  # [n]
    if x.ndim != 1 or len(x) == 0 or len(x) != len(groups):
        raise ValueError(f"values ({x.shape}) and groups ({len(groups)}) must be 1-D, non-empty and of one length")
    if not np.all(np.isfinite(x)):
        raise ValueError("values must be finite")
    _, index = np.unique(np.asarray(groups), return_inverse=True)  # [n] group number of each value
    k = int(index.max()) + 1
    sums = np.bincount(index, weights=x, minlength=k)  # [k]
    counts = np.bincount(index, minlength=k).astype(np.float64)  # [k]
    rng = numpy_rng(seed, "bootstrap")
    draws = rng.integers(0, k, size=(reps, k))  # [reps, k] groups drawn with replacement
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)  # [reps]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return {"mean": float(x.mean()), "low": float(low), "high": float(high), "n": int(len(x)), "groups": k,
            "reps": int(reps), "level": float(level)}  # fmt: skip
