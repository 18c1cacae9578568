"""DSR scorer on the tiny unified model: order, batching, weight versions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import tiny_unified_model
from rewards.dual import TASKS, DualScorer, apply_named_weights


@pytest.fixture(scope="module")
def scorer():
    return DualScorer(tiny_unified_model(seed=0), batch_size=2)


def _rollouts():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)]
    tasks = ["understanding", "generation", "understanding", "generation", "understanding"]
    texts = ["a red ball", "a cat on a mat", "two dogs", "a blue car", "the sea"]
    return tasks, images, texts


def test_scores_follow_request_order_and_match_the_model(scorer):
    tasks, images, texts = _rollouts()
    got = scorer.score(tasks, images, texts)  # mixed tasks, batches of 2
    m = scorer.model
    u = [i for i, t in enumerate(tasks) if t == "understanding"]
    g = [i for i, t in enumerate(tasks) if t == "generation"]
    # Reference: one model call per task on all its rollouts at once.
    want_u = m.dual_likelihood_understanding([images[i] for i in u], [texts[i] for i in u])
    want_g = m.dual_likelihood_generation([images[i] for i in g], [texts[i] for i in g])
    assert np.allclose([got[i] for i in u], want_u, atol=1e-5)
    assert np.allclose([got[i] for i in g], want_g, atol=1e-5)
    # Mean log-probabilities are negative and finite.
    assert all(np.isfinite(r) and r < 0 for r in got)


def test_unknown_task_lists_the_valid_ones(scorer):
    with pytest.raises(ValueError, match=r"\['generation', 'understanding'\]"):
        scorer.score(["caption"], [np.zeros((64, 64, 3), np.uint8)], ["x"])
    assert sorted(TASKS) == ["generation", "understanding"]


def test_loading_another_policys_weights_reproduces_its_scores():
    tasks, images, texts = _rollouts()
    # The learner's next version: same frozen towers (SigLIP, VQ), trainable weights moved.
    policy = tiny_unified_model(seed=0)
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for p in policy.trainable_parameters().values():
            p.add_(torch.from_numpy(rng.normal(0, 0.05, tuple(p.shape)).astype(np.float32)))
    want = DualScorer(policy).score(tasks, images, texts)
    scorer = DualScorer(tiny_unified_model(seed=0))
    before = scorer.score(tasks, images, texts)
    named = {n: p.detach().numpy().copy() for n, p in policy.trainable_parameters().items()}
    assert scorer.load_weights(named, version=3) == len(named)
    assert scorer.version == 3
    after = scorer.score(tasks, images, texts)
    assert not np.allclose(before, want, atol=1e-4)  # the two versions really differ
    assert np.allclose(after, want, atol=1e-5)


def test_bad_weights_leave_the_model_untouched():
    m = tiny_unified_model(seed=0)
    name, p = next(iter(m.trainable_parameters().items()))
    before = p.detach().clone()
    with pytest.raises(KeyError, match="not parameters"):
        apply_named_weights(m, {name: np.zeros(tuple(p.shape), np.float32), "nope": np.zeros(1)})
    with pytest.raises(ValueError, match="has shape"):
        apply_named_weights(m, {name: np.zeros((1, 2, 3), np.float32)})
    assert bool((p.detach() == before).all())


def test_the_dsr_copy_of_a_show_o_policy_scores_with_the_policys_estimator():
    """R_U / R_G of Show-o are one-step estimates whose prompt dropping depends on
    model.diffusion (prompt_drop_prob, mask_seed): the endpoint's copy a run builds
    (``policy_rewards`` -> ``DualEndpointScorer``) must score with the policy's settings, not
    rewards.dual's defaults, in self-reward and in the alternating strategy alike."""
    import dataclasses

    from deploy.config import RunConfig, load_config
    from deploy.train import policy_rewards
    from models.config import MaskedDiffusionConfig
    from models.registry import build_policy
    from rewards.dual import DualEndpointScorer

    cfg = load_config(
        RunConfig,
        "deploy/configs/smoke.yaml",
        [
            "model.arch=showo",
            "model.diffusion.prompt_drop_prob=0.6",
            "model.diffusion.mask_seed=11",
            "model.diffusion.steps=3",
        ],
    )
    dual = policy_rewards(cfg).dual
    assert dual.diffusion == cfg.model.diffusion != MaskedDiffusionConfig()
    assert (dual.arch, dual.model_path) == ("showo", "")
    other = dataclasses.replace(cfg.rewards.dual, model_path="/elsewhere", follow_policy=False)
    alt = dataclasses.replace(cfg, rewards=dataclasses.replace(cfg.rewards, dual=other))
    assert policy_rewards(alt).dual.diffusion == cfg.model.diffusion  # the other model: too
    assert policy_rewards(alt).dual.model_path == "/elsewhere"

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    texts = ["a red circle", "a blue square on a white background", "two dots"]
    tasks = ["understanding", "generation", "understanding"]
    got = DualEndpointScorer(dual).model.score(tasks, images, texts)
    policy = build_policy(cfg.model)  # the policy itself, as the learner builds it
    want = [
        policy.dual_likelihood_understanding([images[0]], [texts[0]])[0],
        policy.dual_likelihood_generation([images[1]], [texts[1]])[0],
        policy.dual_likelihood_understanding([images[2]], [texts[2]])[0],
    ]
    assert np.allclose(got, want, atol=1e-6)
    defaults = dataclasses.replace(dual, diffusion=MaskedDiffusionConfig())
    stale = DualEndpointScorer(defaults).model.score(tasks, images, texts)
    u = [0, 2]  # R_U drops prompt tokens (the answer) by the settings: the defaults differ
    assert not np.allclose([stale[i] for i in u], [want[i] for i in u], atol=1e-4)
