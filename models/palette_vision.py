"""A palette vision tower for the toy world: Janus's SigLIP modules, weights set in closed form.

Understanding in Janus goes through a pretrained SigLIP tower (frozen by default). The
quickstart has no pretrained tower (nothing downloads), and a randomly initialised one is a
poor stand-in: its features mix colour and position so that a linear probe trained on the
toy world's position questions reads the training images (0.81) but not held-out ones
(0.30, chance 0.25), and neither SFT nor RL taught the tiny model where a shape is. A real
pretrained encoder tells a language model what is where; ``set_palette_vision`` writes a
tower that does exactly that for the toy world's flat-colour cells, the way
``models/palette_vq.py`` writes a tokenizer. The modules and their shapes are Janus's own;
only values change:

* patch embedding: channel c (c < 6) of patch j is the nearest-colour logit of the patch's
  mean colour x (in [-1, 1]), (2 x . p_c - |p_c|^2) / 3, over the palette corners p_c
  (argmax_c = the nearest corner; the cells are flat, so the patch mean is the cell's colour);
* position embedding: patch j = (row r, column c) adds ``POSITION_SCALE`` to channel 6 + r
  and to channel 6 + 4 + c (a row one-hot and a column one-hot; the grid side is 4);
* every encoder layer's attention output projection and MLP output are zero, so the
  residual stream passes through unchanged; the final LayerNorm keeps its unit weight.

Each output token is then "this cell's colour, this cell's row and column", standardised by
the LayerNorm (a positive scale and a shift per token, so every argmax above survives). The
aligner and the language model still learn to answer from these tokens: which cells differ
from the background (shape, count) and where they are (position).
"""

from __future__ import annotations

import torch

from models.palette_vq import palette_rgb

POSITION_SCALE = 2.0
"""Height of the row and column one-hots (the colour logits lie in [-3, 1])."""


@torch.no_grad()
def set_palette_vision(vision_model) -> None:
    """Write the palette tower into a ``JanusVisionModel`` (module docstring). Needs a square
    patch grid and hidden size >= 6 + 2 x grid side (the tiny shape: 64 >= 14)."""
    emb = vision_model.embeddings
    conv, pos = emb.patch_embedding, emb.position_embedding
    P = palette_rgb()  # [6, 3]
    K = P.shape[0]
    n_patches, dim = pos.weight.shape
    side = round(n_patches**0.5)
    if side * side != n_patches or dim < K + 2 * side:
        raise ValueError(
            f"the palette vision tower needs a square patch grid and hidden size >= "
            f"{K} + 2 x side; this tower has {n_patches} patches of width {dim}"
        )
    area = conv.weight.shape[2] * conv.weight.shape[3]
    conv.weight.zero_()
    conv.bias.zero_()
    for c in range(K):
        conv.weight[c] = (2 * P[c] / (3 * area))[:, None, None]  # mean over the patch
        conv.bias[c] = -(P[c] ** 2).sum() / 3
    pos.weight.zero_()
    for j in range(n_patches):
        r, c = divmod(j, side)
        pos.weight[j, K + r] = POSITION_SCALE
        pos.weight[j, K + side + c] = POSITION_SCALE
    for layer in vision_model.encoder.layers:
        for out in (layer.self_attn.projection_layer, layer.mlp.fc2):
            out.weight.zero_()
            out.bias.zero_()
