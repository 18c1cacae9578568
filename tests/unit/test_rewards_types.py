"""Request validation: every bad input names its field and its 4xx; config validation."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from models.config import ConfigError, from_dict
from rewards.accuracy import AccuracyItem
from rewards.config import RewardsConfig
from rewards.dual import DualItem
from rewards.hps import ImagePromptItem
from rewards.types import (
    Limits,
    RewardInputError,
    decode_image,
    encode_png,
    parse_request,
)

LIM = Limits(max_items=4, max_text_chars=100, min_image_side=8, max_image_side=256)


def _png(mode: str, size=(32, 16), fmt="PNG") -> str:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_png_round_trip_is_exact():
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(encode_png(img), "x", LIM), img)


def test_valid_requests_parse_into_typed_items():
    img = np.zeros((16, 16, 3), np.uint8)
    acc = parse_request(
        "accuracy",
        {
            "items": [
                {"response": "", "answer": "B"},
                {"response": "x", "answer": "2", "kind": "math"},
            ]
        },
        LIM,
    )
    assert acc == [AccuracyItem("", "B"), AccuracyItem("x", "2", "math")]
    (hps,) = parse_request("hps", {"items": [{"image": encode_png(img), "prompt": "a"}]}, LIM)
    assert isinstance(hps, ImagePromptItem) and hps.image.shape == (16, 16, 3)
    (dual,) = parse_request(
        "dual", {"items": [{"task": "generation", "image": img, "text": "a"}]}, LIM
    )
    assert isinstance(dual, DualItem) and dual.image is img


@pytest.mark.parametrize(
    ("endpoint", "payload", "field", "status"),
    [
        ("hps", [1, 2], "body", 400),
        ("hps", {}, "items", 422),
        ("hps", {"items": []}, "items", 422),
        ("hps", {"items": [{"prompt": "a", "image": _png("RGB")}] * 5}, "items", 413),
        ("hps", {"items": ["x"]}, "items[0]", 422),
        ("hps", {"items": [{"prompt": "a"}]}, "items[0].image", 422),
        ("hps", {"items": [{"image": _png("RGB")}]}, "items[0].prompt", 422),
        ("hps", {"items": [{"image": _png("RGB"), "prompt": "  "}]}, "items[0].prompt", 422),
        ("hps", {"items": [{"image": _png("RGB"), "prompt": "a" * 101}]}, "items[0].prompt", 413),
        ("hps", {"items": [{"image": "%%%not base64", "prompt": "a"}]}, "items[0].image", 422),
        (
            "hps",
            {"items": [{"image": base64.b64encode(b"hello").decode(), "prompt": "a"}]},
            "items[0].image",
            415,
        ),
        ("hps", {"items": [{"image": _png("RGBA"), "prompt": "a"}]}, "items[0].image", 422),
        ("hps", {"items": [{"image": _png("L"), "prompt": "a"}]}, "items[0].image", 422),
        ("hps", {"items": [{"image": _png("RGB", (4, 64)), "prompt": "a"}]}, "items[0].image", 422),
        (
            "hps",
            {"items": [{"image": _png("RGB", (300, 64)), "prompt": "a"}]},
            "items[0].image",
            422,
        ),
        (
            "hps",
            {"items": [{"image": _png("RGB", fmt="GIF"), "prompt": "a"}]},
            "items[0].image",
            415,
        ),
        (
            "hps",
            {"items": [{"image": np.zeros((16, 16), np.uint8), "prompt": "a"}]},
            "items[0].image",
            422,
        ),
        (
            "hps",
            {"items": [{"image": np.zeros((16, 16, 3), np.float32), "prompt": "a"}]},
            "items[0].image",
            422,
        ),
        ("accuracy", {"items": [{"response": "B"}]}, "items[0].answer", 422),
        ("accuracy", {"items": [{"answer": "B"}]}, "items[0].response", 422),
        ("accuracy", {"items": [{"response": 3, "answer": "B"}]}, "items[0].response", 422),
        (
            "accuracy",
            {"items": [{"response": "B", "answer": "B", "kind": "exact"}]},
            "items[0].kind",
            422,
        ),
        (
            "accuracy",
            {"items": [{"response": "B", "answer": "B", "choices": [1, 2]}]},
            "items[0].choices",
            422,
        ),
        (
            "accuracy",
            {"items": [{"response": "B", "answer": "purple", "choices": ["red"]}]},
            "items[0].answer",
            422,
        ),
        # each of these answered 500 (a TypeError / IndexError past validation)
        (
            "accuracy",
            {"items": [{"response": "B", "answer": "B", "kind": ["math"]}]},
            "items[0].kind",
            422,
        ),
        (
            "accuracy",
            {"items": [{"response": "B", "answer": "B", "kind": {"a": 1}}]},
            "items[0].kind",
            422,
        ),
        (
            "accuracy",
            {"items": [{"response": "B", "answer": "B", "choices": [str(i) for i in range(27)]}]},
            "items[0].choices",
            422,
        ),
        # multi-letter or out-of-order keys: "B" scored 1.0 for an option that did not exist
        (
            "accuracy",
            {"items": [{"response": "B", "answer": "B", "choices": {"AA": "red", "BB": "blue"}}]},
            "items[0].choices",
            422,
        ),
        (
            "accuracy",
            {"items": [{"response": "B", "answer": "B", "choices": {"A": "red", "C": "blue"}}]},
            "items[0].choices",
            422,
        ),
        (
            "accuracy",
            {"items": [{"response": "B", "answer": "B", "choices": []}]},
            "items[0].choices",
            422,
        ),
        (
            "dual",
            {"items": [{"task": "both", "image": _png("RGB"), "text": "a"}]},
            "items[0].task",
            422,
        ),
        (
            "dual",
            {"items": [{"task": "understanding", "image": _png("RGB"), "text": ""}]},
            "items[0].text",
            422,
        ),
    ],
)
def test_bad_requests_name_the_field(endpoint, payload, field, status):
    with pytest.raises(RewardInputError) as info:
        parse_request(endpoint, payload, LIM)
    assert (info.value.field, info.value.status) == (field, status)
    assert str(info.value).startswith(f"{field}: ")


def test_unknown_endpoint_lists_valid_ones():
    with pytest.raises(
        ValueError, match=r"\['accuracy', 'clip_score', 'dual', 'hps', 'toy_judge'\]"
    ):
        parse_request("clip", {"items": []}, LIM)


def _cfg(**sections) -> RewardsConfig:
    return from_dict(RewardsConfig, sections, prefix="rewards.")


def test_config_defaults_validate_and_errors_name_the_key():
    RewardsConfig().validate()
    cases = [
        (dict(endpoints=("accuracy", "clip")), "rewards.endpoints"),
        (dict(hps={"arch": "ViT-B-32"}), "rewards.hps.arch"),
        (dict(hps={"precision": "fp8"}), "rewards.hps.precision"),
        (dict(hps={"min_replicas": 3, "max_replicas": 2}), "rewards.hps.min_replicas"),
        (dict(accuracy={"max_batch_size": 0}), "rewards.accuracy.max_batch_size"),
        (dict(accuracy={"math_workers": 0}), "rewards.accuracy.math_workers"),
        (dict(hps={"num_gpus": 0.5}), "rewards.hps.device"),  # a GPU reserved but cpu used
        (dict(dual={"num_gpus": 1.5}), "rewards.dual.num_gpus"),
        (dict(toy_judge={"num_cpus": -1}), "rewards.toy_judge.num_cpus"),
        (dict(client_mode="grpc"), "rewards.client_mode"),
        (dict(dual={"dtype": "int8"}), "rewards.dual.dtype"),
        (dict(client_chunk_size=300, max_items_per_request=256), "rewards.client_chunk_size"),
        (dict(client_backoff_s=10.0, client_backoff_max_s=5.0), "rewards.client_backoff_s"),
        (dict(hps={"arch": "tiny", "checkpoint": "/x.pt"}), "rewards.hps.checkpoint"),
        (dict(min_image_side=300, max_image_side=200), "rewards.min_image_side"),
    ]
    for sections, key in cases:
        with pytest.raises(ConfigError) as info:
            _cfg(**sections).validate()
        assert info.value.key == key, sections
    _cfg(hps={"num_gpus": 0.25, "device": "cuda", "precision": "bf16"}).validate()


def test_flat_keys_of_earlier_releases_read_as_their_nested_key():
    with pytest.warns(FutureWarning, match=r"rewards\.hps_max_batch_size is now rewards\.hps\."):
        old = _cfg(hps_max_batch_size=32, hps_arch="tiny", accuracy_math_workers=3)
    assert old == _cfg(hps={"max_batch_size": 32, "arch": "tiny"}, accuracy={"math_workers": 3})
    # both forms given: the later wins (an override comes after the file's section)
    with pytest.warns(FutureWarning):
        assert _cfg(hps={"arch": "ViT-H-14"}, hps_arch="tiny").hps.arch == "tiny"
        assert _cfg(hps_arch="tiny", hps={"arch": "ViT-H-14", "seed": 2}).hps.arch == "ViT-H-14"
        assert (
            _cfg(hps_seed=3, hps={"arch": "tiny"}).hps == _cfg(hps={"arch": "tiny", "seed": 3}).hps
        )
    with pytest.raises(ConfigError, match=r"rewards\.hps_batch.*did you mean"):
        _cfg(hps_batch=3)  # neither a key nor a flat key of one: named, with the closest


def test_every_config_field_has_a_docstring():
    from models.config import describe

    for key, _, doc in describe(RewardsConfig, "rewards."):
        assert doc, key


def test_serving_hps_without_weights_is_refused_before_anything_starts():
    from rewards.serve import build_app

    cfg = RewardsConfig()  # ViT-H-14, no checkpoint
    with pytest.raises(ConfigError, match=r"rewards\.hps\.checkpoint.*random weights"):
        cfg.check_deployable(["accuracy", "hps"])
    with pytest.raises(ConfigError, match=r"rewards\.hps\.checkpoint"):
        build_app("hps", {})  # serve run deploy/serve_rewards.yaml builds through this
    cfg.check_deployable(["accuracy"])  # no hps endpoint: nothing to refuse
    _cfg(hps={"arch": "tiny"}).check_deployable(["hps"])
    _cfg(hps={"allow_random_weights": True}).check_deployable(["hps"])
    _cfg(hps={"checkpoint": "/models/hps.pt"}).check_deployable(["hps"])
