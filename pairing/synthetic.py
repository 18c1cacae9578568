"""A tiny synthetic PairUG manifest (coloured squares) for smoke runs and benchmarks.

Four pairs (two aligned, two retrieved at similarity 0.81), each a 64 px image of a
coloured square, a four-option colour question and a generation prompt. It exercises every
field the runtime reads; it is not a world a model can learn much from.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from pairing.manifest import Pair, write_manifest

COLOURS = {
    "red": (220, 30, 30),
    "blue": (30, 30, 220),
    "green": (30, 200, 30),
    "yellow": (230, 220, 40),
}


def colour_square_manifest(out_dir: str | Path, size: int = 64) -> str:
    """Write PNGs and ``pairs.parquet`` under ``out_dir``; returns the manifest path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        img = np.full((size, size, 3), 255, np.uint8)
        img[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = rgb
        path = out_dir / f"{name}.png"
        Image.fromarray(img).save(path)
        kind, sim = ("aligned", 1.0) if i % 2 == 0 else ("retrieved", 0.81)
        pairs.append(
            Pair(
                pair_id=i,
                kind=kind,
                similarity=sim,
                weight=math.sqrt(sim),
                und_image=str(path),
                question="What colour is the square?",
                choices=tuple(COLOURS),
                answer="ABCD"[i],
                category="colour",
                und_source="synthetic",
                verifier=None,
                gen_image=str(path),
                prompt=f"a {name} square on a white background",
                needs_augmentation=None,
            )
        )
    manifest = out_dir / "pairs.parquet"
    write_manifest(pairs, str(manifest))
    return str(manifest)
