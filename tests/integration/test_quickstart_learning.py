"""The learning proof: the quickstart's RL budget on held-out toy items.

Runs `deploy/configs/quickstart.yaml` as `make quickstart` does (toy world, `pairuni pair`,
SFT, Pair-GRPO on the session's local Ray cluster) once, and checks its summary. The items
are held out: understanding images and generation prompts that no training pair contains
(``pairing/toyworld.py``).

What is asserted is what a person sees in the before/after grid, not a mean that partial
images can earn: the share of held-out images that are *strictly* right (asked shape, asked
colour, asked quadrant, asked background, nothing else), each judge term on its own (none
may fall), and the sampled understanding accuracy. The old mean-of-terms
reward rose 0.149 -> 0.567 while 0 of 128 images were right (a few cells of the prompt's
colour in the top-left corner, whatever was asked); these checks fail on that run.

Measured with this config (``python -m bench.ablation --seeds 0 1 2``, 2 cores), held-out
gains over each seed's SFT start, seeds 0 / 1 / 2:

* strict success +0.359 / +0.195 / +0.125 (from 0.36 / 0.31 / 0.35 to 0.72 / 0.51 / 0.48);
* position term +0.078 / +0.000 / +0.102 (it starts at 0.82-0.85: an SFT model that draws
  the shapes already puts them in the asked quadrant, so the issue's +0.3 cannot be met from
  a start that draws shapes; the position check here is that it does not fall);
* understanding accuracy, sampled: +0.147 / +0.039 / +0.041;
* the worst fall of any judge term: colour -0.059 (seed 1).

The run is deterministic on one machine (seed 0 here repeats its ablation row to the last
digit), but another CPU's kernels round differently and RL then follows another path, so on
CI this run is one more draw from the seed spread. The thresholds are therefore below every
seed's value with room for the held-out evaluation's own noise (~0.01-0.02 on a difference):
strict success +0.08, no term falling more than 0.10, sampled understanding accuracy rising
at all. They still fail the old quickstart (strict 0 -> 0).
"""

from __future__ import annotations

import json

import pytest

from deploy.config import RunConfig, load_config
from deploy.metrics import read_metrics

STRICT_GAIN = 0.08
"""Below the smallest of three seeds (+0.125) by the evaluation's noise and more."""
TERM_DROP = 0.10
"""The worst fall of a term over three seeds was 0.059 (colour, seed 1)."""
UND_SAMPLED_GAIN = 0.0
"""Sampled understanding accuracy rose +0.039 to +0.147 over three seeds: it must rise."""


@pytest.fixture(scope="module")
def summary(ray_local, tmp_path_factory):
    from deploy.quickstart import run_quickstart

    root = tmp_path_factory.mktemp("quickstart")
    cfg = load_config(
        RunConfig, "deploy/configs/quickstart.yaml", [f"run.root={root}", "rewards.port=18766"]
    )
    s = run_quickstart(cfg)
    run_dir = root / "quickstart"
    assert json.loads((run_dir / "summary.json").read_text()) == s
    for name in ("samples_before_after.png", "quickstart_curves.png", "curves.png"):
        assert (run_dir / name).is_file()
    assert (run_dir / "final_model" / "config.json").is_file()
    assert any((run_dir / "checkpoints").iterdir())
    s = {**s, "_metrics": read_metrics(run_dir / "metrics.jsonl")}
    # train.eval_every ran the same held-out evaluation as the summary's start / end: the
    # SFT model at step 0 and the final policy at the last step give the same numbers
    evals = {r["step"]: r for r in s["_metrics"] if "eval/und_accuracy_greedy" in r}
    assert sorted(evals) == [0, 50, 100, 150]
    for side, step in (("start", 0), ("end", 150)):
        row = evals[step]
        assert row["eval/und_accuracy_greedy"] == pytest.approx(s[f"und_accuracy_{side}"])
        assert row["eval/und_accuracy_sampled"] == pytest.approx(s[f"und_accuracy_sampled_{side}"])
        assert row["eval/gen_strict_success"] == pytest.approx(s[f"gen_strict_success_{side}"])
    yield s
    # the quickstart's Serve instance holds its own port: later modules start Serve anew
    from ray import serve

    serve.shutdown()


@pytest.mark.slow
def test_strictly_right_images_and_positions_rise_on_heldout_prompts(summary):
    s = summary
    assert s["heldout"]["gen_prompts"] >= 30
    strict = s["gen_strict_success_end"] - s["gen_strict_success_start"]
    assert strict >= STRICT_GAIN, (strict, s)
    for term, start in s["gen_terms_start"].items():  # position included: it must not fall
        assert s["gen_terms_end"][term] >= start - TERM_DROP, (term, s)
    # not one collapsed image per prompt that happens to pass: most prompts' images vary or
    # are right
    assert s["gen_strict_success_end"] > 0.3 or s["gen_distinct_per_prompt_end"] > 1.2, s


@pytest.mark.slow
def test_sampled_und_accuracy_rises(summary):
    # Per category, position and count rose on every seed, but by 0.01-0.04: inside the
    # evaluation's noise on ~50 questions a category, so they are reported, not asserted.
    s = summary
    assert s["heldout"]["und_items"] >= 100
    gain = s["und_accuracy_sampled_end"] - s["und_accuracy_sampled_start"]
    assert gain > UND_SAMPLED_GAIN, (gain, s)
    assert s["und_answered_sampled_end"] >= 0.9, s


@pytest.mark.slow
def test_the_curves_show_each_term_and_the_gradient_cosine_while_training(summary):
    rows = summary["_metrics"]
    steps = [r for r in rows if "reward_detail/toy_judge/strict_mean" in r]
    assert len(steps) == summary["rl_steps"], "every step logs the judge's parts"
    for term in ("background", "colour", "shape", "position"):
        assert all(f"reward_detail/toy_judge/{term}_mean" in r for r in steps), term
    logged = [r["grad/cos_und_gen"] for r in rows if "grad/cos_und_gen" in r]
    assert len(logged) == len(range(0, summary["rl_steps"], 10))  # every 10th step
    # null when one task's gradient is 0 (every group's rewards equal: no advantage)
    cos = [c for c in logged if c is not None]
    assert len(cos) >= len(logged) // 2 and all(-1.0 <= c <= 1.0 for c in cos)
