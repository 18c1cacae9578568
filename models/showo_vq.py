"""Image tokenizers of the Show-o family: the toy world's cell palette (implemented) and
MAGVIT-v2 (what a published Show-o uses; not implemented here).

Show-o reads and writes images as MAGVIT-v2 codes (a lookup-free quantizer, 2^13 = 8192 codes,
16 x downsampling), published as its own checkpoint (``showlab/magvitv2``: a convolutional
encoder / decoder whose latent bits are the code). pairuni does not implement that network
yet, so a Show-o checkpoint loads its language model (sampling tokens, scoring, training all
work on codes) while ``decode_images`` / ``encode_images`` need the tokenizer: a checkpoint
directory names it in ``vq/config.json`` (written by ``ShowoModel.save``); without one, or
with ``type: magvitv2``, image decode / encode raise an error that says so.

``CellPalette`` is the tokenizer of the quickstart's toy world (``pairing/toyworld.py``:
images of flat 16 x 16 px cells in the six colours of ``models.palette_vq.PALETTE``), in
closed form: a cell's code is the palette index of the corner nearest to its mean colour;
code k decodes to a flat cell of colour k mod 6. It has no parameters, so nothing about it
trains or syncs. decode(encode(img)) == img for every palette cell image (tested).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models.palette_vq import CELL, palette_rgb


class CellPalette(torch.nn.Module):
    """Closed-form cell tokenizer: ``grid x grid`` cells of ``cell`` px, one code per cell."""

    kind = "palette"

    def __init__(self, grid: int, cell: int = CELL, codebook_size: int = 8192):
        super().__init__()
        if codebook_size < len(palette_rgb()):
            raise ValueError(f"codebook_size={codebook_size} must be >= 6 (the palette colours)")
        self.grid, self.cell, self.codebook_size = grid, cell, codebook_size
        self.register_buffer("palette", palette_rgb(), persistent=False)  # [6, 3] in [-1, 1]

    @property
    def image_size(self) -> int:
        return self.grid * self.cell

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels [N, 3, S, S]`` in [-1, 1] -> codes ``[N, grid * grid]`` (row-major cells)."""
        N = pixels.shape[0]
        means = torch.nn.functional.avg_pool2d(pixels.float(), self.cell)  # [N, 3, g, g]
        flat = means.permute(0, 2, 3, 1).reshape(N, -1, 3)  # [N, K, 3]
        dist = ((flat[:, :, None] - self.palette[None, None]) ** 2).sum(-1)  # [N, K, 6]
        return dist.argmin(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, K]`` -> pixels ``[N, 3, S, S]`` in [-1, 1]."""
        N = codes.shape[0]
        rgb = self.palette[codes.long() % len(self.palette)]  # [N, K, 3]
        img = rgb.view(N, self.grid, self.grid, 3).permute(0, 3, 1, 2)  # [N, 3, g, g]
        return img.repeat_interleave(self.cell, 2).repeat_interleave(self.cell, 3)

    def config(self) -> dict:
        return {"type": self.kind, "grid": self.grid, "cell": self.cell,
                "codebook_size": self.codebook_size}  # fmt: skip


MISSING_VQ = (
    "Show-o's MAGVIT-v2 image tokenizer is not implemented in pairuni (models/showo_vq.py): "
    "this checkpoint's language model loads and samples / scores image codes, but images cannot "
    "be decoded or encoded. The toy-world cell palette is the one tokenizer available "
    "(vq/config.json type 'palette')"
)


def load_vq(path: Path, grid: int, codebook_size: int) -> CellPalette | None:
    """The tokenizer ``path/vq/config.json`` names; None when there is none (MISSING_VQ)."""
    cfg_file = path / "vq" / "config.json"
    if not cfg_file.is_file():
        return None
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    kind = cfg.get("type")
    if kind != CellPalette.kind:
        raise ValueError(f"{cfg_file}: type {kind!r}: {MISSING_VQ}")
    if cfg.get("grid") != grid:
        raise ValueError(
            f"{cfg_file}: grid {cfg.get('grid')} but config.json num_vq_tokens is {grid * grid}"
        )
    return CellPalette(grid, cfg.get("cell", CELL), codebook_size)


def to_pixels(images: list[np.ndarray], side: int) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` images -> ``[N, 3, side, side]`` in [-1, 1] (resized if needed)."""
    from PIL import Image

    out = []
    for img in images:
        if img.shape[:2] != (side, side):
            img = np.asarray(Image.fromarray(img).resize((side, side), Image.BICUBIC))
        out.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
    return torch.stack(out).float() / 127.5 - 1.0
