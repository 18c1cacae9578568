"""HPSv2 scorer: reference preprocessing, checkpoint loading, batched == one at a time."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from rewards.hps import (
    ARCHS,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    HpsScorer,
    build_clip,
    load_hps_checkpoint,
    preprocess,
)


def _reference_preprocess(img: Image.Image, size: int = 224) -> torch.Tensor:
    """hpsv2's eval transform, re-typed from its open_clip fork with torchvision:
    ResizeMaxSize(size) (bicubic, round(side * scale), pad [w//2, h//2, w-w//2, h-h//2] fill 0),
    _convert_to_rgb, ToTensor, Normalize(OpenAI mean/std)."""
    width, height = img.size
    scale = size / float(max(height, width))
    new_size = tuple(round(d * scale) for d in (height, width))
    img = TF.resize(img, list(new_size), TF.InterpolationMode.BICUBIC)
    pad_h, pad_w = size - new_size[0], size - new_size[1]
    img = TF.pad(img, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    x = TF.to_tensor(img.convert("RGB"))
    return TF.normalize(x, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(64, 96), (300, 120), (224, 224), (50, 50), (17, 230)]
    return [rng.integers(0, 256, (*shapes[i % 5], 3), dtype=np.uint8) for i in range(n)]


def test_preprocess_pads_a_wide_image_like_the_hand_derivation():
    # 448 wide x 224 high, all white -> scale 0.5 -> 224 x 112; pad_h = 112, top 56 rows and
    # bottom 56 rows are black. White -> (1 - mean) / std, black -> -mean / std per channel.
    x = preprocess(np.full((224, 448, 3), 255, np.uint8))
    assert x.shape == (3, 224, 224)
    mean, std = torch.tensor(OPENAI_CLIP_MEAN), torch.tensor(OPENAI_CLIP_STD)
    white, black = (1 - mean) / std, -mean / std
    assert torch.allclose(x[:, 56:168, :].mean((1, 2)), white, atol=1e-6)
    assert torch.allclose(x[:, :56, :].mean((1, 2)), black, atol=1e-6)
    assert torch.allclose(x[:, 168:, :].mean((1, 2)), black, atol=1e-6)


def test_preprocess_matches_the_reference_transform():
    for img in _images(5, seed=1):
        if max(img.shape[:2]) == 224 and img.shape[0] != img.shape[1]:
            continue  # the reference leaves such images unpadded (module docstring)
        want = _reference_preprocess(Image.fromarray(img))
        assert torch.allclose(preprocess(img), want, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A tiny model saved in the published layout {'state_dict': ...}, and the model itself."""
    model = build_clip("tiny", seed=7)
    path = tmp_path_factory.mktemp("hps") / "HPS_tiny_compressed.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return str(path), model


def test_checkpoint_loads_and_changes_the_scores(tiny_ckpt):
    path, _ = tiny_ckpt
    imgs, prompts = _images(3), ["a red ball", "a cat on a mat", "mountains at dawn"]
    loaded = HpsScorer("tiny", checkpoint=path, seed=0).score(imgs, prompts)
    same_seed = HpsScorer("tiny", seed=7).score(imgs, prompts)  # the weights that were saved
    other = HpsScorer("tiny", seed=0).score(imgs, prompts)
    assert np.allclose(loaded, same_seed, atol=1e-6)
    assert not np.allclose(loaded, other, atol=1e-3)


def test_score_is_the_cosine_of_the_embeddings(tiny_ckpt):
    _, model = tiny_ckpt
    scorer = HpsScorer("tiny", seed=7)
    img, prompt = _images(1)[0], "a red ball"
    with torch.no_grad():
        f_i = model.encode_image(preprocess(img)[None])[0]
        f_t = model.encode_text(scorer.tokenizer([prompt]))[0]
    cos = float(f_i @ f_t / (f_i.norm() * f_t.norm()))
    assert scorer.score([img], [prompt])[0] == pytest.approx(cos, abs=1e-5)


def test_batched_scores_equal_one_at_a_time():
    scorer = HpsScorer("tiny", seed=3, batch_size=4)
    imgs = _images(6, seed=2)
    prompts = [f"prompt number {i}" for i in range(6)]
    batched = scorer.score(imgs, prompts)  # batches of 4 + 2
    single = [scorer.score([im], [p])[0] for im, p in zip(imgs, prompts)]
    assert np.allclose(batched, single, atol=1e-5)
    assert all(-1.0 <= s <= 1.0 for s in batched)


def test_checkpoint_errors_name_the_path_and_key(tmp_path):
    model = build_clip("tiny")
    with pytest.raises(FileNotFoundError, match=r"rewards\.hps\.checkpoint"):
        load_hps_checkpoint(model, str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}}, bad)
    with pytest.raises(ValueError, match="no 'state_dict'"):
        load_hps_checkpoint(model, str(bad))
    torch.save({"state_dict": {"visual.proj": torch.zeros(2)}}, bad)
    with pytest.raises(ValueError, match=r"does not fit the model \(rewards\.hps\.arch\)"):
        load_hps_checkpoint(model, str(bad))
    with pytest.raises(ValueError, match=r"valid: \['ViT-H-14', 'tiny'\]"):
        build_clip("ViT-Z")
    assert sorted(ARCHS) == ["ViT-H-14", "tiny"]


@pytest.mark.slow
def test_vit_h_14_random_weights_end_to_end():
    # The published architecture (986 M parameters) with random weights scores one image end
    # to end (checkpoint loading is covered on the tiny config: a 4 GB file is too big here).
    import open_clip  # noqa: F401  (import time is not the scorer's)

    # CPU seconds, not wall seconds: other work on a shared machine does not count. Budget:
    # 60 s on 2 cores.
    t0 = time.process_time()
    scorer = HpsScorer("ViT-H-14", seed=0)
    assert sum(p.numel() for p in scorer.model.parameters()) > 9e8
    assert scorer.image_size == 224
    (s,) = scorer.score(_images(1), ["a photo of a red ball on green grass"])
    assert np.isfinite(s) and -1.0 <= s <= 1.0
    assert time.process_time() - t0 < 2 * 60
