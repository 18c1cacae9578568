"""learner.learner.Learner in-process on the tiny model: one real DeepSpeed engine (ZeRO-2,
torch AdamW, gloo, world size 1), rollouts sampled from the same tiny model.

What must hold: an update moves trainable parameters only; the learner's recomputed
log-probs equal the sampler's on the same weights (logprob_diff ~ 0); the loss is the
hand-derived on-policy value; cutting the batch into micro-batches gives the same step;
positive-advantage tokens get more likely and negative ones less; SimPO lowers its loss;
published weights / the exported model / a checkpoint restore reproduce the learner exactly.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from actors.types import Rollout, RolloutRequest
from actors.weights import fetch, load_into
from learner.batches import (
    batch_normaliser,
    check_batch,
    group_size,
    plan_micro_batches,
    shard_batch,
)
from learner.config import LearnerConfig
from learner.learner import Learner, score
from learner.metrics import reduce_metrics
from learner.types import TrainBatch
from models.config import ConfigError, ModelConfig
from models.unified import load_unified_model, tiny_unified_model

LR = 1e-3
ROOT = Path(__file__).resolve().parents[2]


# --- pure helpers: hand-derived ----------------------------------------------------------------


def test_plan_micro_batches_by_token_budget():
    # budget 6: 3+3=6 fits; 5 starts a new group and 5+1=6 fits; 9 > 6 stands alone.
    assert plan_micro_batches([3, 3, 5, 1, 9], 6) == [[0, 1], [2, 3], [4]]
    assert plan_micro_batches([9, 1], 6) == [[0], [1]]
    assert plan_micro_batches([], 6) == []


def test_batch_and_metric_helpers_import_no_ray_or_deepspeed():
    code = (
        "import sys, learner.batches, learner.metrics; "
        "bad = [m for m in ('ray', 'deepspeed', 'vllm') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_group_size_finds_consecutive_equal_runs():
    assert group_size([7, 7, 3, 3, 5, 5]) == 2
    assert group_size([7, 7, 7]) == 3
    assert group_size([7, 7, 3]) == 1  # 3 rows do not split into runs of 2
    assert group_size([7, 3, 3, 7]) == 1  # first run has length 1
    assert group_size([7, 7, 3, 5]) == 1  # [3, 5] is not one run
    assert group_size([7, 7, 7, 7]) == 4
    assert group_size([7, 7, 3, 3, 7, 7]) == 2  # a repeated request is just encoded twice
    assert group_size([]) == 1


def _fake(task: str, length: int, i: int = 0) -> Rollout:
    img = np.zeros((8, 8, 3), np.uint8) if task == "und" else None
    req = RolloutRequest(i, i, task, "q", 1, 0, image=img)
    return Rollout(req, 0, np.arange(length), np.zeros(length, np.float32), 0)


def test_batch_normaliser_is_the_full_batch_count():
    # und lengths 2 and 3, gen length 4: task-token-mean -> {und(0): 5, gen(1): 4};
    # token-mean -> 2 + 3 + 4 = 9; seq-mean-token-mean -> 3 sequences; SimPO -> 1 pair.
    b = TrainBatch([_fake("und", 2), _fake("und", 3), _fake("gen", 4)], np.zeros(3, np.float32))
    assert batch_normaliser(b, LearnerConfig()) == {0: 5.0, 1: 4.0}
    assert batch_normaliser(b, LearnerConfig(loss_agg="token-mean")) == 9.0
    assert batch_normaliser(b, LearnerConfig(loss_agg="seq-mean-token-mean")) == 3.0
    simpo = TrainBatch(b.rollouts, b.advantages, np.array([0]), np.array([1]))
    assert batch_normaliser(simpo, LearnerConfig(algorithm="dsr_simpo")) == 1.0


def test_shard_batch_splits_tasks_and_keeps_simpo_pairs_whole():
    # 3 und (0, 1, 2) + 2 gen (3, 4) over 2 ranks: und chunks [0, 1] / [2], gen [3] / [4].
    rs = [_fake("und", 2, i) for i in range(3)] + [_fake("gen", 4, i) for i in (3, 4)]
    b = TrainBatch(rs, np.arange(5, dtype=np.float32))
    s0, s1 = shard_batch(b, 2, simpo=False)
    assert [r.request.request_id for r in s0.rollouts] == [0, 1, 3]
    assert s0.advantages.tolist() == [0, 1, 3] and s1.advantages.tolist() == [2, 4]
    # SimPO pairs und (1, 0), gen (4, 3), und (2, 0): und pairs split [0] / [2], gen [1] / [].
    # Rank 0 holds pairs 0 and 1 -> rows [0, 1, 3, 4], chosen (1, 4) -> local (1, 3).
    p = TrainBatch(rs, np.zeros(5, np.float32), np.array([1, 4, 2]), np.array([0, 3, 0]))
    s0, s1 = shard_batch(p, 2, simpo=True)
    assert [r.request.request_id for r in s0.rollouts] == [0, 1, 3, 4]
    assert s0.chosen.tolist() == [1, 3] and s0.rejected.tolist() == [0, 2]
    assert [r.request.request_id for r in s1.rollouts] == [0, 2]
    assert s1.chosen.tolist() == [1] and s1.rejected.tolist() == [0]
    # A batch smaller than the group leaves a shard empty.
    assert [len(s.rollouts) for s in shard_batch(TrainBatch(rs[:1], np.zeros(1)), 2, False)] == [
        1,
        0,
    ]


def test_check_batch_names_the_bad_rollout():
    bad = _fake("gen", 4, i=7)
    bad.logprobs = np.zeros(3, np.float32)
    with pytest.raises(
        ValueError, match=r"rollouts\[1\] \(request 7, sample 0\): 4 token_ids and 3"
    ):
        check_batch(TrainBatch([_fake("und", 2), bad], np.zeros(2, np.float32)), simpo=False)
    nan = TrainBatch([_fake("und", 2)], np.array([np.nan], np.float32))
    with pytest.raises(ValueError, match="advantages has NaN"):
        check_batch(nan, simpo=False)
    mixed = TrainBatch(
        [_fake("und", 2), _fake("gen", 4)], np.zeros(2), np.array([0]), np.array([1])
    )
    with pytest.raises(ValueError, match="pair 0: chosen 0 is und but rejected 1 is gen"):
        check_batch(mixed, simpo=True)


def test_reduce_metrics_weights_by_tokens_and_sums_the_loss():
    # rank 0: 10 tokens with clip fraction 0.1; rank 1: 30 tokens with 0.5 ->
    # (0.1*10 + 0.5*30) / 40 = 0.4. Loss shares 0.25 + 0.5 = 0.75. logprob_diff: (1 + 3) / 40.
    def raw(loss, tok, cf, diff):
        return {
            "sum/loss": loss,
            "sum/loss_tokens": tok,
            "sum/clip_fraction": cf * tok,
            "sum/approx_kl": 0.0,
            "sum/ratio_mean": tok,
            "sum/kl_ref": 0.0,
            "max/ratio_max": 1.0 + cf,
            "sum/tokens_gen": tok,
            "sum/rollouts_gen": 1.0,
            "sum/logprob_absdiff_gen": diff,
            "grad_norm": 2.0,
            "lr": 0.1,
            "version": 3.0,
            "max/micro_batches": tok / 10,
        }

    m = reduce_metrics([raw(0.25, 10.0, 0.1, 1.0), raw(0.5, 30.0, 0.5, 3.0)])
    assert m["loss"] == pytest.approx(0.75)
    assert m["clip_fraction"] == pytest.approx(0.4)
    assert m["ratio_max"] == 1.5 and m["ratio_mean"] == 1.0 and m["micro_batches"] == 3.0
    assert m["logprob_diff"] == pytest.approx(0.1) and m["tokens/gen"] == 40.0
    assert m["tokens/und"] == 0.0 and "logprob_diff/und" not in m


def test_engine_config_errors_name_key_and_fix():
    cases = [
        (dict(zero_stage=3), r"learner\.zero_stage=3: .*stage 3 shards"),
        (dict(optimizer="sgd"), r"learner\.optimizer='sgd'"),
        (dict(kl_coef=0.1, use_ref_model=False), r"learner\.use_ref_model=False"),
        (dict(micro_batch_tokens=0), r"learner\.micro_batch_tokens=0"),
        (dict(num_learners=2, learner_num_gpus=0.5), r"learner\.learner_num_gpus=0\.5"),
        (dict(adam_betas=(0.9, 1.0)), r"learner\.adam_betas"),
        (dict(grad_clip=-1.0), r"learner\.grad_clip=-1\.0"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            LearnerConfig(**kwargs).validate()
    LearnerConfig(num_learners=1, learner_num_gpus=0.5).validate()  # a fraction with one learner


# --- the engine on the tiny model -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model written once (learners load it in 0.3 s instead of building it) and
    six rollouts sampled from it: 4 understanding (two questions of different lengths, so
    prompts are padded), 2 generation (16 image tokens each)."""
    path = tmp_path_factory.mktemp("tiny_model")
    m = tiny_unified_model(0)
    m.save(path)
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rollouts = []
    for k, q in enumerate(["what colour is it?", "how many circles are there in the picture?"]):
        req = RolloutRequest(k, k, "und", q, 2, k, image=img, answer="A")
        s = m.sample_text([img], [q], 2, max_new_tokens=6, seed=k)
        for j in range(2):
            ids, lp = np.asarray(s.token_ids[j]), s.logprobs[j].numpy()
            rollouts.append(Rollout(req, j, ids, lp, 0, text=s.texts[j]))
    req = RolloutRequest(2, 2, "gen", "a red circle on a white background", 2, 5)
    s = m.sample_image_tokens([req.prompt], 2, seed=5)
    for j in range(2):
        rollouts.append(Rollout(req, j, s.tokens[j].numpy(), s.logprobs[j].numpy(), 0))
    return ModelConfig(path=str(path)), rollouts


