"""`pairuni augment`. ``deploy/cli.py`` registers ``add_augment_command`` on the top level
(``pairuni serve augment``, the endpoint it can call, is in ``deploy/serving.py``)::

    pairuni augment --config deploy/configs/pairing.yaml [pairing.augment.model=NAME ...]

``augment`` reads the same ``pairing:`` section as ``pairuni pair`` (U and G sources) and its
``augment:`` sub-section; ``pair`` then reads the result through ``pairing.quadruples``.
"""

from __future__ import annotations

import argparse


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
