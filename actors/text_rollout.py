"""Text (understanding) rollout worker: image + question -> n sampled answers.

A plain class; ``actors.group.WorkerGroup`` wraps it as a Ray actor. The sampling engine is
a backend chosen by name from ``TEXT_BACKENDS`` (``hf``: the models/ adapter; ``vllm``:
actors/backends/vllm_backend.py, in its own environment). Every returned ``Rollout`` carries the
weight version it was sampled with, and one call never mixes versions (``WeightsGate``).

Seeds: one sampling call uses the seed of its first request, so a request's samples depend
on the batch it was sampled in; ``WorkerGroup`` cuts batches deterministically (fixed
chunks of ``text_batch_size`` in request order), so a re-run or a resume samples the same.
``request.prompt`` is used verbatim as the question (the driver appends the choices).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from actors.backends import vllm_text_backend
from actors.config import RolloutConfig
from actors.types import Rollout, RolloutRequest, WeightsRef
from actors.weights import UNSYNCED, Wire, load_into
from actors.worker import WeightsGate
from models.config import ModelConfig
from models.registry import build_policy
from models.tasks import Task


class TextBackend(Protocol):
    """A text sampler holding one copy of the policy."""

    version: int
    """Weight version of the policy it samples from."""

    def generate(self, requests: list[RolloutRequest]) -> list[Rollout]:
        """``n`` rollouts per request, grouped by request, stamped with ``version``."""

    def load_weights(self, buffer: Wire, manifest: tuple, version: int) -> None:
        """Copy a flat weights buffer (``actors.weights``) into the policy."""


def check_requests(requests, task: Task, who: str) -> list[RolloutRequest]:
    """Requests of one task with unique ids; an error names the request and the field."""
    if not isinstance(requests, (list, tuple)):
        raise TypeError(f"{who}: requests must be a list of RolloutRequest")
    seen = set()
    for i, r in enumerate(requests):
        if not isinstance(r, RolloutRequest):
            raise TypeError(f"{who}: requests[{i}] is a {type(r).__name__}, not RolloutRequest")
        if r.task != task:
            raise ValueError(
                f"{who}: request {r.request_id} (pair {r.pair_id}) has task={str(r.task)!r}; "
                f"this worker samples {str(task)!r} requests only"
            )
        if r.request_id in seen:
            raise ValueError(f"{who}: request_id {r.request_id} appears twice in one call")
        if not isinstance(r.n, int) or r.n < 1:
            raise ValueError(f"{who}: request {r.request_id}: n={r.n!r} must be an integer >= 1")
        seen.add(r.request_id)
    return list(requests)


def by_n(requests: list[RolloutRequest]) -> list[list[RolloutRequest]]:
    """Split into runs sharing ``n`` (one model call samples the same n per prompt)."""
    groups: dict[int, list[RolloutRequest]] = {}
    for r in requests:
        groups.setdefault(r.n, []).append(r)
    return list(groups.values())


class HFTextBackend:
    """Text sampling through ``models.UnifiedModel.sample_text`` (per-token log-probs)."""

    def __init__(self, model_cfg: ModelConfig, cfg: RolloutConfig):
        self.model = build_policy(model_cfg)
        self.params = self.model.trainable_parameters()
        self.cfg, self.model_cfg = cfg, model_cfg
        self.version = UNSYNCED

    def generate(self, requests: list[RolloutRequest]) -> list[Rollout]:
        out: list[Rollout] = []
        for group in by_n(requests):
            for r in group:
                if r.image is None:
                    raise ValueError(
                        f"request {r.request_id} (pair {r.pair_id}): an understanding request "
                        "needs an image (uint8 [H, W, 3])"
                    )
            s = self.model.sample_text(
                [r.image for r in group],
                [r.prompt for r in group],
                n=group[0].n,
                temperature=self.model_cfg.text_temperature,
                max_new_tokens=self.model_cfg.max_new_tokens,
                seed=group[0].seed,
            )
            n = group[0].n
            for j, r in enumerate(group):
                for k in range(n):
                    row = j * n + k  # samples are grouped by prompt: [len(group) * n]
                    out.append(
                        Rollout(
                            request=r,
                            sample_index=k,
                            token_ids=np.asarray(s.token_ids[row], dtype=np.int64),
                            logprobs=s.logprobs[row].float().numpy().astype(np.float32),
                            weight_version=self.version,
                            text=s.texts[row],
                        )
                    )
        order = {r.request_id: i for i, r in enumerate(requests)}
        out.sort(key=lambda ro: (order[ro.request.request_id], ro.sample_index))
        return out

    def load_weights(self, buffer: Wire, manifest: tuple, version: int) -> None:
        load_into(self.params, buffer, manifest)
        self.version = version


TEXT_BACKENDS: dict[str, Callable] = {"hf": HFTextBackend, "vllm": vllm_text_backend}
"""Text backend name -> class or factory built as ``f(model_cfg, rollout_cfg)``; ``vllm``
imports vLLM only when built (run it under ``rollout.text_python``, actors/backends/)."""


def make_text_backend(name: str, model_cfg: ModelConfig, cfg: RolloutConfig) -> TextBackend:
    if name not in TEXT_BACKENDS:
        raise ValueError(
            f"rollout.text_backend={name!r} is not a text backend; valid: {sorted(TEXT_BACKENDS)}"
        )
    return TEXT_BACKENDS[name](model_cfg, cfg)


class TextRolloutWorker:
    """Samples understanding rollouts; loads published weights between batches."""

    def __init__(self, model_cfg: ModelConfig, cfg: RolloutConfig, worker_index: int = 0):
        self.worker_index = worker_index
        self.backend = make_text_backend(cfg.text_backend, model_cfg, cfg)
        self.gate = WeightsGate(f"text worker {worker_index}")

    def generate(self, requests: list[RolloutRequest]) -> list[Rollout]:
        """``n`` rollouts per request, in request order; all from one weight version."""
        requests = check_requests(requests, Task.UND, f"text worker {self.worker_index}")
        if not requests:
            return []
        with self.gate.lock:
            return self.backend.generate(requests)

    def load_weights(self, ref: WeightsRef) -> int:
        """Load ``ref`` unless it is not newer than the held version; returns the version held."""
        return self.gate.load(ref, self.backend.load_weights)

    def version(self) -> int:
        return self.backend.version

    def ready(self) -> int:
        """Returns the worker index once constructed (lets a caller wait for the model build)."""
        return self.worker_index
