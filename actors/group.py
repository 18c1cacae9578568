"""Worker pools: N Ray actors of one plain class, fault-tolerant map, weight broadcast.

``as_actor`` is the ONE place a rollout class becomes a Ray actor.
``WorkerGroup(num_workers=0)`` runs one instance in-process instead (local mode, tests).

A map cuts its requests into fixed chunks of ``batch_size`` in request order (so sampling
does not depend on scheduling), keeps one chunk in flight per worker and hands the next
chunk to whichever worker finishes first. ``submit`` dispatches and returns a ``MapJob``
at once; ``gather(text_job, image_job)`` drives several jobs with one ``ray.wait`` loop,
so the text and image pools sample at the same time.

Faults: a worker that dies (``RayActorError``) or runs a chunk past
``request_timeout_s`` (killed) is replaced by a fresh actor, which loads the group's current
weights before anything else, and its chunk goes back to the queue. A chunk's clock starts
once its worker is built and holds the weights: building a model (minutes for a large one,
longer on a loaded machine) does not count against ``request_timeout_s``. Results are kept by
``request_id``, so no request is lost or returned twice. A slot that dies more than
``max_restarts`` times fails the map.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from actors.config import RolloutConfig
from actors.types import Rollout, RolloutRequest, WeightsRef
from actors.weights import VersionedWeights
from models.config import ModelConfig

log = logging.getLogger(__name__)


def as_actor(cls, resources: dict):
    """``ray.remote(**resources)(cls)``: the one place a plain class becomes an actor class."""
    import ray

    return ray.remote(**resources)(cls)


class WorkerDiedError(RuntimeError):
    """A worker slot died more often than ``max_restarts`` allows."""


@dataclass
class _Slot:
    index: int
    actor: object
    incarnation: int = 0
    restarts: int = 0
    busy: object = None
    """ObjectRef of the chunk this incarnation is sampling, or None."""
    starting: object = None
    """ObjectRef of this incarnation's ``ready()`` while it is being built (and loading the
    weights), else None: chunks sent to it meanwhile wait with their clocks stopped."""


@dataclass
class _InFlight:
    chunk: int
    slot: int
    incarnation: int
    t0: float


@dataclass
class MapJob:
    """One map over a group: chunks queued, in flight and done; results by request_id."""

    group: WorkerGroup
    requests: list[RolloutRequest]
    chunks: list[list[RolloutRequest]]
    queue: deque = field(default_factory=deque)
    inflight: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    redispatched: int = 0
    """Chunks sent again after their worker died."""
    duplicates_dropped: int = 0
    """Rollouts of a request that already had its results (kept out of the output)."""
    t_submit: float = 0.0
    t_done: float = 0.0
    abandoned: bool = False
    on_chunk: object = None
    """Called with each chunk's accepted rollouts as soon as the chunk completes (the
    driver streams them to the reward endpoints); a duplicate is never passed on."""

    @property
    def done(self) -> bool:
        return not self.queue and not self.inflight

    def dispatch(self) -> None:
        """Send queued chunks to idle workers (one chunk in flight per worker)."""
        for slot in self.group._slots:
            if not self.queue:
                return
            if slot.busy is None:
                c = self.queue.popleft()
                ref = slot.actor.generate.remote(self.chunks[c])
                slot.busy = ref
                self.inflight[ref] = _InFlight(c, slot.index, slot.incarnation, time.monotonic())

    def on_ready(self, ref) -> None:
        """Collect a finished chunk, or restart its dead worker and queue the chunk again."""
        import ray

        info = self.inflight.pop(ref)
        slot = self.group._slots[info.slot]
        if slot.incarnation == info.incarnation:
            slot.busy = None
        try:
            rollouts = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            self.group._restart(info.slot, info.incarnation, e)
            self.queue.appendleft(info.chunk)
            self.redispatched += 1
            return
        self.accept(info.chunk, rollouts)

    def accept(self, chunk: int, rollouts: list[Rollout]) -> None:
        fresh = {r.request_id for r in self.chunks[chunk]} - set(self.results)
        kept = []
        for ro in rollouts:
            rid = ro.request.request_id
            if rid in fresh:
                self.results.setdefault(rid, []).append(ro)
                kept.append(ro)
            else:
                self.duplicates_dropped += 1
        if kept and self.on_chunk is not None:
            self.on_chunk(kept)
        if self.done:
            self.t_done = time.monotonic()

    def kill_overdue(self, now: float) -> None:
        """Kill workers whose chunk runs past the timeout; their refs then fail and restart.

        A chunk on a worker still being built keeps its clock at ``now``."""
        import ray

        self.group._check_started()
        for info in self.inflight.values():
            slot = self.group._slots[info.slot]
            if slot.starting is not None and slot.incarnation == info.incarnation:
                info.t0 = now
                continue
            if (
                now - info.t0 > self.group.request_timeout_s
                and slot.incarnation == info.incarnation
            ):
                log.warning(
                    "%s worker %d: chunk %d ran %.0f s > request_timeout_s=%.0f; killing it",
                    self.group.name, info.slot, info.chunk, now - info.t0,
                    self.group.request_timeout_s,
                )  # fmt: skip
                ray.kill(slot.actor, no_restart=True)
                info.t0 = float("inf")  # killed once; its failure arrives through ray.wait

    def abandon(self) -> None:
        """Drop unfinished work after a failure, freeing its workers for later maps."""
        for ref, info in self.inflight.items():
            slot = self.group._slots[info.slot]
            if slot.busy is ref:
                slot.busy = None
        self.inflight.clear()
        self.queue.clear()
        self.abandoned = True

    def next_deadline(self) -> float:
        if not self.inflight:
            return float("inf")
        return min(i.t0 for i in self.inflight.values()) + self.group.request_timeout_s

    def result(self) -> list[Rollout]:
        """All rollouts in request order, ``n`` per request; checks nothing is missing."""
        if self.abandoned:
            raise RuntimeError(f"{self.group.name} map was abandoned after an error (see above)")
        if not self.done:
            raise RuntimeError(f"{self.group.name} map is not finished; call gather() first")
        out = []
        for r in self.requests:
            got = sorted(self.results.get(r.request_id, []), key=lambda ro: ro.sample_index)
            if [ro.sample_index for ro in got] != list(range(r.n)):
                raise RuntimeError(
                    f"{self.group.name} map: request {r.request_id} (pair {r.pair_id}) has "
                    f"sample indices {[ro.sample_index for ro in got]}, expected 0..{r.n - 1}"
                )
            out.extend(got)
        return out

    @property
    def seconds(self) -> float:
        """Wall time from submit to the last chunk."""
        return self.t_done - self.t_submit


def gather(
    *jobs: MapJob, timeout_s: float | None = None, stop: threading.Event | None = None
) -> list[list[Rollout]]:
    """Wait for every job together (one ``ray.wait`` over all pools); their results in order.

    ``stop``: set from another thread (the driver closing while a background producer
    samples), it abandons the jobs and raises ``GatherStopped``."""
    try:
        _drive(jobs, timeout_s, stop)
    except BaseException:
        for j in jobs:
            j.abandon()
        raise
    return [j.result() for j in jobs]


class GatherStopped(RuntimeError):
    """``gather`` was told to stop (its ``stop`` event was set) before the jobs finished."""


def _drive(
    jobs: tuple[MapJob, ...], timeout_s: float | None, stop: threading.Event | None = None
) -> None:
    t_end = float("inf") if timeout_s is None else time.monotonic() + timeout_s
    owner = {}
    while not all(j.done for j in jobs):
        if stop is not None and stop.is_set():
            raise GatherStopped("gather stopped: the driver is closing")
        for j in jobs:
            j.dispatch()
            owner.update(dict.fromkeys(j.inflight, j))
        now = time.monotonic()
        if now > t_end:
            raise TimeoutError(
                f"gather: {sum(len(j.inflight) + len(j.queue) for j in jobs)} chunks unfinished "
                f"after {timeout_s} s"
            )
        for j in jobs:
            j.kill_overdue(now)
        wait_s = min(min(j.next_deadline() for j in jobs), t_end) - now
        refs = [r for j in jobs for r in j.inflight]
        import ray

        # a stop, or a restarted worker becoming ready (its chunk's clock starts), is
        # noticed within half a second
        starting = any(s.starting is not None for j in jobs for s in j.group._slots)
        poll = 60.0 if stop is None and not starting else 0.5
        ready, _ = ray.wait(refs, num_returns=1, timeout=max(0.01, min(wait_s, poll)))
        for ref in ready:
            owner.pop(ref).on_ready(ref)


class WorkerGroup:
    """N actors of ``cls`` (text or image rollout workers); ``num_workers=0``: in-process.

    ``cls`` takes ``worker_index=`` as a keyword and has ``generate(requests)``,
    ``load_weights(ref) -> int``, ``version() -> int`` and ``ready()``.
    """

    def __init__(
        self,
        cls,
        num_workers: int,
        resources: dict | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
        *,
        batch_size: int = 8,
        max_restarts: int = 3,
        request_timeout_s: float = 600.0,
        name: str = "rollout",
    ):
        if num_workers < 0:
            raise ValueError(f"{name}: num_workers={num_workers} must be >= 0 (0 = in-process)")
        if batch_size < 1:
            raise ValueError(f"{name}: batch_size={batch_size} must be >= 1")
        self.name, self.batch_size = name, batch_size
        self.max_restarts, self.request_timeout_s = max_restarts, request_timeout_s
        self.versions = VersionedWeights(f"{name} group")
        self._args, self._kwargs = args, dict(kwargs or {})
        self.local = num_workers == 0
        if self.local:
            self._instance = cls(*args, worker_index=0, **self._kwargs)
            self._slots: list[_Slot] = []
        else:
            self._cls = as_actor(cls, resources or {"num_cpus": 1})
            self._slots = [_Slot(i, self._new_actor(i)) for i in range(num_workers)]
            for slot in self._slots:
                slot.starting = slot.actor.ready.remote()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def text(cls, model_cfg: ModelConfig, cfg: RolloutConfig) -> WorkerGroup:
        """The text rollout pool of ``cfg`` (text_workers, resources, batch size, faults).

        With ``rollout.text_python`` set, the actors run under that interpreter (Ray
        runtime_env ``py_executable``): the vLLM backend's environment pins its own torch.
        """
        from actors.text_rollout import TextRolloutWorker

        resources = cfg.resources("text")
        if cfg.text_python and cfg.text_workers > 0:
            resources["runtime_env"] = {"py_executable": os.path.abspath(cfg.text_python)}
        return cls._for_role(TextRolloutWorker, "text", model_cfg, cfg, resources)

    @classmethod
    def image(cls, model_cfg: ModelConfig, cfg: RolloutConfig) -> WorkerGroup:
        """The image rollout pool of ``cfg`` (image_workers, resources, batch size, faults)."""
        from actors.image_rollout import ImageRolloutWorker

        return cls._for_role(ImageRolloutWorker, "image", model_cfg, cfg)

    @classmethod
    def _for_role(
        cls, worker_cls, role: str, model_cfg: ModelConfig, cfg: RolloutConfig, resources=None
    ):
        return cls(
            worker_cls,
            getattr(cfg, f"{role}_workers"),
            resources or cfg.resources(role),
            (model_cfg, cfg),
            batch_size=getattr(cfg, f"{role}_batch_size"),
            max_restarts=cfg.max_restarts,
            request_timeout_s=cfg.request_timeout_s,
            name=role,
        )

    def _new_actor(self, i: int):
        return self._cls.remote(*self._args, worker_index=i, **self._kwargs)

    def _restart(self, i: int, incarnation: int, cause: BaseException) -> None:
        """Replace slot ``i`` (if not already replaced) and load the current weights into it."""
        slot = self._slots[i]
        if slot.incarnation != incarnation:
            return  # an earlier failure of the same actor already restarted it
        if slot.restarts >= self.max_restarts:
            raise WorkerDiedError(
                f"{self.name} worker {i} died {slot.restarts + 1} times "
                f"(rollout.max_restarts={self.max_restarts}); last error: {cause}"
            ) from cause
        log.warning("%s worker %d died (%s); restarting it", self.name, i, type(cause).__name__)
        import ray

        # An unreachable-but-alive actor would keep holding its CPUs/GPU share; gone is fine.
        with contextlib.suppress(Exception):
            ray.kill(slot.actor, no_restart=True)
        slot.actor = self._new_actor(i)
        slot.incarnation += 1
        slot.restarts += 1
        slot.busy = None
        if self.versions.current is not None:
            # Actor calls from one caller run in order: this load precedes any generate.
            slot.actor.load_weights.remote(self.versions.current)
        slot.starting = slot.actor.ready.remote()  # resolves once built and loaded

    def _check_started(self) -> None:
        """Mark the slots whose ``ready()`` has resolved (built, or failed) as started."""
        refs = [s.starting for s in self._slots if s.starting is not None]
        if not refs:
            return
        import ray

        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for slot in self._slots:
            if slot.starting is not None and slot.starting in done:
                slot.starting = None

    # ---- work ---------------------------------------------------------------------------
    def submit(self, requests: list[RolloutRequest], on_chunk=None) -> MapJob:
        """Cut ``requests`` into chunks and start sampling them; returns at once.

        ``on_chunk(rollouts)``: called with each chunk's rollouts as it completes."""
        ids = [r.request_id for r in requests]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"{self.name} map: request_id(s) {dup[:10]} appear more than once")
        B = self.batch_size
        chunks = [list(requests[s : s + B]) for s in range(0, len(requests), B)]
        job = MapJob(self, list(requests), chunks, queue=deque(range(len(chunks))))
        job.on_chunk = on_chunk
        job.t_submit = time.monotonic()
        if self.local:
            while job.queue:
                c = job.queue.popleft()
                job.accept(c, self._instance.generate(chunks[c]))
            job.t_done = time.monotonic()
        else:
            job.dispatch()
        return job

    def map(self, requests: list[RolloutRequest]) -> list[Rollout]:
        """``submit`` + ``gather``: n rollouts per request, in request order."""
        return gather(self.submit(requests))[0]

    def broadcast_weights(self, ref: WeightsRef, wait: bool = True) -> bool:
        """Make ``ref`` the group's weights and load it into every worker.

        An older or equal version is ignored (logged) and returns False. With ``wait``,
        returns once every worker holds the version (a worker that dies meanwhile is
        restarted, which loads it).
        """
        if not self.versions.offer(ref):
            return False
        if self.local:
            self._instance.load_weights(ref)
            return True
        pending = {s.actor.load_weights.remote(ref): (s.index, s.incarnation) for s in self._slots}
        if wait:
            import ray

            for r, (i, inc) in pending.items():
                try:
                    ray.get(r)
                except ray.exceptions.RayActorError as e:
                    self._restart(i, inc, e)
        return True

    # ---- inspection ---------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        return len(self._slots)

    @property
    def workers(self) -> list:
        """The actor handles (the in-process instance in local mode)."""
        return [self._instance] if self.local else [s.actor for s in self._slots]

    @property
    def restarts(self) -> list[int]:
        return [s.restarts for s in self._slots]

    def worker_versions(self) -> list[int]:
        """The weight version each worker holds (blocks on pending loads)."""
        if self.local:
            return [self._instance.version()]
        import ray

        return ray.get([s.actor.version.remote() for s in self._slots])

    def wait_ready(self) -> None:
        """Block until every actor has built its model."""
        if not self.local:
            import ray

            ray.get([s.actor.ready.remote() for s in self._slots])

    def shutdown(self) -> None:
        if not self.local:
            import ray

            for s in self._slots:
                ray.kill(s.actor)
            self._slots = []
