"""WorkerGroup in-process (num_workers=0): chunking, ordering, dedup, version gating.

The group is generic over its worker class; ``EchoWorker`` is a worker whose rollouts
record which chunk sampled them, so the group's bookkeeping is checked without a model.
Faults (dead and hung Ray actors) are tested in tests/integration/test_actors_ray.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from actors.group import WorkerGroup
from actors.types import Rollout, RolloutRequest, WeightsRef
from actors.weights import UNSYNCED


class EchoWorker:
    """Rollout i of request r: token_ids = [r.request_id, i, first request id of the call]."""

    def __init__(self, worker_index: int = 0):
        self.worker_index, self.v, self.calls = worker_index, UNSYNCED, []

    def generate(self, requests):
        self.calls.append([r.request_id for r in requests])
        head = requests[0].request_id
        return [
            Rollout(r, k, np.array([r.request_id, k, head]), np.zeros(3, np.float32), self.v)
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


def reqs(ids, n=2):
    return [RolloutRequest(i, i // 2, "und", f"q{i}", n, seed=i) for i in ids]


def test_local_map_chunks_in_order_and_returns_n_per_request():
    g = WorkerGroup(EchoWorker, 0, batch_size=3)
    requests = reqs([7, 3, 9, 1, 4])
    out = g.map(requests)
    # chunks of 3 in request order: [7, 3, 9], [1, 4]; each rollout names its chunk's head
    assert g.workers[0].calls == [[7, 3, 9], [1, 4]]
    assert [ro.token_ids.tolist() for ro in out] == [
        [7, 0, 7], [7, 1, 7], [3, 0, 7], [3, 1, 7], [9, 0, 7], [9, 1, 7],
        [1, 0, 1], [1, 1, 1], [4, 0, 1], [4, 1, 1],
    ]  # fmt: skip
    assert g.map([]) == []


def test_duplicate_request_ids_are_refused():
    g = WorkerGroup(EchoWorker, 0)
    with pytest.raises(ValueError, match=r"request_id\(s\) \[3\] appear more than once"):
        g.submit(reqs([3, 4, 3]))


def test_results_deduplicated_by_request_id():
    g = WorkerGroup(EchoWorker, 0, batch_size=2)
    job = g.submit(reqs([1, 2]))
    job.accept(0, g.workers[0].generate(reqs([1, 2])))  # a late duplicate of chunk 0
    assert job.duplicates_dropped == 4
    assert [(r.request.request_id, r.sample_index) for r in job.result()] == [
        (1, 0), (1, 1), (2, 0), (2, 1),
    ]  # fmt: skip


def test_missing_samples_are_an_error():
    g = WorkerGroup(EchoWorker, 0, batch_size=2)
    job = g.submit(reqs([1]))
    job.results[1] = job.results[1][:1]
    with pytest.raises(RuntimeError, match=r"request 1 \(pair 0\) has sample indices \[0\]"):
        job.result()


def test_broadcast_is_version_gated():
    g = WorkerGroup(EchoWorker, 0)
    assert g.broadcast_weights(WeightsRef(1, None, ()))
    assert not g.broadcast_weights(WeightsRef(1, None, ()))
    assert not g.broadcast_weights(WeightsRef(0, None, ()))
    assert g.worker_versions() == [1] and g.versions.version == 1
    assert {ro.weight_version for ro in g.map(reqs([5]))} == {1}


def test_each_chunk_is_passed_on_once_as_it_completes():
    # the driver streams chunks to the reward endpoints; a duplicate must not be scored twice
    g = WorkerGroup(EchoWorker, 0, batch_size=2)
    seen = []
    job = g.submit(
        reqs([1, 2, 3]), on_chunk=lambda rs: seen.append([r.request.request_id for r in rs])
    )
    assert seen == [[1, 1, 2, 2], [3, 3]]
    job.accept(0, g.workers[0].generate(reqs([1, 2])))  # a late duplicate of chunk 0
    assert len(seen) == 2 and job.duplicates_dropped == 4
