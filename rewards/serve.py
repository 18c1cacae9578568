"""Reward endpoints as Ray Serve deployments: one per reward, dynamically batched.

Each deployment answers

* ``POST /<endpoint>/score`` with JSON ``{"items": [...]}`` (images as base64 PNG; fields in
  ``rewards/types.py``) -> ``{"endpoint", "rewards": [float, ...] aligned with the items}``
  (the DSR endpoint adds the ``version`` of the policy that scored them; an endpoint whose
  reward has parts adds ``"details": [{name: float}, ...]``, also aligned with the items:
  the toy judge's four terms and its strict success, which the driver logs per step);
* ``GET /<endpoint>/healthz`` -> ``{"status": "ok", ...}``;
* the handle method ``score(payload)`` with the same payload, images as uint8 arrays;
* DSR only: ``GET /dual/version`` and the handle method ``load_weights(ref, version,
  manifest=None)`` that applies a weight version the learner published to the object store.

A bad request gets a 4xx whose JSON body ``{"error", "field"}`` names the field (through a
handle it raises ``RewardInputError``); the replica keeps serving. Items of all requests in
flight are scored together: every item enters ``@serve.batch`` on its own, so batches fill
across requests up to ``<endpoint>_max_batch_size`` items, waiting at most
``<endpoint>_batch_wait_s``. Scoring runs in a worker thread so ``/healthz`` stays responsive.

``deploy/serve_rewards.yaml`` names the builders below (``rewards.serve:hps_app`` ...) for
``serve run``; ``run_endpoints`` starts the configured ones from Python (the CLI, tests).
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` type.
import asyncio
import dataclasses
import json
import logging
import math
import os
import threading
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from rewards.config import ENDPOINTS, RewardsConfig
from rewards.types import Limits, RewardInputError, parse_request

logger = logging.getLogger(__name__)


def config_from_args(args: "dict | RewardsConfig | None") -> RewardsConfig:
    """``serve run`` application args (RewardsConfig fields) -> a validated config."""
    if isinstance(args, RewardsConfig):
        cfg = args
    else:
        from models.config import from_dict

        cfg = from_dict(RewardsConfig, dict(args or {}), prefix="rewards.")
    cfg.validate()
    return cfg


class _Endpoint:
    """Shared plumbing: request validation, per-item batching, HTTP error mapping."""

    endpoint = ""

    def __init__(self, cfg: RewardsConfig):
        self.cfg = cfg
        self.lim = Limits.from_config(cfg)
        self._lock = threading.Lock()  # one model call at a time (weights may change)
        # One batch queue per instance (a class-level @serve.batch queue would be shared by
        # every deployment in one process, e.g. in Serve's local testing mode).
        self._batched = serve.batch(
            max_batch_size=cfg.endpoint_setting(self.endpoint, "max_batch_size"),
            batch_wait_timeout_s=cfg.endpoint_setting(self.endpoint, "batch_wait_s"),
            max_concurrent_batches=self._concurrent_batches(cfg),
        )(self._run_batch)
        self.batches = 0
        self.items = 0

    item_parser = ""
    """Name in ``rewards.types.ITEM_PARSERS`` of this endpoint's items (default: its own)."""

    def _concurrent_batches(self, cfg: RewardsConfig) -> int:
        """Batches scored at once; 1 for a model (one call at a time, weights may change)."""
        return 1

    def _score_items(self, items: list) -> list[float]:  # in a worker thread
        raise NotImplementedError

    def _score_detailed(self, items: list) -> list[tuple[float, dict[str, float]]]:
        """(reward, details) per item; endpoints whose reward has parts override this."""
        return [(r, {}) for r in self._score_items(items)]

    def _locked_score(self, items: list) -> list[tuple[float, dict[str, float]]]:
        with self._lock:
            return self._score_detailed(items)

    async def _run_batch(self, items: list) -> list[tuple[float, dict[str, float]]]:
        self.batches += 1
        self.items += len(items)
        return await asyncio.to_thread(self._locked_score, items)

    def _extra(self) -> dict:
        return {}

    async def score(self, payload: Any) -> dict:
        """Handle API: validate ``payload`` (raises ``RewardInputError``) and score its items."""
        items = parse_request(self.item_parser or self.endpoint, payload, self.lim)
        scored = await asyncio.gather(*[self._batched(item) for item in items])
        # a reward that failed (NaN) is JSON null: the client reads null back as NaN
        rewards = [None if math.isnan(r) else float(r) for r, _ in scored]
        out = {"endpoint": self.endpoint, "rewards": rewards}
        if any(d for _, d in scored):
            out["details"] = [{k: float(v) for k, v in d.items()} for _, d in scored]
        return {**out, **self._extra()}

    async def _http_score(self, request: Request) -> JSONResponse:
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

    def healthz(self) -> dict:
        return {
            "status": "ok",
            "endpoint": self.endpoint,
            "batches": self.batches,
            "items": self.items,
            **self._extra(),
        }


