"""``pairuni serve rewards --config RUN.yaml [rewards.key=value ...]``: run the reward endpoints.

The CLI owner registers it under the ``serve`` group::

    serve = sub.add_parser("serve", ...).add_subparsers(dest="serve_command", required=True)
    add_serve_rewards_command(serve)

It does what ``serve run deploy/serve_rewards.yaml`` does, from our config: the ``rewards``
section of a run config (or a file holding only that section), dotted overrides, validated,
then one Serve application per endpoint in ``rewards.endpoints`` at ``/<endpoint>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rewards.config import RewardsConfig


def load_rewards_config(
    path: str | None, overrides: list[str] | tuple[str, ...] = ()
) -> RewardsConfig:
    """``rewards`` section of a YAML file (or the whole file if it has none) + overrides."""
    import yaml

    from models.config import apply_overrides, from_dict

    data: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        raw = yaml.safe_load(p.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{p}: the top level must be a mapping")
        if "rewards" in raw:
            data = dict(raw["rewards"] or {})
        elif not any(isinstance(v, dict) for v in raw.values()):
            data = raw  # a rewards-only file
        # else: a run config without a rewards section -> the defaults
    tree = apply_overrides(
        {"rewards": data}, [o if o.startswith("rewards.") else f"rewards.{o}" for o in overrides]
    )
    cfg = from_dict(RewardsConfig, tree["rewards"], prefix="rewards.")
    cfg.validate()
    return cfg


def serve_rewards(args: argparse.Namespace) -> None:
    """Start Ray (or join ``--address``), run the endpoints, block until Ctrl-C."""
    import ray

    from models.serving import hold_until_interrupted
    from rewards.serve import run_endpoints

    cfg = load_rewards_config(args.config, args.overrides)
    cfg.check_deployable(cfg.endpoints)

    def start() -> None:
        run_endpoints(cfg)
        for e in cfg.endpoints:
            print(
                f"{e}: POST http://{cfg.host}:{cfg.port}/{e}/score  "
                f"(GET /{e}/healthz{', /dual/version' if e == 'dual' else ''})",
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
        "overrides", nargs="*", help="dotted overrides, e.g. rewards.hps_max_batch_size=32"
    )
    p.set_defaults(func=serve_rewards)
    return p


def serve_cleanup(args: argparse.Namespace) -> int:
    """Delete the Serve applications a training run left behind (its driver was killed)."""
    import ray

    from rewards.serve import cleanup_run_apps

    ray.init(address=args.address, logging_level="WARNING")
    try:
        found, left = cleanup_run_apps(args.run, dry_run=args.dry_run)
    finally:
        ray.shutdown()
    if not found:
        print(f"no Serve applications of {'run ' + args.run if args.run else 'any run'}")
    elif args.dry_run:
        print("would delete: " + ", ".join(found))
    else:
        print("deleted: " + ", ".join(a for a in found if a not in left))
        if left:
            print("still deleting after 120 s: " + ", ".join(left))
    return 1 if left else 0


def add_serve_cleanup_command(subparsers) -> argparse.ArgumentParser:
    """Register ``cleanup`` on the ``serve`` group's sub-parsers; returns its parser."""
    p = subparsers.add_parser(
        "cleanup",
        help="delete the Serve applications of a dead training run (pairuni-<run.name>-*)",
    )
    p.add_argument("--run", default=None, help="run.name of the dead run (default: every run)")
    p.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    p.set_defaults(func=serve_cleanup)
    return p
