"""Training objectives: one registered object each, asked by the driver and the learner.

An objective says what it needs from the rollouts (``build_batch``: advantages, or chosen /
rejected pairs), how a batch is checked, sharded over ranks and normalised, which items a
micro-batch holds (rollouts, or pairs whose two rollouts stay together), and the loss of a
micro-batch with its statistics. Nothing outside this module compares objective names.

Adding one (GSPO's sequence-level ratio, DPO on offline pairs, ...) = a subclass here and
an entry in ``OBJECTIVES``, then ``learner.algorithm`` presets in ``learner/config.py`` that
name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from learner.advantages import ADV_ESTIMATORS, best_worst_pairs, lookup
from learner.batches import batch_mask, check_batch, shard_batch
from learner.losses import Normaliser, loss_normaliser, policy_loss, simpo_loss
from learner.types import TrainBatch
from models.tasks import Task, group_key

if TYPE_CHECKING:
    from actors.types import Rollout
    from learner.config import LearnerConfig


def advantages(
    rollouts: Sequence[Rollout], rewards: torch.Tensor, estimator: str, *, eps: float, scale: str
) -> torch.Tensor:
    """Advantages of all rollouts, grouped per (pair, task) (PairUni eq. 2-3)."""
    fn = lookup(ADV_ESTIMATORS, estimator, "advantage estimator")
    pair_ids = torch.tensor([r.pair_id for r in rollouts], dtype=torch.long)
    task_ids = torch.tensor([Task.parse(r.task).id for r in rollouts], dtype=torch.long)
    weight = torch.tensor([r.request.pair_weight for r in rollouts], dtype=torch.float64)
    return fn(rewards, pair_ids, task_ids, weight, eps=eps, scale=scale)


def simpo_pairs(
    rollouts: Sequence[Rollout], rewards: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Best and worst rollout of each (pair, task) group for online SimPO (DSR section 3.3)."""
    groups = torch.tensor([group_key(r.pair_id, r.task) for r in rollouts], dtype=torch.long)
    chosen, rejected = best_worst_pairs(rewards, groups)
    return chosen.numpy(), rejected.numpy()


class Objective:
    """The contract (see the module docstring); subclasses fill it in."""

    name: str = ""
    uses_pairs: bool = False
    """True: the batch carries (chosen, rejected) rollout pairs instead of advantages."""

    def build_batch(
        self, rollouts: Sequence[Rollout], rewards: torch.Tensor, cfg: LearnerConfig
    ) -> TrainBatch:
        """The driver's side: rollouts and their rewards -> what this objective trains on."""
        raise NotImplementedError

    def check(self, batch: TrainBatch, allow_empty: bool = False) -> None:
        check_batch(batch, self.uses_pairs, allow_empty)

    def shard(self, batch: TrainBatch, world_size: int) -> list[TrainBatch]:
        return shard_batch(batch, world_size, self.uses_pairs)

    def normaliser(self, batch: TrainBatch, cfg: LearnerConfig) -> Normaliser:
        """The FULL batch's loss denominator, passed to every rank's every micro-batch."""
        raise NotImplementedError

    def items(self, batch: TrainBatch, task: Task) -> list[tuple[int, list[int]]]:
        """The units a micro-batch holds for ``task``: (item index, its rollout rows)."""
        raise NotImplementedError

    def loss(self, learner, batch: TrainBatch, task: Task, idx: list[int], normaliser, stats):
        """The micro-batch's share of the loss (items ``idx``); adds its sums to ``stats``."""
        raise NotImplementedError


