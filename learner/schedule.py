"""Learning-rate schedules: linear warm-up, then constant, cosine or linear decay.

The factor multiplies ``learner.lr`` per optimiser step (a step is one ``update``: gradient
accumulation over micro-batches is one step, each of ``ppo_epochs`` is one). The shapes are
transformers' and verl's (``get_cosine_schedule_with_warmup`` with a floor): during warm-up
the factor is ``step / warmup_steps``, so step 0 trains at lr 0 as theirs does; after it the
factor decays from 1 to ``min_lr_ratio`` over the remaining ``total_steps - warmup_steps``
steps and stays there. DSR (section 4.1) states cosine decay with 5 warm-up steps; PairUni
states a constant learning rate.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(
    step: int, schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> float:
    """The multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"learner.lr_schedule={schedule!r} is not one of {SCHEDULES}")
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def make_scheduler(optimizer, cfg):
    """A ``LambdaLR`` over ``optimizer`` following ``cfg`` (a ``LearnerConfig`` whose
    ``lr_decay_steps`` is resolved): stepped once per optimiser step by DeepSpeed, saved and
    restored with the engine's checkpoint."""
    from torch.optim.lr_scheduler import LambdaLR

    def factor(step: int) -> float:
        return lr_factor(
            step, cfg.lr_schedule, cfg.warmup_steps, cfg.lr_decay_steps, cfg.min_lr_ratio
        )

    # A plain function, not a callable object: LambdaLR's state dict then holds the step
    # count (and base lr) but not the schedule's settings, so a resumed run continues the
    # count under the schedule of the config it was resumed with.
    return LambdaLR(optimizer, factor)
