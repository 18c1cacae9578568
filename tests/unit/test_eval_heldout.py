"""The held-out evaluation: flat eval/* names, and the evaluator loading published weights."""

from __future__ import annotations

import pytest
import torch

from evaluation.heldout import flat_metrics


def test_flat_metrics_names():
    result = {
        "und_accuracy": 0.5,
        "und_accuracy_sampled": 0.25,
        "und_accuracy_by_category": {"colour": 1.0, "count": 0.0},
        "und_accuracy_sampled_by_category": {"colour": 0.5},
        "gen_terms": {"shape": 0.75},
        "gen_strict_success": 0.125,
        "gen_scores": {"hps": {"mean": 0.2, "std": 0.1, "n": 4, "failed": 0}},
        "images": "not a metric",
    }
    assert flat_metrics(result) == {
        "eval/und_accuracy_greedy": 0.5,
        "eval/und_accuracy_sampled": 0.25,
        "eval/und_accuracy_greedy/colour": 1.0,
        "eval/und_accuracy_greedy/count": 0.0,
        "eval/und_accuracy_sampled/colour": 0.5,
        "eval/gen_toy_judge/shape": 0.75,
        "eval/gen_strict_success": 0.125,
        "eval/gen_hps_mean": 0.2,
        "eval/gen_hps_std": 0.1,
    }


@pytest.mark.slow
def test_evaluator_scores_the_published_weights_not_its_own(tmp_path):
    from actors.weights import publish
    from deploy.config import RunConfig, load_config
    from evaluation.during_training import HeldOutEvaluator
    from evaluation.heldout import Settings, evaluate
    from evaluation.scores import build_scorers
    from models.config import ModelConfig
    from models.registry import build_policy
    from pairing.toyworld import WorldSize, write_world

    world = write_world(tmp_path / "w", 0, WorldSize(und_train=8, gen_train=8))
    cfg = load_config(
        RunConfig,
        "deploy/configs/smoke.yaml",
        [
            f"eval.und_heldout=[{world['und_eval']}]",
            f"eval.gen_heldout=[{world['gen_eval']}]",
            "eval.und_items=4",
            "eval.gen_prompts=2",
            "eval.answer_samples=2",
            "eval.image_samples=2",
        ],
    )
    ev = HeldOutEvaluator(cfg.model, cfg.eval, cfg.rewards, seed=3)
    assert ev.sizes() == (4, 2)
    other = build_policy(ModelConfig(seed=1))  # another tiny model: different weights
    theirs = other.trainable_parameters()
    mine = ev.policy.trainable_parameters()
    assert any(not torch.equal(mine[k], theirs[k]) for k in theirs)
    got = ev.evaluate(publish({k: v.detach() for k, v in theirs.items()}, 1, use_ray=False))
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # it now holds the policy's
    s = Settings(2, 2, cfg.model.text_temperature, cfg.model.cfg_weight)
    direct = evaluate(other, ev.heldout, s, 3, build_scorers(["toy_judge"], cfg.rewards))
    assert got == flat_metrics(direct)
    assert "eval/gen_toy_judge_mean" in got and "eval/und_accuracy_greedy/colour" in got
