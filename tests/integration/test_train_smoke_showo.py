"""The smoke run with the Show-o family (``model.arch=showo``): Pair-GRPO, DSR-GRPO and
DSR-SimPO on the tiny random Show-o, through the same driver, learner and rewards as Janus.

The image log-probs are the one-step estimates (``models/showo_diffusion.py``), which the
rollout worker and the learner compute from the rollout alone, or the trajectory estimates,
which the worker takes from its sampling passes and the learner recomputes from the rollout
and its reveal order (``Rollout.image_order``): either way logprob_diff stays ~0.
"""

from __future__ import annotations

import json
import math

import pytest

from deploy.config import RunConfig, load_config
from pairing.synthetic import colour_square_manifest

SHOWO = ["model.arch=showo", "model.diffusion.steps=4"]
DSR = [
    "rewards.endpoints=[dual]",
    "train.und_rewards={dual: 1.0}",
    "train.gen_rewards={dual: 1.0}",
    "rollout.text_workers=1",
]


def _run(tmp_path, manifest, name, *extra):
    from deploy.train import Trainer

    cfg = load_config(
        RunConfig,
        "deploy/configs/smoke.yaml",
        [f"run.root={tmp_path}", f"run.name={name}", f"train.manifest={manifest}",
         "rewards.port=18331", *SHOWO, *extra],
    )  # fmt: skip
    trainer = Trainer(cfg)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,extra",
    [
        ("pair_grpo", ["train.steps=2"]),
        ("pair_grpo_trajectory", ["train.steps=2", "model.diffusion.logprob_estimator=trajectory"]),
        ("dsr_grpo", ["train.steps=1", "learner.algorithm=dsr_grpo", *DSR]),
        ("dsr_simpo", ["train.steps=1", "learner.algorithm=dsr_simpo", *DSR]),
    ],
)
def test_showo_trains(ray_local, tmp_path, name, extra):
    rows = _run(tmp_path, colour_square_manifest(tmp_path / "data"), name, *extra)
    assert len(rows) == (2 if name.startswith("pair_grpo") else 1)
    for r in rows:
        assert r["rollout/count"] == 2 * 2 * 4 and r["reward/nan_count"] == 0
        assert math.isfinite(r["loss"])
        if "logprob_diff" in r:  # the clip objectives; SimPO has no ratio
            assert abs(r["logprob_diff"]) < 1e-3
    if not name.startswith("pair_grpo"):  # R_U, R_G: mean log-likelihoods of a random tiny model
        assert -12.0 < rows[0]["reward/und_mean"] < 0 and -12.0 < rows[0]["reward/gen_mean"] < 0
