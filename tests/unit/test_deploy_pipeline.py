"""The asynchronous pipeline's parts without a cluster: the DSR version rule, the producer's
order, the off-policy metrics (hand-derived), the pending batches of a checkpoint."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from deploy.pipeline import Producer, Sampled, check_endpoint_versions
from learner.metrics import Stats, reduce_metrics
from models.text_tokens import Padded


def test_a_follower_endpoint_must_score_with_the_sampling_version_alone():
    followers = {"dual"}
    check_endpoint_versions({"dual": {3}, "hps": {1, 2}}, followers, 3, step=4)  # hps: no rule
    check_endpoint_versions({"dual": set()}, followers, 3, step=4)  # no answer named one
    with pytest.raises(RuntimeError, match=r"step 4: endpoint dual .* version 3 with .*\[2, 3\]"):
        check_endpoint_versions({"dual": {2, 3}}, followers, 3, step=4)  # a mix
    with pytest.raises(RuntimeError, match=r"with version\(s\) \[2\]"):
        check_endpoint_versions({"dual": {2}}, followers, 3, step=4)  # the wrong one


def test_producer_runs_batches_in_order_one_at_a_time():
    producer, log, running = Producer(), [], threading.Lock()

    def make(index):
        assert running.acquire(blocking=False), "two batches at once"
        try:
            log.append(index)
            return Sampled(index, index // 2, [], [])
        finally:
            running.release()

    producer.add_done(Sampled(0, 0, [], []))  # restored from a checkpoint
    for b in (1, 2, 3):
        producer.submit(b, make, b)
    assert producer.next_index == 4
    assert [s.index for s in producer.drain()] == [0, 1, 2, 3] and len(producer.pending) == 4
    assert producer.take(0).version == 0 and producer.take(1).index == 1
    with pytest.raises(RuntimeError, match="step 5 got batch 2"):
        producer.take(5)
    producer.close()
    assert log == [1, 2, 3] and producer.stop.is_set()


def test_importance_weights_and_the_on_version_gap():
    # two rollouts of 2 tokens; the second is stale (sampled with an older version)
    new = Padded(torch.tensor([[0.0, -1.0], [-1.0, -2.0]]), torch.tensor([[1, 1], [1, 0]]))
    old = torch.tensor([[0.0, -1.0], [-1.0 - math.log(2), 5.0]])  # the last is padding
    stats = Stats()
    stats.add_logprob_diff("und", new, old, 2, fresh=[True, False])
    m = reduce_metrics([{**stats.raw, "grad_norm": 0.0, "lr": 0.0, "version": 1.0,
                         "max/micro_batches": 1.0}])  # fmt: skip
    # weights exp(new - old) on the mask: 1, 1, 2 -> mean 4/3, var (1+1+4)/3 - 16/9 = 2/9
    assert m["offpolicy/iw_mean"] == pytest.approx(4 / 3)
    assert m["offpolicy/iw_std"] == pytest.approx(math.sqrt(2 / 9))
    assert m["offpolicy/iw_min"] == pytest.approx(1.0) and m["offpolicy/iw_max"] == 2.0
    assert m["logprob_diff/on_version"] == 0.0  # the fresh rollout agrees exactly
    assert m["logprob_diff"] == pytest.approx(math.log(2) / 3)


def test_pending_batches_round_trip_through_a_checkpoint(tmp_path):
    from actors.types import Rollout, RolloutRequest
    from deploy import checkpoint
    from deploy.config import RunConfig
    from models.config import load_config

    cfg = load_config(RunConfig, None, ["train.max_staleness=2"])
    req = RolloutRequest(5, 2, "und", "q", 1, seed=0, image=np.zeros((2, 2, 3), np.uint8))
    ro = Rollout(req, 0, np.array([1, 2]), np.array([-0.5, -0.25], np.float32), 3, text="a")
    ro.rewards["accuracy"] = 1.0
    state = checkpoint.TrainerState(4, 4, {"cursor": 1})
    path = checkpoint.save(
        tmp_path, state, cfg, lambda d: __import__("os").makedirs(d),
        pending=[(Sampled(4, 3, [ro], [], {"time/reward": 0.1}), 0.0)],
    )  # fmt: skip
    ((sampled, epoch),) = checkpoint.load_pending(path, 2)
    assert sampled.index == 4 and sampled.version == 3 and epoch == 0.0
    assert sampled.und[0].rewards == {"accuracy": 1.0}
    assert sampled.und[0].logprobs.tolist() == [-0.5, -0.25]
    with pytest.raises(ValueError, match=r"train.max_staleness=2; resume with the same"):
        checkpoint.load_pending(path, 1)
    assert checkpoint.load_pending(tmp_path, 0) == []  # no pending.pkl: a synchronous run
