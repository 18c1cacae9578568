"""Scores computed here on generated images: HPS (the reward model), CLIP score and the toy
judge, each reported as mean ± std and per-category means.

A scorer is ``fn(images, prompts) -> list[float]`` (NaN where it cannot score an image),
built by name from ``SCORERS`` with the run's reward settings (``rewards.hps.*``,
``rewards.clip_score.*``: the same checkpoints the reward endpoints load).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Scorer = Callable[[list, list[str]], list[float]]


def by_category(values, categories) -> dict[str, float]:
    """Mean of ``values`` per category, categories sorted."""
    per_cat: dict[str, list[float]] = {}
    for v, c in zip(values, categories):
        per_cat.setdefault(c, []).append(v)
    return {k: float(np.mean(v)) for k, v in sorted(per_cat.items())}


def summarize(values, categories=None) -> dict:
    """``{mean, std, n, failed, by_category}`` over the finite values (std: population, as
    numpy's default; ``failed`` counts NaN); categories None or all None: no breakdown."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    out = {
        "mean": float(v[ok].mean()) if ok.any() else math.nan,
        "std": float(v[ok].std()) if ok.any() else math.nan,
        "n": int(ok.sum()),
        "failed": int((~ok).sum()),
    }
    if categories is not None and any(c is not None for c in categories):
        kept = [(x, c) for x, c, good in zip(v, categories, ok) if good and c is not None]
        out["by_category"] = by_category([x for x, _ in kept], [c for _, c in kept])
    return out


def toy_category(prompt: str) -> str | None:
    """The toy world's category of a prompt (its shape), None outside its grammar."""
    from rewards.toy import parse_prompt

    p = parse_prompt(prompt)
    return p["shape"] if p else None


def _toy_judge(rewards_cfg) -> Scorer:
    from rewards.toy import toy_judge_reward

    def score(images, prompts):
        out = [toy_judge_reward(np.asarray(im), p) for im, p in zip(images, prompts)]
        return [math.nan if x is None else float(x) for x in out]

    return score


def _hps(rewards_cfg) -> Scorer:
    from rewards.hps import HpsEndpointScorer

    s = rewards_cfg.hps
    s.check_deployable("rewards.hps")  # no checkpoint: refuse, as the endpoint does
    return HpsEndpointScorer(s).model.score


def _clip_score(rewards_cfg) -> Scorer:
    from rewards.clip_score import ClipEndpointScorer

    s = rewards_cfg.clip_score
    s.check_deployable("rewards.clip_score")
    return ClipEndpointScorer(s).model.score


SCORERS: dict[str, Callable[..., Scorer]] = {
    "toy_judge": _toy_judge,
    "hps": _hps,
    "clip_score": _clip_score,
}
"""Scorer name -> builder from a ``RewardsConfig``."""


def build_scorers(names, rewards_cfg) -> dict[str, Scorer]:
    """The named scorers; an unknown name raises listing the valid ones."""
    bad = [n for n in names if n not in SCORERS]
    if bad:
        raise ValueError(f"eval.gen_scorers: {bad} unknown; valid: {list(SCORERS)}")
    return {n: SCORERS[n](rewards_cfg) for n in names}


def score_set(images, prompts: list[str], categories, scorers: dict[str, Scorer]) -> dict:
    """Each scorer's ``summarize`` on one generated set (one image per entry)."""
    return {name: summarize(fn(images, prompts), categories) for name, fn in scorers.items()}