API_DOCS_ENV = "PAIRUNI_REWARD_API_DOCS"
"""Set to 1 (in the replicas' environment) to serve FastAPI's /docs and /openapi.json."""


def _api(title: str) -> FastAPI:
    """An endpoint's FastAPI app; its generated docs routes are off unless ``API_DOCS_ENV``
    turns them on (a reward replica answers /score, /healthz and /version, nothing else)."""
    if os.environ.get(API_DOCS_ENV) == "1":
        return FastAPI(title=title)
    return FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)


def _error(e: RewardInputError) -> JSONResponse:
    return JSONResponse({"error": str(e), "field": e.field}, status_code=e.status)


accuracy_api = _api("pairuni accuracy reward")


@serve.deployment(name="accuracy")
@serve.ingress(accuracy_api)
class AccuracyDeployment(_Endpoint):
    """Accuracy reward (``rewards/accuracy.py``): 1.0 / 0.0 per (response, answer)."""

    endpoint = "accuracy"

    def __init__(self, cfg: RewardsConfig):
        from concurrent.futures import ThreadPoolExecutor

        from rewards import mathcheck

        super().__init__(cfg)
        # math answers are checked in worker processes, each under a hard limit; a hanging
        # one holds one worker and one thread, and the other items and batches go on
        self.math = mathcheck.configure(cfg.accuracy_math_workers, cfg.accuracy_math_timeout_s)
        self._threads = ThreadPoolExecutor(cfg.accuracy_math_workers + 1)

    def _concurrent_batches(self, cfg: RewardsConfig) -> int:
        return cfg.accuracy_math_workers + 1  # rules only: no weights, no lock needed

    def _locked_score(self, items: list) -> list[tuple[float, dict[str, float]]]:
        return self._score_detailed(items)

    def _score_items(self, items: list) -> list[float]:
        from rewards.accuracy import accuracy_reward

        def one(it) -> float:
            return accuracy_reward(it.response, it.answer, choices=it.choices, kind=it.kind)

        return list(self._threads.map(one, items))

    def _extra(self) -> dict:
        return {"math_checks": self.math.checks, "math_failures": dict(self.math.failures)}

    @accuracy_api.post("/score")
    async def http_score(self, request: Request) -> JSONResponse:
        return await self._http_score(request)

    @accuracy_api.get("/healthz")
    async def http_healthz(self) -> dict:
        return self.healthz()


hps_api = _api("pairuni HPSv2 reward")


@serve.deployment(name="hps")
@serve.ingress(hps_api)
class HpsDeployment(_Endpoint):
    """HPSv2 reward (``rewards/hps.py``): cosine of image and prompt embeddings."""

    endpoint = "hps"

    def __init__(self, cfg: RewardsConfig):
        from rewards.hps import HpsScorer

        super().__init__(cfg)
        if not cfg.hps_checkpoint and cfg.hps_arch == "ViT-H-14":
            logger.warning("hps: no rewards.hps_checkpoint; scoring with RANDOM weights")
        self.scorer = HpsScorer(
            cfg.hps_arch,
            cfg.hps_checkpoint,
            cfg.hps_device,
            cfg.hps_precision,
            cfg.hps_seed,
            cfg.hps_max_batch_size,
        )

    def _score_items(self, items: list) -> list[float]:
        return self.scorer.score([it.image for it in items], [it.prompt for it in items])

    @hps_api.post("/score")
    async def http_score(self, request: Request) -> JSONResponse:
        return await self._http_score(request)

    @hps_api.get("/healthz")
    async def http_healthz(self) -> dict:
        return self.healthz()


dual_api = _api("pairuni DSR dual-likelihood reward")


