"""Rollout pools on a local Ray cluster with the tiny model: weight sync, versions, faults.

2 text workers + 1 image worker (0.5 CPU each). The "learner" here is an in-process tiny
model of the same seed whose trainable parameters are perturbed, so a worker that really
loaded the published weights samples exactly what that model samples with the same seed
(same chunk, same seed, same CPU kernels), and one that did not, does not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.config import RolloutConfig
from actors.group import WorkerDiedError, WorkerGroup, gather
from actors.types import Rollout, RolloutRequest, WeightsRef
from actors.weights import publish, unflatten_views
from models.config import ModelConfig

pytestmark = pytest.mark.slow

CFG = RolloutConfig(
    text_workers=2,
    text_num_cpus=0.5,
    text_batch_size=2,
    image_workers=1,
    image_num_cpus=0.5,
    image_batch_size=2,
    group_size=2,
    max_restarts=2,
)
MODEL = ModelConfig(max_new_tokens=6)  # tiny random model, seed 0


def _image(k: int) -> np.ndarray:
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, : 8 * (k + 1)] = (40 * k) % 256  # a different picture per request
    return img


def und_requests(first_id: int, count: int) -> list[RolloutRequest]:
    return [
        RolloutRequest(first_id + k, k, "und", f"what color? {k}", 2, seed=1000 + first_id + k,
                       image=_image(k))
        for k in range(count)
    ]  # fmt: skip


def gen_requests(first_id: int, count: int) -> list[RolloutRequest]:
    return [
        RolloutRequest(first_id + k, k, "gen", f"a red circle {k}", 2, seed=2000 + first_id + k)
        for k in range(count)
    ]


@pytest.fixture(scope="module")
def pools(ray_local):
    text, image = WorkerGroup.text(MODEL, CFG), WorkerGroup.image(MODEL, CFG)
    from models import tiny_unified_model

    policy = tiny_unified_model(MODEL.seed)  # the learner's copy, built while actors build
    text.wait_ready()
    image.wait_ready()
    yield text, image, policy
    text.shutdown()
    image.shutdown()


@torch.no_grad()
def _perturb(policy, step: int) -> None:
    g = torch.Generator().manual_seed(step)
    for p in policy.trainable_parameters().values():
        p.add_(0.5 * torch.randn(p.shape, generator=g))


def _check_complete(rollouts, requests, version):
    keys = [(r.request.request_id, r.sample_index) for r in rollouts]
    assert keys == [(q.request_id, k) for q in requests for k in range(q.n)]  # no loss, no dup
    assert {r.weight_version for r in rollouts} == {version}


def test_publish_once_load_everywhere_both_pools_at_once(pools, ray_local):
    ray = ray_local
    text, image, policy = pools
    assert text.worker_versions() == [-1, -1] and image.worker_versions() == [-1]
    _perturb(policy, 1)
    params = policy.trainable_parameters()
    ref = publish(params, 1)
    assert isinstance(ref.ref, ray.ObjectRef)  # one object for every worker
    # the put copied the parameters' own bytes (fp32 on the CPU: no staging copy), so the
    # learner may change them at once: the published version keeps the values it had
    name = next(iter(params))
    want = params[name].detach().clone()
    params[name].data.add_(1.0)
    parts = ray.get(ref.ref)  # from the object store: read-only shared memory, viewed in place
    assert sorted(parts) == sorted(e[0] for e in ref.manifest)
    assert not any(a.flags.writeable for a in parts.values())
    views = unflatten_views(parts, ref.manifest)
    assert all(np.shares_memory(views[n].numpy(), parts[n]) for n in views)
    assert torch.equal(views[name], want)
    params[name].data.sub_(1.0)
    del parts, views
    assert text.broadcast_weights(ref) and image.broadcast_weights(ref)
    assert text.worker_versions() == [1, 1] and image.worker_versions() == [1]
    assert not text.broadcast_weights(ref)  # same version again: ignored

    und, gen = und_requests(0, 4), gen_requests(100, 3)
    text_job, image_job = text.submit(und), image.submit(gen)  # both pools busy at once
    und_out, gen_out = gather(text_job, image_job)
    _check_complete(und_out, und, 1)
    _check_complete(gen_out, gen, 1)
    for r in und_out:
        assert r.token_ids.dtype == np.int64 and r.logprobs.dtype == np.float32
        assert r.token_ids.shape == r.logprobs.shape and 1 <= len(r.token_ids) <= 6
        assert np.all(r.logprobs <= 0) and isinstance(r.text, str)
    for r in gen_out:
        assert r.token_ids.shape == (16,) and r.logprobs.shape == (16,)
        assert r.image.dtype == np.uint8 and r.image.shape == (64, 64, 3)

    # The workers sample what the published weights sample: chunk 0 of each pool is
    # requests 0-1 with the seed of request 0 (text_batch_size = image_batch_size = 2).
    s = policy.sample_text([q.image for q in und[:2]], [q.prompt for q in und[:2]], n=2,
                           temperature=1.0, max_new_tokens=6, seed=und[0].seed)  # fmt: skip
    assert [r.token_ids.tolist() for r in und_out[:4]] == s.token_ids
    np.testing.assert_allclose(
        np.concatenate([r.logprobs for r in und_out[:4]]), torch.cat(s.logprobs).numpy(), atol=1e-5
    )
    si = policy.sample_image_tokens([q.prompt for q in gen[:2]], n=2, cfg_weight=MODEL.cfg_weight,
                                    seed=gen[0].seed)  # fmt: skip
    assert np.array_equal(np.stack([r.token_ids for r in gen_out[:4]]), si.tokens.numpy())
    np.testing.assert_array_equal(np.stack([r.image for r in gen_out[:4]]),
                                  policy.decode_images(si.tokens))  # fmt: skip


def test_killed_worker_is_restarted_with_current_weights_nothing_lost(pools, ray_local):
    ray = ray_local
    text, _, policy = pools
    _perturb(policy, 2)
    ref = publish(policy.trainable_parameters(), 2)
    assert text.broadcast_weights(ref)
    requests = und_requests(200, 7)  # 4 chunks over 2 workers
    job = text.submit(requests)
    victim = text.workers[0]
    ray.kill(victim)  # mid-map: its chunk is in flight
    (out,) = gather(job, timeout_s=300)
    assert text.restarts == [1, 0] and job.redispatched >= 1
    assert text.workers[0] is not victim
    _check_complete(out, requests, 2)  # the new worker loaded version 2 before sampling
    assert text.worker_versions() == [2, 2]
    # The re-dispatched chunk sampled what an undisturbed run samples.
    again = text.map(requests)
    assert [r.token_ids.tolist() for r in again] == [r.token_ids.tolist() for r in out]


class FaultyWorker:
    """A model-free worker for the group's fault paths: worker 0 hangs once or always dies."""

    def __init__(self, mode: str, flag: str, worker_index: int = 0):
        import os
        import time

        self.mode, self.flag, self.worker_index, self.v = mode, flag, worker_index, -1
        if mode == "hang_then_slow_build" and worker_index == 0 and not os.path.exists(flag):
            time.sleep(6)  # the replacement of the hung worker takes 6 s to build

    def generate(self, requests):
        import os
        import time

        if self.worker_index == 0:
            if self.mode == "die":
                os._exit(1)
            if os.path.exists(self.flag):  # hang once: the restarted worker finds no flag
                os.remove(self.flag)
                time.sleep(300)
        return [
            Rollout(r, k, np.array([r.request_id, k]), np.zeros(2, np.float32), self.v)
            for r in requests
            for k in range(r.n)
        ]

    def load_weights(self, ref):
        self.v = max(self.v, ref.version)
        return self.v

    def version(self):
        return self.v

    def ready(self):
        return self.worker_index


