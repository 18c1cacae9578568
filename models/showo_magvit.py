"""MAGVIT-v2, the image tokenizer of a published Show-o: encoder, lookup-free quantizer, decoder.

Written from the description in Show-o's public repository (``models/modeling_magvitv2.py``
and ``models/common_modules.py``, class ``MAGVITv2``), with its module and parameter names, so
that the published tokenizer directory (``showlab/magvitv2``: ``config.json`` +
``pytorch_model.bin``) loads here with strict name matching.

* **Encoder** (``encoder.*``): a taming-style VQGAN encoder. ``conv_in``; per resolution level
  ``down.{i}.block.{j}`` residual blocks (GroupNorm(32) -> swish -> 3x3 conv, twice; a 1x1
  ``nin_shortcut`` where the width changes; no time embedding) and ``down.{i}.downsample.conv``
  (pad right/bottom by one, 3x3 stride-2 conv) on every level but the last; ``mid.block_1``,
  ``mid.attn_1`` (single-head self-attention over the h*w positions, 1x1 ``q``/``k``/``v``/
  ``proj_out``), ``mid.block_2``; ``norm_out``, swish, ``conv_out`` to ``z_channels``; a 1x1
  ``quant_conv``. Published: ``ch`` 128, ``ch_mult`` (1, 2, 2, 4, 4), ``num_res_blocks``
  (4, 3, 4, 3, 4), 13 latent channels, 16 x downsampling (four stride-2 levels).
* **Quantizer** (``quantize.*``), lookup-free (MAGVIT-v2, Yu et al. 2023, sec. 3.1): each
  latent channel is one bit, ``bit_c = z_c > 0`` (zero is bit 0); the code index reads the
  bits with channel 0 as the most significant, ``index = sum_c bit_c * 2^(C-1-c)``; code k
  decodes to the vector ``2 * bits(k) - 1`` in {-1, +1}^C. The published model stores both
  tables as buffers (``quantize.embedding [2^C, C]``, ``quantize.power_vals [C]``), so a
  checkpoint carries them; they are recomputed here and a loaded copy must agree.
  Codes of a ``h x w`` latent are row-major: ``[N, h * w]``.
* **Decoder** (``decoder.*``): ``post_quant_conv`` (1x1), ``conv_in`` to the widest level,
  ``mid.block_1`` / ``attn_1`` / ``block_2``, then ``up.{i}`` from the deepest level (``i`` =
  n-1) to ``i`` = 0: residual blocks and, above level 0, ``up.{i}.upsample.conv`` (nearest
  x2, 3x3 conv); ``norm_out``, swish, ``conv_out`` to RGB. Published: ``ch_mult``
  (1, 1, 2, 2, 4), ``num_res_blocks`` (4, 4, 3, 4, 3). Attention blocks inside levels exist
  only where ``resolution / 2^i`` is in ``attn_resolutions`` (published: [5], so none).

Pixels: in [-1, 1] both ways (Show-o's ``image_transform`` normalises with mean 0.5, std 0.5;
its inference maps the decoder's output by ``(x + 1) / 2`` and clamps). Show-o resizes the
shorter side and centre-crops; ``models.showo_vq.to_pixels`` resizes to the square directly.

Configuration: the published ``config.json`` holds only ``_class_name: "MAGVITv2"`` and a
library version (its ``__init__`` takes no arguments: the sizes above are fixed). pairuni
reads optional ``encoder``, ``decoder`` (the published ``VQGANEncoder`` / ``VQGANDecoder``
argument names: ``ch``, ``ch_mult``, ``num_res_blocks``, ``attn_resolutions``, ``dropout``,
``in_ch``, ``out_ch``, ``resolution``, ``z_channels``, ``double_z``) and ``quantize``
(``codebook_dim``) objects over those defaults; the tests use them for a tiny instance.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ENCODER = {"ch": 128, "ch_mult": [1, 2, 2, 4, 4], "num_res_blocks": [4, 3, 4, 3, 4],
           "attn_resolutions": [5], "dropout": 0.0, "in_ch": 3, "out_ch": 3, "resolution": 256,
           "z_channels": 13, "double_z": False}  # fmt: skip
"""Published ``VQGANEncoder`` arguments (Show-o ``models/modeling_magvitv2.py``)."""
DECODER = {**ENCODER, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": [4, 4, 3, 4, 3]}
"""Published ``VQGANDecoder`` arguments."""
QUANTIZE = {"codebook_dim": 13}
"""Published ``LFQuantizer`` argument: 13 bits, 8192 codes."""
CLASS_NAMES = ("MAGVITv2", "MAGViTv2")
"""``_class_name`` values of the published config (the class was spelled both ways)."""
WEIGHTS = ("pytorch_model.bin", "model.safetensors", "pytorch_model.safetensors")
"""Weight files read, in this order (the published tokenizer ships ``pytorch_model.bin``)."""


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """x + conv2(swish(norm2(conv1(swish(norm1(x)))))), x through a 1x1 conv if widths differ."""

    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """x + proj_out(softmax(q k^T / sqrt(C)) v) over the h*w positions, one head."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, 1, H*W, C]
        return x + self.proj_out(out[:, 0].transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric: right and bottom only


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(blocks: list[ResnetBlock], attn: list[AttnBlock]) -> nn.Module:
    level = nn.Module()
    level.block, level.attn = nn.ModuleList(blocks), nn.ModuleList(attn)
    return level


def _middle(c: int, dropout: float) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(c, c, dropout)
    mid.attn_1 = AttnBlock(c)
    mid.block_2 = ResnetBlock(c, c, dropout)
    return mid


def _run_level(level: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for j, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[j](h)
    return h


def _run_middle(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


class Encoder(nn.Module):
    """Pixels ``[N, in_ch, S, S]`` -> latent ``[N, z_channels, S / 2^(n-1), S / 2^(n-1)]``."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, dropout, in_ch, out_ch,
                 resolution, z_channels, double_z):  # fmt: skip
        super().__init__()
        n = len(ch_mult)
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down = nn.ModuleList()
        c, res = ch, resolution
        for i in range(n):
            c_out = ch * ch_mult[i]
            blocks = [ResnetBlock(c if j == 0 else c_out, c_out, dropout)
                      for j in range(num_res_blocks[i])]  # fmt: skip
            attn = [AttnBlock(c_out) for _ in blocks] if res in attn_resolutions else []
            level = _level(blocks, attn)
            c = c_out
            if i != n - 1:
                level.downsample = Downsample(c)
                res //= 2
            self.down.append(level)
        self.mid = _middle(c, dropout)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, 2 * z_channels if double_z else z_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(z_channels, z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = _run_middle(self.mid, h)
        return self.quant_conv(self.conv_out(_swish(self.norm_out(h))))


class Decoder(nn.Module):
    """Latent ``[N, z_channels, s, s]`` -> pixels ``[N, out_ch, s * 2^(n-1), s * 2^(n-1)]``."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, dropout, in_ch, out_ch,
                 resolution, z_channels, double_z):  # fmt: skip
        super().__init__()
        n = len(ch_mult)
        c = ch * ch_mult[-1]
        res = resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(z_channels, c, 3, padding=1)
        self.mid = _middle(c, dropout)
        levels = {}
        for i in reversed(range(n)):  # built deepest first; stored by level index
            c_out = ch * ch_mult[i]
            blocks = [ResnetBlock(c if j == 0 else c_out, c_out, dropout)
                      for j in range(num_res_blocks[i])]  # fmt: skip
            attn = [AttnBlock(c_out) for _ in blocks] if res in attn_resolutions else []
            levels[i] = _level(blocks, attn)
            c = c_out
            if i != 0:
                levels[i].upsample = Upsample(c)
                res *= 2
        self.up = nn.ModuleList(levels[i] for i in range(n))
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, out_ch, 3, padding=1)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)  # runs first; named last

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_middle(self.mid, self.conv_in(self.post_quant_conv(z)))
        for level in reversed(self.up):
            h = _run_level(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


def code_bits(codebook_dim: int) -> torch.Tensor:
    """``[2^C, C]`` bits of every code, channel 0 the most significant: row k = binary(k)."""
    shifts = torch.arange(codebook_dim - 1, -1, -1)  # [C]: C-1 ... 0
    return (torch.arange(2**codebook_dim)[:, None] >> shifts) & 1


class LFQuantizer(nn.Module):
    """Lookup-free quantizer: sign bits <-> code index (module docstring)."""

    def __init__(self, codebook_dim: int):
        super().__init__()
        self.codebook_dim, self.codebook_size = codebook_dim, 2**codebook_dim
        self.register_buffer("embedding", code_bits(codebook_dim).float() * 2 - 1)  # [2^C, C]
        self.register_buffer("power_vals", 2 ** torch.arange(codebook_dim - 1, -1, -1))  # [C]

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``[N, C, h, w]`` -> codes ``[N, h * w]`` (row-major)."""
        bits = (z > 0).long()  # [N, C, h, w]
        return (bits * self.power_vals.view(1, -1, 1, 1)).sum(1).flatten(1)

    def vectors(self, codes: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Codes ``[N, h * w]`` -> quantized latent ``[N, C, h, w]`` in {-1, +1}."""
        N = codes.shape[0]
        return self.embedding[codes.reshape(-1)].view(N, h, w, -1).permute(0, 3, 1, 2)


class MagvitV2(nn.Module):
    """Show-o's MAGVIT-v2 tokenizer: ``encode`` pixels -> codes, ``decode`` codes -> pixels."""

    kind = "magvitv2"

    def __init__(self, encoder: dict | None = None, decoder: dict | None = None,
                 quantize: dict | None = None):  # fmt: skip
        super().__init__()
        self.settings = {"encoder": {**ENCODER, **(encoder or {})},
                         "decoder": {**DECODER, **(decoder or {})},
                         "quantize": {**QUANTIZE, **(quantize or {})}}  # fmt: skip
        self.encoder = Encoder(**self.settings["encoder"])
        self.decoder = Decoder(**self.settings["decoder"])
        self.quantize = LFQuantizer(**self.settings["quantize"])
        self.source: Path | None = None  # the directory it was loaded from, if any

    @property
    def codebook_size(self) -> int:
        return self.quantize.codebook_size

    @property
    def downsample(self) -> int:
        """Pixels per code side: 2 per encoder level but the last."""
        return 2 ** (len(self.settings["encoder"]["ch_mult"]) - 1)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels [N, 3, S, S]`` in [-1, 1] -> codes ``[N, (S / 16)^2]`` (row-major)."""
        p = next(self.parameters())
        return self.quantize.indices(self.encoder(pixels.to(p.device, p.dtype)))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, K]`` (a square grid) -> pixels ``[N, 3, S, S]``, about [-1, 1]."""
        side = round(codes.shape[1] ** 0.5)
        if side * side != codes.shape[1]:
            raise ValueError(f"{codes.shape[1]} codes per image are not a square grid")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"codes in [{int(codes.min())}, {int(codes.max())}] outside the codebook "
                f"[0, {self.codebook_size})"
            )
        z = self.quantize.vectors(codes.long(), side, side)  # [N, C, side, side]
        return self.decoder(z.to(next(self.decoder.parameters()).dtype))

    def config(self) -> dict:
        return {"_class_name": CLASS_NAMES[0], "type": self.kind, **self.settings}

    def save_pretrained(self, out: str | os.PathLike) -> None:
        """``out/config.json`` + weights. A tokenizer loaded from a directory is linked (or
        copied) file by file as it was, so the published files stay as published."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if self.source is not None:
            for name in ("config.json", *WEIGHTS):
                src = self.source / name
                if src.is_file() and src.resolve() != (out / name).resolve():
                    _link_or_copy(src, out / name)
            return
        from safetensors.torch import save_file

        (out / "config.json").write_text(json.dumps(self.config(), indent=2), "utf-8")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / "model.safetensors"))


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)  # frozen weights: a hard link costs no space
    except OSError:
        shutil.copy2(src, dst)


def _sub_config(cfg: dict, key: str, cfg_file: Path) -> dict:
    sub = cfg.get(key) or {}
    allowed = set(QUANTIZE if key == "quantize" else ENCODER)
    if not isinstance(sub, dict) or set(sub) - allowed:
        bad = sorted(set(sub) - allowed) if isinstance(sub, dict) else sub
        raise ValueError(
            f"{cfg_file}: {key!r} has {bad!r}; it takes the published {key} arguments "
            f"{sorted(allowed)}"
        )
    return sub


def is_magvit_config(cfg: dict) -> bool:
    """Whether a tokenizer ``config.json`` names MAGVIT-v2 (published or pairuni-written)."""
    return cfg.get("type") == MagvitV2.kind or cfg.get("_class_name") in CLASS_NAMES


def load_magvit(directory: Path, cfg: dict) -> MagvitV2:
    """Build the MAGVIT-v2 ``directory/config.json`` (already read: ``cfg``) describes and
    load its weights with strict name matching; fp32, eval mode, no gradients, CPU."""
    cfg_file = directory / "config.json"
    subs = {k: _sub_config(cfg, k, cfg_file) for k in ("encoder", "decoder", "quantize")}
    try:
        vq = MagvitV2(**subs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg_file}: cannot build MAGVIT-v2 from {subs}: {e}") from e
    z, bits = vq.settings["encoder"]["z_channels"], vq.settings["quantize"]["codebook_dim"]
    if not (z == bits == vq.settings["decoder"]["z_channels"]):
        raise ValueError(
            f"{cfg_file}: encoder.z_channels={z}, decoder.z_channels="
            f"{vq.settings['decoder']['z_channels']} and quantize.codebook_dim={bits} must agree "
            "(one latent channel per code bit)"
        )
    weights = next((directory / w for w in WEIGHTS if (directory / w).is_file()), None)
    if weights is None:
        raise FileNotFoundError(
            f"{directory}: MAGVIT-v2 tokenizer without weights: none of {WEIGHTS}"
        )
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    own = vq.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]  # fmt: skip
    if missing or unexpected or shapes:
        raise ValueError(
            f"{weights}: not the MAGVIT-v2 layout {cfg_file} describes: missing "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''}, unexpected "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}, shapes {shapes[:4]}"
        )
    for name in ("quantize.embedding", "quantize.power_vals"):
        if not torch.equal(state[name].to(own[name].dtype), own[name]):
            raise ValueError(
                f"{weights}: {name} differs from the lookup-free code table (channel 0 the "
                "most significant bit); this tokenizer numbers its codes another way"
            )
    vq.load_state_dict(state, strict=True)
    vq.source = directory
    return vq.requires_grad_(False).eval()
