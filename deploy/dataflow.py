"""The pieces of a training step that are plain data: pairs -> requests, rewards -> advantages.

Kept apart from ``deploy/train.py`` so that the driver reads as the dataflow and these can be
tested without a cluster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from actors.types import Rollout, RolloutRequest
from learner.advantages import combine_rewards
from learner.objectives import advantages, simpo_pairs  # noqa: F401  (the step's helpers)
from models.prompts import DESCRIBE_QUESTION
from models.tasks import TASKS, Task
from pairing.datasets import decode_image_bytes, question_with_choices
from pairing.manifest import item_tasks, task_kind


def answer_kind(pair) -> str:
    """How the accuracy reward reads a pair's answer: choice | math | text; caption for
    DSR's captioning items, which have no reference answer."""
    if task_kind(pair) == "caption":
        return "caption"
    if pair.choices:
        return "choice"
    if (pair.verifier or "").lower() in ("math", "math_verify", "mathverify", "numeric"):
        return "math"
    return "text"


def build_requests(
    pairs: Sequence,
    step: int,
    seed: int,
    group_sizes: tuple[int, int],
    load_image: Callable[[str], bytes],
    tasks: Sequence[str] = ("und", "gen"),
) -> tuple[list, list]:
    """Understanding and generation requests for a batch of manifest items (PairUni
    section 2.2; DSR section 4.1).

    A pair gives one understanding request (its image + question) and one generation
    request (its prompt), sampled ``group_sizes`` = (understanding, generation) times; a half
    still marked ``needs_augmentation`` gives no request. A single-task item gives its one
    request: a ``gen_only`` prompt, or a ``und_only`` image of the captioning task (DSR), asked
    ``DESCRIBE_QUESTION`` with no reference answer (its reward is the dual likelihood R_U of
    the image given the description). Request ids are unique within the step and seeds
    derive from (seed, step, request id), so a re-dispatched request samples the same.
    Only the ``tasks`` trained (``train.tasks``) get requests; an item of the other task only
    is drawn and skipped.
    """
    und_n, gen_n = group_sizes
    und, gen = [], []
    for i, p in enumerate(pairs):
        common = dict(pair_id=int(p.pair_id), pair_weight=float(p.weight), pair_kind=p.kind)
        halves = [t for t in item_tasks(p) if t in tasks]
        if Task.UND in halves and task_kind(p) == "caption":
            rid = 2 * i
            und.append(
                RolloutRequest(
                    request_id=rid,
                    task=Task.UND,
                    seed=_seed(seed, step, rid),
                    # DSR states no template; the question R_G scores prompts under, so both
                    # directions of the dual reward read one template.
                    prompt=DESCRIBE_QUESTION,
                    image=decode_image_bytes(
                        load_image(p.und_image), f"item {p.pair_id} und_image"
                    ),
                    answer=None,
                    answer_kind="caption",
                    n=und_n,
                    **common,
                )
            )
        elif Task.UND in halves:
            rid = 2 * i
            und.append(
                RolloutRequest(
                    request_id=rid,
                    task=Task.UND,
                    seed=_seed(seed, step, rid),
                    prompt=question_with_choices(p.question, p.choices),
                    image=decode_image_bytes(
                        load_image(p.und_image), f"pair {p.pair_id} und_image"
                    ),
                    answer=p.answer,
                    choices=tuple(p.choices) or None,
                    answer_kind=answer_kind(p),
                    n=und_n,
                    **common,
                )
            )
        if Task.GEN in halves:
            rid = 2 * i + 1
            gen.append(
                RolloutRequest(
                    request_id=rid,
                    task=Task.GEN,
                    seed=_seed(seed, step, rid),
                    prompt=p.prompt,
                    n=gen_n,
                    **common,
                )
            )
    return und, gen


def _seed(seed: int, step: int, request_id: int) -> int:
    return int(np.random.SeedSequence([seed, step, request_id]).generate_state(1)[0])


def task_rewards(rollouts: Sequence[Rollout], weights: dict[str, float], mode: str) -> torch.Tensor:
    """One reward per rollout of one task: its terms combined by ``weights`` (NaN stays NaN)."""
    if not rollouts:
        return torch.zeros(0, dtype=torch.float64)
    terms = {
        k: torch.tensor([r.rewards.get(k, math.nan) for r in rollouts], dtype=torch.float64)
        for k in weights
    }
    groups = torch.tensor([r.pair_id for r in rollouts])
    return combine_rewards(terms, weights, groups, mode=mode)


def reward_metrics(rollouts: Sequence[Rollout], rewards: torch.Tensor) -> dict[str, float]:
    """Mean / std of the combined reward per task and per (task, pair kind); NaN counts."""
    out: dict[str, float] = {}
    r = rewards.double()
    for task in TASKS:
        for kind in (None, "aligned", "retrieved", "und_only", "gen_only"):
            sel = [
                i
                for i, x in enumerate(rollouts)
                if x.task == task and (kind is None or x.request.pair_kind == kind)
            ]
            vals = r[sel]
            vals = vals[~torch.isnan(vals)]
            name = f"reward/{task}" + (f"/{kind}" if kind else "")
            if len(vals):
                out[f"{name}_mean"] = float(vals.mean())
                if kind is None:
                    out[f"{name}_std"] = float(vals.std()) if len(vals) > 1 else 0.0
    for term in sorted({k for x in rollouts for k in x.rewards}):
        vals = [x.rewards[term] for x in rollouts if term in x.rewards]
        ok = [v for v in vals if not math.isnan(v)]
        out[f"reward_term/{term}_mean"] = float(np.mean(ok)) if ok else math.nan
        out[f"reward_term/{term}_nan"] = float(len(vals) - len(ok))
    for part in sorted({k for x in rollouts for k in x.reward_details}):
        vals = [x.reward_details[part] for x in rollouts if part in x.reward_details]
        out[f"reward_detail/{part}_mean"] = float(np.mean(vals))
    return out


def diversity_metrics(rollouts: Sequence[Rollout]) -> dict[str, float]:
    """``rollout/<task>_distinct_per_request``: the mean number of distinct samples (token
    sequences) among a request's n. It falls to 1 when a policy collapses onto one answer or
    one image per prompt, which no mean reward shows."""
    seqs: dict[tuple[str, int], set[bytes]] = {}
    for x in rollouts:
        key = (x.task, x.request.request_id)
        seqs.setdefault(key, set()).add(np.asarray(x.token_ids, dtype=np.int64).tobytes())
    out = {}
    for task in TASKS:
        counts = [len(v) for (t, _), v in seqs.items() if t == task]
        if counts:
            out[f"rollout/{task}_distinct_per_request"] = float(np.mean(counts))
    return out
