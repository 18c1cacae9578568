"""The model interface: Janus meets it, ``model.arch`` picks the family, one builder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.config import ConfigError, ModelConfig
from models.interface import DecoderBackbone, UnifiedPolicy
from models.registry import FAMILIES, build_policy, family


@pytest.fixture(scope="module")
def tiny():
    return build_policy(ModelConfig())


def test_janus_is_a_unified_policy_and_a_decoder_backbone(tiny):
    assert isinstance(tiny, UnifiedPolicy)
    assert isinstance(tiny, DecoderBackbone)
    # Every method the protocol names exists on the family (runtime_checkable only looks at
    # names; this also covers the properties).
    wanted = [n for n in dir(UnifiedPolicy) if not n.startswith("_")]
    assert wanted and all(hasattr(tiny, n) for n in wanted)


def test_arch_is_checked_and_names_its_key():
    with pytest.raises(ConfigError, match="model.arch"):
        ModelConfig(arch="dimoo").validate()
    with pytest.raises(ValueError, match="model.arch='dimoo'.*janus"):
        family("dimoo")
    assert family("janus").name == "janus" and list(FAMILIES) == ["janus", "showo"]


def test_one_builder_same_names_for_learner_and_worker(tiny):
    # The learner builds float32 masters, a worker builds model.dtype: weight sync needs the
    # same trainable names (and shapes) on both.
    cfg = ModelConfig(dtype="bfloat16")
    worker = build_policy(cfg)
    learner = build_policy(cfg, dtype="float32")
    assert worker.dtype == torch.bfloat16 and learner.dtype == torch.float32
    w, lr = worker.trainable_parameters(), learner.trainable_parameters()
    assert list(w) == list(lr) and all(w[n].shape == lr[n].shape for n in w)
    # The same seed gives the same weights, whoever builds them.
    n = next(iter(w))
    torch.testing.assert_close(w[n].float(), lr[n].to(torch.bfloat16).float())
    assert not worker.module.training and not learner.module.training


def test_vision_tower_follows_the_config():
    frozen = build_policy(ModelConfig()).trainable_parameters()
    trained = build_policy(ModelConfig(train_vision_tower=True)).trainable_parameters()
    tower = [n for n in trained if n not in frozen]
    assert tower and all(n.startswith("model.vision_model.") for n in tower)


def test_components_hold_every_parameter_once(tiny):
    groups = tiny.components()
    names = [n for _, g in groups for n in g]
    assert len(names) == len(set(names)) == len(list(tiny.module.named_parameters()))
    labels = [label for label, _ in groups]
    assert "language model" in labels and "VQ model" in labels and "other" not in labels


def test_modes_and_freeze(tiny):
    m = build_policy(ModelConfig())
    assert m.train().module.training and not m.eval().module.training
    m.freeze()
    assert not any(p.requires_grad for p in m.module.parameters())
    assert m.image_streams("combined") == 2 and m.image_streams("conditional") == 1


def test_prompt_embeds_are_the_unpadded_prompts(tiny):
    rng = np.random.default_rng(0)
    side = tiny.image_size
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(2)]
    questions = ["What?", "What colour is the square in the top left corner?"]
    embeds = tiny.prompt_embeds(images, questions)
    lengths = [tiny.prompt_length(img, q) for img, q in zip(images, questions)]
    assert [e.shape[0] for e in embeds] == lengths and lengths[0] < lengths[1]
    name, table = tiny.input_embeddings()
    assert embeds[0].shape[1] == table.shape[1] and name in tiny.trainable_parameters()


def test_backbone_names_cover_the_decoder_and_config_is_llama(tiny):
    names = [n for n in tiny.trainable_parameters() if tiny.backbone_name(n)]
    assert any(n.startswith("lm_head") for n in names)
    assert tiny.backbone_config("float32")["model_type"] == "llama"
