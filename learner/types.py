"""What the driver hands the learner: rollouts with their advantages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrainBatch:
    """A step's training data. ``advantages[i]`` belongs to ``rollouts[i]``.

    Rollouts are ``actors.types.Rollout``; their ``logprobs`` are the sampler's (the old
    policy's) log-probs, their ``request`` carries the prompt, image and task.
    ``chosen``/``rejected`` index pairs are used by the SimPO objective (DSR eq. 5) only.
    """

    rollouts: list
    advantages: np.ndarray
    """float32 [N]: Pair-GRPO advantages (already scaled by the pair weight)."""
    chosen: np.ndarray | None = None
    """int64 [P]: indices of the best rollout of each SimPO group."""
    rejected: np.ndarray | None = None
    """int64 [P]: indices of the worst rollout of each SimPO group."""

    def __post_init__(self):
        if len(self.rollouts) != len(self.advantages):
            raise ValueError(
                f"TrainBatch: {len(self.rollouts)} rollouts but {len(self.advantages)} advantages"
            )
