"""The papers' run configs: each resolves, validates, fits the GPUs its header assumes, and
holds every value its paper states (the table below cites them; the YAML comments do too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.config import RunConfig
from deploy.resources import demands
from models.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "deploy" / "configs"

PAPER_VALUES = {
    "pairuni_janus_pro_7b.yaml": {
        # PairUni section 3.1
        "learner.algorithm": "pair_grpo",
        "learner.lr": 1e-6,
        "learner.kl_coef": 0.0,
        "model.cfg_weight": 5.0,
        "model.text_temperature": 1.0,
        "model.image_temperature": 1.0,
        "rollout.group_size": 4,
        "train.pairs_per_step": 16,
        "train.steps": 1200,
    },
    "pairuni_janus_pro_1b.yaml": {
        "learner.algorithm": "pair_grpo",
        "learner.lr": 1e-6,
        "learner.kl_coef": 0.0,
        "model.cfg_weight": 5.0,
        "rollout.group_size": 8,  # PairUni 3.1: 8 for the 1B model
        "train.pairs_per_step": 16,
        "train.steps": 1200,
    },
    "dsr_janus_pro_7b_grpo.yaml": {
        # DSR section 4.1
        "learner.algorithm": "dsr_grpo",
        "learner.lr": 3e-6,
        "learner.lr_schedule": "cosine",
        "learner.warmup_steps": 5,
        "learner.eps_low": 0.2,
        "learner.eps_high": 0.28,
        "learner.kl_coef": 0.04,
        "learner.loss_agg": "token-mean",  # DSR eq. 8
        "learner.zero_stage": 2,
        "rollout.group_size": 8,
        "train.und_rewards": {"dual": 1.0},
        "train.gen_rewards": {"dual": 1.0},
    },
    "dsr_janus_pro_7b_simpo.yaml": {
        "learner.algorithm": "dsr_simpo",
        "learner.lr": 3e-6,
        "learner.lr_schedule": "cosine",
        "learner.warmup_steps": 5,
        "learner.simpo_beta": 2.0,
        "learner.simpo_gamma": 0.5,
        "learner.zero_stage": 2,
        "rollout.group_size": 8,
        "train.und_rewards": {"dual": 1.0},
        "train.gen_rewards": {"dual": 1.0},
    },
}


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("name", sorted(PAPER_VALUES))
def test_paper_config_holds_the_papers_values_and_fits_8_gpus(name):
    path = CONFIGS / name
    cfg = load_config(RunConfig, path, ["model.path=/data/model", "train.manifest=/data/m.jsonl"])
    for key, want in PAPER_VALUES[name].items():
        got = _get(cfg, key)
        assert got == (pytest.approx(want) if isinstance(want, float) else want), (key, got)
    # Every learner key is written out (choosing the algorithm sets nothing else).
    text = path.read_text()
    assert "not stated" in text and "section" in text.lower()
    need = demands(cfg)
    gpus = sum(d.gpus for d in need)
    assert 0 < gpus <= 8, [(d.role, d.gpus) for d in need]
    assert "8 x 80 GB" in text  # the header states the GPUs it assumes
    # The lr schedule's horizon resolves from train.steps.
    learner = cfg.learner.with_horizon(cfg.train.steps)
    learner.validate()
    assert learner.lr_decay_steps == cfg.train.steps


def test_every_paper_config_is_tested():
    papers = {p.name for p in CONFIGS.glob("*.yaml") if p.name.startswith(("pairuni_", "dsr_"))}
    assert papers == set(PAPER_VALUES)
