"""From rewards to the learning signal: group-normalised advantages (GRPO, Pair-GRPO), the
combination of several reward terms, and the best-vs-worst pairs of online SimPO.

Pure torch: no ray, deepspeed or vllm here (tests/unit/test_learner_losses.py checks).

Groups are named by arbitrary long integers (``group_ids``, ``pair_ids``, ``task_ids``: not
contiguous, in any order). They are mapped to 0..G-1 with ``torch.unique(return_inverse=True)``
and every per-group statistic is one ``index_add_`` / ``scatter_reduce`` over N rollouts:
no Python loop over groups.

A failed reward is NaN (DESIGN.md): it is left out of its group's statistics, its own
advantage is 0, and it never changes another rollout's advantage.

Each independent choice is a small registry (``ADV_SCALES``, ``ADV_ESTIMATORS``,
``REWARD_COMBINE``, ``PREFERENCE_PAIRS``); ``lookup`` raises an error listing valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

Tensor = torch.Tensor


def lookup(registry: Mapping[str, Callable], name: str, what: str) -> Callable:
    """``registry[name]``, or a ValueError that lists the valid names of ``what``."""
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(repr(k) for k in registry)
        raise ValueError(f"unknown {what} {name!r}; valid: {valid}") from None


def _check_1d(name: str, x: Tensor, n: int) -> None:
    if x.dim() != 1 or x.shape[0] != n:
        raise ValueError(
            f"{name} must have shape [{n}] (one entry per rollout), got {list(x.shape)}"
        )


def _check_rewards(rewards: Tensor) -> None:
    if rewards.dim() != 1 or not rewards.is_floating_point():
        raise ValueError(
            f"rewards must be a float tensor [N] (NaN = failed), got {rewards.dtype} "
            f"{list(rewards.shape)}"
        )
    if bool(torch.isinf(rewards).any()):
        i = int(torch.isinf(rewards).nonzero()[0])
        raise ValueError(
            f"rewards[{i}]={float(rewards[i])}: a reward is finite, or NaN when it failed; "
            "check the reward function that produced it"
        )


def group_index(*ids: Tensor) -> tuple[Tensor, int]:
    """Map rollouts to dense group numbers 0..G-1 by the tuple of their ids.

    ``ids``: one or more long tensors [N] (a group is one distinct tuple, e.g. (pair_id,
    task_id)). Returns ``(inverse[N], G)``; group numbers follow the sorted order of the ids.
    """
    if len(ids) == 1:
        uniq, inverse = torch.unique(ids[0], return_inverse=True)
    else:
        key = torch.stack(ids, dim=1)  # [N, K]: one row of ids per rollout
        uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    return inverse, int(uniq.shape[0])


# --- group statistics ---------------------------------------------------------------------------


def _group_range(x: Tensor, valid: Tensor, inverse: Tensor, G: int) -> tuple[Tensor, Tensor]:
    """Per-group max and min of ``x`` [N] over the rows where ``valid``; a group with no valid
    row gets (-inf, +inf). Returns (hi[G], lo[G])."""
    inf = torch.full_like(x, float("inf"))
    hi = torch.full((G,), -float("inf"), dtype=x.dtype, device=x.device)
    lo = torch.full((G,), float("inf"), dtype=x.dtype, device=x.device)
    hi = hi.scatter_reduce(0, inverse, torch.where(valid, x, -inf), reduce="amax")
    lo = lo.scatter_reduce(0, inverse, torch.where(valid, x, inf), reduce="amin")
    return hi, lo


def _group_stats(r: Tensor, inverse: Tensor, G: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-group mean, sample std (N_g - 1) and count over the valid (non-NaN) rewards, and
    a per-rollout flag "this rollout's group is degenerate" (fewer than 2 valid rewards, or
    all of them equal). ``r`` is float64 [N]; returns (mean[G], std[G], count[G], degenerate[N]).
    """
    valid = ~torch.isnan(r)  # [N]
    r0 = torch.where(valid, r, torch.zeros_like(r))  # [N], NaN -> 0 so sums stay finite
    count = torch.zeros(G, dtype=r.dtype, device=r.device).index_add_(0, inverse, valid.to(r.dtype))
    total = torch.zeros(G, dtype=r.dtype, device=r.device).index_add_(0, inverse, r0)
    mean = total / count.clamp(min=1)  # [G]
    dev = torch.where(valid, r - mean[inverse], torch.zeros_like(r))  # [N]
    ss = torch.zeros(G, dtype=r.dtype, device=r.device).index_add_(0, inverse, dev * dev)
    std = (ss / (count - 1).clamp(min=1)).sqrt()  # [G], sample std
    # "All equal" is decided exactly (max == min), not by a rounded std: three rewards of 0.1
    # have a float mean that differs from 0.1 in the last bit.
    hi, lo = _group_range(r, valid, inverse, G)
    degenerate = ((count < 2) | (hi == lo))[inverse]  # [N]
    return mean, std, count, degenerate


