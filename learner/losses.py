"""Policy losses: the clipped GRPO / DAPO / Pair-GRPO objective (optionally dual-clipped) with
a KL penalty (k1, k2 or k3 estimator), its token aggregation modes, and the online SimPO loss
of DSR.

Pure torch: no ray, deepspeed or vllm here.

Numerical guards (as verl does): the log ratio logp - logp_old is clamped to
[-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] = [-20, 20] before exp, and so is ref - logp inside the
k3 estimator, whose value is then clamped to KL_CLAMP = 10. A token past a clamp gets a
constant loss and no gradient, instead of an inf loss and a NaN gradient (|log ratio| = 100
overflows exp in float32).

Micro-batching. A loss that divides by a batch statistic (token count, sequence count)
gives a different gradient when the batch is cut into micro-batches, unless every
micro-batch divides by the *full* batch's statistic. ``loss_normaliser(mask, task_ids, agg)``
computes that statistic once on the full batch; pass it as ``normaliser=`` to every
micro-batch's ``policy_loss`` and sum (accumulate) the micro-batch gradients: the result
equals the full-batch gradient. What ``normaliser`` is, per aggregation mode:

=======================  ====================================================================
agg                      normaliser
=======================  ====================================================================
token-mean               number: total masked tokens of the full batch
seq-mean-token-mean      number: sequences of the full batch with at least one masked token
task-token-mean          mapping task_id -> total masked tokens of that task in the full batch
seq-mean-token-sum-norm  number: sequences of the full batch with at least one masked token
                         (its length normaliser is the constant ``agg_constant``, the same
                         for every micro-batch, so it needs no full-batch statistic)
=======================  ====================================================================

With W data-parallel ranks whose gradients are *averaged* (DeepSpeed), compute the
normaliser over all ranks' batches (sum the numbers; sum the mappings key by key) and
multiply each rank's loss by W.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Real

import torch
import torch.nn.functional as F

from learner.advantages import lookup

Tensor = torch.Tensor
Normaliser = float | Mapping[int, float] | None

LOG_RATIO_CLAMP = 20.0
"""|logp - logp_old| and |ref - logp| (k3) are clamped to this before exp (verl's value)."""
KL_CLAMP = 10.0
"""The k3 estimate per token is clamped to at most this (verl's ``low_var_kl``: [-10, 10])."""


# --- aggregation: per-token losses [N, T] -> scalar --------------------------------------------


def _as_positive(normaliser: object, agg: str) -> float:
    if isinstance(normaliser, Tensor) and normaliser.numel() == 1:
        normaliser = float(normaliser)
    if not isinstance(normaliser, Real) or not normaliser > 0 or not math.isfinite(normaliser):
        raise ValueError(
            f"normaliser for agg {agg!r} must be a positive number (see learner.losses."
            f"loss_normaliser), got {normaliser!r}"
        )
    return float(normaliser)


def _agg_token_mean(
    loss_tok: Tensor,
    mask: Tensor,
    task_ids: Tensor | None,
    normaliser: Normaliser,
    constant: float | None = None,
) -> Tensor:
    """DAPO token-level mean: sum_{i,t} l_it m_it / D, D = sum m (or the full batch's count)."""
    total = (loss_tok * mask).sum()
    if normaliser is None:
        return total / mask.sum().clamp(min=1)
    return total / _as_positive(normaliser, "token-mean")


def _agg_seq_mean_token_mean(
    loss_tok: Tensor,
    mask: Tensor,
    task_ids: Tensor | None,
    normaliser: Normaliser,
    constant: float | None = None,
) -> Tensor:
    """Original GRPO: (1/D) sum_i (sum_t l_it m_it / sum_t m_it), D = sequences with >= 1
    masked token (or the full batch's count)."""
    tokens = mask.sum(dim=1)  # [N]
    per_seq = (loss_tok * mask).sum(dim=1) / tokens.clamp(min=1)  # [N]
    if normaliser is None:
        return per_seq.sum() / (tokens > 0).sum().clamp(min=1)
    return per_seq.sum() / _as_positive(normaliser, "seq-mean-token-mean")


def _agg_task_token_mean(
    loss_tok: Tensor,
    mask: Tensor,
    task_ids: Tensor | None,
    normaliser: Normaliser,
    constant: float | None = None,
) -> Tensor:
    """Token mean inside each task, then the sum over tasks: sum_k (sum_{i in k, t} l_it m_it
    / D_k), D_k = masked tokens of task k (or the full batch's count for task k). A 576-token
    image rollout and a 10-token answer weigh as two tasks, not by their token counts."""
    if task_ids is None:
        raise ValueError("agg 'task-token-mean' needs task_ids [N] (one task id per sequence)")
    tasks, inverse = torch.unique(task_ids, return_inverse=True)  # [K], [N]
    K = tasks.shape[0]
    seq_sum = (loss_tok * mask).sum(dim=1)  # [N]
    task_sum = torch.zeros(K, dtype=seq_sum.dtype, device=seq_sum.device)
    task_sum = task_sum.index_add(0, inverse, seq_sum)  # [K]
    if normaliser is None:
        count = torch.zeros(K, dtype=mask.dtype, device=mask.device)
        count = count.index_add(0, inverse, mask.sum(dim=1)).clamp(min=1)  # [K]
    else:
        if not isinstance(normaliser, Mapping):
            raise ValueError(
                "normaliser for agg 'task-token-mean' must map task_id -> masked tokens of that "
                f"task in the full batch (see learner.losses.loss_normaliser), got {normaliser!r}"
            )
        values = []
        for k in tasks.tolist():  # K tasks (2 here): a lookup, not a loop over rollouts
            if k not in normaliser:
                raise ValueError(
                    f"normaliser has no entry for task_id {k} (it has {sorted(normaliser)}); "
                    "compute it with loss_normaliser over the full batch"
                )
            values.append(_as_positive(normaliser[k], f"task-token-mean, task {k}"))
        count = torch.tensor(values, dtype=task_sum.dtype, device=task_sum.device)  # [K]
    return (task_sum / count).sum()


def _agg_seq_mean_token_sum_norm(
    loss_tok: Tensor,
    mask: Tensor,
    task_ids: Tensor | None,
    normaliser: Normaliser,
    constant: float | None = None,
) -> Tensor:
    """Dr. GRPO (Liu et al. 2025; verl ``seq-mean-token-sum-norm``): (1/D) sum_i (sum_t l_it m_it
    / C), D = sequences with >= 1 masked token (or the full batch's count), C = ``constant``.
    C is the same for every sequence and every micro-batch, so a token's gradient does not
    shrink with its sequence's length (no length bias), unlike seq-mean-token-mean."""
    if isinstance(constant, Tensor) and constant.numel() == 1:
        constant = float(constant)
    if not isinstance(constant, Real) or not constant > 0 or not math.isfinite(constant):
        raise ValueError(
            "agg 'seq-mean-token-sum-norm' needs agg_constant, a positive number "
            "(learner.loss_agg_constant: the maximum generated length; for images the number "
            f"of image tokens), got {constant!r}"
        )
    per_seq = (loss_tok * mask).sum(dim=1)  # [N]
    if normaliser is None:
        seqs = (mask.sum(dim=1) > 0).sum().clamp(min=1)
        return per_seq.sum() / (seqs * float(constant))
    return per_seq.sum() / (_as_positive(normaliser, "seq-mean-token-sum-norm") * float(constant))


AGG_MODES: dict[
    str, Callable[[Tensor, Tensor, Tensor | None, Normaliser, float | None], Tensor]
] = {
    "token-mean": _agg_token_mean,
    "seq-mean-token-mean": _agg_seq_mean_token_mean,
    "task-token-mean": _agg_task_token_mean,
    "seq-mean-token-sum-norm": _agg_seq_mean_token_sum_norm,
}
"""Loss aggregation modes: (loss_tok[N,T], mask[N,T], task_ids[N] | None, normaliser, constant)
-> loss. ``constant`` is read by "seq-mean-token-sum-norm" alone (its length normaliser)."""


def _norm_token_mean(mask: Tensor, task_ids: Tensor | None) -> float:
    return float(mask.sum())


def _norm_seq_mean_token_mean(mask: Tensor, task_ids: Tensor | None) -> float:
    return float((mask.sum(dim=1) > 0).sum())


def _norm_task_token_mean(mask: Tensor, task_ids: Tensor | None) -> dict[int, float]:
    if task_ids is None:
        raise ValueError("agg 'task-token-mean' needs task_ids [N] to compute its normaliser")
    tasks, inverse = torch.unique(task_ids, return_inverse=True)  # [K], [N]
    count = torch.zeros(tasks.shape[0], dtype=torch.float64, device=mask.device)
    count = count.index_add(0, inverse, mask.to(torch.float64).sum(dim=1))  # [K]
    return {int(k): float(c) for k, c in zip(tasks.tolist(), count.tolist())}


NORMALISERS: dict[str, Callable[[Tensor, Tensor | None], Normaliser]] = {
    "token-mean": _norm_token_mean,
    "seq-mean-token-mean": _norm_seq_mean_token_mean,
    "task-token-mean": _norm_task_token_mean,
    "seq-mean-token-sum-norm": _norm_seq_mean_token_mean,  # sequences; the constant is fixed
}
"""The full-batch denominator of each aggregation mode (same keys as ``AGG_MODES``)."""


def loss_normaliser(mask: Tensor, task_ids: Tensor | None, agg: str) -> Normaliser:
    """The ``normaliser`` to pass to every micro-batch's ``policy_loss``, computed once over
    the full batch's mask [N, T] (and task_ids [N] for "task-token-mean"). See the module
    docstring for what it is in each mode."""
    fn = lookup(NORMALISERS, agg, "loss aggregation mode")
    if mask.dim() != 2:
        raise ValueError(f"mask must have shape [N, T], got {list(mask.shape)}")
    return fn(mask, task_ids)


# --- the clipped policy objective ---------------------------------------------------------------


def _check_shapes(logprobs, old_logprobs, advantages, mask, task_ids, ref_logprobs) -> None:
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must have shape [N, T], got {list(logprobs.shape)}")
    N, T = logprobs.shape
    for name, x in (("old_logprobs", old_logprobs), ("mask", mask), ("ref_logprobs", ref_logprobs)):
        if x is not None and tuple(x.shape) != (N, T):
            raise ValueError(
                f"{name} must have shape [{N}, {T}] like logprobs, got {list(x.shape)}"
            )
    for name, x in (("advantages", advantages), ("task_ids", task_ids)):
        if x is not None and tuple(x.shape) != (N,):
            raise ValueError(
                f"{name} must have shape [{N}] (one per sequence), got {list(x.shape)}"
            )
    if not bool(torch.isfinite(advantages).all()):
        raise ValueError("advantages must be finite (a failed reward gets advantage 0, not NaN)")


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k1 estimator of KL(pi || pi_ref) per token (Schulman 2020): logp - ref. Unbiased with
    samples from pi, but high variance and negative on some tokens."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k2 estimator of KL(pi || pi_ref) per token (Schulman 2020): 0.5 * (logp - ref)^2, >= 0;
    biased, but with lower variance than k1 while pi stays close to pi_ref."""
    return 0.5 * (logprobs - ref_logprobs).square()


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 estimator of KL(pi || pi_ref) per token (Schulman 2020; DeepSeekMath GRPO eq. 4):
    exp(ref - logp) - (ref - logp) - 1, >= 0, with samples from pi.

    Clamped as verl's ``low_var_kl``: ref - logp to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] (20)
    before exp, the result to at most KL_CLAMP (10; verl clamps to [-10, 10], and k3 >= 0).
    A token past either clamp contributes a constant and no gradient: a reference that
    disagrees by e^20 no longer overflows float32 (inf loss, NaN gradient)."""
    d = torch.clamp(ref_logprobs - logprobs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(d) - d - 1, max=KL_CLAMP)


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}
"""Per-token estimators of KL(pi || pi_ref): (logprobs[N,T], ref_logprobs[N,T]) -> [N, T]
(Schulman 2020, "Approximating KL divergence"; verl ``kl_penalty``: k1 = "kl", k2 = "mse",
k3 = "low_var_kl")."""


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    agg: str = "token-mean",
    task_ids: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    dual_clip: bool = False,
    clip_ratio_c: float = 3.0,
    normaliser: Normaliser = None,
    agg_constant: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped surrogate loss of GRPO / DAPO / Pair-GRPO (PairUni eq. 1 with eq. 3's advantages;
    DSR eq. 3 with clip-higher eps_high > eps_low).

    Per token: ratio = exp(clamp(logp - logp_old, -20, 20)) (the clamp as verl: beyond it the
    token has a constant loss and no gradient instead of overflowing); objective =
    min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A); with ``dual_clip`` (dual-clip
    PPO, Ye et al. 2020) a token with A < 0 has its loss -objective capped at
    -clip_ratio_c * A, so a huge ratio on a bad token cannot dominate the batch (A >= 0:
    unchanged); kl = ``KL_ESTIMATORS[kl_estimator]`` (default k3, clamped at 10); loss =
    -objective + kl_coef * kl. The per-token losses are aggregated by ``agg`` (a name in
    ``AGG_MODES``) over the masked tokens, dividing by ``normaliser`` when given (module
    docstring); "seq-mean-token-sum-norm" also divides by the constant ``agg_constant``.

    logprobs, old_logprobs, mask, ref_logprobs: [N, T]; advantages, task_ids: [N].
    mask is bool or 0/1. Positions off the mask may hold anything (padding, -inf, NaN): they
    get neither loss nor gradient. Computed in float32 at least (bf16 inputs are upcast).
    Returns (loss, metrics) with metrics over this batch's masked tokens: clip_fraction (share
    whose clip is active in the direction that matters: A > 0 and ratio > 1 + eps_high, or
    A < 0 and ratio < 1 - eps_low; these get zero gradient), dual_clip_fraction (share with
    A < 0 whose loss the dual clip caps, ratio > clip_ratio_c; 0 without ``dual_clip``),
    approx_kl (k3 estimate of KL(pi_old || pi)), ratio_mean, ratio_max (of the clamped
    ratio), kl_ref (mean of the chosen estimator to the reference, 0 without one), and tokens
    (the masked token count, to weight metrics across micro-batches).
    """
    agg_fn = lookup(AGG_MODES, agg, "loss aggregation mode")
    kl_fn = lookup(KL_ESTIMATORS, kl_estimator, "KL estimator")
    _check_shapes(logprobs, old_logprobs, advantages, mask, task_ids, ref_logprobs)
    if not 0 <= eps_low < 1 or not eps_high >= 0:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {eps_low}, {eps_high}")
    if not clip_ratio_c > 1:
        raise ValueError(
            f"clip_ratio_c must be > 1 (the dual clip caps the loss at -clip_ratio_c * A), "
            f"got {clip_ratio_c}"
        )
    if kl_coef != 0 and ref_logprobs is None:
        raise ValueError(f"kl_coef={kl_coef} needs ref_logprobs [N, T]")
    # bf16 / fp16 log-probs are upcast: ratios near 1 and token counts need float32 at least.
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    on = mask.bool()  # [N, T]
    m = on.to(dtype)  # [N, T]
    zero = torch.zeros(logprobs.shape, dtype=dtype, device=logprobs.device)
    # Padding may hold anything (-inf, NaN): replace it by 0 before any arithmetic, so that
    # neither the loss nor its gradient (torch.where passes 0 to the other branch) sees it.
    logp = torch.where(on, logprobs.to(dtype), zero)  # [N, T]
    logp_old = torch.where(on, old_logprobs.detach().to(dtype), zero)  # [N, T]
    log_ratio = torch.clamp(logp - logp_old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    A = advantages.detach().to(dtype)[:, None]  # [N, 1]
    surr = ratio * A
    surr_clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * A
    loss_tok = -torch.minimum(surr, surr_clipped)  # [N, T]
    dual_capped = torch.zeros_like(on)  # [N, T]
    if dual_clip:
        cap = -clip_ratio_c * A  # [N, 1], > 0 where A < 0
        dual_capped = (A < 0) & (loss_tok > cap)
        loss_tok = torch.where(A < 0, torch.minimum(loss_tok, cap), loss_tok)
    kl = zero
    if ref_logprobs is not None:
        ref = torch.where(on, ref_logprobs.detach().to(dtype), zero)  # [N, T]
        kl = kl_fn(logp, ref)  # [N, T], 0 off the mask
        if kl_coef != 0:
            loss_tok = loss_tok + kl_coef * kl
    loss = agg_fn(loss_tok, m, task_ids, normaliser, agg_constant)

    with torch.no_grad():
        n_tok = m.sum()
        denom = n_tok.clamp(min=1)
        clipped = ((A > 0) & (ratio > 1 + eps_high)) | ((A < 0) & (ratio < 1 - eps_low))
        metrics = {
            "clip_fraction": float((clipped & on).sum() / denom),
            "dual_clip_fraction": float((dual_capped & on).sum() / denom),
            "approx_kl": float(((ratio - 1 - log_ratio) * m).sum() / denom),
            "ratio_mean": float((ratio * m).sum() / denom),
            "ratio_max": float(torch.where(on, ratio, zero).max()) if bool(on.any()) else 1.0,
            "kl_ref": float((kl * m).sum() / denom),
            "tokens": float(n_tok),
        }
    return loss, metrics


# --- online SimPO (DSR section 3.3) -------------------------------------------------------------


def simpo_loss(
    chosen_logp_sum: Tensor,
    chosen_len: Tensor,
    rejected_logp_sum: Tensor,
    rejected_len: Tensor,
    *,
    beta: float = 2.0,
    gamma: float = 0.5,
    normaliser: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """SimPO loss (DSR eq. 5; Meng et al. 2024): mean over pairs of
    -log sigmoid(beta * logp_c / |y_c| - beta * logp_r / |y_r| - gamma).

    All inputs [N]: the summed log-probs and token counts of the chosen and rejected
    responses (pairs from ``learner.advantages.best_worst_pairs``). ``normaliser``: the
    number of pairs of the full batch when this is one micro-batch (default: N).
    Metrics: reward_chosen / reward_rejected (mean beta * logp / len), margin (mean of their
    difference), accuracy (share of pairs with reward_chosen > reward_rejected), pairs.
    """
    if chosen_logp_sum.dim() != 1:
        raise ValueError(f"chosen_logp_sum must have shape [N], got {list(chosen_logp_sum.shape)}")
    N = chosen_logp_sum.shape[0]
    for name, x in (
        ("chosen_len", chosen_len),
        ("rejected_logp_sum", rejected_logp_sum),
        ("rejected_len", rejected_len),
    ):
        if tuple(x.shape) != (N,):
            raise ValueError(
                f"{name} must have shape [{N}] like chosen_logp_sum, got {list(x.shape)}"
            )
    if not (bool((chosen_len > 0).all()) and bool((rejected_len > 0).all())):
        raise ValueError("chosen_len and rejected_len must be > 0 (a response has tokens)")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    reward_c = beta * chosen_logp_sum / chosen_len.to(chosen_logp_sum.dtype)  # [N]
    reward_r = beta * rejected_logp_sum / rejected_len.to(rejected_logp_sum.dtype)  # [N]
    z = reward_c - reward_r - gamma  # [N]
    per_pair = -F.logsigmoid(z)  # [N]
    denom = max(N, 1) if normaliser is None else _as_positive(normaliser, "simpo")
    loss = per_pair.sum() / denom
    with torch.no_grad():
        n = max(N, 1)
        metrics = {
            "reward_chosen": float(reward_c.sum() / n),
            "reward_rejected": float(reward_r.sum() / n),
            "margin": float((reward_c - reward_r).sum() / n),
            "accuracy": float((reward_c > reward_r).sum() / n),
            "pairs": float(N),
        }
    return loss, metrics


# --- supervised fine-tuning (`pairuni sft`) -----------------------------------------------------


def nll_loss(
    logprobs: Tensor,
    mask: Tensor,
    *,
    agg: str = "task-token-mean",
    task_ids: Tensor | None = None,
    normaliser: Normaliser = None,
    agg_constant: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Negative log-likelihood of target tokens (supervised fine-tuning, the warm start):
    loss_it = -log pi(y_it | context), aggregated over the masked tokens by ``agg`` exactly as
    ``policy_loss`` aggregates (so ``task-token-mean`` weighs a 576-token image and a 2-token
    answer as two tasks, and ``normaliser`` makes micro-batches add up to the full batch;
    "seq-mean-token-sum-norm" needs ``agg_constant``, as in ``policy_loss``).

    logprobs, mask: [N, T]; task_ids: [N]. Off-mask positions may hold anything.
    Metrics: nll (mean per masked token of this batch), tokens.
    """
    agg_fn = lookup(AGG_MODES, agg, "loss aggregation mode")
    if logprobs.dim() != 2 or tuple(mask.shape) != tuple(logprobs.shape):
        raise ValueError(
            f"logprobs and mask must both be [N, T], got {list(logprobs.shape)} and "
            f"{list(mask.shape)}"
        )
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    on = mask.bool()  # [N, T]
    m = on.to(dtype)
    zero = torch.zeros(logprobs.shape, dtype=dtype, device=logprobs.device)
    loss_tok = torch.where(on, -logprobs.to(dtype), zero)  # [N, T]
    loss = agg_fn(loss_tok, m, task_ids, normaliser, agg_constant)
    with torch.no_grad():
        n_tok = m.sum()
        metrics = {"nll": float(loss_tok.sum() / n_tok.clamp(min=1)), "tokens": float(n_tok)}
    return loss, metrics


POLICY_LOSSES: dict[str, Callable[..., tuple[Tensor, dict[str, float]]]] = {
    "clip": policy_loss,
    "simpo": simpo_loss,
    "nll": nll_loss,
}
"""Objectives by name: "clip" (GRPO / DAPO / Pair-GRPO), "simpo" (DSR online SimPO), "nll"
(supervised fine-tuning, `pairuni sft`)."""
