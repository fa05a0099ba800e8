"""Class-balanced draws of the alignment's training samples (ecglm.train.sample_balance, align.epoch_order)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest

from ecglm.core.errors import StageError
from ecglm.train.loop import epoch_order
from ecglm.train.sample_balance import OTHER, balanced_weights, group_shares, sample_classes


def test_power_one_draws_every_class_equally_and_power_zero_keeps_frequencies():
    groups = ["SR"] * 8 + ["AFIB"] * 2 + ["SARRH"]
    shares = group_shares(groups, balanced_weights([groups], 1.0))
    assert shares == pytest.approx({"SR": 1 / 3, "AFIB": 1 / 3, "SARRH": 1 / 3})
    w0 = balanced_weights([groups], 0.0)
    assert np.allclose(w0, 1 / 11)  # the data's own frequencies: every sample alike
    half = group_shares(groups, balanced_weights([groups], 0.5))  # shares ~ sqrt(size)
    assert half["SR"] / half["SARRH"] == pytest.approx(np.sqrt(8)) and half["SR"] < 8 / 11
    w = balanced_weights([groups], 1.0)
    assert w.sum() == pytest.approx(1.0) and w[0] == pytest.approx(1 / 24) and w[-1] == pytest.approx(1 / 3)


def test_several_tasks_mix_their_balanced_draws_equally():
    rhythm = ["SR", "SR", "SR", "AFIB"]
    diagnostic = ["NORM", "MI", "MI", "MI"]
    w = balanced_weights([rhythm, diagnostic], 1.0)
    # half of the draws balance rhythm (SR 1/6 each, AFIB 1/2), half diagnostic (NORM 1/2, MI 1/6 each)
    expected = 0.5 * np.array([1 / 6, 1 / 6, 1 / 6, 1 / 2]) + 0.5 * np.array([1 / 2, 1 / 6, 1 / 6, 1 / 6])
    assert np.allclose(w, expected)
    assert group_shares(rhythm, w)["AFIB"] == pytest.approx(1 / 3)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="at least one task"):
        balanced_weights([], 1.0)
    with pytest.raises(ValueError, match="power"):
        balanced_weights([["a"]], 1.5)
    with pytest.raises(ValueError, match="one group per sample"):
        balanced_weights([["a", "b"], ["c"]], 1.0)


def test_weighted_epoch_order_follows_the_weights_and_is_reproducible():
    w = np.array([0.0, 0.5, 0.25, 0.25])
    a = epoch_order(4, 7, 0, w)
    assert len(a) == 4 and np.array_equal(a, epoch_order(4, 7, 0, w))
    many = np.concatenate([epoch_order(4, 7, e, w) for e in range(500)])  # 2,000 draws
    counts = Counter(many.tolist())
    assert 0 not in counts  # a zero weight is never drawn
    assert counts[1] / len(many) == pytest.approx(0.5, abs=0.04)
    assert counts[2] / len(many) == pytest.approx(0.25, abs=0.04)
    assert sorted(epoch_order(4, 7, 0)) == [0, 1, 2, 3]  # no weights: a permutation, as before
    with pytest.raises(ValueError, match="3 weights for 4 samples"):
        epoch_order(4, 7, 0, np.ones(3) / 3)


def test_sample_classes_uses_the_evaluation_rule_and_names_a_missing_ecg(tmp_path):
    path = tmp_path / "records.parquet"
    pl.DataFrame({
        "ecg_id": [1, 2, 3, 4],
        "rhythm": [["SR"], ["SR", "SARRH"], [], ["AFIB", "PACE"]],  # PACE is none of the five
    }).write_parquet(path)  # fmt: skip
    assert sample_classes(path, [1, 1, 2, 3, 4], ["rhythm"]) == [["SR", "SR", OTHER, OTHER, "AFIB"]]
    with pytest.raises(StageError, match=r"records\.parquet: ecg_id 9 .*not in the records table"):
        sample_classes(path, [1, 9], ["rhythm"])
    with pytest.raises(StageError, match="diagnostic_superclass"):
        sample_classes(path, [1], ["rhythm", "diagnostic"])  # the column is missing: named


def test_sample_classes_gives_one_group_list_per_task(tmp_path):
    path = tmp_path / "records.parquet"
    pl.DataFrame({
        "ecg_id": [1, 2, 3],
        "rhythm": [["SR"], ["AFIB"], ["SR"]],
        "diagnostic_superclass": [["NORM"], ["MI", "CD"], ["HYP"]],
    }).write_parquet(path)  # fmt: skip
    rhythm, diagnostic = sample_classes(path, [3, 2, 1], ["rhythm", "diagnostic"])
    assert rhythm == ["SR", "AFIB", "SR"]
    assert diagnostic == ["HYP", OTHER, "NORM"]
