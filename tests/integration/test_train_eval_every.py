"""``train.eval_every`` in the smoke run: eval/* rows at step 0, every N steps and the last,
from the evaluator actor on the published weights; the same numbers as evaluating the
exported policy directly with ``evaluation.heldout.evaluate``."""

from __future__ import annotations

import json

import pytest

from deploy.config import RunConfig, load_config
from pairing.synthetic import colour_square_manifest


@pytest.mark.slow
def test_eval_every_logs_eval_metrics_and_curves(ray_local, tmp_path):
    from deploy.train import Trainer
    from evaluation.heldout import Settings, evaluate, flat_metrics, load_heldout
    from pairing.toyworld import WorldSize, write_world

    world = write_world(tmp_path / "world", 0, WorldSize(und_train=8, gen_train=8))
    manifest = colour_square_manifest(tmp_path / "data")
    cfg = load_config(
        RunConfig,
        "deploy/configs/smoke.yaml",
        [
            f"run.root={tmp_path}",
            "run.name=ev",
            f"train.manifest={manifest}",
            "rewards.port=18331",
            "train.steps=3",
            "train.eval_every=2",
            "train.checkpoint_every=0",
            f"eval.und_heldout=[{world['und_eval']}]",
            f"eval.gen_heldout=[{world['gen_eval']}]",
            "eval.und_items=6",
            "eval.gen_prompts=3",
            "eval.answer_samples=2",
            "eval.image_samples=2",
            "eval.gen_scorers=[toy_judge]",
        ],
    )
    trainer = Trainer(cfg)
    try:
        trainer.fit()
        final = trainer.learners.export(str(tmp_path / "final"))
    finally:
        trainer.close()
    rows = [json.loads(x) for x in (tmp_path / "ev" / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in rows if "eval/und_accuracy_greedy" in r}
    assert sorted(evals) == [0, 2, 3]  # the start, every 2 steps, the last step
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    for r in evals.values():
        assert 0.0 <= r["eval/und_accuracy_greedy"] <= 1.0
        assert 0.0 <= r["eval/und_accuracy_sampled"] <= 1.0
        assert 0.0 <= r["eval/gen_toy_judge_mean"] <= 1.0
        assert "eval/gen_toy_judge/position" in r and "eval/gen_strict_success" in r
    assert (tmp_path / "ev" / "curves.png").is_file()

    # the last row is the final policy's held-out evaluation, whichever way it is run
    from models import load_unified_model

    held = load_heldout([world["und_eval"]], [world["gen_eval"]], 6, 3)
    from evaluation.scores import build_scorers

    direct = flat_metrics(
        evaluate(
            load_unified_model(final),
            held,
            Settings(
                answer_samples=2,
                image_samples=2,
                text_temperature=cfg.model.text_temperature,
                cfg_weight=cfg.model.cfg_weight,
            ),
            cfg.run.seed + 1,
            build_scorers(["toy_judge"], cfg.rewards),
        )
    )
    last = evals[3]
    for key in ("eval/und_accuracy_greedy", "eval/und_accuracy_sampled", "eval/gen_toy_judge_mean"):
        assert last[key] == pytest.approx(direct[key]), key
