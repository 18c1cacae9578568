"""VQ encoding picks codes as Janus's tokenizer does: nearest by cosine (``models/vq.py``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models import tiny_unified_model, vq


def brute_force(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Nearest code of each normalised latent by explicit Euclidean distances, one at a time."""
    B, _, h, w = z.shape
    cb = F.normalize(codebook.double(), dim=-1)
    out = torch.empty(B, h * w, dtype=torch.long)
    for b in range(B):
        for i in range(h):
            for j in range(w):
                v = F.normalize(z[b, :, i, j].double(), dim=0)
                out[b, i * w + j] = ((cb - v) ** 2).sum(-1).argmin()
    return out


def test_nearest_codes_match_brute_force_on_random_latents():
    g = torch.Generator().manual_seed(0)
    for scale in (0.01, 1.0, 30.0):  # the latent's norm must not matter
        z = torch.randn(3, 8, 4, 5, generator=g) * scale
        codebook = torch.randn(50, 8, generator=g) * torch.rand(50, 1, generator=g) * 4
        assert torch.equal(vq.nearest_codes(z, codebook), brute_force(z, codebook))


def test_encode_images_uses_normalised_search_not_transformers_raw_distance():
    m = tiny_unified_model(seed=0)
    rng = np.random.default_rng(0)
    side = m.image_size
    images = rng.integers(0, 256, size=(2, side, side, 3), dtype=np.uint8)
    codes = m.encode_images(images)
    px = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # [-1, 1], no resize
    vqm = m.hf.model.vqmodel
    with torch.no_grad():
        z = vqm.quant_conv(vqm.encoder(px))
        want = brute_force(z, vqm.quantize.embedding.weight)
        raw = vqm.encode(px).image_tokens.view(2, -1)  # transformers: raw Euclidean distance
    assert torch.equal(codes, want)
    # The random tiny codebook has codes of different norms, so the two searches disagree:
    # the test would not tell them apart otherwise.
    assert (raw != want).sum() > 0
