"""learner.losses: hand-derived values, clipping and gradient signs, micro-batch invariance,
SimPO, and the rule that the pure math imports no ray / deepspeed / vllm."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from learner.losses import AGG_MODES, NORMALISERS, loss_normaliser, policy_loss, simpo_loss

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGGS = list(AGG_MODES)


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def leaf(x):
    return t(x).requires_grad_(True)


# --- the per-token objective by hand ------------------------------------------------------------


def test_clipped_objective_by_hand():
    # old log-probs 0, so ratio = exp(logp). eps_low = eps_high = 0.2 -> clip to [0.8, 1.2].
    #   seq 0, A = +1: ratio 1.1 -> min(1.1, 1.1) = 1.1       loss -1.1, grad -A*ratio/4 = -0.275
    #                  ratio 1.5 -> min(1.5, 1.2) = 1.2       loss -1.2, clipped: grad 0
    #   seq 1, A = -1: ratio 0.5 -> min(-0.5, -0.8) = -0.8    loss  0.8, clipped: grad 0
    #                  ratio 0.9 -> min(-0.9, -0.9) = -0.9    loss  0.9, grad -A*ratio/4 = 0.225
    # token-mean over 4 tokens: (-1.1 - 1.2 + 0.8 + 0.9) / 4 = -0.15
    ratios = [[1.1, 1.5], [0.5, 0.9]]
    logp = leaf([[math.log(r) for r in row] for row in ratios])
    loss, m = policy_loss(
        logp, torch.zeros(2, 2, dtype=torch.float64), t([1.0, -1.0]), torch.ones(2, 2)
    )
    assert loss.item() == pytest.approx(-0.15, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, t([[-0.275, 0.0], [0.0, 0.225]]))
    # clip active in the direction that matters: 2 of 4 tokens
    assert m["clip_fraction"] == pytest.approx(0.5)
    assert m["ratio_mean"] == pytest.approx((1.1 + 1.5 + 0.5 + 0.9) / 4)
    assert m["ratio_max"] == pytest.approx(1.5)
    # approx_kl = mean of the k3 estimate (r - 1) - log r over the four ratios
    k3 = sum(r - 1 - math.log(r) for row in ratios for r in row) / 4
    assert m["approx_kl"] == pytest.approx(k3)
    assert m["tokens"] == 4.0 and m["kl_ref"] == 0.0


def test_clip_only_counts_and_blocks_the_direction_that_matters():
    # A = +1, ratio 0.5: min(0.5, 0.8) = 0.5 -> unclipped branch, gradient -A*ratio = -0.5
    # A = -1, ratio 1.5: min(-1.5, -1.2) = -1.5 -> unclipped branch, gradient -A*ratio = +1.5
    # neither counts in clip_fraction (PPO lets these through on purpose). One token each, so
    # token-mean divides by 2.
    logp = leaf([[math.log(0.5)], [math.log(1.5)]])
    loss, m = policy_loss(
        logp, torch.zeros(2, 1, dtype=torch.float64), t([1.0, -1.0]), torch.ones(2, 1)
    )
    loss.backward()
    torch.testing.assert_close(logp.grad, t([[-0.5 / 2], [1.5 / 2]]))
    assert m["clip_fraction"] == 0.0


def test_clip_higher_is_asymmetric():
    # A = +1, ratio 1.25: clipped with eps_high 0.2 (1.25 > 1.2, grad 0), not with DSR's 0.28
    # (1.25 < 1.28, grad -A*ratio = -1.25). A = -1, ratio 0.75 is clipped by eps_low 0.2 in both.
    logp = [[math.log(1.25)], [math.log(0.75)]]
    old, A, mask = torch.zeros(2, 1, dtype=torch.float64), t([1.0, -1.0]), torch.ones(2, 1)
    for eps_high, grad0, frac in ((0.2, 0.0, 1.0), (0.28, -1.25 / 2, 0.5)):
        x = leaf(logp)
        loss, m = policy_loss(x, old, A, mask, eps_low=0.2, eps_high=eps_high)
        loss.backward()
        torch.testing.assert_close(x.grad, t([[grad0], [0.0]]))
        assert m["clip_fraction"] == pytest.approx(frac)


def test_gradient_sign_follows_the_advantage():
    # Inside the clip range the per-token gradient is -A * ratio / n: it raises log-probs of
    # positive-advantage tokens (gradient descent) and lowers the negative ones; A = 0 -> 0.
    g = torch.Generator().manual_seed(0)
    old = torch.randn(6, 5, generator=g, dtype=torch.float64)
    logp = (old + 0.05 * torch.randn(6, 5, generator=g, dtype=torch.float64)).requires_grad_()
    A = t([2.0, -1.0, 0.0, 0.5, -3.0, 1.0])
    loss, m = policy_loss(logp, old, A, torch.ones(6, 5))
    assert m["clip_fraction"] == 0.0
    loss.backward()
    sign = torch.sign(logp.grad)
    assert torch.equal(sign, -torch.sign(A)[:, None].expand(6, 5))


def test_k3_kl_by_hand():
    # One token, A = 0, logp = old = 0, ref = log 2:
    # kl = exp(ref - logp) - (ref - logp) - 1 = 2 - ln 2 - 1 = 0.3068528...
    # loss = 0 + kl_coef * kl = 0.5 * 0.3068528; d kl / d logp = 1 - exp(ref - logp) = -1
    # -> grad = 0.5 * -1 = -0.5 (the KL pulls logp up towards the reference's log 2).
    logp = leaf([[0.0]])
    loss, m = policy_loss(
        logp, t([[0.0]]), t([0.0]), torch.ones(1, 1), ref_logprobs=t([[math.log(2)]]), kl_coef=0.5
    )
    assert loss.item() == pytest.approx(0.5 * (1 - math.log(2)), abs=1e-12)
    assert m["kl_ref"] == pytest.approx(1 - math.log(2))
    loss.backward()
    assert float(logp.grad) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match=r"kl_coef=0\.1 needs ref_logprobs"):
        policy_loss(logp, t([[0.0]]), t([0.0]), torch.ones(1, 1), kl_coef=0.1)


def test_padding_never_reaches_loss_or_gradient():
    # Masked positions hold -inf / NaN (padding): loss and gradient stay finite and the
    # gradient there is exactly 0. Unmasked: one token, A = 1, ratio 1 -> loss -1, grad -1.
    logp = leaf([[0.0, -math.inf, math.nan]])
    old = t([[0.0, math.nan, -math.inf]])
    ref = t([[0.0, math.inf, math.nan]])
    loss, m = policy_loss(
        logp, old, t([1.0]), t([[1, 0, 0]], dtype=torch.bool), ref_logprobs=ref, kl_coef=0.1
    )
    assert loss.item() == -1.0
    loss.backward()
    assert torch.equal(logp.grad, t([[-1.0, 0.0, 0.0]]))
    assert all(math.isfinite(v) for v in m.values())


def test_bf16_logprobs_are_computed_in_float32():
    # 1000 tokens of A = +1 and 1 token of A = -1 at ratio 1: token-mean = (-1000 + 1) / 1001.
    # bf16 cannot even hold 1001 (it rounds to 1000), so a bf16 computation would be off.
    logp = torch.zeros(2, 1000, dtype=torch.bfloat16, requires_grad=True)
    mask = torch.zeros(2, 1000)
    mask[0] = 1
    mask[1, 0] = 1
    loss, m = policy_loss(logp, logp.detach(), t([1.0, -1.0]), mask)
    assert loss.dtype == torch.float32 and m["tokens"] == 1001.0
    assert loss.item() == pytest.approx(-999 / 1001, rel=1e-6)
    loss.backward()
    assert logp.grad.dtype == torch.bfloat16


# --- aggregation modes --------------------------------------------------------------------------


def _ratio_one_batch():
    # ratio = 1 everywhere, so each masked token's loss is -A (unclipped, no KL).
    # seq 0 (task 0): A = +1, 4 tokens -> four losses of -1
    # seq 1 (task 5): A = -2, 1 token  -> one loss of +2
    logp = leaf([[0.0] * 4, [0.0] * 4])
    mask = t([[1, 1, 1, 1], [1, 0, 0, 0]])
    return logp, logp.detach().clone(), t([1.0, -2.0]), mask, torch.tensor([0, 5])


@pytest.mark.parametrize(
    "agg, expected",
    [
        ("token-mean", (-4 + 2) / 5),  # all 5 tokens: -0.4
        ("seq-mean-token-mean", (-1 + 2) / 2),  # seq means -1 and +2, mean over 2 seqs: 0.5
        ("task-token-mean", -1 + 2),  # task means -1 and +2, summed over tasks: 1.0
    ],
)
def test_aggregation_by_hand(agg, expected):
    logp, old, A, mask, task = _ratio_one_batch()
    loss, _ = policy_loss(logp, old, A, mask, agg=agg, task_ids=task)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_task_token_mean_weighs_tasks_not_tokens():
    # A 576-token image rollout (A = +1) and a 10-token answer (A = -1), ratio 1:
    # task-token-mean = mean(-1 over 576) + mean(+1 over 10) = -1 + 1 = 0, and the summed
    # |gradient| of each task is 1 (576 * 1/576 and 10 * 1/10).
    # token-mean instead = (-576 + 10) / 586: the image outweighs the answer 57.6 to 1.
    logp = leaf([[0.0] * 576, [0.0] * 10 + [0.0] * 566])
    mask = torch.zeros(2, 576)
    mask[0, :] = 1
    mask[1, :10] = 1
    A, task = t([1.0, -1.0]), torch.tensor([1, 0])
    loss, _ = policy_loss(logp, logp.detach(), A, mask, agg="task-token-mean", task_ids=task)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert float(logp.grad[0].abs().sum()) == pytest.approx(1.0)
    assert float(logp.grad[1].abs().sum()) == pytest.approx(1.0)
    tm, _ = policy_loss(logp, logp.detach(), A, mask, agg="token-mean")
    assert tm.item() == pytest.approx((-576 + 10) / 586)


def test_loss_normaliser_by_hand():
    # rows: 3 tokens (task 2), 0 tokens (task 2), 1 token (task 9)
    mask = t([[1, 1, 1], [0, 0, 0], [1, 0, 0]])
    task = torch.tensor([2, 2, 9])
    assert loss_normaliser(mask, None, "token-mean") == 4.0
    assert loss_normaliser(mask, None, "seq-mean-token-mean") == 2.0  # empty rows do not count
    assert loss_normaliser(mask, task, "task-token-mean") == {2: 3.0, 9: 1.0}
    assert set(NORMALISERS) == set(AGG_MODES)


def test_bad_names_and_normalisers_are_explained():
    logp, old, A, mask, task = _ratio_one_batch()
    with pytest.raises(ValueError, match="valid: 'token-mean', 'seq-mean-token-mean', 'task-token"):
        policy_loss(logp, old, A, mask, agg="sum")
    with pytest.raises(ValueError, match="needs task_ids"):
        policy_loss(logp, old, A, mask, agg="task-token-mean")
    with pytest.raises(ValueError, match=r"no entry for task_id 5 \(it has \[0\]\)"):
        policy_loss(logp, old, A, mask, agg="task-token-mean", task_ids=task, normaliser={0: 4.0})
    with pytest.raises(ValueError, match="must be a positive number"):
        policy_loss(logp, old, A, mask, normaliser=0)
    with pytest.raises(ValueError, match="advantages must be finite"):
        policy_loss(logp, old, t([math.nan, 1.0]), mask)
    with pytest.raises(ValueError, match=r"mask must have shape \[2, 4\]"):
        policy_loss(logp, old, A, mask[:, :3])


# --- micro-batches + gradient accumulation == the full batch ------------------------------------


def _tiny_policy_batch(seed=0, N=12, T=9, D=6, V=11):
    """A real (tiny) policy: linear logits over V tokens from D features; log-probs of the
    sampled tokens. Lengths vary from 0 to T, two tasks of very different lengths."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, V, generator=g, dtype=torch.float64).requires_grad_(True)
    x = torch.randn(N, T, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (N, T), generator=g)
    task = torch.tensor([0, 1] * (N // 2)) * 1000 + 7  # task ids 7 and 1007
    lengths = torch.where(
        task == 7,
        torch.randint(6, T + 1, (N,), generator=g),
        torch.randint(0, 3, (N,), generator=g),
    )
    lengths[3] = 0  # an empty (fully masked) sequence
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(torch.float64)  # [N, T]
    with torch.no_grad():
        lp0 = torch.log_softmax(x @ W, dim=-1).gather(-1, y[..., None])[..., 0]
    old = lp0 + 0.3 * torch.randn(N, T, generator=g, dtype=torch.float64)  # some tokens clip
    ref = lp0 + 0.3 * torch.randn(N, T, generator=g, dtype=torch.float64)
    A = torch.randn(N, generator=g, dtype=torch.float64)

    def logprobs(rows):
        logits = x[rows] @ W  # [n, T, V]
        return torch.log_softmax(logits, dim=-1).gather(-1, y[rows][..., None])[..., 0]  # [n, T]

    return W, logprobs, old, ref, A, mask, task


@pytest.mark.parametrize("agg", AGGS)
def test_micro_batches_with_normaliser_equal_full_batch(agg):
    W, logprobs, old, ref, A, mask, task = _tiny_policy_batch()
    N = mask.shape[0]
    # agg_constant: seq-mean-token-sum-norm's length normaliser (T); the other modes ignore it
    kw = dict(agg=agg, kl_coef=0.04, eps_low=0.2, eps_high=0.28, agg_constant=9.0)

    def run(chunks, normaliser):
        W.grad = None
        total = 0.0
        for rows in chunks:
            rows = torch.tensor(rows)
            loss, _ = policy_loss(
                logprobs(rows),
                old[rows],
                A[rows],
                mask[rows],
                task_ids=task[rows],
                normaliser=normaliser,
                ref_logprobs=ref[rows],
                **kw,
            )
            loss.backward()  # gradient accumulation
            total += loss.item()
        return total, W.grad.clone()

    full_loss, full_grad = run([list(range(N))], None)
    assert full_grad.abs().sum() > 0
    # the explicit full-batch normaliser gives the same full-batch loss as the default
    norm = loss_normaliser(mask, task, agg)
    assert run([list(range(N))], norm)[0] == pytest.approx(full_loss, abs=1e-12)
    # uneven micro-batches; the first holds only task 7 rows, the last a single row
    chunks = [[0, 2, 4], [1, 3, 5, 6, 7, 8, 9], [10], [11]]
    micro_loss, micro_grad = run(chunks, norm)
    assert micro_loss == pytest.approx(full_loss, abs=1e-12)
    torch.testing.assert_close(micro_grad, full_grad, rtol=1e-10, atol=1e-12)
    # without the normaliser each micro-batch divides by its own counts: a different gradient
    _, wrong_grad = run(chunks, None)
    assert not torch.allclose(wrong_grad, full_grad, rtol=1e-3, atol=1e-6)


# --- SimPO --------------------------------------------------------------------------------------


def test_simpo_by_hand():
    # pair 0: chosen -2 over 2 tokens (-1 per token), rejected -6 over 3 (-2 per token)
    #   z = 2 * -1 - 2 * -2 - 0.5 = 1.5   -> -log sigmoid(1.5) = log(1 + e^-1.5)
    # pair 1: chosen -3 over 1 token, rejected -1 over 1
    #   z = 2 * -3 - 2 * -1 - 0.5 = -4.5  -> log(1 + e^4.5)
    # d loss / d chosen_logp_sum = -sigmoid(-z) * beta / len_c / N
    #   pair 0: -sigmoid(-1.5) * 2 / 2 / 2;  pair 1: -sigmoid(4.5) * 2 / 1 / 2
    c = leaf([-2.0, -3.0])
    r = leaf([-6.0, -1.0])
    loss, m = simpo_loss(c, t([2.0, 1.0]), r, t([3.0, 1.0]), beta=2.0, gamma=0.5)
    expected = (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(4.5))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()

    def sig(z):
        return 1 / (1 + math.exp(-z))

    torch.testing.assert_close(c.grad, t([-sig(-1.5) * 2 / 2 / 2, -sig(4.5) * 2 / 1 / 2]))
    assert (r.grad > 0).all()  # raising the rejected log-likelihood raises the loss
    assert m["accuracy"] == 0.5  # chosen rewards -2, -6 vs rejected -4, -2
    assert m["margin"] == pytest.approx(((-2 + 4) + (-6 + 2)) / 2)


def test_simpo_micro_batches_equal_full_batch():
    g = torch.Generator().manual_seed(1)
    c = (-5 * torch.rand(7, generator=g, dtype=torch.float64)).requires_grad_()
    r = -5 * torch.rand(7, generator=g, dtype=torch.float64)
    lc, lr = t([3, 1, 4, 1, 5, 9, 2]), t([2, 7, 1, 8, 2, 8, 1])
    full, _ = simpo_loss(c, lc, r, lr)
    (full_grad,) = torch.autograd.grad(full, c)
    micro = sum(
        simpo_loss(c[s], lc[s], r[s], lr[s], normaliser=7)[0] for s in (slice(0, 3), slice(3, 7))
    )
    (micro_grad,) = torch.autograd.grad(micro, c)
    assert micro.item() == pytest.approx(full.item(), abs=1e-12)
    torch.testing.assert_close(micro_grad, full_grad)


# --- the math stays free of plumbing ------------------------------------------------------------


def test_learner_math_imports_no_ray_deepspeed_vllm():
    code = (
        "import sys; import learner.advantages, learner.losses, learner.config; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'deepspeed', 'vllm')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
