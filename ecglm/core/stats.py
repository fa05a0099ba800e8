"""Bootstrap intervals of a mean, resampling whole groups (records, patients) rather than single rows.

Rows that share a group (the lead-drop copies of one ECG, the ECGs of one patient) are not independent:
resampling rows would make an interval too narrow. :func:`group_bootstrap_mean` draws groups with
replacement, as many as there are, and takes the mean over all rows of the drawn groups;
:func:`group_bootstrap` does the same for any statistic of the drawn rows (balanced accuracy, AUC).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

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
    union, index, draws = _group_draws(groups, seed, reps)
    k = len(union)
    sums = np.bincount(index, weights=x, minlength=k)  # [k]
    counts = np.bincount(index, minlength=k).astype(np.float64)  # [k]
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)  # [reps]
    low, high = _percentiles(means, level)
    return {"mean": float(x.mean()), "low": float(low), "high": float(high), "n": int(len(x)), "groups": k,
            "reps": int(reps), "level": float(level)}  # fmt: skip


def group_bootstrap(
    statistic: Callable[[np.ndarray], float | None],
    groups: Sequence[Any] | np.ndarray,
    *,
    seed: int,
    reps: int = 1000,
    level: float = 0.95,
) -> dict[str, Any]:
    """The percentile bootstrap interval of ``statistic(rows)`` (``rows``: int [m] indices into ``groups``,
    repeats allowed), resampling the groups with replacement ``reps`` times: ``{"low", "high", "groups",
    "reps", "undefined", "level"}``. A draw where the statistic is undefined (None or not finite: a class
    that no drawn row has) is left out and counted in ``undefined``; low and high are None when more than
    half the draws are undefined."""
    return pooled_group_bootstrap({"statistic": [statistic]}, [groups], seed=seed, reps=reps, level=level)["statistic"]


def pooled_group_bootstrap(
    statistics: Mapping[str, Sequence[Callable[[np.ndarray], float | None]]],
    member_groups: Sequence[Sequence[Any] | np.ndarray],
    *,
    seed: int,
    reps: int = 1000,
    level: float = 0.95,
    weights: Sequence[float] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`group_bootstrap` of several statistics, each the mean over several members (the evaluations of
    one variant's seeds, whose rows may differ), all on the same draws; with ``weights`` (one per member)
    the weighted sum instead of the mean (``(1, -1)``: the paired difference of two evaluations).

    ``member_groups[j]`` labels member j's rows; ``statistics[name][j]`` is that statistic on member j's rows.
    Each draw takes the groups of all members together with replacement (the union, as many as there are),
    gives every member its rows of the drawn groups (repeats kept, none where it has no row of them), and
    averages the members' values; a draw where a member's value is undefined, or a member has no drawn row,
    is left out for that statistic. ``{name: {"low", "high", "groups", "reps", "undefined", "level"}}``."""
    labels = [np.asarray(groups) for groups in member_groups]
    w = np.full(len(labels), 1.0 / len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(labels),):
        raise ValueError(f"{len(w)} weights for {len(labels)} members")
    union, index, draws = _group_draws(np.concatenate(labels), seed, reps)
    k = len(union)
    member_rows = []  # per member: the rows of each group of the union ([] where it has none)
    for member in labels:
        position = np.searchsorted(union, member)  # [m] group number of each row
        member_rows.append([np.flatnonzero(position == g) for g in range(k)])
    values: dict[str, list[float]] = {name: [] for name in statistics}
    for drawn in draws:
        chosen = [np.concatenate([rows[g] for g in drawn]) for rows in member_rows]
        for name, functions in statistics.items():
            got = [fn(rows) if len(rows) else None for fn, rows in zip(functions, chosen)]
            if all(v is not None and np.isfinite(v) for v in got):
                values[name].append(float(np.dot(w, got)))
    out = {}
    for name, got in values.items():
        low, high = _percentiles(np.asarray(got), level) if len(got) * 2 >= reps else (None, None)
        out[name] = {"low": low, "high": high, "groups": k, "reps": int(reps), "undefined": int(reps - len(got)),
                     "level": float(level)}  # fmt: skip
    return out


def _group_draws(groups: Sequence[Any] | np.ndarray, seed: int, reps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the distinct groups [k], group number of each row [n], drawn groups [reps, k]) for ``seed``'s bootstrap."""
    if len(groups) == 0:
        raise ValueError("no rows to resample")
    union, index = np.unique(np.asarray(groups), return_inverse=True)  # [k], [n] group number of each row
    draws = numpy_rng(seed, "bootstrap").integers(0, len(union), size=(reps, len(union)))  # [reps, k] with replacement
    return union, index, draws


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion k/n ((nan, nan) for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)
