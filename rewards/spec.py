"""One declaration per reward endpoint, and the registry everything else follows (pure: no ray).

A reward endpoint is one ``EndpointSpec``, declared (``declare(SPEC)``) in the module that
holds its scorer (``rewards/accuracy.py``, ``rewards/hps.py``, ``rewards/dual.py``,
``rewards/toy.py``). From the registry follow:

* its config section ``rewards.<name>.*`` (``rewards/config.py``: the spec's settings class,
  whose batching, replica and resource fields come from ``EndpointSettings``);
* its request schema (``parse_item``; ``rewards.types.parse_request``);
* its Serve deployment, HTTP routes and handle API (one generic deployment,
  ``rewards/serve.py``, scoring through ``make_scorer``);
* which rollouts it may score (``tasks``; ``deploy/config.py``) and how a rollout becomes a
  request item (``item_of``; the driver, ``deploy/train.py``).

The modules of the built-in endpoints are listed in ``BUILTIN``; ``endpoints()`` imports them
on first use. Declaring must stay light: an endpoint module imports torch (or a model) only
inside its scorer, so that reading a config imports neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from models.config import check

BUILTIN = ("rewards.accuracy", "rewards.hps", "rewards.dual", "rewards.toy", "rewards.clip_score")
"""Modules that declare the built-in endpoints (imported by ``endpoints()``)."""


@dataclass(frozen=True)
class EndpointSettings:
    """What every endpoint has: dynamic batching, replicas and resources per replica.

    An endpoint's settings class subclasses this (its own fields, and other defaults where
    it needs them); its fields are the config keys ``rewards.<endpoint>.<field>``."""

    max_batch_size: int = 16
    """Most items scored in one dynamic batch."""
    batch_wait_s: float = 0.01
    """Longest wait for a dynamic batch to fill, in seconds."""
    num_replicas: int = 1
    """Replicas when not autoscaling (min == max)."""
    min_replicas: int = 1
    """Autoscaling lower bound (autoscaling is on when min < max)."""
    max_replicas: int = 1
    """Autoscaling upper bound."""
    num_cpus: float = 1.0
    """CPUs reserved per replica."""
    num_gpus: float = 0.0
    """GPU fraction per replica (0.25 packs four replicas on one GPU)."""

    def check_settings(self, key: str) -> None:
        """Raise ``ConfigError`` naming ``<key>.<field>`` (``key``: ``rewards.<endpoint>``).

        Subclasses add their own checks after ``super().check_settings(key)``. (Not named
        ``validate``: a section does not know its own key.)"""
        lo, hi = self.min_replicas, self.max_replicas
        for name, ok, constraint, fix in (
            ("max_batch_size", self.max_batch_size >= 1, "must be >= 1", "use 16"),
            ("batch_wait_s", self.batch_wait_s >= 0, "must be >= 0", "use 0.01"),
            ("num_replicas", self.num_replicas >= 1, "must be >= 1", "use 1"),
            (
                "min_replicas",
                1 <= lo <= hi,
                f"must satisfy 1 <= min <= max_replicas ({hi})",
                "set min <= max",
            ),
            ("num_cpus", self.num_cpus >= 0, "must be >= 0", "use 1"),
            (
                "num_gpus",
                0 <= self.num_gpus <= 1 or float(self.num_gpus).is_integer(),
                "must be a fraction in [0, 1] or a whole number of GPUs",
                "use 0.25 or 1",
            ),
        ):
            check(ok, f"{key}.{name}", getattr(self, name), constraint, fix)

    def check_deployable(self, key: str) -> None:
        """Refuse to serve what would give meaningless rewards (e.g. missing weights)."""

    def replicas(self) -> int:
        """Replicas the endpoint holds once started (the lower bound when autoscaling)."""
        return self.min_replicas if self.min_replicas < self.max_replicas else self.num_replicas


class Scorer:
    """What a replica scores with; ``EndpointSpec.make_scorer(settings)`` builds one per replica.

    ``score`` runs in a worker thread, one batch at a time under the replica's model lock
    (weights may change) unless ``concurrent_batches`` > 1 (a scorer without weights)."""

    concurrent_batches: int = 1
    """Batches scored at once; above 1 they run without the model lock."""

    def score(self, items: list) -> list[float]:
        """One reward per parsed item, in order; NaN for an item that could not be scored."""
        raise NotImplementedError

    def score_detailed(self, items: list) -> list[tuple[float, dict[str, float]]]:
        """(reward, details) per item; a reward with parts overrides this (details: its parts)."""
        return [(r, {}) for r in self.score(items)]

    def stats(self) -> dict:
        """Extra fields of ``/healthz`` and of every score reply (e.g. the policy version)."""
        return {}


@dataclass(frozen=True)
class EndpointSpec:
    """One reward endpoint: its name, what it scores, its schema, scorer and settings."""

    name: str
    """Endpoint, reward term and config section name (``rewards.<name>.*``, ``/<name>/score``)."""
    tasks: tuple[str, ...]
    """Short names of the tasks whose rollouts it scores (``und``, ``gen``)."""
    settings: type[EndpointSettings]
    """Its config section: ``EndpointSettings`` or a subclass."""
    parse_item: Callable[[dict, str, Any], Any]
    """``(item, field, limits) -> typed item``; raises ``RewardInputError`` naming the field."""
    item_of: Callable[[Any], dict | None]
    """Rollout -> its request item (the driver's); None when the rollout has nothing to score
    (its reward is NaN, and no request is sent)."""
    make_scorer: Callable[[EndpointSettings], Scorer]
    """Builds the replica's scorer from the endpoint's settings (imports torch here, if any)."""
    title: str
    """One line: what the reward is (API title, CLI help)."""
    follows_policy: bool = False
    """Scores with the current policy: the driver sends it every weight version
    (``load_weights``), and it answers ``GET /<name>/version``."""


_REGISTRY: dict[str, EndpointSpec] = {}


def declare(spec: EndpointSpec) -> EndpointSpec:
    """Register ``spec`` (in the module that holds its scorer); returns it."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"reward endpoint {spec.name!r} is declared twice")
    if not spec.name.isidentifier():
        raise ValueError(f"reward endpoint name {spec.name!r} must be an identifier")
    _REGISTRY[spec.name] = spec
    return spec


def endpoints() -> dict[str, EndpointSpec]:
    """Every declared endpoint, name -> spec (the built-in ones imported on first call)."""
    for module in BUILTIN:
        importlib.import_module(module)
    return _REGISTRY


def get(name: str, key: str = "rewards.endpoints") -> EndpointSpec:
    """The spec of ``name``; a ``ConfigError`` naming ``key`` and the valid names if none."""
    specs = endpoints()
    check(name in specs, key, name, "is not a reward endpoint", f"use one of {sorted(specs)}")
    return specs[name]


def request_items(name: str, rollouts: Sequence) -> tuple[list, list[dict]]:
    """(the rollouts endpoint ``name`` scores, their request items), in order."""
    item_of = get(name).item_of
    pairs = [(r, item_of(r)) for r in rollouts]
    kept = [(r, it) for r, it in pairs if it is not None]
    return [r for r, _ in kept], [it for _, it in kept]
