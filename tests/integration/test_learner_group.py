"""learner.group.LearnerGroup on a local Ray cluster: 2 learner actors (gloo, DeepSpeed
ZeRO-2 data parallel) against one in-process learner, and a checkpoint round trip."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from actors.types import Rollout, RolloutRequest
from actors.weights import fetch, unflatten_views
from learner.config import LearnerConfig
from learner.group import LearnerGroup
from learner.types import TrainBatch
from models.config import ModelConfig
from models.unified import tiny_unified_model

LR = 1e-3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model on disk and 5 rollouts sampled from it: 3 understanding (questions of
    different lengths), 2 generation. 3 und rollouts split 2 / 1 over two ranks, so with an
    8-token budget the ranks cut different numbers of micro-batches (the group pads)."""
    path = tmp_path_factory.mktemp("tiny_model_group")
    m = tiny_unified_model(0)
    m.save(path)
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rollouts = []
    for k, (q, n) in enumerate([("what colour is it?", 2), ("how many circles are there?", 1)]):
        req = RolloutRequest(k, k, "und", q, n, k, image=img, answer="A")
        s = m.sample_text([img], [q], n, max_new_tokens=6, seed=k)
        for j in range(n):
            ids, lp = np.asarray(s.token_ids[j]), s.logprobs[j].numpy()
            rollouts.append(Rollout(req, j, ids, lp, 0, text=s.texts[j]))
    req = RolloutRequest(2, 2, "gen", "two blue squares", 2, 7)
    s = m.sample_image_tokens([req.prompt], 2, seed=7)
    for j in range(2):
        rollouts.append(Rollout(req, j, s.tokens[j].numpy(), s.logprobs[j].numpy(), 0))
    return ModelConfig(path=str(path)), rollouts


ADV1 = np.array([1.0, -0.5, 0.75, 0.5, -1.0], np.float32)
ADV2 = np.array([-0.25, 1.0, 0.5, -1.0, 0.25], np.float32)


def assert_same_adam_step(got: dict, ref: dict, lr: float) -> None:
    """Same tolerance as tests/unit/test_learner_engine.py (derivation there): Adam's first
    step lr * g / (|g| + eps) amplifies float noise in entries whose gradient is near eps;
    every entry within 5e-2 * lr, all but 0.5% within 1e-5 * lr."""
    diff = torch.cat([(got[k] - ref[k]).abs().flatten() for k in ref])  # [P]
    assert float(diff.max()) <= 5e-2 * lr, float(diff.max())
    assert float((diff > 1e-5 * lr).double().mean()) <= 5e-3


def test_one_and_two_learners_take_the_same_step_and_checkpoints_resume(ray_local, tiny, tmp_path):
    model_cfg, rollouts = tiny
    cfg = LearnerConfig(lr=LR, micro_batch_tokens=8, zero_stage=2, num_learners=0)
    one = LearnerGroup(model_cfg, cfg)
    cos_one = one.grad_cosine(TrainBatch(rollouts, ADV1))
    m_one = one.update(TrainBatch(rollouts, ADV1))

    two = LearnerGroup(model_cfg, replace(cfg, num_learners=2, learner_num_cpus=1.0))
    try:
        assert two.version == 0
        # the interference diagnostic sums the ranks' gradients before the cosine: the same
        # value as one learner's (and, before the update, it moves nothing: checked below)
        cos_two = two.grad_cosine(TrainBatch(rollouts, ADV1))
        for key in ("grad/cos_und_gen", "grad/norm_und", "grad/norm_gen"):
            assert cos_two[key] == pytest.approx(cos_one[key], rel=1e-4, abs=1e-6), key
        m_two = two.update(TrainBatch(rollouts, ADV1))
        # The full-batch normaliser makes the two ranks' loss shares sum to the 1-learner
        # loss, and their averaged (x W) gradients to its gradient.
        assert m_two["loss"] == pytest.approx(m_one["loss"], abs=1e-6)
        assert m_two["grad_norm"] == pytest.approx(m_one["grad_norm"], rel=1e-5)
        assert m_two["logprob_diff"] < 1e-5 and m_two["version"] == 1.0 == two.version
        for key in ("tokens/und", "tokens/gen", "rollouts/und", "rollouts/gen"):
            assert m_two[key] == m_one[key], key
        assert m_two["micro_batches"] >= 3  # rank 0: 2 und + 1 gen micro-batches at least
        after1 = two.state_dict()
        assert_same_adam_step(after1, one.state_dict(), LR)

        ref = two.publish_weights()
        assert ref.version == 1
        published = unflatten_views(fetch(ref), ref.manifest)  # the full (gathered) parameters
        assert set(published) == set(after1)
        for name, p in after1.items():
            assert torch.equal(published[name], p.to(published[name].dtype)), name

        # Checkpoint at version 1, take update 2, then restore and take update 2 again:
        # parameters and Adam's (ZeRO-partitioned) state must come back exactly.
        ckpt = two.save_checkpoint(str(tmp_path / "learner"))
        m2 = two.update(TrainBatch(rollouts, ADV2))
        after2 = two.state_dict()
        assert two.load_checkpoint(ckpt) == 1 and two.version == 1
        for name, p in two.state_dict().items():
            assert torch.equal(p, after1[name]), name
        m2_again = two.update(TrainBatch(rollouts, ADV2))
        assert m2_again["loss"] == m2["loss"] and m2_again["grad_norm"] == m2["grad_norm"]
        for name, p in two.state_dict().items():
            assert torch.equal(p, after2[name]), name
    finally:
        two.shutdown()