ADV = np.array([1.0, -0.5, 0.25, 0.0, 0.5, -1.0], np.float32)


def _full_state(learner: Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.model.module.state_dict().items()}


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """One learner (one micro-batch per task) taken through: update 1, publish, export,
    checkpoint, update 2. Everything the tests compare is recorded here."""
    model_cfg, rollouts = tiny
    cfg = LearnerConfig(lr=LR, micro_batch_tokens=10**6)
    learner = Learner(model_cfg, cfg)
    out = {"before": _full_state(learner), "trainable": set(learner.model.trainable_parameters())}
    out["m1"] = learner.update(TrainBatch(rollouts, ADV))
    out["after1"] = learner.state_dict()
    out["full_after1"] = _full_state(learner)
    out["weights"] = learner.publish_weights()
    out["export"] = learner.export(str(tmp_path_factory.mktemp("export") / "policy"))
    out["ckpt"] = learner.save_checkpoint(str(tmp_path_factory.mktemp("ckpt")))
    out["m2"] = learner.update(TrainBatch(rollouts, ADV[::-1].copy()))
    out["after2"] = learner.state_dict()
    out["version"] = learner.version
    return out


def test_update_moves_trainable_parameters_only(reference):
    before, after, trainable = reference["before"], reference["full_after1"], reference["trainable"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= trainable, f"frozen tensors changed: {sorted(changed - trainable)[:5]}"
    frozen = set(before) - trainable
    assert any(k.startswith("model.vqmodel.") for k in frozen)
    assert any(k.startswith("model.vision_model.") for k in frozen)
    # both heads and the shared language model moved
    for part in ("lm_head", "generation_head", "language_model.layers.0.self_attn.q_proj"):
        assert any(part in k for k in changed), part
    assert reference["m1"]["version"] == 1.0 and reference["version"] == 2


def test_first_update_is_on_policy_with_the_hand_derived_loss(tiny, reference):
    _, rollouts = tiny
    m = reference["m1"]
    # Same weights as the sampler: |sampler - learner| per token is float noise.
    assert m["logprob_diff"] < 1e-5 and m["logprob_diff_max"] < 1e-4
    assert m["logprob_diff/und"] < 1e-5 and m["logprob_diff/gen"] < 1e-5
    # ratio = 1, so no clipping and the k3 estimate of KL(old || new) is ~0.
    assert m["clip_fraction"] == 0.0 and abs(m["ratio_mean"] - 1) < 1e-5 and m["approx_kl"] < 1e-9
    # On policy the per-token loss is -A_i (ratio 1, no KL), and task-token-mean gives
    # loss = sum_task ( sum_{i in task} -A_i * len_i ) / ( sum_{i in task} len_i ).
    lens = np.array([len(r.token_ids) for r in rollouts], np.float64)
    und, gen = slice(0, 4), slice(4, 6)
    expected = -(ADV[und] * lens[und]).sum() / lens[und].sum()
    expected += -(ADV[gen] * lens[gen]).sum() / lens[gen].sum()
    assert m["loss"] == pytest.approx(expected, abs=1e-5)
    assert m["tokens/und"] == lens[und].sum() and m["tokens/gen"] == 32.0
    assert m["rollouts/und"] == 4.0 and m["rollouts/gen"] == 2.0 and m["micro_batches"] == 2.0
    assert math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0 and m["lr"] == LR


def test_conditional_mode_is_on_policy_when_the_sampler_returns_its_logprobs(tiny):
    # model.image_logprob_mode=conditional: the image worker stores log softmax(l_c / T)
    # of the drawn tokens, the learner scores the same, so the first update's ratio is 1.
    model_cfg, _ = tiny
    model_cfg = replace(model_cfg, image_logprob_mode="conditional")
    m = load_unified_model(model_cfg.path)
    req = RolloutRequest(0, 0, "gen", "a red circle on a white background", 3, 9)
    s = m.sample_image_tokens([req.prompt], 3, seed=9, logprob_mode="conditional")
    rollouts = [Rollout(req, j, s.tokens[j].numpy(), s.logprobs[j].numpy(), 0) for j in range(3)]
    learner = Learner(model_cfg, LearnerConfig(lr=LR))
    out = learner.update(TrainBatch(rollouts, np.array([1.0, -1.0, 0.0], np.float32)))
    assert out["logprob_diff/gen"] < 1e-5 and out["clip_fraction"] == 0.0


def test_micro_batching_gives_the_same_step(tiny, reference):
    # A 16-token budget cuts the batch into 1-2 rollouts per micro-batch (und: ~6-token
    # answers; gen: 16 tokens x 2 CFG streams = 32 > 16, so one image rollout each).
    model_cfg, rollouts = tiny
    learner = Learner(model_cfg, LearnerConfig(lr=LR, micro_batch_tokens=16))
    m = learner.update(TrainBatch(rollouts, ADV))
    assert m["micro_batches"] >= 4
    assert m["loss"] == pytest.approx(reference["m1"]["loss"], abs=1e-6)
    assert m["grad_norm"] == pytest.approx(reference["m1"]["grad_norm"], rel=1e-5)
    assert_same_adam_step(learner.state_dict(), reference["after1"], LR)


def test_gradient_checkpointing_gives_the_same_step(tiny, reference):
    # Recomputing activations in backward changes memory, not the gradient.
    model_cfg, rollouts = tiny
    cfg = LearnerConfig(lr=LR, micro_batch_tokens=10**6, gradient_checkpointing=True)
    learner = Learner(model_cfg, cfg)
    assert learner.model.hf.model.language_model.gradient_checkpointing
    m = learner.update(TrainBatch(rollouts, ADV))
    assert m["loss"] == pytest.approx(reference["m1"]["loss"], abs=1e-6)
    assert m["grad_norm"] == pytest.approx(reference["m1"]["grad_norm"], rel=1e-5)
    assert_same_adam_step(learner.state_dict(), reference["after1"], LR)
    assert not learner.model.hf.training  # back in eval mode after the update


def test_ppo_epochs_reuse_the_batch_as_repeated_updates(tiny, reference):
    # learner.ppo_epochs=2 is two optimiser steps on one batch, the old log-probs staying the
    # sampler's: the same weights as calling update twice with the batch. Metrics: the
    # sampler-vs-learner gap from the first epoch, everything else from the second (where the
    # ratio has moved off 1).
    model_cfg, rollouts = tiny
    learner = Learner(model_cfg, LearnerConfig(lr=LR, micro_batch_tokens=10**6, ppo_epochs=2))
    m = learner.update(TrainBatch(rollouts, ADV))
    twice = Learner(model_cfg, LearnerConfig(lr=LR, micro_batch_tokens=10**6))
    first = twice.update(TrainBatch(rollouts, ADV))
    second = twice.update(TrainBatch(rollouts, ADV))
    assert learner.version == 2 and m["version"] == 2.0 and m["ppo_epochs"] == 2.0
    assert_same_adam_step(learner.state_dict(), twice.state_dict(), LR)
    assert m["logprob_diff"] == pytest.approx(first["logprob_diff"], abs=1e-7)
    assert m["logprob_diff"] < 1e-5 < second["logprob_diff"]
    assert m["ratio_mean"] == pytest.approx(second["ratio_mean"], rel=1e-5)
    assert m["loss"] == pytest.approx(second["loss"], abs=1e-6)
    assert abs(m["ratio_mean"] - 1) > 1e-4 or m["clip_fraction"] > 0


def test_grad_cosine_is_the_two_tasks_gradients_cosine_and_moves_nothing(tiny, reference):
    # Reference by hand: on policy the clipped loss has the gradient of the plain policy
    # gradient loss, and task-token-mean makes each task's part -sum_i A_i sum_t logp_it / n_task
    # (n_task: that task's tokens). Its gradient on the language model, per task, then cos.
    model_cfg, rollouts = tiny
    learner = Learner(model_cfg, LearnerConfig(lr=LR, micro_batch_tokens=16))  # micro-batched
    batch = TrainBatch(rollouts, ADV)
    got = learner.grad_cosine(batch, batch_normaliser(batch, learner.cfg))
    ref_model = load_unified_model(model_cfg.path)
    shared = list(ref_model.shared_parameters().values())
    assert shared and all(
        n.startswith("model.language_model.") for n in ref_model.shared_parameters()
    )
    vec = {}
    for task, rows in (("und", slice(0, 4)), ("gen", slice(4, 6))):
        lp = score(ref_model, rollouts[rows], task, model_cfg)
        adv = torch.as_tensor(ADV[rows])[:, None]  # [N, 1]
        loss = -(adv * lp.values * lp.mask).sum() / lp.mask.sum()
        vec[task] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, shared)]).double()
    cos = float(vec["und"] @ vec["gen"] / (vec["und"].norm() * vec["gen"].norm()))
    assert got["grad/cos_und_gen"] == pytest.approx(cos, abs=1e-5)
    assert got["grad/norm_und"] == pytest.approx(float(vec["und"].norm()), rel=1e-4)
    assert got["grad/norm_gen"] == pytest.approx(float(vec["gen"].norm()), rel=1e-4)
    # a diagnostic: the update that follows is the one it would have been without it
    learner.update(batch)
    assert_same_adam_step(learner.state_dict(), reference["after1"], LR)
    # one task only: no cosine to report
    und_only = TrainBatch(rollouts[:4], ADV[:4])
    lone = learner.grad_cosine(und_only, batch_normaliser(und_only, learner.cfg))
    assert math.isnan(lone["grad/cos_und_gen"]) and lone["grad/norm_gen"] == 0.0