def _scale_group(dev: Tensor, std: Tensor, eps: float) -> Tensor:
    """GRPO: (r - mean_g) / (std_g + eps) (DeepSeekMath GRPO; PairUni eq. 2)."""
    return dev / (std + eps)


def _scale_none(dev: Tensor, std: Tensor, eps: float) -> Tensor:
    """Dr. GRPO: r - mean_g, no division by the group std (Liu et al., "Understanding R1-Zero")."""
    return dev


ADV_SCALES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "group": _scale_group,
    "none": _scale_none,
}
"""How a centred reward is scaled: (dev[N], std_g[N], eps) -> advantage[N]."""


def group_advantages(
    rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6, scale: str = "group"
) -> Tensor:
    """Group-normalised advantages A_i = (r_i - mean_g) / (std_g + eps) (GRPO; PairUni eq. 2).

    rewards: float [N], NaN for a failed reward. group_ids: long [N], any integers.
    scale: a name in ``ADV_SCALES`` ("group": divide by the sample std (N_g - 1);
    "none": only centre, Dr. GRPO). A group of size 1, or whose valid rewards are all equal,
    gets 0; a NaN reward gets 0 and is left out of its group's mean and std.
    Statistics are computed in float64; the result has the dtype of ``rewards``.
    """
    scale_fn = lookup(ADV_SCALES, scale, "advantage scale")
    _check_rewards(rewards)
    _check_1d("group_ids", group_ids, rewards.shape[0])
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    r = rewards.to(torch.float64)  # [N]
    inverse, G = group_index(group_ids)
    mean, std, _, degenerate = _group_stats(r, inverse, G)
    dev = r - mean[inverse]  # [N]
    adv = scale_fn(dev, std[inverse], eps)  # [N]
    keep = ~(degenerate | torch.isnan(r))
    return torch.where(keep, adv, torch.zeros_like(adv)).to(rewards.dtype)


def pair_grpo_advantages(
    rewards: Tensor,
    pair_ids: Tensor,
    task_ids: Tensor,
    pair_weight: Tensor,
    *,
    eps: float = 1e-6,
    scale: str = "group",
) -> Tensor:
    """Pair-GRPO advantages (PairUni eq. 2-3): group-normalise per (pair_id, task_id), then
    scale by the pair weight, A_i = w_p * (r_i - mean_g) / (std_g + eps).

    rewards: float [N] (NaN = failed). pair_ids, task_ids: long [N]. pair_weight: float [N],
    the weight of each rollout's pair (1 for an aligned pair, sqrt(s_p) for a retrieved
    pair of cosine similarity s_p); it must be finite, >= 0 and equal for all rollouts of
    one pair.
    """
    _check_rewards(rewards)
    n = rewards.shape[0]
    for name, x in (("pair_ids", pair_ids), ("task_ids", task_ids), ("pair_weight", pair_weight)):
        _check_1d(name, x, n)
    w = pair_weight.to(torch.float64)  # [N]
    bad = ~torch.isfinite(w) | (w < 0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"pair_weight[{i}]={float(w[i])} (pair_id {int(pair_ids[i])}) must be finite and "
            ">= 0; it is 1 for an aligned pair and sqrt(similarity) for a retrieved one"
        )
    p_inv, P = group_index(pair_ids)
    w_hi, w_lo = _group_range(w, torch.ones_like(w, dtype=torch.bool), p_inv, P)
    mixed = (w_hi != w_lo)[p_inv]  # [N]
    if bool(mixed.any()):
        i = int(mixed.nonzero()[0])
        raise ValueError(
            f"pair_id {int(pair_ids[i])} has several pair weights ({float(w_lo[p_inv[i]])} .. "
            f"{float(w_hi[p_inv[i]])}); all rollouts of one pair must carry the pair's weight"
        )
    inverse, _ = group_index(pair_ids, task_ids)  # [N]: group = (pair, task)
    adv = group_advantages(rewards, inverse, eps=eps, scale=scale)  # [N]
    return (adv.to(torch.float64) * w).to(rewards.dtype)


def grpo_advantages(
    rewards: Tensor,
    pair_ids: Tensor,
    task_ids: Tensor,
    pair_weight: Tensor | None = None,
    *,
    eps: float = 1e-6,
    scale: str = "group",
) -> Tensor:
    """Plain GRPO (and DSR's GRPO) advantages on the same groups (pair_id, task_id), with
    no pair weight: ``pair_weight`` is accepted for a common signature and ignored."""
    _check_rewards(rewards)
    _check_1d("pair_ids", pair_ids, rewards.shape[0])
    _check_1d("task_ids", task_ids, rewards.shape[0])
    inverse, _ = group_index(pair_ids, task_ids)
    return group_advantages(rewards, inverse, eps=eps, scale=scale)


