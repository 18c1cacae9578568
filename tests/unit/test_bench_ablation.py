"""bench.ablation's command line: key=value overrides in any position, variants with their
own RL overrides."""

from __future__ import annotations

import pytest

from bench.ablation import parse_args


def test_overrides_after_seeds_are_not_read_as_seeds():
    args = parse_args(["--seeds", "0", "1", "run.root=/tmp/x", "train.steps=5"])
    assert args.seeds == [0, 1]
    assert args.overrides == ["run.root=/tmp/x", "train.steps=5"]


def test_overrides_before_options_and_defaults():
    args = parse_args(["run.root=/tmp/x", "--config", "a.yaml"])
    assert args.seeds == [0, 1, 2] and args.config == "a.yaml"
    assert args.variants == ["pair_grpo", "grpo", "random"]
    assert args.overrides == ["run.root=/tmp/x"]


def test_variants_can_be_chosen():
    args = parse_args(["--variants", "pair_grpo", "grpo", "quickstart.threshold=0.6"])
    assert args.variants == ["pair_grpo", "grpo"]
    assert args.overrides == ["quickstart.threshold=0.6"]


def test_a_variant_carries_its_own_rl_overrides():
    from bench.ablation import parse_variant, with_overrides
    from deploy.config import RunConfig, load_config

    spec = "pair_grpo@model.diffusion.logprob_estimator=trajectory@train.steps=3"
    args = parse_args(["--variants", "grpo", spec, "model.arch=showo"])
    assert args.variants == ["grpo", spec] and args.overrides == ["model.arch=showo"]
    args = parse_args(["run.name=a@b", "--variants", spec])  # an @ in a global override
    assert args.overrides == ["run.name=a@b"] and args.variants == [spec]
    variant, overrides = parse_variant(spec)
    assert variant == "pair_grpo"
    cfg = with_overrides(load_config(RunConfig, None, ["model.arch=showo"]), overrides)
    assert cfg.model.diffusion.logprob_estimator == "trajectory" and cfg.train.steps == 3
    assert cfg.model.arch == "showo"
    for bad in ("pairgrpo@train.steps=3", "grpo@train.steps"):
        with pytest.raises(SystemExit):
            parse_args(["--variants", bad])


def test_summary_is_the_mean_and_sample_std_of_each_seeds_gain():
    from bench.ablation import flat, summarise

    assert flat({"a": 1.0, "b": {"x": 2.0, "y": {"z": 3.0}}}) == {
        "a": 1.0,
        "b.x": 2.0,
        "b.y.z": 3.0,
    }
    per_seed = {
        0: {"variants": {"grpo": {"gain": {"strict": 0.1}, "grad_cos_und_gen": 0.0}}},
        1: {"variants": {"grpo": {"gain": {"strict": 0.3}, "grad_cos_und_gen": 0.2}}},
    }
    table = summarise(per_seed)
    assert list(table) == ["grpo"]  # only the variants that ran
    assert table["grpo"]["strict"]["mean"] == pytest.approx(0.2)
    # sample std of {0.1, 0.3}: sqrt(((0.1)^2 + (0.1)^2) / 1) = 0.1414
    assert table["grpo"]["strict"]["std"] == pytest.approx(0.141421, abs=1e-6)
    assert table["grpo"]["grad_cos_und_gen"]["per_seed"] == [0.0, 0.2]
