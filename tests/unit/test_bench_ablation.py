"""bench.ablation's command line: key=value overrides in any position."""

from __future__ import annotations

from bench.ablation import parse_args


def test_overrides_after_seeds_are_not_read_as_seeds():
    args = parse_args(["--seeds", "0", "1", "run.root=/tmp/x", "train.steps=5"])
    assert args.seeds == [0, 1]
    assert args.overrides == ["run.root=/tmp/x", "train.steps=5"]


def test_overrides_before_options_and_defaults():
    args = parse_args(["run.root=/tmp/x", "--config", "a.yaml"])
    assert args.seeds == [0, 1, 2] and args.config == "a.yaml"
    assert args.overrides == ["run.root=/tmp/x"]