def assert_same_adam_step(got: dict, ref: dict, lr: float) -> None:
    """Parameters after one Adam step from the same start, with gradients equal up to
    summation order. Tolerance: the step is lr * g / (|g| + eps), so an entry whose gradient
    is near eps (1e-8, e.g. after clipping) turns float noise in g into up to ~lr of noise.
    Measured here: 1 entry in 6e5 above 1e-2 * lr, ~0.2% above 1e-5 * lr. Bounds: every
    entry within 5e-2 * lr, all but 0.5% within 1e-5 * lr. (Adam's first step ignores a
    uniform gradient scale; the loss and grad_norm checks catch that.)"""
    diff = torch.cat([(got[k] - ref[k]).abs().flatten() for k in ref])  # [P]
    assert float(diff.max()) <= 5e-2 * lr, float(diff.max())
    assert float((diff > 1e-5 * lr).double().mean()) <= 5e-3


def test_published_and_exported_weights_are_the_updated_policy(tiny, reference):
    model_cfg, _ = tiny
    ref = reference["weights"]
    assert ref.version == 1
    receiver = load_unified_model(model_cfg.path)
    load_into(receiver.trainable_parameters(), fetch(ref), ref.manifest)
    for name, p in receiver.trainable_parameters().items():
        assert torch.equal(p.detach(), reference["after1"][name]), name
    exported = load_unified_model(reference["export"])
    for name, p in exported.hf.state_dict().items():
        assert torch.equal(p, reference["full_after1"][name]), name


