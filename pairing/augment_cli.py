"""`pairuni augment` and `pairuni serve augment`. ``deploy/cli.py`` registers
``add_augment_command`` on the top level and ``add_serve_augment_command`` on the ``serve``
group::

    pairuni augment --config deploy/configs/pairing.yaml [pairing.augment.model=NAME ...]
    pairuni serve augment --model PATH [--port 8000] [--name NAME]

``augment`` reads the same ``pairing:`` section as ``pairuni pair`` (U and G sources) and its
``augment:`` sub-section; ``pair`` then reads the result through ``pairing.quadruples``.
"""

from __future__ import annotations

import argparse

from pairing.config import AugmentServerConfig


def _augment(args: argparse.Namespace) -> None:
    from pairing.augment import run_augment
    from pairing.cli import load_pairing_config

    run_augment(load_pairing_config(args.config, args.overrides), strict=args.strict)


def add_augment_command(subparsers) -> argparse.ArgumentParser:
    """Register ``augment`` on the ``pairuni`` sub-parsers."""
    p = subparsers.add_parser(
        "augment",
        help="complete U and G items to quadruples with an OpenAI-compatible VLM endpoint",
    )
    p.add_argument("--config", default=None, help="YAML file with a `pairing:` section")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable input row")
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. pairing.augment.model=my-vlm"
    )
    p.set_defaults(func=_augment)
    return p


def serve_augment(args: argparse.Namespace) -> None:
    """Start Ray (or join ``--address``), run the endpoint, block until Ctrl-C."""
    import ray

    from models.serving import hold_until_interrupted
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
