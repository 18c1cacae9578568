"""The replica of any reward endpoint, without HTTP: validation, dynamic batching, scoring.

``RewardEndpoint(cfg, name)`` serves the endpoint ``name`` declared in ``rewards/spec.py``:
its spec parses the items, its scorer scores them. Items of all requests in flight are scored
together: every item enters ``@serve.batch`` on its own, so batches fill across requests up
to ``rewards.<name>.max_batch_size`` items, waiting at most ``rewards.<name>.batch_wait_s``.
Scoring runs in a worker thread, so ``/healthz`` stays responsive. ``rewards/serve.py`` makes
it a Serve deployment with HTTP routes; it also runs in-process (a plain event loop) as is.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from typing import Any

from ray import serve

from rewards.spec import get
from rewards.types import Limits, parse_request

logger = logging.getLogger(__name__)


class RewardEndpoint:
    """Handle API: ``score(payload)``, ``healthz()``; for an endpoint that follows the policy
    (``EndpointSpec.follows_policy``) also ``load_weights(ref, version, manifest)`` and
    ``get_version()``."""

    def __init__(self, cfg, name: str):
        self.cfg, self.endpoint = cfg, name
        self.spec = get(name)
        self.lim = Limits.from_config(cfg)
        settings = cfg.settings(name)
        self.scorer = self.spec.make_scorer(settings)
        self._lock = threading.Lock()  # one model call at a time (weights may change)
        # One batch queue per instance (a class-level @serve.batch queue would be shared by
        # every deployment in one process, e.g. in Serve's local testing mode).
        self._batched = serve.batch(
            max_batch_size=settings.max_batch_size,
            batch_wait_timeout_s=settings.batch_wait_s,
            max_concurrent_batches=self.scorer.concurrent_batches,
        )(self._run_batch)
        self.batches = 0
        self.items = 0

    def _score(self, items: list) -> list[tuple[float, dict[str, float]]]:  # worker thread
        if self.scorer.concurrent_batches > 1:  # no weights: batches run side by side
            return self.scorer.score_detailed(items)
        with self._lock:
            return self.scorer.score_detailed(items)

    async def _run_batch(self, items: list) -> list[tuple[float, dict[str, float]]]:
        self.batches += 1
        self.items += len(items)
        return await asyncio.to_thread(self._score, items)

    async def score(self, payload: Any) -> dict:
        """Validate ``payload`` (raises ``RewardInputError``) and score its items:
        ``{"endpoint", "rewards", ["details"], **scorer stats}``."""
        items = parse_request(self.endpoint, payload, self.lim)
        scored = await asyncio.gather(*[self._batched(item) for item in items])
        # a reward that failed (NaN) is JSON null: the client reads null back as NaN
        rewards = [None if math.isnan(r) else float(r) for r, _ in scored]
        out = {"endpoint": self.endpoint, "rewards": rewards}
        if any(d for _, d in scored):
            out["details"] = [{k: float(v) for k, v in d.items()} for _, d in scored]
        return {**out, **self.scorer.stats()}

    def healthz(self) -> dict:
        return {
            "status": "ok",
            "endpoint": self.endpoint,
            "batches": self.batches,
            "items": self.items,
            **self.scorer.stats(),
        }

    def _follows_policy(self) -> None:
        if not self.spec.follows_policy:
            raise ValueError(f"the {self.endpoint} endpoint does not follow the policy's weights")

    async def load_weights(self, ref: Any, version: int, manifest=None) -> int:
        """Apply policy version ``version`` from the object store, as a rollout worker does.

        ``ref`` is an ``ObjectRef`` (or its value: Ray resolves top-level refs) of what a
        learner publishes, described by ``manifest`` (a flat uint8 buffer or a dict of bytes:
        ``actors.weights``), or, without a manifest, a dict name -> tensor or array. Scoring
        waits while the weights change; returns the number of parameters copied.
        """
        import ray

        from actors.weights import unflatten_views

        self._follows_policy()
        value = await ref if isinstance(ref, ray.ObjectRef) else ref
        if manifest is not None:
            named = unflatten_views(value, manifest)
        elif isinstance(value, dict):
            named = value
        else:
            raise ValueError("published weight bytes need their manifest")

        def apply() -> int:
            with self._lock:
                return self.scorer.load_weights(named, version)

        n = await asyncio.to_thread(apply)
        logger.info("%s: loaded weight version %d (%d parameters)", self.endpoint, version, n)
        return n

    def get_version(self) -> int:
        self._follows_policy()
        return self.scorer.version