ADV_ESTIMATORS: dict[str, Callable[..., Tensor]] = {
    "pair_grpo": pair_grpo_advantages,
    "grpo": grpo_advantages,
}
"""Advantage estimators, all ``(rewards, pair_ids, task_ids, pair_weight, *, eps, scale)``."""


# --- several reward terms -----------------------------------------------------------------------


def _sum_then_normalise(
    terms: Mapping[str, Tensor], weights: Mapping[str, float], group_ids: Tensor
) -> Tensor:
    """r = sum_k w_k r_k; the advantage estimator normalises the sum afterwards."""
    return sum(weights[k] * terms[k].to(torch.float64) for k in terms)


def _normalise_then_sum(
    terms: Mapping[str, Tensor], weights: Mapping[str, float], group_ids: Tensor
) -> Tensor:
    """r = sum_k w_k z_k, z_k the term group-normalised ((r_k - mean_g) / std_g); a NaN term
    stays NaN so that the failure reaches the advantage estimator."""
    out = 0.0
    for k, r_k in terms.items():
        z_k = group_advantages(r_k.to(torch.float64), group_ids, eps=0.0, scale="group")
        out = out + weights[k] * torch.where(torch.isnan(r_k), r_k.to(torch.float64), z_k)
    return out


REWARD_COMBINE: dict[str, Callable[..., Tensor]] = {
    "sum_then_normalise": _sum_then_normalise,
    "normalise_then_sum": _normalise_then_sum,
}
"""How several reward terms of one task become one reward: (terms, weights, group_ids) -> [N]."""


def combine_rewards(
    terms: Mapping[str, Tensor],
    weights: Mapping[str, float],
    group_ids: Tensor,
    *,
    mode: str = "sum_then_normalise",
) -> Tensor:
    """Combine named reward terms (each float [N], NaN = failed) into one reward [N].

    mode "sum_then_normalise" (default): the weighted sum sum_k w_k r_k; the advantage
    estimator then normalises it per group. "normalise_then_sum": each term is first
    group-normalised over ``group_ids`` (z-score, sample std, 0 for a degenerate group),
    then weighted and summed; the advantage estimator's normalisation afterwards only
    rescales it (its group mean is already 0). A rollout with any NaN term is NaN.
    ``weights`` must name exactly the keys of ``terms``.
    """
    fn = lookup(REWARD_COMBINE, mode, "reward combine mode")
    if not terms:
        raise ValueError("combine_rewards needs at least one reward term")
    if set(terms) != set(weights):
        raise ValueError(
            f"reward terms {sorted(terms)} and weights {sorted(weights)} must name the same keys"
        )
    n = group_ids.shape[0]
    for k, r_k in terms.items():
        _check_1d(f"reward term {k!r}", r_k, n)
    first = next(iter(terms.values()))
    dtype = first.dtype if first.is_floating_point() else torch.get_default_dtype()
    return fn(terms, weights, group_ids).to(dtype)


# --- online SimPO pairs (DSR section 3.3) -------------------------------------------------------


def best_worst_pairs(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Online SimPO pairs (DSR section 3.3): in each group, the rollout of highest reward is
    chosen and the one of lowest reward is rejected.

    rewards: float [N] (NaN rollouts are never picked). group_ids: long [N].
    Returns (chosen[P], rejected[P]), long indices into the N rollouts, one pair per group
    in the sorted order of the group ids. Ties: the lowest index among equal rewards wins,
    for both picks. A group with fewer than two valid rewards, or all valid rewards equal,
    carries no preference and gives no pair.
    """
    _check_rewards(rewards)
    _check_1d("group_ids", group_ids, rewards.shape[0])
    r = rewards.to(torch.float64)  # [N]
    n = r.shape[0]
    inverse, G = group_index(group_ids)
    valid = ~torch.isnan(r)
    hi, lo = _group_range(r, valid, inverse, G)
    idx = torch.arange(n, device=r.device)  # [N]
    sentinel = torch.full_like(idx, n)
    first = torch.full((G,), n, dtype=idx.dtype, device=r.device)
    is_best = valid & (r == hi[inverse])
    is_worst = valid & (r == lo[inverse])
    chosen = first.scatter_reduce(0, inverse, torch.where(is_best, idx, sentinel), reduce="amin")
    rejected = first.scatter_reduce(0, inverse, torch.where(is_worst, idx, sentinel), reduce="amin")
    keep = hi > lo  # [G]: two distinct valid rewards; an all-NaN group has hi=-inf < lo=inf
    return chosen[keep], rejected[keep]


PREFERENCE_PAIRS: dict[str, Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]] = {
    "best_worst": best_worst_pairs,
}
"""How online SimPO picks (chosen, rejected) from a group: (rewards, group_ids) -> indices."""
