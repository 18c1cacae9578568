"""learner.advantages: hand-derived values, a loop reference, and hypothesis properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learner.advantages import (
    ADV_ESTIMATORS,
    best_worst_pairs,
    combine_rewards,
    group_advantages,
    grpo_advantages,
    pair_grpo_advantages,
)

NAN = float("nan")
BIG = 2**40 + 3  # group ids are arbitrary long integers, not 0..G-1


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def ids(x):
    return torch.tensor(x, dtype=torch.long)


# --- the loop reference (what the vectorised code must equal) ---------------------------------


def ref_group_advantages(rewards, group_ids, eps=1e-6, scale="group"):
    """One Python loop per group: the definition, written the obvious way."""
    r, g = rewards.tolist(), group_ids.tolist()
    out = [0.0] * len(r)
    for gid in set(g):
        idx = [i for i in range(len(r)) if g[i] == gid and not math.isnan(r[i])]
        vals = [r[i] for i in idx]
        if len(vals) < 2 or max(vals) == min(vals):
            continue
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        for i in idx:
            out[i] = (r[i] - mean) / (std + eps) if scale == "group" else r[i] - mean
    return torch.tensor(out, dtype=torch.float64)


def ref_best_worst(rewards, group_ids):
    r, g = rewards.tolist(), group_ids.tolist()
    chosen, rejected = [], []
    for gid in sorted(set(g)):
        idx = [i for i in range(len(r)) if g[i] == gid and not math.isnan(r[i])]
        if len(idx) < 2 or max(r[i] for i in idx) == min(r[i] for i in idx):
            continue
        chosen.append(min(idx, key=lambda i: (-r[i], i)))  # highest reward, then lowest index
        rejected.append(min(idx, key=lambda i: (r[i], i)))  # lowest reward, then lowest index
    return chosen, rejected


# --- hand-derived values -----------------------------------------------------------------------


def test_group_advantages_by_hand():
    # group 10: r = 1, 2, 3 -> mean 2, sample std sqrt((1 + 0 + 1) / 2) = 1 -> (-1, 0, 1) / (1 + eps)
    # group BIG: 5, 5 -> all equal -> 0;  group -3: a single rollout -> 0
    # the rows are interleaved to check that grouping does not depend on order.
    r = t([1.0, 5.0, 2.0, 7.0, 5.0, 3.0])
    g = ids([10, BIG, 10, -3, BIG, 10])
    eps = 1e-6
    expected = t([-1 / (1 + eps), 0.0, 0.0, 0.0, 0.0, 1 / (1 + eps)])
    torch.testing.assert_close(group_advantages(r, g, eps=eps), expected, rtol=0, atol=1e-15)
    # Dr. GRPO: only centred, r - mean = -1, 0, 1
    torch.testing.assert_close(
        group_advantages(r, g, scale="none"), t([-1.0, 0, 0, 0, 0, 1.0]), rtol=0, atol=0
    )


def test_group_advantages_nan_left_out_and_zero():
    # valid rewards of the group: 0, 1, 2 (the NaN is left out) -> mean 1, std 1 -> -1, 0, 1
    # group 4: one valid reward beside a NaN -> degenerate -> 0
    r = t([0.0, NAN, 1.0, 2.0, NAN, 9.0])
    g = ids([7, 7, 7, 7, 4, 4])
    adv = group_advantages(r, g, eps=0.0)
    torch.testing.assert_close(adv, t([-1.0, 0.0, 0.0, 1.0, 0.0, 0.0]), rtol=0, atol=1e-15)


def test_all_equal_is_exactly_zero_despite_rounding():
    # float mean of three 0.1s is not exactly 0.1; the all-equal rule must still give 0
    r = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7], dtype=torch.float32)
    adv = group_advantages(r, ids([1, 1, 1, 2, 2]))
    assert adv.dtype == torch.float32
    assert torch.equal(adv, torch.zeros(5))


def test_pair_grpo_by_hand():
    # pair 7 (aligned, w = 1): task 0 rewards 0, 1 -> mean .5, std sqrt(.5) -> -/+ .5/sqrt(.5)
    #                           task 1 rewards 2, 4 -> mean 3, std sqrt(2) -> -/+ 1/sqrt(2)
    # pair BIG (retrieved, s = .64, w = sqrt(.64) = .8): task 0 rewards 1, 0 -> +/- .8/sqrt(2)
    # Same pair, different tasks are separate groups; same task, different pairs too.
    r = t([0.0, 2.0, 1.0, 4.0, 1.0, 0.0])
    pair = ids([7, 7, 7, 7, BIG, BIG])
    task = ids([0, 1, 0, 1, 0, 0])
    w = t([1.0, 1.0, 1.0, 1.0, 0.8, 0.8])
    a = 1 / math.sqrt(2)
    expected = t([-a, -a, a, a, 0.8 * a, -0.8 * a])
    adv = pair_grpo_advantages(r, pair, task, w, eps=0.0)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-15)
    # plain GRPO: the same groups, no weight
    torch.testing.assert_close(grpo_advantages(r, pair, task, eps=0.0), t([-a, -a, a, a, a, -a]))


def test_pair_weight_must_be_one_per_pair_and_valid():
    r, pair, task = t([0.0, 1.0]), ids([3, 3]), ids([0, 0])
    with pytest.raises(ValueError, match="pair_id 3 has several pair weights"):
        pair_grpo_advantages(r, pair, task, t([1.0, 0.5]))
    with pytest.raises(ValueError, match=r"pair_weight\[1\]=nan \(pair_id 3\)"):
        pair_grpo_advantages(r, pair, task, t([1.0, NAN]))


def test_combine_rewards_by_hand():
    g = ids([5, 5, 5])
    a, b = t([0.0, 1.0, 2.0]), t([0.0, 0.0, 3.0])
    # sum_then_normalise: 1 * a + 2 * b = 0, 1, 8 (the estimator normalises later)
    out = combine_rewards({"a": a, "b": b}, {"a": 1.0, "b": 2.0}, g)
    torch.testing.assert_close(out, t([0.0, 1.0, 8.0]), rtol=0, atol=0)
    # normalise_then_sum: z(a) = -1, 0, 1 (mean 1, std 1);
    # b: mean 1, deviations -1, -1, 2, var (1 + 1 + 4) / 2 = 3 -> z(b) = (-1, -1, 2) / sqrt(3)
    # 1 * z(a) + 2 * z(b) = -1 - 2/sqrt3, -2/sqrt3, 1 + 4/sqrt3
    s3 = math.sqrt(3)
    out = combine_rewards({"a": a, "b": b}, {"a": 1.0, "b": 2.0}, g, mode="normalise_then_sum")
    torch.testing.assert_close(out, t([-1 - 2 / s3, -2 / s3, 1 + 4 / s3]), rtol=0, atol=1e-12)


def test_combine_rewards_nan_stays_nan_in_both_modes():
    g = ids([1, 1, 1])
    a, b = t([0.0, 1.0, 2.0]), t([1.0, NAN, 3.0])
    for mode in ("sum_then_normalise", "normalise_then_sum"):
        out = combine_rewards({"a": a, "b": b}, {"a": 1.0, "b": 1.0}, g, mode=mode)
        assert torch.isnan(out).tolist() == [False, True, False], mode
    # The failed rollout then gets advantage 0 and is left out of the others' statistics:
    # a + b = 1, NaN, 5 -> mean 3, sample std sqrt(((-2)^2 + 2^2) / 1) = 2 sqrt2
    # -> (1 - 3) / (2 sqrt2) = -1/sqrt2, 0, +1/sqrt2
    out = combine_rewards({"a": a, "b": b}, {"a": 1.0, "b": 1.0}, g)
    adv = group_advantages(out, g, eps=0.0)
    torch.testing.assert_close(adv, t([-1 / math.sqrt(2), 0.0, 1 / math.sqrt(2)]))


def test_unknown_names_and_bad_keys_list_the_valid_ones():
    r, g = t([0.0, 1.0]), ids([0, 0])
    with pytest.raises(
        ValueError, match="unknown advantage scale 'zscore'; valid: 'group', 'none'"
    ):
        group_advantages(r, g, scale="zscore")
    with pytest.raises(ValueError, match="valid: 'sum_then_normalise', 'normalise_then_sum'"):
        combine_rewards({"a": r}, {"a": 1.0}, g, mode="max")
    with pytest.raises(ValueError, match=r"\['a', 'b'\] and weights \['a'\]"):
        combine_rewards({"a": r, "b": r}, {"a": 1.0}, g)
    with pytest.raises(ValueError, match="group_ids must have shape"):
        group_advantages(r, ids([0, 0, 0]))
    with pytest.raises(ValueError, match=r"rewards\[1\]=inf: a reward is finite, or NaN"):
        group_advantages(t([0.0, math.inf]), g)
    with pytest.raises(ValueError, match="rewards must be a float tensor"):
        group_advantages(ids([0, 1]), g)


def test_best_worst_pairs_by_hand():
    # group 9: max 1.0 at rows 1 and 2 -> chosen 1 (lowest index); min 0.0 at 3, 4 -> rejected 3
    # group -1: all equal -> no pair; group 5: one rollout -> no pair
    # group BIG: row 8 NaN is never picked; 1.0 (row 9) vs 4.0 (row 10) -> (10, 9)
    # pairs come in the sorted order of group ids: -1, 5, 9, BIG.
    r = t([0.5, 1.0, 1.0, 0.0, 0.0, 3.0, 3.0, 2.0, NAN, 1.0, 4.0])
    g = ids([9, 9, 9, 9, 9, -1, -1, 5, BIG, BIG, BIG])
    chosen, rejected = best_worst_pairs(r, g)
    assert chosen.tolist() == [1, 10]
    assert rejected.tolist() == [3, 9]


def test_estimators_share_one_signature():
    r, pair, task, w = t([0.0, 1.0, 3.0]), ids([1, 1, 1]), ids([0, 0, 0]), t([0.5] * 3)
    base = group_advantages(r, pair)
    assert torch.equal(ADV_ESTIMATORS["pair_grpo"](r, pair, task, w), base * 0.5)
    assert torch.equal(ADV_ESTIMATORS["grpo"](r, pair, task, w), base)


# --- fast vs reference, and properties ----------------------------------------------------------

group_id = st.sampled_from([-7, 0, 3, BIG, 2**62])
reward = st.one_of(
    st.integers(-8, 8).map(lambda k: k / 4),  # ties are common, as with 0/1 accuracy rewards
    st.just(NAN),
)
rows = st.lists(st.tuples(reward, group_id), min_size=1, max_size=40)


def split(rows_):
    return t([r for r, _ in rows_]), ids([g for _, g in rows_])


@settings(max_examples=150, deadline=None)
@given(rows, st.sampled_from(["group", "none"]))
def test_fast_equals_loop_reference(rows_, scale):
    r, g = split(rows_)
    torch.testing.assert_close(
        group_advantages(r, g, scale=scale), ref_group_advantages(r, g, scale=scale)
    )
    chosen, rejected = best_worst_pairs(r, g)
    assert (chosen.tolist(), rejected.tolist()) == ref_best_worst(r, g)


@settings(max_examples=150, deadline=None)
@given(rows)
def test_groups_sum_to_zero_with_unit_sample_std(rows_):
    r, g = split(rows_)
    adv = group_advantages(r, g, eps=0.0)
    for gid in set(g.tolist()):
        sel = (g == gid) & ~torch.isnan(r)
        a = adv[sel]
        assert abs(float(a.sum())) < 1e-9
        if len(set(r[sel].tolist())) >= 2:  # not degenerate
            assert float(a.std(unbiased=True)) == pytest.approx(1.0, abs=1e-9)
        else:
            assert torch.equal(a, torch.zeros_like(a))


@settings(max_examples=100, deadline=None)
@given(rows, st.data())
def test_pair_weights_scale_exactly(rows_, data):
    r, pair = split(rows_)
    task = ids(data.draw(st.lists(st.sampled_from([0, 1]), min_size=len(r), max_size=len(r))))
    per_pair = {p: data.draw(st.floats(0.0, 1.0)) for p in set(pair.tolist())}
    w = t([math.sqrt(per_pair[p]) for p in pair.tolist()])  # retrieved: sqrt(s_p)
    unweighted = grpo_advantages(r, pair, task)
    assert torch.equal(pair_grpo_advantages(r, pair, task, w), unweighted * w)
    assert torch.equal(pair_grpo_advantages(r, pair, task, torch.ones_like(w)), unweighted)


@settings(max_examples=150, deadline=None)
@given(rows)
def test_nan_rewards_never_leak(rows_):
    # Advantages with NaN rows equal those computed with the NaN rows deleted; NaN rows get 0.
    r, g = split(rows_)
    adv = group_advantages(r, g)
    bad = torch.isnan(r)
    assert torch.isfinite(adv).all()
    assert torch.equal(adv[bad], torch.zeros(int(bad.sum()), dtype=adv.dtype))
    if (~bad).any():
        torch.testing.assert_close(adv[~bad], group_advantages(r[~bad], g[~bad]), rtol=0, atol=0)