def test_checkpoint_restores_parameters_and_optimizer_state(tiny, reference):
    # A fresh learner loads the version-1 checkpoint and takes update 2: it must land on the
    # uninterrupted learner's parameters (same ops in the same order: bitwise equal), which
    # needs Adam's moments and step count restored, not just the parameters.
    model_cfg, rollouts = tiny
    learner = Learner(model_cfg, LearnerConfig(lr=LR, micro_batch_tokens=10**6))
    # Parameters only (what `pairuni export` needs), then everything.
    assert learner.load_checkpoint(reference["ckpt"], module_only=True) == 1
    for name, p in learner.state_dict().items():
        assert torch.equal(p, reference["after1"][name]), name
    assert learner.load_checkpoint(reference["ckpt"]) == 1
    for name, p in learner.state_dict().items():
        assert torch.equal(p, reference["after1"][name]), name
    m2 = learner.update(TrainBatch(rollouts, ADV[::-1].copy()))
    assert m2["loss"] == reference["m2"]["loss"] and learner.version == 2
    for name, p in learner.state_dict().items():
        assert torch.equal(p, reference["after2"][name]), name
    with pytest.raises(FileNotFoundError, match="no learner checkpoint at /nonexistent"):
        learner.load_checkpoint("/nonexistent")


def _logp_sum(learner: Learner, r: Rollout) -> float:
    with torch.no_grad():
        return float(score(learner.model, [r], r.task, learner.model_cfg).values.sum())


