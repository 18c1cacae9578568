"""The palette VQ: Janus's VQ modules with closed-form weights round-trip the toy world."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.palette_vq import PALETTE, set_palette_vq
from models.unified import tiny_unified_model

RGB = ((np.array(list(PALETTE.values())) + 1) * 127.5).astype(np.uint8)  # [6, 3]


@pytest.fixture(scope="module")
def model():
    m = tiny_unified_model(0)
    set_palette_vq(m.hf.model.vqmodel)
    return m


def test_encode_decode_round_trip(model):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=(6, 4, 4))
    labels[0] = 4
    labels[0, 1:3, 1:3] = 0  # a red square on white: 2 colours, 4 vs 12 cells
    labels[1] = 5
    labels[1, 0, 0] = 3  # one yellow cell of 16: the rarest share the decoder must saturate
    images = RGB[labels].repeat(16, 1).repeat(16, 2)  # [6, 64, 64, 3]
    codes = model.encode_images(list(images))
    assert torch.equal(codes, torch.as_tensor(labels.reshape(6, 16)))  # canonical codes 0..5
    assert np.array_equal(model.decode_images(codes), images)


def test_every_code_is_a_palette_colour(model):
    codes = torch.arange(256).view(16, 16)
    cells = model.decode_images(codes)[:, ::16, ::16]  # [16, 4, 4, 3]
    expected = RGB[(torch.arange(256) % 6).view(16, 4, 4).numpy()]  # code k -> colour k mod 6
    assert np.array_equal(cells, expected)


def test_one_colour_image_decodes_grey(model):
    # documented degenerate case: every indicator standardises to 0 -> output 0 -> 127/128
    out = model.decode_images(torch.zeros(1, 16, dtype=torch.long))
    assert np.all(np.abs(out.astype(int) - 127.5) <= 1)
