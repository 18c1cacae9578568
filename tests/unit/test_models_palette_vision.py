"""The palette vision tower: Janus's SigLIP modules with closed-form weights tell, for every
understanding token, the colour of its cell and the cell's row and column."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.palette_vision import set_palette_vision
from models.palette_vq import PALETTE
from models.unified import tiny_unified_model

RGB = ((np.array(list(PALETTE.values())) + 1) * 127.5).astype(np.uint8)  # [6, 3]


@pytest.fixture(scope="module")
def model():
    m = tiny_unified_model(0)
    set_palette_vision(m.hf.model.vision_model)
    return m


def tokens(model, labels: np.ndarray) -> torch.Tensor:
    """The tower's output tokens ``[N, 16, D]`` for images of flat cells, through the
    processor the understanding path uses."""
    images = RGB[labels].repeat(16, 1).repeat(16, 2)  # [N, 64, 64, 3]
    px = model.processor.image_processor(list(images), return_tensors="pt").pixel_values
    with torch.no_grad():
        return model.hf.model.vision_model(px).last_hidden_state


def test_each_token_names_its_cells_colour_row_and_column(model):
    labels = np.random.default_rng(0).integers(0, 6, size=(8, 4, 4))  # [N, 4, 4] colours
    h = tokens(model, labels)  # [8, 16, 64]
    assert torch.equal(h[..., :6].argmax(-1), torch.as_tensor(labels.reshape(8, 16)))
    rows, cols = np.divmod(np.arange(16), 4)  # token j is cell (j // 4, j % 4), raster order
    assert torch.equal(h[..., 6:10].argmax(-1), torch.as_tensor(rows).expand(8, 16))
    assert torch.equal(h[..., 10:14].argmax(-1), torch.as_tensor(cols).expand(8, 16))


def test_a_token_depends_on_its_own_cell_only(model):
    # the encoder layers are identities: changing cell (0, 0) changes token 0 and nothing else
    a = np.full((1, 4, 4), 4)  # white
    b = a.copy()
    b[0, 0, 0] = 0  # red in the top-left cell
    ha, hb = tokens(model, a), tokens(model, b)
    changed = (ha - hb).abs().amax(-1)[0]  # [16]
    assert changed[0] > 0.1
    assert torch.all(changed[1:] == 0)


def test_refuses_a_tower_too_narrow():
    from models.tiny import TinyShape

    m = tiny_unified_model(0, TinyShape(vision_hidden=8))
    with pytest.raises(ValueError, match="hidden size"):
        set_palette_vision(m.hf.model.vision_model)
