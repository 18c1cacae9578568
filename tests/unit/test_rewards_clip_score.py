"""CLIP-score reward (DSR appendix A.4): OpenCLIP's own model and transform, weights from a
local file; and the endpoint is one declared module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.config import ConfigError
from rewards.clip_score import ClipScorer, ClipScoreSettings

ARCH = "ViT-B-32"  # the smallest ViT OpenCLIP ships a config for; random weights here


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48 + 16 * i, 64, 3), dtype=np.uint8) for i in range(3)]
    return images, ["a red square", "two blue dots on a white background", "a cat"]


def test_scores_are_open_clips_cosine_through_its_own_transform(inputs, tmp_path):
    import open_clip

    images, prompts = inputs
    scorer = ClipScorer(ARCH, seed=3, batch_size=2)
    got = scorer.score(images, prompts)
    # the reference: OpenCLIP's model + evaluation transform + tokenizer, same weights
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model, _, transform = open_clip.create_model_and_transforms(ARCH)
    tok = open_clip.get_tokenizer(ARCH)
    from PIL import Image

    with torch.no_grad():
        f_i = model.eval().encode_image(
            torch.stack([transform(Image.fromarray(x)) for x in images])
        )
        f_t = model.encode_text(tok(prompts))
    want = torch.nn.functional.cosine_similarity(f_i, f_t).tolist()
    assert got == pytest.approx(want, abs=1e-5)
    assert all(-1 <= g <= 1 for g in got)
    # a local weights file replaces the seed's random weights
    path = tmp_path / "clip.pt"
    torch.save(model.state_dict(), path)
    loaded = ClipScorer(ARCH, checkpoint=str(path), seed=99).score(images, prompts)
    assert loaded == pytest.approx(want, abs=1e-5)


def test_settings_name_their_keys():
    ClipScoreSettings(arch="tiny").check_settings("rewards.clip_score")
    with pytest.raises(ConfigError, match=r"rewards\.clip_score\.checkpoint"):
        ClipScoreSettings().check_deployable("rewards.clip_score")
    with pytest.raises(ConfigError, match=r"rewards\.clip_score\.device"):
        ClipScoreSettings(num_gpus=1.0).check_settings("rewards.clip_score")


def test_the_endpoint_is_one_declared_module():
    # its config section, its reward term and its driver items follow from the declaration
    from deploy.config import RunConfig, reward_terms
    from models.config import load_config
    from rewards.spec import request_items

    assert "clip_score" in reward_terms("gen") and "clip_score" not in reward_terms("und")
    cfg = load_config(
        RunConfig,
        None,
        [
            "rewards.endpoints=[accuracy, clip_score]",
            "train.gen_rewards={clip_score: 1.0}",
            "rewards.clip_score.arch=tiny",
        ],
    )
    assert cfg.rewards.clip_score.arch == "tiny"
    from actors.types import Rollout, RolloutRequest

    req = RolloutRequest(0, 0, "gen", "a red square", 1, 0)
    r = Rollout(req, 0, np.zeros(4, np.int64), np.zeros(4, np.float32), 0)
    r.image = np.zeros((8, 8, 3), np.uint8)
    kept, items = request_items("clip_score", [r])
    assert kept == [r] and items[0]["prompt"] == "a red square"