def test_advantage_sign_moves_log_likelihood_and_kl_to_reference(tiny):
    # One rollout per step, so the first-order change of its log-likelihood is
    # lr * A * |grad| summed over parameters: up for A > 0, down for A < 0.
    model_cfg, rollouts = tiny
    cfg = LearnerConfig(lr=1e-4, kl_coef=0.1, micro_batch_tokens=10**6)
    learner = Learner(model_cfg, cfg)
    assert learner.ref_model is not None
    und, gen = rollouts[0], rollouts[5]
    before = _logp_sum(learner, und)
    m1 = learner.update(TrainBatch([und], np.array([1.0], np.float32)))
    assert _logp_sum(learner, und) > before
    assert m1["kl_ref"] < 1e-9  # policy == reference before the first step
    before = _logp_sum(learner, gen)
    m2 = learner.update(TrainBatch([gen], np.array([-1.0], np.float32)))
    assert _logp_sum(learner, gen) < before
    assert m2["kl_ref"] > 1e-9  # the policy has moved away from the frozen reference
    assert m2["logprob_diff/gen"] > 1e-6  # the sampler's version-0 log-probs are now stale


def test_simpo_step_lowers_the_simpo_loss(tiny):
    # Pairs (chosen, rejected): und (0, 1) and gen (4, 5). On policy the loss is
    # mean_p -log sigmoid(beta * (lc / |c| - lr / |r|) - gamma) over the sampler's log-probs.
    model_cfg, rollouts = tiny
    cfg = LearnerConfig(algorithm="dsr_simpo", simpo_beta=2.0, simpo_gamma=0.5, lr=1e-4)
    learner = Learner(model_cfg, cfg)
    batch = TrainBatch(rollouts, np.zeros(6, np.float32), np.array([0, 4]), np.array([1, 5]))
    m1 = learner.update(batch)

    def reward(i):
        return cfg.simpo_beta * rollouts[i].logprobs.sum() / len(rollouts[i].logprobs)

    z = np.array([reward(0) - reward(1), reward(4) - reward(5)]) - cfg.simpo_gamma
    expected = float(np.mean(np.log1p(np.exp(-z))))  # -log sigmoid(z)
    assert m1["loss"] == pytest.approx(expected, rel=1e-5)
    assert m1["simpo/pairs"] == 2.0 and m1["logprob_diff"] < 1e-5
    m2 = learner.update(batch)  # its loss is measured on the version-1 weights
    assert m2["loss"] < m1["loss"]
    assert m2["simpo/margin"] > m1["simpo/margin"]


