"""Reward endpoints as Ray Serve deployments: one generic deployment, an application each.

Every endpoint declared in ``rewards/spec.py`` runs as ``RewardDeployment`` (the replica,
``rewards/endpoint.py``, behind HTTP routes) and answers

* ``POST /<endpoint>/score`` with JSON ``{"items": [...]}`` (images as base64 PNG; fields in
  the endpoint's item parser) -> ``{"endpoint", "rewards": [float, ...] aligned with the
  items}`` (the DSR endpoint adds the ``version`` of the policy that scored them; an endpoint
  whose reward has parts adds ``"details": [{name: float}, ...]``, also aligned with the
  items: the toy judge's four terms and its strict success, which the driver logs per step);
* ``GET /<endpoint>/healthz`` -> ``{"status": "ok", ...}``;
* the handle method ``score(payload)`` with the same payload, images as uint8 arrays;
* an endpoint that follows the policy (DSR): ``GET /<endpoint>/version`` and the handle
  method ``load_weights(ref, version, manifest=None)`` that applies a weight version the
  learner published to the object store (404 / ``ValueError`` on the others).

A bad request gets a 4xx whose JSON body ``{"error", "field"}`` names the field (through a
handle it raises ``RewardInputError``); the replica keeps serving.

``deploy/serve_rewards.yaml`` names the builders ``rewards.serve:<endpoint>_app`` (one per
declared endpoint) for ``serve run``; ``run_endpoints`` starts the configured ones from Python
(the CLI, the driver, tests).
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` type.
import functools
import json
import logging
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from models.config import to_dict
from rewards.config import RewardsConfig
from rewards.endpoint import RewardEndpoint
from rewards.spec import endpoints as declared
from rewards.types import RewardInputError

logger = logging.getLogger(__name__)


def config_from_args(args: "dict | RewardsConfig | None") -> RewardsConfig:
    """``serve run`` application args (rewards keys, nested or flat) -> a validated config."""
    if isinstance(args, RewardsConfig):
        cfg = args
    else:
        from models.config import from_dict

        cfg = from_dict(RewardsConfig, dict(args or {}), prefix="rewards.")
    cfg.validate()
    return cfg


API_DOCS_ENV = "PAIRUNI_REWARD_API_DOCS"
"""Set to 1 (in the replicas' environment) to serve FastAPI's /docs and /openapi.json."""


def _api() -> FastAPI:
    """The endpoints' FastAPI app; its generated docs routes are off unless ``API_DOCS_ENV``
    turns them on (a reward replica answers /score, /healthz and /version, nothing else)."""
    if os.environ.get(API_DOCS_ENV) == "1":
        return FastAPI(title="pairuni reward endpoint")
    return FastAPI(title="pairuni reward endpoint", docs_url=None, redoc_url=None, openapi_url=None)


def _error(e: RewardInputError) -> JSONResponse:
    return JSONResponse({"error": str(e), "field": e.field}, status_code=e.status)


api = _api()


@serve.deployment
@serve.ingress(api)
class RewardDeployment(RewardEndpoint):
    """Any declared endpoint (``RewardDeployment.options(name=...).bind(cfg, name)``)."""

    @api.post("/score")
    async def http_score(self, request: Request) -> JSONResponse:
        body = await request.body()
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return _error(RewardInputError("body", f"malformed JSON ({e})", status=400))
        except RecursionError:
            return _error(RewardInputError("body", "JSON nested too deeply", status=400))
        try:
            return JSONResponse(await self.score(payload))
        except RewardInputError as e:
            return _error(e)
        except Exception as e:  # a model failure: 500, the client retries
            logger.exception("%s: scoring failed", self.endpoint)
            return JSONResponse({"error": f"{type(e).__name__}: {e}", "field": None}, 500)

    @api.get("/healthz")
    async def http_healthz(self) -> dict:
        return self.healthz()

    @api.get("/version")
    async def http_version(self) -> JSONResponse:
        if not self.spec.follows_policy:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return JSONResponse({"version": self.scorer.version})


def deployment_options(cfg: RewardsConfig, endpoint: str) -> dict:
    """Replicas (fixed, or autoscaling when min < max), CPUs/GPUs, concurrency from config."""
    s = cfg.settings(endpoint)
    opts: dict[str, Any] = {
        "name": endpoint,
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": s.num_cpus, "num_gpus": s.num_gpus},
    }
    if s.min_replicas < s.max_replicas:
        opts["autoscaling_config"] = {
            "min_replicas": s.min_replicas,
            "max_replicas": s.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        }
    else:
        opts["num_replicas"] = s.num_replicas
    return opts


def build_app(endpoint: str, args: dict | RewardsConfig | None = None):
    """The bound Serve application of ``endpoint`` (a declared endpoint's name)."""
    if endpoint not in declared():
        raise ValueError(f"unknown reward endpoint {endpoint!r}; valid: {sorted(declared())}")
    cfg = config_from_args(args)
    cfg.check_deployable([endpoint])
    return RewardDeployment.options(**deployment_options(cfg, endpoint)).bind(cfg, endpoint)


def __getattr__(name: str):
    """``serve run`` builders: ``import_path: rewards.serve:<endpoint>_app`` (``hps_app``, ...)
    is ``build_app(<endpoint>, args)``, for every declared endpoint."""
    endpoint = name.removesuffix("_app")
    if name.endswith("_app") and endpoint in declared():
        builder = functools.partial(build_app, endpoint)
        builder.__doc__ = f"``serve run`` builder: ``import_path: rewards.serve:{name}``."
        return builder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


APP_PREFIX = "pairuni-"
"""A training run's Serve applications are named ``pairuni-<run.name>-<endpoint>``: two runs
on one cluster keep apart, and a dead run's leftovers are found by name
(``pairuni serve cleanup --run NAME``)."""


def run_app_prefix(run_name: str) -> str:
    return f"{APP_PREFIX}{run_name}-"


def delete_apps(names, timeout_s: float = 120.0) -> list[str]:
    """Delete Serve applications ``names`` all at once (each deletion alone takes seconds);
    returns those still present after ``timeout_s``. Ray must be initialised."""
    import time

    names = [n for n in names if n in serve.status().applications]
    for n in names:
        serve.delete(n, _blocking=False)
    deadline = time.monotonic() + timeout_s
    while names and time.monotonic() < deadline:
        live = serve.status().applications
        names = [n for n in names if n in live]
        time.sleep(0.2)
    return names


def cleanup_run_apps(run: str | None, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """A dead training run's Serve applications (every run's when ``run`` is None): returns
    (found, still present); deletes them unless ``dry_run``. Ray must be initialised."""
    prefix = run_app_prefix(run) if run else APP_PREFIX
    found = sorted(a for a in serve.status().applications if a.startswith(prefix))
    if dry_run or not found:
        return found, []
    return found, delete_apps(found)


def run_endpoints(
    cfg: RewardsConfig, endpoints: tuple[str, ...] | None = None, app_prefix: str = ""
) -> dict:
    """Start Serve on ``cfg.host:cfg.port`` and run each endpoint as its own application
    ``<app_prefix><endpoint>`` at ``/<app_prefix><endpoint>``; returns endpoint -> handle.
    Ray must be initialised."""
    from ray.serve.api import RunTarget, run_many

    cfg.validate()
    names = list(endpoints or cfg.endpoints)
    cfg.check_deployable(names)
    unknown = [e for e in names if e not in declared()]
    if unknown:
        raise ValueError(f"unknown reward endpoints {unknown}; valid: {sorted(declared())}")
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    # All applications deploy at once: replicas start (import torch, build models) in parallel.
    log_config = {"enable_access_log": cfg.access_log}
    targets = [
        RunTarget(
            build_app(e, cfg),
            name=app_prefix + e,
            route_prefix=f"/{app_prefix}{e}",
            logging_config=log_config,
        )
        for e in names
    ]
    return dict(zip(names, run_many(targets)))


def config_as_args(cfg: RewardsConfig) -> dict:
    """The YAML ``args`` block that reproduces ``cfg`` (tuples as lists, sections nested)."""
    return to_dict(cfg)