class ClipObjective(Objective):
    """The clipped surrogate of GRPO / DAPO / Pair-GRPO (PairUni eq. 1, DSR eq. 3) on
    group-normalised advantages, with the KL, dual clip and aggregation the config asks."""

    name = "clip"

    def build_batch(self, rollouts, rewards, cfg) -> TrainBatch:
        adv = advantages(rollouts, rewards, cfg.adv_estimator, eps=cfg.adv_eps, scale=cfg.adv_scale)
        return TrainBatch(list(rollouts), adv.float().numpy())

    def normaliser(self, batch, cfg) -> Normaliser:
        mask, task_ids = batch_mask(batch.rollouts)
        return loss_normaliser(mask, task_ids, cfg.loss_agg)

    def items(self, batch, task):
        return [(i, [i]) for i, r in enumerate(batch.rollouts) if r.task == task]

    def loss(self, learner, batch, task, idx, normaliser, stats):
        cfg = learner.cfg
        rollouts = [batch.rollouts[i] for i in idx]
        new, old, ref = learner._logprobs(rollouts, task)
        adv = np.asarray(batch.advantages, dtype=np.float32)[idx]
        task_ids = torch.full((len(idx),), Task(task).id, dtype=torch.long, device=learner.device)
        loss, m = policy_loss(
            new.values,
            old,
            torch.as_tensor(adv).to(learner.device),
            new.mask,
            eps_low=cfg.eps_low,
            eps_high=cfg.eps_high,
            agg=cfg.loss_agg,
            task_ids=task_ids,
            ref_logprobs=None if ref is None else ref.values,
            kl_coef=cfg.kl_coef,
            kl_estimator=cfg.kl_estimator,
            dual_clip=cfg.dual_clip,
            clip_ratio_c=cfg.clip_ratio_c,
            normaliser=normaliser,
            agg_constant=cfg.loss_agg_constant,
        )
        n_tok = m["tokens"]
        for key in ("clip_fraction", "dual_clip_fraction", "approx_kl", "ratio_mean", "kl_ref"):
            stats.add(f"sum/{key}", m[key] * n_tok)
        stats.add("sum/loss_tokens", n_tok)
        stats.maximum("max/ratio_max", m["ratio_max"])
        fresh = [r.weight_version == learner.version for r in rollouts]
        stats.add_logprob_diff(task, new, old, len(idx), fresh)
        return loss


class SimPOObjective(Objective):
    """DSR's online SimPO (eq. 5): the length-normalised log-likelihood of the best rollout
    of each (pair, task) group against the worst's; reference-free, no advantages."""

    name = "simpo"
    uses_pairs = True

    def build_batch(self, rollouts, rewards, cfg) -> TrainBatch:
        chosen, rejected = simpo_pairs(rollouts, rewards)
        adv = np.zeros(len(rollouts), dtype=np.float32)  # unused: pairs carry the signal
        return TrainBatch(list(rollouts), adv, chosen, rejected)

    def normaliser(self, batch, cfg) -> Normaliser:
        return float(len(batch.chosen))  # the full batch's pair count

    def items(self, batch, task):
        return [
            (j, [int(c), int(batch.rejected[j])])
            for j, c in enumerate(batch.chosen)
            if batch.rollouts[c].task == task
        ]

    def loss(self, learner, batch, task, pairs, normaliser, stats):
        cfg = learner.cfg
        rows = [int(batch.chosen[j]) for j in pairs] + [int(batch.rejected[j]) for j in pairs]
        new, old, _ = learner._logprobs([batch.rollouts[i] for i in rows], task)
        P = len(pairs)
        logp_sum = (new.values * new.mask).sum(dim=1)  # [2P]
        length = new.mask.sum(dim=1)  # [2P]
        loss, m = simpo_loss(
            logp_sum[:P],
            length[:P],
            logp_sum[P:],
            length[P:],
            beta=cfg.simpo_beta,
            gamma=cfg.simpo_gamma,
            normaliser=normaliser,
        )
        for key in ("reward_chosen", "reward_rejected", "margin", "accuracy"):
            stats.add(f"sum/simpo_{key}", m[key] * P)
        stats.add("sum/simpo_pairs", float(P))
        fresh = [batch.rollouts[i].weight_version == learner.version for i in rows]
        stats.add_logprob_diff(task, new, old, 2 * P, fresh)
        return loss


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (ClipObjective(), SimPOObjective())}
"""Objectives by the name ``learner.algorithm`` presets give (``LearnerConfig.policy_loss``)."""


def objective_for(cfg: LearnerConfig) -> Objective:
    """The objective a learner config trains with."""
    return lookup(OBJECTIVES, cfg.policy_loss, "objective")
