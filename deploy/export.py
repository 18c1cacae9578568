"""``pairuni export``: a training checkpoint -> a Hugging Face-format model directory.

The directory loads with transformers' Janus classes and with ``models.load_unified_model``,
so a trained policy can be evaluated and shared with the usual tools.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deploy import checkpoint
from deploy.config import RunConfig, load_config


def export_checkpoint(checkpoint_dir: str | Path, out: str | Path) -> Path:
    """Load the policy parameters of a checkpoint (one in-process learner) and save them."""
    from learner.learner import Learner

    ckpt = checkpoint.resolve(checkpoint_dir)
    cfg = load_config(RunConfig, ckpt / "config.yaml")
    # kl_coef 0: no reference model is built (export needs the policy alone); no optimiser
    # step is taken, so the lr schedule does not matter
    learner_cfg = dataclasses.replace(
        cfg.learner, num_learners=0, kl_coef=0.0, lr_schedule="constant"
    )
    learner = Learner(cfg.model, learner_cfg)
    learner.load_checkpoint(str(ckpt / "learner"), module_only=True)
    return Path(learner.export(str(out)))
