"""Ray Data feature path (map_batches over an actor pool) on the local cluster: the same
features and failures as the in-process path."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pairing.config import FeatureConfig
from pairing.features import build_extractor, extract_features
from pairing.ray_features import extract_features_ray


def _png(color) -> bytes:
    im = Image.new("RGB", (40, 40), color)
    im.paste((color[2], 255 - color[1], color[0]), (0, 0, 13, 40))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_ray_data_features_match_local(ray_local):
    images = [
        _png((200, 10, 10)),
        _png((10, 200, 10)),
        b"not an image",
        _png((10, 10, 200)),
        _png((90, 90, 9)),
        _png((0, 120, 240)),
    ]
    cfg = FeatureConfig(
        allow_random_weights=True, image_size=32, batch_size=2, ray_actors=1, backend="ray"
    )
    got = extract_features_ray(images, cfg)
    want = extract_features(images, build_extractor(cfg), cfg.batch_size, progress=False)
    assert got.features.shape == (6, 2048)
    assert list(got.failed) == [2] and got.failed[2] == want.failed[2]
    np.testing.assert_allclose(got.features, want.features, atol=1e-5)
