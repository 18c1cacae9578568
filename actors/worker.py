"""What text and image rollout workers share: the weights gate (the policy itself comes from
``models.registry.build_policy``, the builder the learner uses too).

The gate makes "a worker never samples one batch with mixed versions" hold by construction:
sampling and loading take the same lock, so a load waits for an in-flight batch and a batch
waits for an in-flight load. Ray actors are single-threaded by default (keep them so), and
the lock also covers in-process use from several threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from actors.types import WeightsRef
from actors.weights import VersionedWeights, Wire, fetch


class WeightsGate:
    """Lock + monotonic version of one worker's weights."""

    def __init__(self, owner: str):
        self.lock = threading.Lock()
        self.versions = VersionedWeights(owner)
        self.last_load_s = 0.0
        """Seconds the last accepted load took (fetch + copy)."""

    @property
    def version(self) -> int:
        return self.versions.version

    def load(self, ref: WeightsRef, copy_in: Callable[[Wire, tuple, int], None]) -> int:
        """Fetch ``ref`` and ``copy_in(buffer, manifest, version)`` unless it is not newer.

        Returns the version held afterwards. Holds the lock, so never overlaps sampling.
        """
        with self.lock:
            if not self.versions.is_newer(ref.version):
                self.versions.offer(ref)  # logs the refusal
                return self.version
            t0 = time.perf_counter()
            buffer = fetch(ref)
            copy_in(buffer, ref.manifest, ref.version)
            del buffer
            self.versions.offer(WeightsRef(ref.version, None, ref.manifest))  # drop the buffer
            self.last_load_s = time.perf_counter() - t0
            return self.version
