"""nll_loss (supervised fine-tuning): hand-derived values, aggregation, micro-batching."""

from __future__ import annotations

import pytest
import torch

from learner.losses import POLICY_LOSSES, loss_normaliser, nll_loss

# two sequences: task 0 has tokens log-probs -1, -2; task 1 has -0.5 (then padding, NaN)
LP = torch.tensor([[-1.0, -2.0], [-0.5, float("nan")]])
MASK = torch.tensor([[True, True], [True, False]])
TASKS = torch.tensor([0, 1])


def test_values_by_hand():
    # token-mean: (1 + 2 + 0.5) / 3
    loss, m = nll_loss(LP, MASK, agg="token-mean")
    assert float(loss) == pytest.approx(3.5 / 3)
    assert m == pytest.approx({"nll": 3.5 / 3, "tokens": 3.0})
    # task-token-mean: (1 + 2) / 2 + 0.5 / 1
    loss, _ = nll_loss(LP, MASK, agg="task-token-mean", task_ids=TASKS)
    assert float(loss) == pytest.approx(2.0)
    # seq-mean-token-mean: (1.5 + 0.5) / 2
    loss, _ = nll_loss(LP, MASK, agg="seq-mean-token-mean")
    assert float(loss) == pytest.approx(1.0)
    assert POLICY_LOSSES["nll"] is nll_loss


def test_gradient_and_padding():
    lp = LP.clone().requires_grad_(True)
    loss, _ = nll_loss(lp, MASK, agg="task-token-mean", task_ids=TASKS)
    loss.backward()
    # d loss / d logp = -1 / D_task on the mask, 0 (not NaN) off it
    assert torch.equal(lp.grad, torch.tensor([[-0.5, -0.5], [-1.0, 0.0]]))


def test_micro_batches_add_up():
    full, _ = nll_loss(LP, MASK, agg="task-token-mean", task_ids=TASKS)
    norm = loss_normaliser(MASK, TASKS, "task-token-mean")
    parts = [
        nll_loss(
            LP[i : i + 1],
            MASK[i : i + 1],
            agg="task-token-mean",
            task_ids=TASKS[i : i + 1],
            normaliser=norm,
        )[0]
        for i in range(2)
    ]
    assert float(sum(parts)) == pytest.approx(float(full))
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        nll_loss(LP[0], MASK[0])
