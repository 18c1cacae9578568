"""VQ encoding as Janus's own image tokenizer does it: nearest code by cosine.

Janus's VQ-16 tokenizer (LlamaGen's VQ with ``codebook_l2_norm``) L2-normalises both the
encoder's latent ``z`` and the codebook before picking the nearest code, and decodes from the
normalised code vector. transformers' ``JanusVQVAEVectorQuantizer.forward`` (5.19) normalises
on decode (``get_codebook_entry``) but picks codes by the raw Euclidean distance, so its codes
are not the ones Janus produces for the same image (on the tiny test VQ, 26 of 64 differ).
``encode_images`` and everything built on it (DSR's R_U scores the input image's own tokens)
go through ``nearest_codes`` instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Code ids ``[B, h * w]`` of latents ``z [B, C, h, w]`` against ``codebook [V, C]``.

    Both sides are L2-normalised; for unit vectors ``|z - e|^2 = 2 - 2 z.e``, so the nearest
    code is the one of largest cosine (the first on a tie, as ``argmin`` picks)."""
    B, C = z.shape[:2]
    flat = F.normalize(z.float().permute(0, 2, 3, 1).reshape(-1, C), dim=-1)  # [B*h*w, C]
    codes = F.normalize(codebook.float(), dim=-1)  # [V, C]
    return (flat @ codes.T).argmax(-1).view(B, -1)


@torch.no_grad()
def encode(vqmodel, pixels: torch.Tensor) -> torch.Tensor:
    """Janus VQ token ids ``[B, K]`` of ``pixels [B, 3, S, S]`` in [-1, 1]."""
    z = vqmodel.quant_conv(vqmodel.encoder(pixels))  # [B, C, h, w]
    return nearest_codes(z, vqmodel.quantize.embedding.weight)
