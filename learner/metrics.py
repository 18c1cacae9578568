"""Learner metrics: per-rank raw sums and their reduction over the ranks of a group."""

from __future__ import annotations

import math

import torch

from models.tasks import TASKS
from models.text_tokens import Padded


class Stats:
    """Raw per-rank sums ("sum/..."), maxima ("max/...") and rank-0 values (other keys)."""

    def __init__(self):
        self.raw: dict[str, float] = {}

    def add(self, key: str, value: float) -> None:
        self.raw[key] = self.raw.get(key, 0.0) + float(value)

    def maximum(self, key: str, value: float) -> None:
        self.raw[key] = max(self.raw.get(key, -math.inf), float(value))

    def set(self, key: str, value: float) -> None:
        self.raw[key] = float(value)

    @torch.no_grad()
    def add_logprob_diff(
        self,
        task: str,
        new: Padded,
        old: torch.Tensor,
        rollouts: int,
        fresh: list[bool] | None = None,
    ) -> None:
        """Sampler vs learner log-probs of one micro-batch, and the importance weights
        pi_learner / pi_behaviour per token. ``fresh[i]``: rollout i was sampled with the
        learner's current version (its gap must be ~0 whatever the staleness of others)."""
        on = new.mask.bool()  # [N, T]
        delta = new.values.detach().float() - old  # [N, T]
        diff = delta.abs()[on]  # [tokens]
        self.add(f"sum/logprob_absdiff_{task}", float(diff.sum()))
        self.add(f"sum/tokens_{task}", float(on.sum()))
        self.add(f"sum/rollouts_{task}", float(rollouts))
        if diff.numel():
            self.maximum("max/logprob_diff_max", float(diff.max()))
            iw = torch.exp(torch.clamp(delta[on], -20.0, 20.0))  # [tokens]
            dev = iw.double() - 1.0  # about 1: moments around 1 keep their precision
            self.add("sum/iw_dev", float(dev.sum()))
            self.add("sum/iw_dev_sq", float(dev.square().sum()))
            self.add("sum/iw_tokens", float(iw.numel()))
            self.maximum("max/iw_max", float(iw.max()))
            self.maximum("max/iw_neg_min", -float(iw.min()))
        if fresh is not None and any(fresh):
            rows = torch.tensor(fresh, dtype=torch.bool, device=on.device)[:, None] & on
            self.add("sum/logprob_absdiff_fresh", float(delta.abs()[rows].sum()))
            self.add("sum/tokens_fresh", float(rows.sum()))


def reduce_metrics(raws: list[dict[str, float]]) -> dict[str, float]:
    """Combine the ranks' raw stats (rank 0 first) into the update's metrics.

    loss (the full-batch objective), clip_fraction / dual_clip_fraction / approx_kl /
    ratio_mean / kl_ref (token-weighted means), ratio_max, grad_norm (global, before
    clipping; NaN when DeepSpeed did not compute one), lr, version, micro_batches,
    logprob_diff (mean |sampler - learner| per token, all tasks) with logprob_diff/<task> and
    logprob_diff_max, logprob_diff/on_version (over the rollouts sampled with the learner's
    own version), offpolicy/iw_mean, iw_std, iw_min, iw_max (per-token importance weights
    pi_learner / pi_behaviour before the update), tokens/<task>, rollouts/<task>; SimPO adds
    simpo/reward_chosen,
    reward_rejected, margin, accuracy, pairs.
    """
    total: dict[str, float] = {}
    for raw in raws:
        for k, v in raw.items():
            if k.startswith("sum/"):
                total[k] = total.get(k, 0.0) + v
            elif k.startswith("max/"):
                total[k] = max(total.get(k, -math.inf), v)
    s = lambda k: total.get(f"sum/{k}", 0.0)  # noqa: E731
    out = {
        "loss": s("loss"),
        "grad_norm": raws[0]["grad_norm"],
        "lr": raws[0]["lr"],
        "version": raws[0]["version"],
        "micro_batches": total["max/micro_batches"],
    }
    n_tok = s("loss_tokens")
    if n_tok > 0:
        for key in ("clip_fraction", "dual_clip_fraction", "approx_kl", "ratio_mean", "kl_ref"):
            out[key] = s(key) / n_tok
        out["ratio_max"] = total["max/ratio_max"]
    pairs = s("simpo_pairs")
    if pairs > 0:
        for key in ("reward_chosen", "reward_rejected", "margin", "accuracy"):
            out[f"simpo/{key}"] = s(f"simpo_{key}") / pairs
        out["simpo/pairs"] = pairs
    all_tok = sum(s(f"tokens_{t}") for t in TASKS)
    if all_tok > 0:
        out["logprob_diff"] = sum(s(f"logprob_absdiff_{t}") for t in TASKS) / all_tok
        out["logprob_diff_max"] = total.get("max/logprob_diff_max", 0.0)
    if s("iw_tokens") > 0:  # importance weights pi_learner / pi_behaviour per token
        n = s("iw_tokens")
        dev = s("iw_dev") / n
        out["offpolicy/iw_mean"] = 1.0 + dev
        out["offpolicy/iw_std"] = math.sqrt(max(s("iw_dev_sq") / n - dev * dev, 0.0))
        out["offpolicy/iw_min"] = -total["max/iw_neg_min"]
        out["offpolicy/iw_max"] = total["max/iw_max"]
    if s("tokens_fresh") > 0:
        out["logprob_diff/on_version"] = s("logprob_absdiff_fresh") / s("tokens_fresh")
    for t in TASKS:
        out[f"tokens/{t}"] = s(f"tokens_{t}")
        out[f"rollouts/{t}"] = s(f"rollouts_{t}")
        if s(f"tokens_{t}") > 0:
            out[f"logprob_diff/{t}"] = s(f"logprob_absdiff_{t}") / s(f"tokens_{t}")
    return out


def epoch_metrics(epochs: list[dict[str, float]]) -> dict[str, float]:
    """One batch's metrics from its PPO epochs' (``learner.ppo_epochs``): the last epoch's
    (its loss, clip_fraction, ratio_*, approx_kl say how far reusing the batch went), except
    ``logprob_diff*`` (sampler vs learner), which only the first epoch measures: later ones
    score the batch with weights that have already moved."""
    out = dict(epochs[-1])
    out.update({k: v for k, v in epochs[0].items() if k.startswith(("logprob_diff", "offpolicy/"))})
    out["ppo_epochs"] = float(len(epochs))
    return out
