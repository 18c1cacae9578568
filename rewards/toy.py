"""The toy judge: a rule-based generation reward for the toy world only (``pairing/toyworld.py``).

Reward term and endpoint ``toy_judge``. It reads a decoded image as the toy world's 4 x 4
grid of cells (each cell's mean colour -> the nearest palette colour, or ``other`` when none
is within ``MAX_DIST``) and scores its agreement with a prompt of the toy grammar, "a red
cross in the top left on a black background", as the mean of four terms in [0, 1]:

* background: cells of the background colour / cells the shape leaves free (capped at 1);
* colour: cells of the prompt's colour / cells that are not background (0 if there are none);
* shape: the best Jaccard overlap between the cells of the prompt's colour and a placement
  of the prompt's shape anywhere on the grid;
* position: 1 if the centroid of the prompt-coloured cells lies in the prompt's quadrant.

A prompt outside the grammar is not scored (``None``, which the endpoint reports as a
failed reward, never as a number). HPSv2 stays the real-world default; this judge says
nothing about real images. Pure numpy: no ray.
"""

from __future__ import annotations

import numpy as np

from pairing.toyworld import (
    BACKGROUNDS,
    COLOURS,
    GRID,
    PROMPT,
    QUADRANTS,
    SHAPES,
    quadrant_of,
    shape_placements,
)

PALETTE_NAMES = (*COLOURS, *BACKGROUNDS)
MAX_DIST = 96.0
"""Largest RGB distance (0-255 units) from a cell's mean colour to a palette colour."""
TERMS = ("background", "colour", "shape", "position")


def _palette() -> np.ndarray:
    from models.palette_vq import PALETTE

    return np.array([[(v + 1) * 127.5 for v in PALETTE[n]] for n in PALETTE_NAMES])  # [6, 3]


def cell_labels(image: np.ndarray) -> np.ndarray:
    """``[4, 4]`` palette names of an image's cells (``other`` beyond ``MAX_DIST``)."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] % GRID or img.shape[1] % GRID:
        raise ValueError(
            f"image of shape {img.shape}: need [H, W, 3] with H, W divisible by {GRID}"
        )
    h, w = img.shape[0] // GRID, img.shape[1] // GRID
    means = img.reshape(GRID, h, GRID, w, 3).mean(axis=(1, 3))  # [4, 4, 3]
    d = np.linalg.norm(means[:, :, None, :] - _palette()[None, None], axis=-1)  # [4, 4, 6]
    names = np.array((*PALETTE_NAMES, "other"), dtype=object)
    idx = np.where(d.min(-1) <= MAX_DIST, d.argmin(-1), len(PALETTE_NAMES))
    return names[idx]


def parse_prompt(prompt: str) -> dict | None:
    """The prompt's colour, shape, quadrant and background, or None outside the grammar."""
    m = PROMPT.match(prompt.strip())
    if not m:
        return None
    p = m.groupdict()
    ok = (
        p["colour"] in COLOURS
        and p["shape"] in SHAPES
        and p["quadrant"] in QUADRANTS
        and p["background"] in BACKGROUNDS
    )
    return p if ok else None


def judge_terms(image: np.ndarray, prompt: str) -> dict[str, float] | None:
    """The four agreement terms of ``image`` with ``prompt`` (module docstring), or None."""
    p = parse_prompt(prompt)
    if p is None:
        return None
    labels = cell_labels(image)
    coloured = {(r, c) for r in range(GRID) for c in range(GRID) if labels[r, c] == p["colour"]}
    not_bg = int((labels != p["background"]).sum())
    size = len(shape_placements(p["shape"])[0])
    bg = min(1.0, float((labels == p["background"]).sum()) / (GRID * GRID - size))
    colour = len(coloured) / not_bg if not_bg else 0.0
    shape = max(
        len(coloured & set(cells)) / len(coloured | set(cells))
        for cells in shape_placements(p["shape"])
    )
    position = float(quadrant_of(coloured) == p["quadrant"]) if coloured else 0.0
    return {"background": bg, "colour": colour, "shape": shape, "position": position}


def toy_judge_reward(image: np.ndarray, prompt: str) -> float | None:
    """Mean of the four terms in [0, 1]; None for a prompt outside the toy grammar."""
    terms = judge_terms(image, prompt)
    return None if terms is None else float(np.mean([terms[t] for t in TERMS]))
