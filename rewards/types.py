"""Reward request items, their validation, and the image wire format (pure: no ray).

A request is ``{"items": [item, ...]}``; the answer is ``{"rewards": [...]}`` aligned with the
items. Over HTTP images are base64 PNG strings; through a handle they are uint8 arrays
``[H, W, 3]`` (base64 PNG is accepted there too). Every check raises ``RewardInputError``
naming the field (``items[3].image``) and an HTTP status, so a bad request gets a 4xx that a
person can act on and never reaches a model.

Each endpoint's item fields are its parser's (``EndpointSpec.parse_item``, in the endpoint's
module, built from ``text_field`` and ``image_field`` here; its item class's docstring lists
them: ``rewards.accuracy.AccuracyItem``, ``rewards.hps.ImagePromptItem``, ...).
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image


class RewardInputError(ValueError):
    """A request that cannot be scored: ``field`` names what is wrong, ``status`` is its 4xx."""

    def __init__(self, field: str, message: str, status: int = 422):
        self.field, self.message, self.status = field, message, status
        super().__init__(f"{field}: {message}")

    def __reduce__(self):  # picklable with its fields (Ray ships it from replica to caller)
        return (type(self), (self.field, self.message, self.status))


@dataclass(frozen=True)
class Limits:
    """Request limits (from ``RewardsConfig``)."""

    max_items: int = 256
    max_text_chars: int = 16384
    min_image_side: int = 8
    max_image_side: int = 2048

    @classmethod
    def from_config(cls, cfg) -> Limits:
        return cls(
            cfg.max_items_per_request, cfg.max_text_chars, cfg.min_image_side, cfg.max_image_side
        )


def encode_png(image: np.ndarray) -> str:
    """uint8 ``[H, W, 3]`` -> base64 PNG string (the HTTP wire format)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _check_side(h: int, w: int, field: str, lim: Limits) -> None:
    if min(h, w) < lim.min_image_side or max(h, w) > lim.max_image_side:
        raise RewardInputError(
            field,
            f"image is {w}x{h} pixels; each side must be in "
            f"[{lim.min_image_side}, {lim.max_image_side}]",
        )


def decode_image(value: Any, field: str, lim: Limits) -> np.ndarray:
    """A base64 PNG/JPEG string or a uint8 ``[H, W, 3]`` array -> uint8 ``[H, W, 3]``."""
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3:
            raise RewardInputError(
                field,
                f"array has dtype {value.dtype} and shape {list(value.shape)}; "
                "send uint8 [H, W, 3] RGB",
            )
        _check_side(value.shape[0], value.shape[1], field, lim)
        return value
    if not isinstance(value, str) or not value:
        raise RewardInputError(field, f"expected a base64 PNG string, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RewardInputError(field, "not valid base64") from None
    try:
        img = Image.open(io.BytesIO(raw))  # reads the header only
    except Exception:
        raise RewardInputError(field, "not a PNG or JPEG image", status=415) from None
    if img.format not in ("PNG", "JPEG"):
        raise RewardInputError(field, f"image format {img.format}; send PNG", status=415)
    if img.mode != "RGB":
        raise RewardInputError(
            field, f"image mode {img.mode}; send RGB (8 bits per channel, no alpha)"
        )
    _check_side(img.size[1], img.size[0], field, lim)
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)  # [H, W, 3]
    except Exception:
        raise RewardInputError(field, "image data is truncated or corrupt", status=415) from None


def text_field(item: dict, key: str, field: str, lim: Limits, *, empty_ok: bool = False) -> str:
    """``item[key]`` as a string (``field.key`` named when missing, not a string, empty unless
    ``empty_ok``, or longer than the limit)."""
    if key not in item:
        raise RewardInputError(f"{field}.{key}", "missing")
    value = item[key]
    if not isinstance(value, str):
        raise RewardInputError(f"{field}.{key}", f"expected a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise RewardInputError(f"{field}.{key}", "empty text")
    if len(value) > lim.max_text_chars:
        raise RewardInputError(
            f"{field}.{key}", f"{len(value)} characters; at most {lim.max_text_chars}", status=413
        )
    return value


def image_field(item: dict, field: str, lim: Limits) -> np.ndarray:
    """``item["image"]`` decoded (``decode_image``), ``field.image`` named when wrong."""
    if "image" not in item:
        raise RewardInputError(f"{field}.image", "missing")
    return decode_image(item["image"], f"{field}.image", lim)


def parse_request(endpoint: str, payload: Any, lim: Limits) -> list:
    """Validate a decoded request ``{"items": [...]}`` into typed items (or raise)."""
    from rewards.spec import endpoints

    specs = endpoints()
    if endpoint not in specs:
        raise ValueError(f"unknown endpoint {endpoint!r}; valid: {sorted(specs)}")
    if not isinstance(payload, dict):
        raise RewardInputError(
            "body",
            f'expected an object {{"items": [...]}}, got {type(payload).__name__}',
            status=400,
        )
    items = payload.get("items")
    if items is None:
        raise RewardInputError("items", "missing")
    if not isinstance(items, list) or not items:
        raise RewardInputError("items", "expected a non-empty list")
    if len(items) > lim.max_items:
        raise RewardInputError(
            "items",
            f"{len(items)} items; at most {lim.max_items} per request (split the batch)",
            status=413,
        )
    parse_item = specs[endpoint].parse_item
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RewardInputError(f"items[{i}]", f"expected an object, got {type(item).__name__}")
        out.append(parse_item(item, f"items[{i}]", lim))
    return out
