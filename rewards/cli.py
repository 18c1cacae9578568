"""The rewards config of ``pairuni serve rewards`` (``deploy/serving.py``), and
``pairuni serve cleanup``.

``pairuni serve rewards`` does what ``serve run deploy/serve_rewards.yaml`` does, from our
config: the ``rewards`` section of a run config (or a file holding only that section), dotted
overrides, validated (``load_rewards_config``), then one Serve application per endpoint in
``rewards.endpoints`` at ``/<endpoint>``.
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
        elif not any(
            isinstance(v, dict) and k not in RewardsConfig.sections() for k, v in raw.items()
        ):
            data = raw  # a rewards-only file (its only mappings are endpoint sections)
        # else: a run config without a rewards section -> the defaults
    tree = apply_overrides(
        {"rewards": data}, [o if o.startswith("rewards.") else f"rewards.{o}" for o in overrides]
    )
    cfg = from_dict(RewardsConfig, tree["rewards"], prefix="rewards.")
    cfg.validate()
    return cfg


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
