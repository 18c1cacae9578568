"""Image tokenizers of the Show-o family: MAGVIT-v2 (what a published Show-o uses) and the toy
world's cell palette; where a checkpoint keeps its tokenizer.

Show-o reads and writes images as MAGVIT-v2 codes (lookup-free quantization, 2^13 = 8192
codes, 16 x downsampling), published as its own checkpoint (``showlab/magvitv2``: a
``config.json`` with ``_class_name: "MAGVITv2"`` and a ``pytorch_model.bin``);
``models/showo_magvit.py`` implements it with the published parameter names. Show-o's own
``config.json`` does not name it (its experiment YAML does, ``model.vq_model.vq_model_name``),
so a pairuni checkpoint finds it (``vq_dir``) at the local directory its config.json key
``vq_model_name`` names (absolute or relative to the checkpoint), else at ``<checkpoint>/vq``.
A ``vq/config.json`` with ``type: palette`` is the toy world's palette. A checkpoint with no
tokenizer still loads: its language model samples / scores codes, and ``decode_images`` /
``encode_images`` raise ``MISSING_VQ``, which says where to put one. ``ShowoModel.save`` writes
the tokenizer to ``vq/`` (a loaded MAGVIT-v2's files hard-linked or copied as they were).

``CellPalette`` is the tokenizer of the quickstart's toy world (``pairing/toyworld.py``:
images of flat 16 x 16 px cells in the six colours of ``models.palette_vq.PALETTE``), in
closed form: a cell's code is the palette index of the corner nearest to its mean colour;
code k decodes to a flat cell of colour k mod 6. It has no parameters, so nothing about it
trains or syncs. decode(encode(img)) == img for every palette cell image (tested).

Both take and give pixels ``[N, 3, S, S]`` in [-1, 1] and codes ``[N, K]``, row-major.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from models.palette_vq import CELL, palette_rgb

if TYPE_CHECKING:
    from models.showo_magvit import MagvitV2


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

    def save_pretrained(self, out: Path) -> None:
        """``out/config.json``: the palette has no weights."""
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "config.json").write_text(json.dumps(self.config()), "utf-8")


MISSING_VQ = (
    "this Show-o checkpoint names no image tokenizer: its language model loads and samples / "
    "scores image codes, but images cannot be decoded or encoded. Put the MAGVIT-v2 tokenizer "
    "directory (Show-o's model.vq_model.vq_model_name, e.g. a local copy of showlab/magvitv2: "
    "config.json + pytorch_model.bin) at <checkpoint>/vq, or set config.json's "
    "'vq_model_name' to its local path (models/showo_vq.py)"
)
VQ_KEY = "vq_model_name"
"""Checkpoint ``config.json`` key naming the tokenizer directory (Show-o's experiment YAML
calls it ``model.vq_model.vq_model_name``); default: the checkpoint's ``vq/``."""


def vq_dir(path: Path, cfg: dict) -> Path | None:
    """The tokenizer directory of the checkpoint at ``path`` (config.json read: ``cfg``): the
    local directory ``vq_model_name`` names (absolute or relative to the checkpoint), else
    ``path/vq`` when it holds a config.json, else None. Reads no weights."""
    name = cfg.get(VQ_KEY)
    if name is None:
        return path / "vq" if (path / "vq" / "config.json").is_file() else None
    for cand in (Path(str(name)), path / str(name)):
        if (cand / "config.json").is_file():
            return cand
    raise FileNotFoundError(
        f"{path / 'config.json'}: {VQ_KEY}={name!r} is not a local directory with the image "
        "tokenizer's config.json (absolute, or relative to the checkpoint); download Show-o's "
        "MAGVIT-v2 (showlab/magvitv2) and set the path"
    )


def read_vq_config(directory: Path) -> dict:
    cfg_file = directory / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{cfg_file}: not a readable tokenizer config: {e}") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_file}: not a JSON object")
    return cfg


def load_vq(path: Path, cfg: dict) -> CellPalette | MagvitV2 | None:
    """The image tokenizer of the Show-o checkpoint at ``path`` (its config.json: ``cfg``):
    MAGVIT-v2 (``_class_name: MAGVITv2`` as published, or ``type: magvitv2``) or the toy
    world's palette (``type: palette``); None when the checkpoint names none (MISSING_VQ).
    Checked against ``cfg``'s ``codebook_size`` and ``num_vq_tokens``; fp32, eval, CPU."""
    from models.showo_magvit import is_magvit_config, load_magvit

    directory = vq_dir(path, cfg)
    if directory is None:
        return None
    cfg_file = directory / "config.json"
    vq_cfg = read_vq_config(directory)
    grid = round(cfg["num_vq_tokens"] ** 0.5)
    if is_magvit_config(vq_cfg):
        vq = load_magvit(directory, vq_cfg)
        if vq.codebook_size != cfg["codebook_size"]:
            raise ValueError(
                f"{cfg_file}: MAGVIT-v2 has 2^{vq.quantize.codebook_dim} = {vq.codebook_size} "
                f"codes but {path / 'config.json'} codebook_size is {cfg['codebook_size']}"
            )
        if vq.downsample != CELL:
            raise ValueError(
                f"{cfg_file}: encoder.ch_mult has {len(vq.settings['encoder']['ch_mult'])} "
                f"levels ({vq.downsample} px per code); Show-o's images are {CELL} px per code "
                "(5 levels)"
            )
        return vq
    kind = vq_cfg.get("type")
    if kind != CellPalette.kind:
        raise ValueError(
            f"{cfg_file}: type {kind!r} / _class_name {vq_cfg.get('_class_name')!r} is no image "
            f"tokenizer pairuni knows: MAGVIT-v2 (_class_name 'MAGVITv2' or type 'magvitv2') or "
            "the toy world's cell palette (type 'palette'); for a MAGVIT-v2 directory whose "
            'config.json says otherwise, add "type": "magvitv2" to it'
        )
    if vq_cfg.get("grid") != grid:
        raise ValueError(
            f"{cfg_file}: grid {vq_cfg.get('grid')} but config.json num_vq_tokens is {grid * grid}"
        )
    return CellPalette(grid, vq_cfg.get("cell", CELL), cfg["codebook_size"])


def to_pixels(images: list[np.ndarray], side: int) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` images -> ``[N, 3, side, side]`` in [-1, 1] (resized if needed)."""
    from PIL import Image

    out = []
    for img in images:
        if img.shape[:2] != (side, side):
            img = np.asarray(Image.fromarray(img).resize((side, side), Image.BICUBIC))
        out.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
    return torch.stack(out).float() / 127.5 - 1.0
