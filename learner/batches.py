"""Training batches: checks, token costs, micro-batch plans, the full-batch loss normaliser,
and the split across data-parallel ranks.

Pure numpy/torch (no ray, deepspeed or models): the learner and the learner group both use
these, and the normaliser must be computed the same way by both (``learner.losses``).
"""

from __future__ import annotations

import numpy as np
import torch

from learner.config import LearnerConfig
from learner.losses import Normaliser
from learner.types import TrainBatch
from models.tasks import TASKS, Task


def check_batch(batch: TrainBatch, simpo: bool, allow_empty: bool = False) -> None:
    """Raise ValueError naming the rollout (index, request id, sample) and field that is wrong.
    ``allow_empty``: a rank's shard may hold nothing (a batch smaller than the group)."""
    for i, r in enumerate(batch.rollouts):
        where = (
            f"TrainBatch.rollouts[{i}] (request {r.request.request_id}, sample {r.sample_index})"
        )
        Task.parse(r.task, where)
        n_tok, n_lp = len(r.token_ids), len(r.logprobs)
        if n_tok == 0 or n_tok != n_lp:
            raise ValueError(
                f"{where}: {n_tok} token_ids and {n_lp} logprobs; need one sampler log-prob "
                "per token and at least one token"
            )
        if r.task == Task.UND and r.request.image is None:
            raise ValueError(f"{where}: an understanding rollout needs request.image")
    if not np.isfinite(np.asarray(batch.advantages, dtype=np.float64)).all():
        raise ValueError("TrainBatch.advantages has NaN/inf; a failed reward gets advantage 0")
    if simpo:
        if batch.chosen is None or batch.rejected is None:
            raise ValueError("dsr_simpo needs TrainBatch.chosen and .rejected")
        if len(batch.chosen) == 0 and not allow_empty:
            raise ValueError("dsr_simpo needs at least one (chosen, rejected) pair")
        if len(batch.chosen) != len(batch.rejected):
            raise ValueError(
                f"TrainBatch: {len(batch.chosen)} chosen but {len(batch.rejected)} rejected"
            )
        for j, (c, r) in enumerate(zip(batch.chosen, batch.rejected)):
            tc, tr = batch.rollouts[c].task, batch.rollouts[r].task
            if tc != tr:
                raise ValueError(
                    f"TrainBatch pair {j}: chosen {c} is {tc} but rejected {r} is {tr}"
                )
    elif len(batch.rollouts) == 0 and not allow_empty:
        raise ValueError("TrainBatch has no rollouts")


def rollout_cost(rollout, image_streams: int) -> int:
    """Tokens a rollout costs in a micro-batch: its completion tokens, times the number of
    model streams that score them (``UnifiedPolicy.image_streams``: 2 for Janus's CFG mix)."""
    return len(rollout.token_ids) * (image_streams if rollout.task == Task.GEN else 1)


def plan_micro_batches(costs: list[int], budget: int) -> list[list[int]]:
    """Cut items (in order) into consecutive groups whose cost sums stay within ``budget``;
    an item costlier than the budget gets a group of its own."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, c in enumerate(costs):
        if current and used + c > budget:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += c
    if current:
        groups.append(current)
    return groups


def group_size(keys: list) -> int:
    """n when ``keys`` is consecutive runs of n equal keys (the n samples of each request, in
    order); else 1."""
    n = 1
    while n < len(keys) and keys[n] == keys[0]:
        n += 1
    if len(keys) % n:
        return 1
    runs = [keys[i : i + n] for i in range(0, len(keys), n)]  # [N / n runs of n]
    return n if all(k == run[0] for run in runs for k in run) else 1


def batch_mask(rollouts: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion-token mask ``[N, T]`` and task ids ``[N]`` of rollouts, from their lengths."""
    N = len(rollouts)
    T = max((len(r.token_ids) for r in rollouts), default=1)
    lengths = torch.tensor([len(r.token_ids) for r in rollouts], dtype=torch.long)  # [N]
    mask = torch.arange(T)[None, :] < lengths[:, None]  # [N, T]
    task_ids = torch.tensor([Task.parse(r.task).id for r in rollouts], dtype=torch.long)
    task_ids = task_ids.reshape(N)
    return mask, task_ids


def batch_normaliser(batch: TrainBatch, cfg: LearnerConfig) -> Normaliser:
    """The FULL batch's loss denominator under ``cfg``'s objective
    (``learner.objectives``). Pass it to every rank's and every micro-batch's loss."""
    from learner.objectives import objective_for  # objectives build on this module

    return objective_for(cfg).normaliser(batch, cfg)


def shard_batch(batch: TrainBatch, world_size: int, simpo: bool) -> list[TrainBatch]:
    """Split ``batch`` into ``world_size`` shards: per task, contiguous near-equal chunks of
    its rollouts (clip objectives) or of its SimPO pairs (a pair's two rollouts stay on one
    rank). A shard may be empty when the batch is smaller than the group."""
    shards: list[list[int]] = [[] for _ in range(world_size)]
    if not simpo:
        for task in TASKS:
            idx = [i for i, r in enumerate(batch.rollouts) if r.task == task]
            for rank, chunk in enumerate(
                np.array_split(np.asarray(idx, dtype=np.int64), world_size)
            ):
                shards[rank] += chunk.tolist()
        adv = np.asarray(batch.advantages)
        return [TrainBatch([batch.rollouts[i] for i in s], adv[s]) for s in shards]
    for task in TASKS:
        pairs = [j for j, c in enumerate(batch.chosen) if batch.rollouts[c].task == task]
        for rank, chunk in enumerate(np.array_split(np.asarray(pairs, dtype=np.int64), world_size)):
            shards[rank] += chunk.tolist()
    out = []
    for pairs in shards:
        rows = sorted(
            {int(batch.chosen[j]) for j in pairs} | {int(batch.rejected[j]) for j in pairs}
        )
        where = {row: k for k, row in enumerate(rows)}  # batch index -> shard index
        out.append(
            TrainBatch(
                [batch.rollouts[i] for i in rows],
                np.asarray(batch.advantages)[rows],
                np.array([where[int(batch.chosen[j])] for j in pairs], dtype=np.int64),
                np.array([where[int(batch.rejected[j])] for j in pairs], dtype=np.int64),
            )
        )
    return out
