"""Reward request items, their validation, and the image wire format (pure: no ray).

A request is ``{"items": [item, ...]}``; the answer is ``{"rewards": [...]}`` aligned with the
items. Over HTTP images are base64 PNG strings; through a handle they are uint8 arrays
``[H, W, 3]`` (base64 PNG is accepted there too). Every check raises ``RewardInputError``
naming the field (``items[3].image``) and an HTTP status, so a bad request gets a 4xx that a
person can act on and never reaches a model.

Item fields per endpoint:

* accuracy: ``response`` (str, may be empty: a rollout can say nothing), ``answer``
  (non-empty str), ``kind`` (choice | math | text, default choice), ``choices`` (list of
  option texts, dict letter -> text, or null).
* hps: ``image``, ``prompt`` (non-empty str).
* dual: ``task`` (understanding | generation), ``image``, ``text`` (non-empty str): for
  understanding the input image and the sampled answer, for generation the generated image
  and the prompt.
"""

from __future__ import annotations

import base64
import binascii
import io
import string
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from models.tasks import TASKS
from rewards.accuracy import KINDS, gold_letter

DUAL_TASKS = tuple(t.display for t in TASKS)
LETTERS = string.ascii_uppercase


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


@dataclass(frozen=True)
class AccuracyItem:
    response: str
    answer: str
    kind: str = "choice"
    choices: list[str] | dict[str, str] | None = None


@dataclass(frozen=True)
class HpsItem:
    image: np.ndarray  # [H, W, 3] uint8
    prompt: str


@dataclass(frozen=True)
class DualItem:
    task: str
    image: np.ndarray  # [H, W, 3] uint8
    text: str


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


def _text(item: dict, key: str, field: str, lim: Limits, *, empty_ok: bool = False) -> str:
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


def _check_choice_keys(choices: list | dict, field: str) -> None:
    """1 to 26 options, lettered A, B, C, ... in order (a dict's keys, either case)."""
    if not 1 <= len(choices) <= len(LETTERS):
        raise RewardInputError(field, f"{len(choices)} options; 1 to {len(LETTERS)} (A-Z)")
    if isinstance(choices, dict):
        keys = [k.strip().upper() for k in choices]
        if keys != list(LETTERS[: len(keys)]):
            raise RewardInputError(
                field, f"keys {list(choices)} must be the letters A, B, C, ... in order"
            )


def _accuracy_item(item: dict, field: str, lim: Limits) -> AccuracyItem:
    response = _text(item, "response", field, lim, empty_ok=True)
    answer = _text(item, "answer", field, lim)
    kind = item.get("kind", "choice")
    if not isinstance(kind, str) or kind not in KINDS:
        raise RewardInputError(f"{field}.kind", f"{kind!r} is not one of {sorted(KINDS)}")
    choices = item.get("choices")
    ok = (
        choices is None
        or (isinstance(choices, list) and all(isinstance(c, str) for c in choices))
        or (
            isinstance(choices, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in choices.items())
        )
    )
    if not ok:
        raise RewardInputError(
            f"{field}.choices", "expected null, a list of strings or an object letter -> string"
        )
    if choices is not None:
        _check_choice_keys(choices, f"{field}.choices")
    if kind == "choice":
        try:
            gold_letter(answer, choices)
        except ValueError as e:
            raise RewardInputError(f"{field}.answer", str(e)) from None
    return AccuracyItem(response, answer, kind, choices)


def _image(item: dict, field: str, lim: Limits) -> np.ndarray:
    if "image" not in item:
        raise RewardInputError(f"{field}.image", "missing")
    return decode_image(item["image"], f"{field}.image", lim)


def _hps_item(item: dict, field: str, lim: Limits) -> HpsItem:
    return HpsItem(_image(item, field, lim), _text(item, "prompt", field, lim))


def _dual_item(item: dict, field: str, lim: Limits) -> DualItem:
    task = item.get("task")
    if task not in DUAL_TASKS:
        raise RewardInputError(f"{field}.task", f"{task!r} is not one of {list(DUAL_TASKS)}")
    return DualItem(task, _image(item, field, lim), _text(item, "text", field, lim))


ITEM_PARSERS = {"accuracy": _accuracy_item, "hps": _hps_item, "dual": _dual_item}
"""Endpoint name -> parser of one request item."""


def parse_request(endpoint: str, payload: Any, lim: Limits) -> list:
    """Validate a decoded request ``{"items": [...]}`` into typed items (or raise)."""
    if endpoint not in ITEM_PARSERS:
        raise ValueError(f"unknown endpoint {endpoint!r}; valid: {sorted(ITEM_PARSERS)}")
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
    parse_item = ITEM_PARSERS[endpoint]
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RewardInputError(f"items[{i}]", f"expected an object, got {type(item).__name__}")
        out.append(parse_item(item, f"items[{i}]", lim))
    return out
