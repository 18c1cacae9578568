"""Data contracts between the driver, rollout workers, reward endpoints and the learner.

Small typed dataclasses, not dicts. Arrays are numpy so that they
cross the object store zero-copy; nothing here imports ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.tasks import TASKS, Task  # noqa: F401  (TASKS: re-exported for callers)


@dataclass(frozen=True)
class RolloutRequest:
    """One prompt to sample ``n`` completions for. ``request_id`` is unique within a step."""

    request_id: int
    pair_id: int
    task: Task
    """``Task.UND`` or ``Task.GEN`` ("und" / "gen" are accepted and converted)."""
    prompt: str
    """The question (und) or the generation prompt (gen), without the chat template."""
    n: int
    seed: int
    image: np.ndarray | None = None
    """uint8 [H, W, 3]: the input image of an understanding request; None for generation."""
    answer: str | None = None
    """Ground truth of an understanding request (for the accuracy reward)."""
    choices: tuple[str, ...] | None = None
    """Multiple-choice option texts, in letter order."""
    answer_kind: str = "choice"
    """How the accuracy reward reads the answer: choice | math | text | caption (no answer:
    DSR's captioning task)."""
    pair_weight: float = 1.0
    """Pair-GRPO weight w_p: 1 for aligned pairs, sqrt(similarity) for retrieved ones."""
    pair_kind: str = "aligned"
    """aligned | retrieved."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", Task.parse(self.task, f"request {self.request_id}"))


@dataclass
class Rollout:
    """One sampled completion, with what the sampler saw and the weight version it used."""

    request: RolloutRequest
    sample_index: int
    token_ids: np.ndarray
    """int64 [T]: answer tokens (und, eos included when emitted) or image tokens (gen, [K])."""
    logprobs: np.ndarray
    """float32 [T]: the sampler's log-prob of each token (CFG-combined for image tokens)."""
    weight_version: int
    text: str | None = None
    """Decoded answer (und)."""
    image: np.ndarray | None = None
    """Decoded generated image, uint8 [H, W, 3] (gen)."""
    image_order: np.ndarray | None = None
    """int32 [K]: the unmasking step that revealed each image token, where the model's
    log-prob estimate needs it (masked diffusion, ``logprob_estimator: trajectory``)."""
    rewards: dict[str, float] = field(default_factory=dict)
    """Reward terms by name; NaN where a reward could not be obtained."""
    reward_details: dict[str, float] = field(default_factory=dict)
    """Parts an endpoint reported beside its reward, as ``<term>/<part>`` (e.g.
    ``toy_judge/position``): logged per step, never used for the advantage."""

    @property
    def task(self) -> Task:
        return self.request.task

    @property
    def pair_id(self) -> int:
        return self.request.pair_id


@dataclass(frozen=True)
class WeightsRef:
    """A published policy version: an object-store ref to one flat buffer + its manifest."""

    version: int
    ref: object
    """ray.ObjectRef of a uint8 numpy buffer (or the buffer itself in local mode)."""
    manifest: tuple
    """((name, dtype, shape, offset, nbytes), ...) for every trainable parameter."""
