"""learner.losses, the robustness points taken from verl: the log-ratio clamp, dual-clip PPO,
Dr. GRPO's constant length normaliser (seq-mean-token-sum-norm) and the k1 / k2 / k3 KL
estimators with k3's clamp. Every expected value is derived by hand in the comments; verl
itself is not imported (not installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import learner.losses as losses
from actors.types import Rollout, RolloutRequest
from learner.batches import batch_normaliser
from learner.config import LearnerConfig
from learner.losses import loss_normaliser, policy_loss
from learner.metrics import Stats
from learner.types import TrainBatch
from models.config import ConfigError
from models.text_tokens import Padded

E20 = math.exp(20.0)
NORM = "seq-mean-token-sum-norm"


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def leaf(x, dtype=torch.float64):
    return t(x, dtype).requires_grad_(True)


# --- 1. the log-ratio clamp ----------------------------------------------------------------------


def test_extreme_log_ratios_give_a_finite_loss_and_gradient():
    # float32, old log-probs 0, |log ratio| = 100 (exp(100) overflows float32: inf loss, NaN
    # gradient without the clamp). The clamp to [-20, 20] makes every ratio e^{+-20}.
    # Row 0, A = +1:  ratio e^20  -> -min(e^20, 1.2)    = -1.2      (clipped)
    #                 ratio e^-20 -> -min(e^-20, 0.8)   = -e^-20    (clamped)
    # Row 1, A = -1:  ratio e^20  -> -min(-e^20, -1.2)  = e^20      (clamped)
    #                 ratio e^-20 -> -min(-e^-20, -0.8) = 0.8       (clipped)
    # ref = 0, so ref - logp = -100, +100 -> clamped to -20, 20: k3 = e^-20 + 19 and
    # e^20 - 21, both clamped to 10; kl_coef 0.1 adds 1 per token.
    # token-mean: (-1.2 - e^-20 + e^20 + 0.8) / 4 + 1. Every token is past a clamp or
    # clipped: the gradient is exactly 0.
    logp = leaf([[100.0, -100.0], [100.0, -100.0]], torch.float32)
    zeros = torch.zeros(2, 2)
    A = t([1.0, -1.0], torch.float32)
    loss, m = policy_loss(logp, zeros, A, torch.ones(2, 2), ref_logprobs=zeros, kl_coef=0.1)
    assert math.isfinite(loss.item())
    expected = (-1.2 - math.exp(-20) + E20 + 0.8) / 4 + 1.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(logp.grad).all() and torch.equal(logp.grad, torch.zeros(2, 2))
    assert all(math.isfinite(v) for v in m.values())
    assert m["ratio_max"] == pytest.approx(E20, rel=1e-6) and m["kl_ref"] == pytest.approx(10.0)
    # approx_kl = mean of (r - 1 - log r) on the clamped ratios: (e^20 - 21) twice and
    # (e^-20 + 19) twice
    assert m["approx_kl"] == pytest.approx((E20 + math.exp(-20) - 2) / 2, rel=1e-6)


@pytest.mark.parametrize("agg", list(losses.AGG_MODES))
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("dual_clip", [False, True])
def test_extreme_inputs_stay_finite_in_every_mode(agg, estimator, dual_clip):
    # Log ratios +-100 with both advantage signs, and reference log-probs 100 away on either
    # side: loss, gradient and metrics finite whatever the estimator, dual clip and agg mode.
    logp = leaf([[100.0, -100.0, 0.5], [-100.0, 100.0, 0.0]], torch.float32)
    old = torch.zeros(2, 3)
    ref = t([[0.0, -200.0, 100.5], [0.0, 0.0, -100.0]], torch.float32)
    loss, m = policy_loss(
        logp,
        old,
        t([1.5, -2.0], torch.float32),
        torch.ones(2, 3),
        agg=agg,
        task_ids=torch.tensor([0, 1]),
        ref_logprobs=ref,
        kl_coef=0.04,
        kl_estimator=estimator,
        dual_clip=dual_clip,
        agg_constant=8.0,
    )
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(logp.grad).all()
    assert all(math.isfinite(v) for v in m.values())


# --- 2. dual-clip PPO ------------------------------------------------------------------------------


def _dual_clip_batch():
    # Four one-token rows, old log-probs 0, so ratio = exp(logp); eps 0.2 -> clip to [0.8, 1.2].
    ratios = [4.0, 2.0, 4.0, 0.5]
    logp = leaf([[math.log(r)] for r in ratios])
    return logp, torch.zeros(4, 1, dtype=torch.float64), t([-1.0, -1.0, 1.0, -2.0])


def test_dual_clip_by_hand():
    # Standard clipped loss per token, max(-ratio * A, -clip(ratio) * A):
    #   row 0, A = -1, ratio 4:   max(4, 1.2)     = 4
    #   row 1, A = -1, ratio 2:   max(2, 1.2)     = 2     gradient -A * ratio = 2
    #   row 2, A = +1, ratio 4:   max(-4, -1.2)   = -1.2  (upper clip, gradient 0)
    #   row 3, A = -2, ratio 0.5: max(1.0, 1.6)   = 1.6   (lower clip, gradient 0)
    # Dual clip, c = 3: rows with A < 0 take min(that, -c * A):
    #   row 0: min(4, 3) = 3 (capped: gradient 0); row 1: min(2, 3) = 2; row 3: min(1.6, 6) = 1.6
    # token-mean over 4: off (6.4 / 4 = 1.6, gradients [4, 2, 0, 0] / 4),
    #                    on  (5.4 / 4 = 1.35, gradients [0, 2, 0, 0] / 4).
    logp, old, A = _dual_clip_batch()
    loss, m = policy_loss(logp, old, A, torch.ones(4, 1))  # default: dual clip off
    assert loss.item() == pytest.approx(1.6, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, t([[1.0], [0.5], [0.0], [0.0]]))
    assert m["dual_clip_fraction"] == 0.0 and m["clip_fraction"] == pytest.approx(0.5)

    logp, old, A = _dual_clip_batch()
    loss, m = policy_loss(logp, old, A, torch.ones(4, 1), dual_clip=True, clip_ratio_c=3.0)
    assert loss.item() == pytest.approx(1.35, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, t([[0.0], [0.5], [0.0], [0.0]]))
    # capped: row 0 only (4 > 3); row 3's 1.6 < 6. The ordinary clip still counts rows 2, 3.
    assert m["dual_clip_fraction"] == pytest.approx(0.25)
    assert m["clip_fraction"] == pytest.approx(0.5)

    # c = 1.5 caps rows 0 and 1 at 1.5: (1.5 + 1.5 - 1.2 + 1.6) / 4 = 0.85, no gradient left
    logp, old, A = _dual_clip_batch()
    loss, m = policy_loss(logp, old, A, torch.ones(4, 1), dual_clip=True, clip_ratio_c=1.5)
    assert loss.item() == pytest.approx(0.85, abs=1e-12)
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros(4, 1, dtype=torch.float64))
    assert m["dual_clip_fraction"] == pytest.approx(0.5)


def test_dual_clip_bound_must_exceed_one():
    logp, old, A = _dual_clip_batch()
    with pytest.raises(ValueError, match=r"clip_ratio_c must be > 1.*got 1\.0"):
        policy_loss(logp, old, A, torch.ones(4, 1), dual_clip=True, clip_ratio_c=1.0)
    with pytest.raises(ConfigError) as err:
        LearnerConfig(dual_clip=True, clip_ratio_c=0.9).validate()
    assert err.value.key == "learner.clip_ratio_c" and "must be > 1" in str(err.value)


# --- 3. Dr. GRPO's constant length normaliser ------------------------------------------------------


def _norm_batch():
    # Three sequences of lengths 3, 1, 2 (T = 3), A = +1, -2, +0.5, ratio 1 everywhere
    # (logp = old), so each masked token's loss is -A. theta is the leaf the gradient
    # accumulates into, as the model's parameters do across micro-batches.
    theta = leaf([[-0.3, -1.2, -0.7], [-2.0, 0.0, 0.0], [-0.1, -0.9, 0.0]])
    mask = t([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    return theta, theta.detach().clone(), t([1.0, -2.0, 0.5]), mask


def test_seq_mean_token_sum_norm_micro_batches_equal_the_full_batch():
    # C = 4, D = 3 sequences. Token sums of -A: -3, +2, -1; loss = (-3 + 2 - 1) / (3 * 4) = -1/6.
    # Gradient per masked token: d(-A * ratio)/d logp / (D * C) = -A / 12, whatever the
    # sequence's length: row 0 -1/12 (x3), row 1 +2/12, row 2 -0.5/12 (x2); padding 0.
    theta, old, A, mask = _norm_batch()
    full, _ = policy_loss(theta, old, A, mask, agg=NORM, agg_constant=4.0)
    assert full.item() == pytest.approx(-1 / 6, abs=1e-12)
    full.backward()
    hand = t([[-1 / 12] * 3, [2 / 12, 0, 0], [-0.5 / 12, -0.5 / 12, 0]])
    torch.testing.assert_close(theta.grad, hand, rtol=0, atol=1e-12)
    full_grad, theta.grad = theta.grad.clone(), None

    # As the learner does: the normaliser over the FULL batch (D = 3), each micro-batch padded
    # to its own length ([row 0] to 3, [rows 1, 2] to 2), losses summed, gradients accumulated.
    # Parts: -3 / 12 = -0.25 and (2 - 1) / 12; sum -1/6.
    norm = loss_normaliser(mask, None, NORM)
    assert norm == 3.0
    total = 0.0
    for rows, width in (([0], 3), ([1, 2], 2)):
        r = torch.tensor(rows)
        part, _ = policy_loss(
            theta[r, :width],
            old[r, :width],
            A[r],
            mask[r, :width],
            agg=NORM,
            agg_constant=4.0,
            normaliser=norm,
        )
        part.backward()
        total += part.item()
    assert total == pytest.approx(-1 / 6, abs=1e-6)
    torch.testing.assert_close(theta.grad, full_grad, rtol=0, atol=1e-6)

    # Without the full batch's normaliser each part divides by its own sequence count:
    # -3 / (1 * 4) + 1 / (2 * 4) = -0.625, not -1/6.
    parts = [
        policy_loss(theta[r, :w], old[r, :w], A[r], mask[r, :w], agg=NORM, agg_constant=4.0)[0]
        for r, w in ((torch.tensor([0]), 3), (torch.tensor([1, 2]), 2))
    ]
    assert sum(p.item() for p in parts) == pytest.approx(-0.625, abs=1e-12)

    # seq-mean-token-mean, by contrast, shrinks a token's gradient with its sequence's
    # length: row 0 (3 tokens) -A / (3 * 3) = -1/9, row 2 (2 tokens) -0.5 / (2 * 3) = -1/12.
    theta.grad = None
    policy_loss(theta, old, A, mask, agg="seq-mean-token-mean")[0].backward()
    assert theta.grad[0, 0].item() == pytest.approx(-1 / 9)
    assert theta.grad[2, 0].item() == pytest.approx(-1 / 12)


def test_seq_mean_token_sum_norm_needs_its_constant():
    theta, old, A, mask = _norm_batch()
    for bad in (None, 0.0, -4.0, math.inf):
        with pytest.raises(ValueError, match=r"needs agg_constant.*learner\.loss_agg_constant"):
            policy_loss(theta, old, A, mask, agg=NORM, agg_constant=bad)
    with pytest.raises(ConfigError) as err:
        LearnerConfig(loss_agg=NORM).validate()
    assert err.value.key == "learner.loss_agg_constant" and "must be > 0 when" in str(err.value)
    with pytest.raises(ConfigError, match=r"learner\.loss_agg_constant=-1\.0"):
        LearnerConfig(loss_agg_constant=-1.0).validate()
    LearnerConfig(loss_agg=NORM, loss_agg_constant=576.0).validate()
    # the SFT loss aggregates the same way
    loss, _ = losses.nll_loss(old, mask, agg=NORM, agg_constant=4.0)
    # -(sum of logp over each row) / (3 * 4) = (2.2 + 2.0 + 1.0) / 12
    assert loss.item() == pytest.approx(5.2 / 12, abs=1e-12)


def _rollout(task: str, length: int, i: int) -> Rollout:
    img = np.zeros((8, 8, 3), np.uint8) if task == "und" else None
    req = RolloutRequest(i, i, task, "q", 1, 0, image=img)
    return Rollout(req, 0, np.arange(length), np.zeros(length, np.float32), 0)


def test_batch_normaliser_counts_sequences_for_the_constant_mode():
    batch = TrainBatch(
        [_rollout("und", 2, 0), _rollout("und", 3, 1), _rollout("gen", 4, 2)], np.zeros(3)
    )
    cfg = LearnerConfig(loss_agg=NORM, loss_agg_constant=576.0)
    assert batch_normaliser(batch, cfg) == 3.0


# --- 4. KL estimators --------------------------------------------------------------------------------


# logp = [0, -1, -2], ref = [ln 2, -3, -2]; d = logp - ref = [-ln 2, 2, 0], e = ref - logp = -d.
#   k1 = d                          = [-ln 2, 2, 0]                 d/d logp = 1
#   k2 = d^2 / 2                    = [ln^2 2 / 2, 2, 0]            d/d logp = d
#   k3 = exp(e) - e - 1             = [1 - ln 2, 1 + e^-2, 0]       d/d logp = 1 - exp(e)
#                                                                          = [-1, 1 - e^-2, 0]
LN2 = math.log(2)
KL_BY_HAND = {
    "k1": ([-LN2, 2.0, 0.0], [1.0, 1.0, 1.0]),
    "k2": ([LN2**2 / 2, 2.0, 0.0], [-LN2, 2.0, 0.0]),
    "k3": ([1 - LN2, 1 + math.exp(-2), 0.0], [-1.0, 1 - math.exp(-2), 0.0]),
}


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimators_by_hand(estimator):
    value, grad = KL_BY_HAND[estimator]
    ref = t([[LN2, -3.0, -2.0]])
    logp = leaf([[0.0, -1.0, -2.0]])
    kl = losses.KL_ESTIMATORS[estimator](logp, ref)
    torch.testing.assert_close(kl, t([value]), rtol=0, atol=1e-12)
    kl.sum().backward()
    torch.testing.assert_close(logp.grad, t([grad]), rtol=0, atol=1e-12)
    # Through the policy loss: A = 0, ratio 1, so loss = kl_coef * mean(kl) over 3 tokens.
    logp = leaf([[0.0, -1.0, -2.0]])
    loss, m = policy_loss(
        logp,
        logp.detach(),
        t([0.0]),
        torch.ones(1, 3),
        ref_logprobs=ref,
        kl_coef=0.5,
        kl_estimator=estimator,
    )
    assert loss.item() == pytest.approx(0.5 * sum(value) / 3, abs=1e-12)
    assert m["kl_ref"] == pytest.approx(sum(value) / 3, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, 0.5 * t([grad]) / 3, rtol=0, atol=1e-12)


def test_k3_is_clamped_at_ten():
    # logp = 0, e = ref - logp:
    #   e = 2:    e^2 - 3         = 4.389...   kept, gradient 1 - e^2
    #   e = 3:    e^3 - 4         = 16.09      -> 10, gradient 0
    #   e = -10:  e^-10 + 9       = 9.0000454  kept, gradient 1 - e^-10
    #   e = -12:  e^-12 + 11      = 11.000006  -> 10, gradient 0
    #   e = 100:  clamped to 20 first (exp(100) overflows float32), e^20 - 21 -> 10, gradient 0
    #   e = -100: clamped to -20, e^-20 + 19 -> 10, gradient 0
    e = [2.0, 3.0, -10.0, -12.0, 100.0, -100.0]
    for dtype in (torch.float64, torch.float32):
        logp = torch.zeros(1, 6, dtype=dtype, requires_grad=True)
        kl = losses.kl_k3(logp, t([e], dtype))
        value = [math.exp(2) - 3, 10.0, math.exp(-10) + 9, 10.0, 10.0, 10.0]
        torch.testing.assert_close(kl, t([value], dtype), rtol=1e-6, atol=0)
        kl.sum().backward()
        grad = [1 - math.exp(2), 0.0, 1 - math.exp(-10), 0.0, 0.0, 0.0]
        torch.testing.assert_close(logp.grad, t([grad], dtype), rtol=1e-6, atol=0)
    assert losses.KL_CLAMP == 10.0 and losses.LOG_RATIO_CLAMP == 20.0


def test_unknown_kl_estimator_is_explained():
    logp = leaf([[0.0]])
    with pytest.raises(ValueError, match=r"unknown KL estimator 'k4'; valid: 'k1', 'k2', 'k3'"):
        policy_loss(logp, logp.detach(), t([1.0]), torch.ones(1, 1), kl_estimator="k4")
    with pytest.raises(ConfigError) as err:
        LearnerConfig(kl_estimator="k4").validate()
    assert err.value.key == "learner.kl_estimator" and "('k1', 'k2', 'k3')" in str(err.value)


# --- config defaults and the learner's wiring ---------------------------------------------------------


def test_new_keys_default_to_the_old_objective():
    cfg = LearnerConfig()
    assert (cfg.kl_estimator, cfg.dual_clip, cfg.clip_ratio_c, cfg.loss_agg_constant) == (
        "k3",
        False,
        3.0,
        0.0,
    )
    for algorithm in ("pair_grpo", "grpo", "dsr_grpo", "dsr_simpo"):
        chosen = LearnerConfig(algorithm=algorithm)
        assert (chosen.kl_estimator, chosen.dual_clip) == ("k3", False)


def test_learner_clip_loss_reads_the_new_keys():
    # The clip objective's micro-batch loss with the model's scoring replaced by fixed log-probs: two one-token
    # und rollouts, old 0, logp = ln 4 and ln 2 (ratios 4 and 2), A = -1 both, ref 0.
    # dual clip c = 3: losses min(4, 3) = 3 and min(2, 3) = 2; k1 = logp - ref adds
    # 0.5 * ln 4 and 0.5 * ln 2; seq-mean-token-sum-norm with D = 2 (given), C = 4:
    # (3 + 2 + 0.5 * ln 8) / (2 * 4) = (5 + 1.5 ln 2) / 8.
    from learner.learner import Learner
    from learner.objectives import OBJECTIVES

    cfg = LearnerConfig(
        kl_coef=0.5,
        kl_estimator="k1",
        dual_clip=True,
        clip_ratio_c=3.0,
        loss_agg=NORM,
        loss_agg_constant=4.0,
    )
    cfg.validate()
    learner = Learner.__new__(Learner)  # no engine: only the objective's own code runs
    learner.cfg, learner.device = cfg, torch.device("cpu")
    learner._version = 0  # the rollouts below were sampled by this version (on-policy)
    mask = torch.ones(2, 1, dtype=torch.bool)
    new = Padded(t([[math.log(4)], [math.log(2)]], torch.float32), mask)
    ref = Padded(torch.zeros(2, 1), mask)
    learner._logprobs = lambda rollouts, task: (new, torch.zeros(2, 1), ref)
    batch = TrainBatch([_rollout("und", 1, 0), _rollout("und", 1, 1)], np.array([-1.0, -1.0]))
    stats = Stats()
    loss = OBJECTIVES["clip"].loss(learner, batch, "und", [0, 1], 2.0, stats)
    assert loss.item() == pytest.approx((5 + 1.5 * LN2) / 8, rel=1e-6)
    assert stats.raw["sum/dual_clip_fraction"] == pytest.approx(1.0)  # 0.5 of 2 tokens
