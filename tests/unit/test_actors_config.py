"""RolloutConfig: defaults validate; each bad value names its dotted key; resources per role."""

from __future__ import annotations

from dataclasses import replace

import pytest

from actors.config import RolloutConfig
from models.config import ConfigError


def test_defaults_validate_and_resources_per_role():
    cfg = RolloutConfig(text_num_cpus=0.5, image_num_gpus=0.25)
    cfg.validate()
    assert cfg.resources("text") == {"num_cpus": 0.5, "num_gpus": 0.0}
    assert cfg.resources("image") == {"num_cpus": 1.0, "num_gpus": 0.25}
    with pytest.raises(ValueError, match="role 'reward'"):
        cfg.resources("reward")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("text_workers", -1, "rollout.text_workers=-1: must be an integer >= 0"),
        ("image_num_cpus", 0, "rollout.image_num_cpus=0: must be > 0"),
        ("text_num_gpus", 1.5, "rollout.text_num_gpus=1.5: must be >= 0, a fraction"),
        ("image_batch_size", 0, "rollout.image_batch_size=0: must be an integer >= 1"),
        (
            "text_backend",
            "sglang",
            "rollout.text_backend='sglang': is not one of \\['hf', 'vllm'\\]",
        ),
        ("text_top_p", 0.0, "rollout.text_top_p=0.0: must be in \\(0, 1\\]"),
        ("text_top_p", 0.9, "rollout.text_top_p=0.9: only the vllm backend samples with top-p"),
        (
            "text_vllm_kv_cache_gib",
            0,
            "rollout.text_vllm_kv_cache_gib=0: must be a whole number of GiB",
        ),
        (
            "text_python",
            "/nonexistent/bin/python",
            "rollout.text_python='/nonexistent/bin/python': is not an executable",
        ),
        ("group_size", 1, "rollout.group_size=1: must be an integer >= 2"),
        ("und_group_size", 1, "rollout.und_group_size=1: must be 0 \\(use rollout.group_size\\)"),
        ("gen_group_size", -2, "rollout.gen_group_size=-2: must be 0"),
        ("max_restarts", -1, "rollout.max_restarts=-1"),
        ("request_timeout_s", 0, "rollout.request_timeout_s=0"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message) as e:
        replace(RolloutConfig(), **{key: value}).validate()
    assert e.value.key == f"rollout.{key}" and "Fix:" in str(e.value)


def test_task_group_sizes_default_to_group_size():
    assert RolloutConfig(group_size=4).group_sizes() == (4, 4)
    assert RolloutConfig(group_size=4, und_group_size=16).group_sizes() == (16, 4)
    assert RolloutConfig(group_size=4, gen_group_size=2).group_sizes() == (4, 2)


def test_two_whole_gpus_are_allowed():
    replace(RolloutConfig(), image_num_gpus=2.0).validate()
