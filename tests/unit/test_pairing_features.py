"""Feature extractors (resnet50 from a local state_dict, hf:<dir> tiny DINOv2), batching
invariance, undecodable images, and the on-disk cache."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pairing.config import FeatureConfig
from pairing.features import (
    FeatureError,
    build_extractor,
    cached_features,
    extract_features,
    extractor_id,
)


def png(color, size=40) -> bytes:
    im = Image.new("RGB", (size, size), color)
    im.paste((255 - color[0], color[1] // 2, 30), (0, 0, size // 3, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


IMAGES = [png((200, 10, 10)), png((10, 200, 10)), b"garbage", png((10, 10, 200)), png((90, 90, 9))]


@pytest.fixture(scope="module")
def random_resnet():
    return build_extractor(FeatureConfig(allow_random_weights=True, image_size=32))


def test_resnet50_needs_weights_or_explicit_random():
    with pytest.raises(FeatureError, match="weights is empty"):
        build_extractor(FeatureConfig())
    with pytest.raises(FeatureError, match="file not found"):
        build_extractor(FeatureConfig(weights="/nonexistent/r50.pth"))
    with pytest.raises(FeatureError, match=r"valid: resnet50, hf:<local dir>, pixels"):
        build_extractor(FeatureConfig(extractor="clip"))


def test_pixels_is_the_scaled_image_and_its_cosine_counts_agreeing_cells():
    # Two 2 x 2-cell images, cells white (1, 1, 1) or red (1, -1, -1) in [-1, 1]: each cell
    # is 4 x 4 px at image_size 4 -> 4 values x 3 channels per cell. Image a: red in the
    # top-left cell, b: red in the bottom-right one. Per pixel, equal cells give 3, white vs
    # red 1 - 1 - 1 = -1: cos = (2 cells x 3 + 2 cells x (-1)) / (4 cells x 3) = 1/3.
    def cells(red_at):
        im = Image.new("RGB", (8, 8), (255, 255, 255))
        im.paste((255, 0, 0), (4 * red_at[1], 4 * red_at[0], 4 * red_at[1] + 4, 4 * red_at[0] + 4))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    ex = build_extractor(FeatureConfig(extractor="pixels", image_size=4))
    assert ex.dim == 48 and extractor_id(FeatureConfig(extractor="pixels", image_size=4)) == (
        "pixels:4"
    )
    res = extract_features([cells((0, 0)), cells((1, 1)), cells((0, 0))], ex, 2, progress=False)
    f = res.features
    assert float(f[0] @ f[1]) == pytest.approx(1 / 3, abs=1e-6)
    assert float(f[0] @ f[2]) == pytest.approx(1.0, abs=1e-6)


def test_resnet50_outputs_unit_2048_and_reports_undecodable(random_resnet):
    res = extract_features(IMAGES, random_resnet, batch_size=2, progress=False)
    assert res.features.shape == (5, 2048) and res.features.dtype == np.float32
    assert list(res.failed) == [2] and "undecodable" in res.failed[2]
    norms = np.linalg.norm(res.features, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 3, 4]], 1.0, rtol=1e-5)
    assert norms[2] == 0.0
    # Batching does not change features (eval mode: no batch statistics).
    one = extract_features(IMAGES, random_resnet, batch_size=5, progress=False)
    np.testing.assert_allclose(one.features, res.features, atol=1e-5)


def test_resnet50_loads_local_state_dict(tmp_path):
    import torchvision
    from torchvision import transforms

    torch.manual_seed(123)
    ref = torchvision.models.resnet50(weights=None).eval()
    torch.save(ref.state_dict(), tmp_path / "r50.pth")
    ex = build_extractor(FeatureConfig(weights=str(tmp_path / "r50.pth"), image_size=32))
    assert ex.extractor_id.startswith("resnet50:") and ex.extractor_id.endswith(":32")
    got, _ = ex.embed([IMAGES[0]])
    # The same network by hand: resize 32*256/224 = 37 px, centre-crop 32, ImageNet norm,
    # everything up to the pooled 2048-d feature, then L2-normalise.
    ref.fc = torch.nn.Identity()
    prep = transforms.Compose(
        [
            transforms.Resize(37),
            transforms.CenterCrop(32),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    with torch.no_grad():
        want = ref(prep(Image.open(io.BytesIO(IMAGES[0])).convert("RGB"))[None])[0].numpy()
    np.testing.assert_allclose(got[0], want / np.linalg.norm(want), atol=1e-5)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(FeatureError, match="not a torchvision ResNet-50 state_dict"):
        build_extractor(FeatureConfig(weights=str(tmp_path / "other.pth")))


def test_hf_extractor_from_local_dinov2(tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    model = Dinov2Model(cfg).eval()
    model.save_pretrained(tmp_path / "dino")
    proc = BitImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_convert_rgb=True
    )
    proc.save_pretrained(tmp_path / "dino")
    ex = build_extractor(FeatureConfig(extractor=f"hf:{tmp_path / 'dino'}"))
    res = extract_features(IMAGES, ex, batch_size=3, progress=False)
    assert res.features.shape == (5, 32) and list(res.failed) == [2]
    pixel = proc(images=Image.open(io.BytesIO(IMAGES[1])).convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        want = model(**pixel).pooler_output[0].numpy()  # CLS after the final layer norm
    np.testing.assert_allclose(res.features[1], want / np.linalg.norm(want), atol=1e-5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatureError, match="no config.json"):
        build_extractor(FeatureConfig(extractor=f"hf:{tmp_path / 'empty'}"))


def test_cache_hits_for_same_data_and_extractor(tmp_path, random_resnet):
    cfg = FeatureConfig(allow_random_weights=True, image_size=32, cache_dir=str(tmp_path))
    refs = [f"img{i}" for i in range(len(IMAGES))]
    calls = []

    def compute():
        calls.append(1)
        return extract_features(IMAGES, random_resnet, 4, progress=False)

    first = cached_features(cfg.cache_dir, refs, IMAGES, extractor_id(cfg), compute)
    again = cached_features(cfg.cache_dir, refs, IMAGES, extractor_id(cfg), compute)
    assert len(calls) == 1 and not first.from_cache and again.from_cache
    np.testing.assert_array_equal(first.features, again.features)
    assert again.failed == first.failed == {2: first.failed[2]}
    # Different pixels, or a different extractor id: a new key, so it computes again.
    changed = [*IMAGES[:-1], png((1, 2, 3))]
    cached_features(cfg.cache_dir, refs, changed, extractor_id(cfg), compute)
    cached_features(
        cfg.cache_dir,
        refs,
        IMAGES,
        extractor_id(FeatureConfig(allow_random_weights=True, image_size=64)),
        compute,
    )
    assert len(calls) == 3
