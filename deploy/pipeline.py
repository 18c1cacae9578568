"""Sampling one batch with its rewards streamed, and the bounded-staleness pipeline.

Streaming rewards (every mode). ``sample_batch`` submits the understanding and generation
requests to their pools; each rollout chunk, as soon as its worker returns it, goes to the
reward endpoints of its task (``RewardStream``: one asyncio event loop in a thread, so the
scoring of chunk i overlaps the sampling of chunk i+1). A reward is a function of its
rollout alone, so scoring per chunk instead of per step changes no value: with
``train.max_staleness: 0`` a step computes what it computed before, only sooner.

Bounded staleness (``train.max_staleness: k >= 1``). Batch ``b`` (the rollouts step ``b``
trains on) is drawn and submitted at the start of step ``b - k`` with the weights the
learner holds then (at start-up, or after a resume, batches up to ``k`` ahead use the
version the run starts with). A ``Producer`` (one background thread) samples the batches
in order: before a batch it loads that batch's version into the rollout workers and into
the endpoints that follow the policy (DSR), then samples it; its rewards stream in while
the producer goes on to the next batch (the driver waits for them when it trains on the
batch; a new version is loaded into a DSR endpoint only once the previous batch's scores
are in). So a batch is
sampled and scored with ONE named version, workers never hold a version older than one
they have held (versions only go forward), and the learner trains on batch ``b`` while
batches ``b+1 .. b+k`` are sampled: rollouts are at most ``k`` learner steps behind
(verl's one-step off-policy recipe is k = 1; AReaL bounds the same quantity with
``max_head_offpolicyness``; Fu et al. 2025, arXiv:2505.24298, section 5).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from actors.types import Rollout
from rewards.spec import request_items


@dataclass
class Sampled:
    """One batch's rollouts with their rewards filled in, and how they were made."""

    index: int
    """The step that trains on it (0-based)."""
    version: int
    """The weight version that sampled every rollout of it (and scored it, for DSR)."""
    und: list[Rollout]
    gen: list[Rollout]
    times: dict[str, float] = field(default_factory=dict)
    endpoint_versions: dict[str, list[int]] = field(default_factory=dict)
    """term -> the weight versions its endpoint's answers said they scored with (DSR)."""
    reward_futures: list = field(default_factory=list)
    """Rewards still being scored (asynchronous mode: the producer samples the next batch
    meanwhile); empty once ``rewards`` are all in (and always in a checkpoint)."""


class RewardStream:
    """An asyncio event loop in a thread that scores rollout chunks as they arrive.

    ``submit(rollouts, terms)`` returns a ``concurrent.futures.Future`` that completes once
    every term's endpoint has answered; it fills ``rollout.rewards[term]`` (NaN where the
    endpoint gave none, or where the rollout has nothing it scores) and
    ``rollout.reward_details``, as ``deploy.train.score`` does for a whole step.
    """

    def __init__(self, clients: Mapping):
        self.clients = clients
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="pairuni-reward-stream", daemon=True
        )
        self.thread.start()

    def submit(self, rollouts: list[Rollout], terms) -> cf.Future:
        return asyncio.run_coroutine_threadsafe(self._score(list(rollouts), list(terms)), self.loop)

    async def _score(self, rollouts: list[Rollout], terms: list[str]) -> dict[str, set[int]]:
        async def one(term: str) -> tuple[str, set[int]]:
            todo, items = request_items(term, rollouts)
            if todo:
                values, details, versions = await self.clients[term].ascore_versioned(items)
            else:
                values, details, versions = [], [], set()
            for r in rollouts:
                r.rewards[term] = math.nan
            for r, v, d in zip(todo, values, details):
                r.rewards[term] = float(v)
                r.reward_details.update({f"{term}/{k}": x for k, x in d.items()})
            return term, versions

        return dict(await asyncio.gather(*[one(t) for t in terms]))

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


def sample_batch(
    pools: Mapping,
    stream: RewardStream,
    terms_of: Mapping[str, Mapping[str, float]],
    stop: threading.Event | None = None,
) -> tuple[dict[str, list[Rollout]], dict[str, float], list[cf.Future]]:
    """Sample ``pools`` = {name: (WorkerGroup, requests, task)} together, streaming each chunk
    to ``terms_of[task]``'s endpoints as it completes. Returns (rollouts by pool name in
    request order, ``time/<name>_rollout`` (submit to last chunk), the chunks' reward
    futures, some maybe still running: ``reward_versions`` waits for them)."""
    from actors.group import gather

    futures: list[cf.Future] = []
    lock = threading.Lock()

    def streamer(task: str):
        def on_chunk(rollouts: list[Rollout]) -> None:
            with lock:
                futures.append(stream.submit(rollouts, terms_of[task]))

        return on_chunk

    jobs = {
        name: pool.submit(reqs, on_chunk=streamer(task))
        for name, (pool, reqs, task) in pools.items()
    }
    try:
        done = dict(zip(jobs, gather(*jobs.values(), stop=stop)))
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    return done, {f"time/{name}_rollout": job.seconds for name, job in jobs.items()}, futures


def reward_versions(futures: list[cf.Future]) -> dict[str, set[int]]:
    """Wait for a batch's reward futures (a scorer's error is raised here); term -> the
    weight versions its endpoint's answers named."""
    versions: dict[str, set[int]] = {}
    for f in futures:
        for term, vs in f.result().items():
            versions.setdefault(term, set()).update(vs)
    return versions


def check_endpoint_versions(
    versions: Mapping[str, set[int]], followers: set[str], version: int, step: int
) -> None:
    """The DSR rule: an endpoint that follows the policy scores a batch with the version that
    sampled it, and with that version alone (never a mix across its answers)."""
    for term in sorted(followers & set(versions)):
        got = versions[term]
        if got and got != {version}:
            raise RuntimeError(
                f"step {step}: endpoint {term} scored rollouts of weight version {version} "
                f"with version(s) {sorted(got)}; an endpoint that follows the policy must "
                "score a batch with the version that sampled it"
            )


class Producer:
    """Samples batches in submission order in one background thread (see the module)."""

    def __init__(self):
        self.pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pairuni-producer")
        self.stop = threading.Event()
        self.pending: list[tuple[int, cf.Future]] = []

    def submit(self, index: int, fn, *args) -> None:
        self.pending.append((index, self.pool.submit(fn, *args)))

    def add_done(self, sampled: Sampled) -> None:
        """A batch already sampled (restored from a checkpoint)."""
        f: cf.Future = cf.Future()
        f.set_result(sampled)
        self.pending.append((sampled.index, f))

    @property
    def next_index(self) -> int | None:
        return self.pending[-1][0] + 1 if self.pending else None

    def take(self, index: int) -> Sampled:
        """The oldest batch, which must be ``index``; waits for it."""
        got, f = self.pending.pop(0)
        if got != index:
            raise RuntimeError(f"pipeline out of order: step {index} got batch {got}")
        return f.result()

    def drain(self) -> list[Sampled]:
        """Every pending batch, finished (waits); they stay pending."""
        return [f.result() for _, f in self.pending]

    def close(self) -> None:
        self.stop.set()
        for _, f in self.pending:
            f.cancel()
        self.pool.shutdown(wait=True)
