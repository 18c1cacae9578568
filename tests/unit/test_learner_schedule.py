"""Learning-rate schedules: hand-computed factors, and the engine following them across a resume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learner.config import LearnerConfig
from learner.schedule import lr_factor
from models.config import ConfigError


@pytest.mark.parametrize(
    "schedule,step,want",
    [
        # warm-up 5: step / 5 (step 0 trains at lr 0, as transformers' and verl's schedules)
        ("cosine", 0, 0.0),
        ("cosine", 1, 0.2),
        ("cosine", 4, 0.8),
        ("cosine", 5, 1.0),
        # cosine over the 15 steps after warm-up, floor 0.1: 0.1 + 0.9 * (1 + cos(pi p)) / 2
        ("cosine", 10, 0.1 + 0.9 * 0.75),  # p = 1/3, cos = 0.5
        ("cosine", 15, 0.1 + 0.9 * 0.25),  # p = 2/3, cos = -0.5
        ("cosine", 20, 0.1),
        ("cosine", 25, 0.1),  # past the horizon: the floor
        ("linear", 10, 0.1 + 0.9 * 2 / 3),
        ("linear", 15, 0.1 + 0.9 / 3),
        ("linear", 20, 0.1),
        ("constant", 2, 0.4),
        ("constant", 17, 1.0),
    ],
)
def test_factor_by_hand(schedule, step, want):
    assert lr_factor(step, schedule, 5, 20, 0.1) == pytest.approx(want, abs=1e-12)


def test_no_warmup_starts_at_full_lr():
    assert lr_factor(0, "cosine", 0, 10, 0.0) == 1.0
    assert lr_factor(5, "cosine", 0, 10, 0.0) == pytest.approx(0.5)


def test_schedule_keys_are_checked():
    for bad, key in [
        (dict(lr_schedule="step"), "learner.lr_schedule"),
        (dict(warmup_steps=-1), "learner.warmup_steps"),
        (dict(min_lr_ratio=1.5), "learner.min_lr_ratio"),
        (dict(lr_schedule="cosine", warmup_steps=5, lr_decay_steps=5), "learner.lr_decay_steps"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            LearnerConfig(**bad).validate()
    cfg = LearnerConfig(lr_schedule="cosine", ppo_epochs=2)
    assert cfg.with_horizon(100).lr_decay_steps == 200  # optimiser steps: steps x ppo_epochs
    assert LearnerConfig(lr_decay_steps=7).with_horizon(100).lr_decay_steps == 7


@pytest.fixture(scope="module")
def und_batch(tmp_path_factory):
    from actors.types import Rollout, RolloutRequest
    from learner.types import TrainBatch
    from models import tiny_unified_model
    from models.config import ModelConfig

    path = tmp_path_factory.mktemp("tiny_model")
    m = tiny_unified_model(0)
    m.save(path)
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    req = RolloutRequest(0, 0, "und", "what colour is it?", 2, 0, image=img, answer="A")
    s = m.sample_text([img], [req.prompt], 2, max_new_tokens=4, seed=0)
    rollouts = [
        Rollout(req, j, np.asarray(s.token_ids[j]), s.logprobs[j].numpy(), 0) for j in range(2)
    ]
    return ModelConfig(path=str(path)), TrainBatch(rollouts, np.array([1.0, -1.0], np.float32))


def test_engine_follows_the_schedule_and_a_resume_continues_it(und_batch, tmp_path):
    from learner.learner import Learner

    model_cfg, batch = und_batch
    lr = 1e-3
    cfg = LearnerConfig(
        lr=lr, lr_schedule="cosine", warmup_steps=5, min_lr_ratio=0.1, lr_decay_steps=20
    )
    want = [
        lr * (s / 5 if s < 5 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 5) / 15)))
        for s in range(20)
    ]
    learner = Learner(model_cfg, cfg)
    got = [learner.update(batch)["lr"] for _ in range(10)]
    ckpt = learner.save_checkpoint(str(tmp_path / "ckpt"))
    got += [learner.update(batch)["lr"] for _ in range(10)]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)

    resumed = Learner(model_cfg, cfg)
    assert resumed.load_checkpoint(ckpt) == 10
    again = [resumed.update(batch)["lr"] for _ in range(10)]
    assert again == pytest.approx(want[10:], rel=1e-9, abs=1e-15)


def test_a_decaying_schedule_needs_its_horizon(und_batch):
    from learner.learner import Learner

    with pytest.raises(ConfigError, match=r"learner\.lr_decay_steps"):
        Learner(und_batch[0], LearnerConfig(lr_schedule="cosine"))