@pytest.fixture
def by_value(ray_local):
    """Ship this test module's classes to the workers by value (it is not importable there)."""
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _cheap_requests(count):
    return [RolloutRequest(i, i, "und", "q", 2, seed=i) for i in range(count)]


def test_hung_worker_is_killed_after_the_timeout_and_its_chunk_redone(by_value, tmp_path):
    flag = tmp_path / "hang"
    flag.touch()
    g = WorkerGroup(FaultyWorker, 2, {"num_cpus": 0.5}, ("hang", str(flag)), batch_size=2,
                    max_restarts=1, request_timeout_s=4.0, name="text")  # fmt: skip
    try:
        g.wait_ready()
        assert g.broadcast_weights(WeightsRef(3, None, ()))
        requests = _cheap_requests(6)
        out = g.map(requests)
        assert g.restarts == [1, 0] and not flag.exists()
        _check_complete(out, requests, 3)  # the replacement loaded version 3 first
    finally:
        g.shutdown()


def test_a_replacement_slower_to_build_than_the_timeout_is_not_killed_for_it(by_value, tmp_path):
    # The chunk's clock starts once the replacement is built and holds the weights: a 6 s
    # build under request_timeout_s=3 would otherwise be killed too and exhaust max_restarts.
    flag = tmp_path / "hang"
    flag.touch()
    g = WorkerGroup(FaultyWorker, 2, {"num_cpus": 0.5}, ("hang_then_slow_build", str(flag)),
                    batch_size=2, max_restarts=1, request_timeout_s=3.0, name="text")  # fmt: skip
    try:
        g.wait_ready()
        assert g.broadcast_weights(WeightsRef(2, None, ()))
        requests = _cheap_requests(6)
        out = g.map(requests)
        assert g.restarts == [1, 0] and not flag.exists()
        _check_complete(out, requests, 2)
    finally:
        g.shutdown()


def test_a_worker_dying_past_max_restarts_fails_the_map_by_name(by_value):
    g = WorkerGroup(FaultyWorker, 2, {"num_cpus": 0.5}, ("die", ""), batch_size=1,
                    max_restarts=1, name="image")  # fmt: skip
    try:
        with pytest.raises(WorkerDiedError, match=r"image worker 0 died 2 times \(rollout.max_"):
            g.map(_cheap_requests(8))
    finally:
        g.shutdown()
