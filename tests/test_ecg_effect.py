"""The checks behind "the ECG reaches the LLM": record-level shuffling, grouped bootstrap, test subsets."""

from __future__ import annotations

import numpy as np
import pytest

from ecglm.core.stats import group_bootstrap_mean
from ecglm.train.ecg_effect import record_derangement


@pytest.mark.parametrize("ecg_ids", [[5, 5, 5, 1, 2, 2, 9, 9, 3, 4], list(range(7)), [1, 1, 2, 2], [3, 1, 2, 1, 2, 3]])
def test_no_sample_takes_an_ecg_of_its_own_record(ecg_ids):
    ids = np.asarray(ecg_ids)
    partner = record_derangement(ids)
    assert partner is not None and sorted(partner.tolist()) == list(range(len(ids)))  # a permutation
    assert np.all(ids[partner] != ids)
    assert np.array_equal(partner, record_derangement(ids))  # fixed, no randomness


def test_records_that_cannot_be_paired_give_none():
    assert record_derangement(np.asarray([4, 4, 4])) is None
    assert record_derangement(np.asarray([4, 4, 4, 1])) is None  # one record holds over half


def test_the_group_bootstrap_is_seeded_and_wider_for_correlated_rows():
    rng = np.random.default_rng(0)
    group_means = rng.normal(0.0, 1.0, size=20)
    values = np.repeat(group_means, 10) + rng.normal(0.0, 0.1, size=200)  # 10 near-copies per group
    groups = np.repeat(np.arange(20), 10)
    by_group = group_bootstrap_mean(values, groups, seed=1)
    by_row = group_bootstrap_mean(values, np.arange(200), seed=1)
    assert by_group == group_bootstrap_mean(values, groups, seed=1)
    assert by_group["low"] < values.mean() < by_group["high"] and by_group["groups"] == 20 and by_group["n"] == 200
    assert (by_group["high"] - by_group["low"]) > 2 * (by_row["high"] - by_row["low"])
    shifted = group_bootstrap_mean(values + 5.0, groups, seed=1)
    assert shifted["low"] > 0  # an effect far from 0 is found
    with pytest.raises(ValueError, match="one length"):
        group_bootstrap_mean([1.0, 2.0], [1], seed=1)
    with pytest.raises(ValueError, match="finite"):
        group_bootstrap_mean([1.0, float("nan")], [1, 2], seed=1)


def test_the_test_subset_is_class_stratified_and_seeded(tmp_path):
    from test_evaluate import write_store

    from ecglm.eval.evaluate import load_eval_set, subset_eval_set

    paths = write_store(tmp_path / "store")
    full = load_eval_set(paths["records"], "rhythm")
    sub = subset_eval_set(full, 5, seed=3)
    assert len(sub) == 5 and sub.n_single_class == len(full) and full.n_single_class is None
    present = [j for j in range(5) if (full.y == j).any()]
    assert sorted(set(sub.y.tolist())) == present[:5]  # every class present gets a turn before any gets two
    assert set(sub.ecg_ids.tolist()) <= set(full.ecg_ids.tolist()) and list(sub.rows) == sorted(sub.rows)
    again = subset_eval_set(full, 5, seed=3)
    assert again.ecg_ids.tolist() == sub.ecg_ids.tolist()
    assert subset_eval_set(full, len(full) + 1, seed=3) is full


def test_any_statistic_of_the_drawn_rows_gets_the_same_draws_as_the_mean():
    from ecglm.core.stats import group_bootstrap

    rng = np.random.default_rng(4)
    values = rng.normal(size=60)
    groups = np.repeat(np.arange(15), 4)
    boot = group_bootstrap(lambda rows: values[rows].mean(), groups, seed=9, reps=500)
    mean = group_bootstrap_mean(values, groups, seed=9, reps=500)
    assert (boot["low"], boot["high"]) == pytest.approx((mean["low"], mean["high"]))
    assert boot["groups"] == 15 and boot["undefined"] == 0
    # a statistic undefined on most draws gives no interval, and says how often it was undefined
    rare = group_bootstrap(lambda rows: 1.0 if 0 in rows and 1 in rows else None, np.arange(30), seed=9, reps=200)
    assert rare["low"] is None and rare["high"] is None and rare["undefined"] > 100