def test_a_new_objective_is_one_registered_class(tiny, monkeypatch):
    # REINFORCE on the sampler's own log-probs (-A * log pi, a mean over all tokens): a
    # subclass registered in learner.objectives.OBJECTIVES plus an algorithm preset is all
    # the learner needs; it asks the objective for items, normaliser and loss.
    from learner import config as learner_config
    from learner import objectives

    class Reinforce(objectives.ClipObjective):
        name = "reinforce"

        def normaliser(self, batch, cfg):
            return float(sum(len(r.token_ids) for r in batch.rollouts))

        def loss(self, learner, batch, task, idx, normaliser, stats):
            new, old, _ = learner._logprobs([batch.rollouts[i] for i in idx], task)
            adv = torch.as_tensor(np.asarray(batch.advantages, np.float32)[idx])[:, None]
            stats.add_logprob_diff(task, new, old, len(idx))
            return -(adv * new.values * new.mask).sum() / normaliser

    monkeypatch.setitem(objectives.OBJECTIVES, "reinforce", Reinforce())
    monkeypatch.setitem(learner_config.ALGORITHMS, "reinforce", ("grpo", "reinforce"))
    model_cfg, rollouts = tiny
    learner = Learner(model_cfg, LearnerConfig(algorithm="reinforce", lr=LR))
    assert isinstance(learner.objective, Reinforce)
    batch = TrainBatch(rollouts, ADV)
    m = learner.update(batch)
    tokens = sum(len(r.token_ids) for r in rollouts)
    expected = -sum(a * r.logprobs.sum() for a, r in zip(ADV, rollouts)) / tokens
    assert m["loss"] == pytest.approx(float(expected), rel=1e-4)  # on-policy, version 0
    assert m["logprob_diff"] < 1e-5
