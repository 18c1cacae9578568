"""Reward endpoints: what they load, how they batch and scale, and how the driver calls them.

``RewardsConfig`` has the keys every endpoint shares (the HTTP proxy, request limits, the
driver's client) and one section per declared endpoint (``rewards/spec.py``), built from the
endpoint's settings class: ``rewards.hps.max_batch_size=32``, ``rewards.accuracy.num_cpus``.

The flat keys of earlier releases (``rewards.hps_max_batch_size``, ``<endpoint>_<field>``)
are still read, as their nested key, with a ``FutureWarning`` naming it (``upgrade_keys``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from models.config import ConfigError, check
from rewards import spec as endpoint_spec

CLIENT_MODES = ("handle", "http")


@dataclass(frozen=True)
class RewardsSection:
    """Reward endpoints (accuracy, HPSv2, DSR dual likelihood, ...) and the driver's client.

    The keys every endpoint shares; ``RewardsConfig`` adds a section per endpoint."""

    endpoints: tuple[str, ...] = ("accuracy", "hps")
    """Endpoints to serve (a run deploys those its reward terms name, and they must be listed
    here), from accuracy | hps | dual | toy_judge (the toy world's judge)."""
    host: str = "127.0.0.1"
    """Address the Serve HTTP proxy binds to (127.0.0.1: this machine only)."""
    port: int = 8000
    """Port of the Serve HTTP proxy."""
    access_log: bool = True
    """Serve's access log (a line per request) in the replicas' logs; off in the quickstart.
    With ``serve run deploy/serve_rewards.yaml`` it is each application's ``logging_config``."""

    target_ongoing_requests: float = 2.0
    """Autoscaling target: requests in flight per replica."""
    max_ongoing_requests: int = 64
    """Requests a replica accepts at once before Serve queues them."""
    max_items_per_request: int = 256
    """Largest request (items); a bigger one is refused with HTTP 413."""
    max_text_chars: int = 16384
    """Longest response/answer/prompt text accepted, in characters."""
    min_image_side: int = 8
    """Smallest image side accepted, in pixels."""
    max_image_side: int = 2048
    """Largest image side accepted, in pixels."""

    client_mode: str = "handle"
    """How the driver calls endpoints: handle (same Ray cluster) | http."""
    client_timeout_s: float = 60.0
    """Per-call timeout of one request, in seconds."""
    client_max_retries: int = 3
    """Retries after a 5xx or a timeout (never after a 4xx)."""
    client_backoff_s: float = 0.2
    """First retry delay; doubled per retry (exponential backoff)."""
    client_backoff_max_s: float = 5.0
    """Longest retry delay, in seconds."""
    client_max_concurrency: int = 8
    """Requests one client has in flight at once."""
    client_chunk_size: int = 64
    """Items per request the client sends (<= max_items_per_request)."""

    def settings(self, endpoint: str) -> endpoint_spec.EndpointSettings:
        """The section ``rewards.<endpoint>`` (``ConfigError`` naming the valid ones if none)."""
        section = getattr(self, endpoint, None)
        if not isinstance(section, endpoint_spec.EndpointSettings):
            raise ConfigError(
                "rewards.endpoints",
                endpoint,
                "is not a reward endpoint",
                f"use one of {sorted(self.sections())}",
            )
        return section

    def follows_policy(self, endpoint: str) -> bool:
        """Whether ``endpoint`` loads every weight version the trained policy publishes: its
        spec scores with the policy (DSR) and its settings do not freeze it
        (``rewards.dual.follow_policy=false``: the alternating strategy's other model)."""
        spec = endpoint_spec.get(endpoint)
        return spec.follows_policy and getattr(self.settings(endpoint), "follow_policy", True)

    @classmethod
    def sections(cls) -> tuple[str, ...]:
        """The endpoints this config class has a section for."""
        return tuple(
            f.name
            for f in dataclasses.fields(cls)
            if isinstance(f.type, type) and issubclass(f.type, endpoint_spec.EndpointSettings)
        )

    def check_deployable(self, endpoints: Iterable[str]) -> None:
        """Refuse what would serve meaningless rewards (HPS's ViT-H-14 without its weights).

        Called where the endpoints to deploy are known, before any actor starts (the run
        config's reward terms, ``pairuni serve rewards``, ``serve run``)."""
        for e in endpoints:
            self.settings(e).check_deployable(f"rewards.{e}")

    @classmethod
    def upgrade_keys(cls, data: dict, prefix: str = "rewards.") -> dict:
        """Read the flat keys of earlier releases (``hps_max_batch_size``) as their nested
        form (``hps: {max_batch_size: ...}``), with a ``FutureWarning`` naming the new key.

        When a flat key and its nested form are both given, the one later in the mapping wins:
        an override (``rewards.hps_arch=tiny``) comes after the file's sections."""
        fields = {
            e: {f.name for f in dataclasses.fields(_section_type(cls, e))} for e in cls.sections()
        }
        out: dict = {}
        for key, value in data.items():
            flat = next(
                (
                    (e, key[len(e) + 1 :])
                    for e in fields
                    if key.startswith(e + "_") and key[len(e) + 1 :] in fields[e]
                ),
                None,
            )
            if flat is None:
                if key in fields and isinstance(value, dict) and isinstance(out.get(key), dict):
                    value = {**out[key], **value}  # flat keys read before: the section wins
                out[key] = value
                continue
            e, name = flat
            warnings.warn(
                f"config key {prefix}{key} is now {prefix}{e}.{name}; the old key still works "
                "but will be removed",
                FutureWarning,
                stacklevel=2,
            )
            section = out.get(e)
            if section is None:
                out[e] = section = {}
            elif not isinstance(section, dict):  # the mistake is the section's: from_dict says
                continue
            out[e] = {**section, name: value}
        return out

    def validate(self) -> None:
        valid = self.sections()
        bad = [e for e in self.endpoints if e not in valid]
        check(
            not bad and len(self.endpoints) > 0,
            "rewards.endpoints",
            self.endpoints,
            f"must be a non-empty subset of {valid}",
            "e.g. [accuracy, hps]",
        )
        check(0 < self.port < 65536, "rewards.port", self.port, "must be in 1..65535", "use 8000")
        for e in valid:
            self.settings(e).check_settings(f"rewards.{e}")
        check(
            self.target_ongoing_requests > 0,
            "rewards.target_ongoing_requests",
            self.target_ongoing_requests,
            "must be > 0",
            "use 2",
        )
        check(
            self.max_ongoing_requests >= 1,
            "rewards.max_ongoing_requests",
            self.max_ongoing_requests,
            "must be >= 1",
            "use 64",
        )
        check(
            self.max_items_per_request >= 1,
            "rewards.max_items_per_request",
            self.max_items_per_request,
            "must be >= 1",
            "use 256",
        )
        check(
            self.max_text_chars >= 1,
            "rewards.max_text_chars",
            self.max_text_chars,
            "must be >= 1",
            "use 16384",
        )
        check(
            1 <= self.min_image_side <= self.max_image_side,
            "rewards.min_image_side",
            self.min_image_side,
            f"must satisfy 1 <= min <= max_image_side ({self.max_image_side})",
            "use 8 and 2048",
        )
        check(
            self.client_mode in CLIENT_MODES,
            "rewards.client_mode",
            self.client_mode,
            f"must be one of {CLIENT_MODES}",
            "use handle inside the cluster, http outside",
        )
        check(
            self.client_timeout_s > 0,
            "rewards.client_timeout_s",
            self.client_timeout_s,
            "must be > 0",
            "use 60",
        )
        check(
            self.client_max_retries >= 0,
            "rewards.client_max_retries",
            self.client_max_retries,
            "must be >= 0",
            "use 3",
        )
        check(
            0 <= self.client_backoff_s <= self.client_backoff_max_s,
            "rewards.client_backoff_s",
            self.client_backoff_s,
            f"must satisfy 0 <= backoff <= client_backoff_max_s ({self.client_backoff_max_s})",
            "use 0.2 and 5",
        )
        check(
            self.client_max_concurrency >= 1,
            "rewards.client_max_concurrency",
            self.client_max_concurrency,
            "must be >= 1",
            "use 8",
        )
        check(
            1 <= self.client_chunk_size <= self.max_items_per_request,
            "rewards.client_chunk_size",
            self.client_chunk_size,
            f"must satisfy 1 <= chunk <= max_items_per_request ({self.max_items_per_request})",
            "use 64",
        )


def _section_type(cls, endpoint: str) -> type:
    return next(f.type for f in dataclasses.fields(cls) if f.name == endpoint)


def config_class(specs: Iterable[endpoint_spec.EndpointSpec]) -> type[RewardsSection]:
    """A rewards config class with one section per spec, ``rewards.<name>`` (its settings).

    ``RewardsConfig`` is this of every declared endpoint; a test builds one with its own."""
    fields = [(s.name, s.settings, dataclasses.field(default_factory=s.settings)) for s in specs]
    cls = dataclasses.make_dataclass("RewardsConfig", fields, bases=(RewardsSection,), frozen=True)
    cls.__module__, cls.__doc__ = __name__, RewardsSection.__doc__  # pickled by reference
    return cls


RewardsConfig = config_class(endpoint_spec.endpoints().values())
"""The rewards section of a run: the shared keys, and ``rewards.<endpoint>.*`` per endpoint."""
