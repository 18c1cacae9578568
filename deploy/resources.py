"""What a run asks of the cluster, checked before any actor starts.

Ray does not fail an actor it cannot place: it waits. A run whose roles ask for more CPUs or
GPUs than the cluster has therefore sat forever behind Serve's "taken more than 30s to be
scheduled" warnings (the smoke config asked 3.0 CPUs; ``ray.init()`` on a 2-core machine
registers 2). ``ensure_cluster`` starts a local cluster sized from the config when none is
running (its logical CPUs are the machine's cores or the config's total, whichever is more:
the roles take turns, so oversubscribing a laptop is slow, not stuck), and otherwise
compares the config with what the cluster has and stops with one message listing the
shortfall per role and the keys that set it.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Demand:
    role: str
    cpus: float
    gpus: float
    keys: str
    """The config keys that set it, for the error message."""


def demands(cfg) -> list[Demand]:
    """Per role, the CPUs and GPUs a run holds once started (``cfg``: a ``RunConfig``)."""
    r, lrn, rw = cfg.rollout, cfg.learner, cfg.rewards
    out = [
        Demand(
            "text rollout workers",
            r.text_workers * r.text_num_cpus,
            r.text_workers * r.text_num_gpus,
            "rollout.text_workers x rollout.text_num_cpus / text_num_gpus",
        ),
        Demand(
            "image rollout workers",
            r.image_workers * r.image_num_cpus,
            r.image_workers * r.image_num_gpus,
            "rollout.image_workers x rollout.image_num_cpus / image_num_gpus",
        ),
        Demand(
            "learners",
            lrn.num_learners * lrn.learner_num_cpus,
            lrn.num_learners * lrn.learner_num_gpus,
            "learner.num_learners x learner.learner_num_cpus / learner_num_gpus",
        ),
    ]
    if cfg.train.eval_every:
        out.append(
            Demand(
                "held-out evaluator (train.eval_every)",
                cfg.eval.num_cpus,
                cfg.eval.num_gpus,
                "eval.num_cpus / eval.num_gpus",
            )
        )
    for e in sorted(cfg.train.terms):
        s = rw.settings(e)
        out.append(
            Demand(
                f"reward endpoint {e}",
                s.replicas() * s.num_cpus,
                s.replicas() * s.num_gpus,
                f"rewards.{e}.num_replicas (or .min_replicas) x rewards.{e}.num_cpus / num_gpus",
            )
        )
    return out


def shortfall(need: list[Demand], cpus: float, gpus: float) -> str | None:
    """The error text when ``need`` does not fit ``cpus`` / ``gpus``; None when it does."""
    total_cpu = sum(d.cpus for d in need)
    total_gpu = sum(d.gpus for d in need)
    if total_cpu <= cpus + 1e-9 and total_gpu <= gpus + 1e-9:
        return None
    lines = [
        f"the run asks for {total_cpu:g} CPUs and {total_gpu:g} GPUs; the Ray cluster has "
        f"{cpus:g} CPUs and {gpus:g} GPUs. Ray would wait for them forever. Per role:"
    ]
    for d in need:
        if d.cpus or d.gpus:
            lines.append(f"  {d.role:<28} {d.cpus:6g} CPU {d.gpus:4g} GPU   ({d.keys})")
    lines.append(
        "Lower those keys, or add nodes to the cluster (a local cluster started by pairuni "
        "is sized from the config)."
    )
    return "\n".join(lines)


AUTH_TOKEN = "~/.ray/auth_token"
"""Where Ray keeps the cluster's authentication token (token auth is Ray's default)."""


def warn_if_token_readable(path: str = AUTH_TOKEN) -> bool:
    """Warn when the Ray token file can be read by other users (it grants the cluster)."""
    p = os.path.expanduser(path)
    if os.path.isfile(p) and os.stat(p).st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 %s", path, path)
        return True
    return False


def ensure_cluster(cfg, **init_kwargs) -> None:
    """Connect to the running cluster (``RAY_ADDRESS`` or an initialised one) or start a
    local one sized from the config; raise ``RuntimeError`` when the config cannot fit."""
    import ray

    need = demands(cfg)
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(**init_kwargs)
        else:
            cpus = max(os.cpu_count() or 1, math.ceil(sum(d.cpus for d in need)))
            log.info("starting a local Ray cluster with %d logical CPUs", cpus)
            ray.init(num_cpus=cpus, **init_kwargs)
    warn_if_token_readable()
    res = ray.cluster_resources()
    msg = shortfall(need, res.get("CPU", 0.0), res.get("GPU", 0.0))
    if msg:
        raise RuntimeError(msg)
