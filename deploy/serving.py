"""`pairuni serve ...`: the commands that run Serve applications, and the lifecycle they share.

    pairuni serve rewards --config RUN.yaml [rewards.key=value ...]
    pairuni serve augment --model PATH [--port 8000] [--name NAME]
    pairuni serve cleanup [--run NAME] [--dry-run]

Each starts Ray (or joins ``--address``), starts its applications, prints their addresses and
holds until Ctrl-C (``hold_until_interrupted``). Here, in the driver's package, because both
the pairing and the rewards package serve, and Ray does not belong in the bottom layer; the
applications themselves are ``pairing.serve_augment`` and ``rewards.serve``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def add_serve_commands(subparsers) -> argparse.ArgumentParser:
    """Register the ``serve`` group (rewards, augment, cleanup) on the ``pairuni`` sub-parsers."""
    from rewards.cli import add_serve_cleanup_command

    serve = subparsers.add_parser("serve", help="run services (reward endpoints)")
    serve_sub = serve.add_subparsers(dest="serve_command", required=True)
    add_serve_rewards_command(serve_sub)
    add_serve_augment_command(serve_sub)
    add_serve_cleanup_command(serve_sub)
    return serve


def hold_until_interrupted(start: Callable[[], None], detach: bool) -> None:
    """Run ``start()`` (Ray is up; it starts Serve applications and prints their addresses),
    then block until Ctrl-C and shut Serve and Ray down. With ``detach`` it returns right
    after ``start()`` and leaves the applications running on the cluster."""
    import ray
    from ray import serve

    try:
        start()
        if detach:
            return
        print("serving; Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if not detach:
            serve.shutdown()
            ray.shutdown()


def serve_rewards(args: argparse.Namespace) -> None:
    """Start Ray (or join ``--address``), run the endpoints, block until Ctrl-C."""
    import ray

    from rewards.cli import load_rewards_config
    from rewards.serve import run_endpoints
    from rewards.spec import endpoints

    cfg = load_rewards_config(args.config, args.overrides)
    cfg.check_deployable(cfg.endpoints)

    def follows(e: str) -> bool:
        return endpoints()[e].follows_policy

    def start() -> None:
        run_endpoints(cfg)
        for e in cfg.endpoints:
            print(
                f"{e}: POST http://{cfg.host}:{cfg.port}/{e}/score  "
                f"(GET /{e}/healthz{f', /{e}/version' if follows(e) else ''})",
                flush=True,
            )

    ray.init(address=args.address, logging_level="WARNING")
    hold_until_interrupted(start, args.detach)


def add_serve_rewards_command(subparsers) -> argparse.ArgumentParser:
    """Register ``rewards`` on the ``serve`` group's sub-parsers; returns its parser.

    The parser's ``func`` default is ``serve_rewards(args)`` (``args.config``,
    ``args.overrides``, ``args.address``, ``args.detach``).
    """
    p = subparsers.add_parser(
        "rewards", help="run the reward endpoints (accuracy, HPSv2, DSR) on Ray Serve"
    )
    p.add_argument(
        "--config",
        default=None,
        help="YAML run config (its `rewards:` section) or a rewards-only YAML",
    )
    p.add_argument(
        "--address", default=None, help="Ray cluster address to join (default: start a local one)"
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="return once the endpoints run (they keep running in the cluster)",
    )
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. rewards.hps.max_batch_size=32"
    )
    p.set_defaults(func=serve_rewards)
    return p


def serve_augment(args: argparse.Namespace) -> None:
    """Start Ray (or join ``--address``), run the endpoint, block until Ctrl-C."""
    import ray

    from pairing.config import AugmentServerConfig
    from pairing.serve_augment import run_augment_server

    cfg = AugmentServerConfig(
        model_path=args.model,
        served_name=args.name or "",
        host=args.host,
        port=args.port,
        device=args.device,
        dtype=args.dtype,
        num_replicas=args.replicas,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        max_new_tokens=args.max_new_tokens,
    )
    cfg.validate()

    def start() -> None:
        run_augment_server(cfg)
        name = cfg.served_name or cfg.model_path.rstrip("/").split("/")[-1]
        print(
            f"augment: POST http://{cfg.host}:{cfg.port}/v1/chat/completions (model {name!r}); "
            f"set pairing.augment.base_url=http://{cfg.host}:{cfg.port}/v1 "
            f"pairing.augment.model={name}",
            flush=True,
        )

    ray.init(address=args.address, logging_level="WARNING")
    hold_until_interrupted(start, args.detach)


def add_serve_augment_command(subparsers) -> argparse.ArgumentParser:
    """Register ``augment`` on the ``serve`` group's sub-parsers."""
    from pairing.config import AugmentServerConfig

    d = AugmentServerConfig()
    p = subparsers.add_parser(
        "augment", help="serve a local model as an OpenAI-compatible chat endpoint (Ray Serve)"
    )
    p.add_argument("--model", required=True, help="local checkpoint directory")
    p.add_argument("--name", default=None, help="model name clients send (default: dir name)")
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--device", default=d.device, help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default=d.dtype, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--replicas", type=int, default=d.num_replicas)
    p.add_argument("--num-cpus", type=float, default=d.num_cpus)
    p.add_argument("--num-gpus", type=float, default=d.num_gpus)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--address", default=None, help="Ray cluster to join (default: a local one)")
    p.add_argument("--detach", action="store_true", help="return once the endpoint runs")
    p.set_defaults(func=serve_augment)
    return p