@serve.deployment(name="dual")
@serve.ingress(dual_api)
class DualDeployment(_Endpoint):
    """DSR reward (``rewards/dual.py``) on the current policy version."""

    endpoint = "dual"

    def __init__(self, cfg: RewardsConfig):
        from rewards.dual import DualScorer

        super().__init__(cfg)
        self.scorer = DualScorer(
            model_path=cfg.dual_model_path,
            device=cfg.dual_device,
            dtype=cfg.dual_dtype,
            seed=cfg.dual_seed,
            batch_size=cfg.dual_max_batch_size,
        )

    def _score_items(self, items: list) -> list[float]:
        return self.scorer.score(
            [it.task for it in items], [it.image for it in items], [it.text for it in items]
        )

    def _extra(self) -> dict:
        return {"version": self.scorer.version}

    async def load_weights(self, ref: Any, version: int, manifest=None) -> int:
        """Apply policy version ``version`` from the object store, as a rollout worker does.

        ``ref`` is an ``ObjectRef`` (or its value: Ray resolves top-level refs) of either a
        dict name -> array or a flat uint8 buffer described by ``manifest``. Scoring waits
        while the weights change; returns the number of parameters copied.
        """
        import ray

        from actors.weights import unflatten_views

        value = await ref if isinstance(ref, ray.ObjectRef) else ref
        named = value if isinstance(value, dict) else unflatten_views(value, manifest)
        if isinstance(value, np.ndarray) and manifest is None:
            raise ValueError("a flat weight buffer needs its manifest")

        def apply() -> int:
            with self._lock:
                return self.scorer.load_weights(named, version)

        n = await asyncio.to_thread(apply)
        logger.info("dual: loaded weight version %d (%d parameters)", version, n)
        return n

    def get_version(self) -> int:
        return self.scorer.version

    @dual_api.post("/score")
    async def http_score(self, request: Request) -> JSONResponse:
        return await self._http_score(request)

    @dual_api.get("/healthz")
    async def http_healthz(self) -> dict:
        return self.healthz()

    @dual_api.get("/version")
    async def http_version(self) -> dict:
        return {"version": self.scorer.version}


toy_judge_api = _api("pairuni toy-world judge")


@serve.deployment(name="toy_judge")
@serve.ingress(toy_judge_api)
class ToyJudgeDeployment(_Endpoint):
    """The toy world's rule-based generation reward (``rewards/toy.py``); items as hps's."""

    endpoint = "toy_judge"
    item_parser = "hps"  # the same item: image + prompt

    def _score_detailed(self, items: list) -> list[tuple[float, dict[str, float]]]:
        from rewards.toy import judge_details, reward_of_terms

        out = []
        for it in items:
            details = judge_details(it.image, it.prompt)
            if details is None:  # outside the toy grammar: a failed reward, no details
                out.append((float("nan"), {}))
            else:
                out.append((reward_of_terms(details), details))
        return out

    @toy_judge_api.post("/score")
    async def http_score(self, request: Request) -> JSONResponse:
        return await self._http_score(request)

    @toy_judge_api.get("/healthz")
    async def http_healthz(self) -> dict:
        return self.healthz()


DEPLOYMENTS = {
    "accuracy": AccuracyDeployment,
    "hps": HpsDeployment,
    "dual": DualDeployment,
    "toy_judge": ToyJudgeDeployment,
}
"""Endpoint name -> its Serve deployment."""


def deployment_options(cfg: RewardsConfig, endpoint: str) -> dict:
    """Replicas (fixed, or autoscaling when min < max), CPUs/GPUs, concurrency from config."""
    opts: dict[str, Any] = {
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "ray_actor_options": {
            "num_cpus": cfg.endpoint_setting(endpoint, "num_cpus"),
            "num_gpus": getattr(cfg, f"{endpoint}_num_gpus", 0.0),
        },
    }
    lo = cfg.endpoint_setting(endpoint, "min_replicas")
    hi = cfg.endpoint_setting(endpoint, "max_replicas")
    if lo < hi:
        opts["autoscaling_config"] = {
            "min_replicas": lo,
            "max_replicas": hi,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        }
    else:
        opts["num_replicas"] = cfg.endpoint_setting(endpoint, "num_replicas")
    return opts


def build_app(endpoint: str, args: dict | RewardsConfig | None = None):
    """The bound Serve application of ``endpoint`` (a name in ``DEPLOYMENTS``)."""
    if endpoint not in DEPLOYMENTS:
        raise ValueError(f"unknown reward endpoint {endpoint!r}; valid: {sorted(DEPLOYMENTS)}")
    cfg = config_from_args(args)
    cfg.check_deployable([endpoint])
    return DEPLOYMENTS[endpoint].options(**deployment_options(cfg, endpoint)).bind(cfg)


def accuracy_app(args: dict | None = None):
    """``serve run`` builder: ``import_path: rewards.serve:accuracy_app``."""
    return build_app("accuracy", args)


def hps_app(args: dict | None = None):
    """``serve run`` builder: ``import_path: rewards.serve:hps_app``."""
    return build_app("hps", args)


def toy_judge_app(args: dict | None = None):
    """``serve run`` builder: ``import_path: rewards.serve:toy_judge_app``."""
    return build_app("toy_judge", args)


def dual_app(args: dict | None = None):
    """``serve run`` builder: ``import_path: rewards.serve:dual_app``."""
    return build_app("dual", args)


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
    unknown = [e for e in names if e not in ENDPOINTS]
    if unknown:
        raise ValueError(f"unknown reward endpoints {unknown}; valid: {list(ENDPOINTS)}")
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
    """The YAML ``args`` block that reproduces ``cfg`` (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
