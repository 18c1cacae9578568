"""Argument checks shared by model families: each error names the argument and the fix."""

from __future__ import annotations

import numpy as np


def check_text(name: str, texts) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError(f"{name} is empty; pass at least one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"{name}[{i}]={t!r} is empty or not a string; pass a non-empty string")
    return list(texts)


def check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: the number of samples per prompt must be an integer >= 1")


def check_cfg(cfg_weight: float) -> None:
    if not cfg_weight > 1.0:
        raise ValueError(
            f"cfg_weight={cfg_weight!r}: classifier-free guidance weight must be > 1 "
            "(Janus-Pro uses 5.0; w=1 would be the conditional policy: use mode='conditional')"
        )


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be > 0")


def as_rgb_list(images, name: str = "images") -> list[np.ndarray]:
    """Validate images (uint8 numpy [B,H,W,3] / [H,W,3] list, or PIL images) -> list of uint8 [H,W,3]."""
    from PIL import Image

    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"{name} has shape {images.shape}; expected uint8 [B, H, W, 3]")
        images = list(images)
    out = []
    for i, img in enumerate(images):
        if isinstance(img, Image.Image):
            if img.mode != "RGB":
                raise ValueError(
                    f"{name}[{i}] is a PIL image in mode {img.mode!r}; expected 'RGB' "
                    "(convert it with img.convert('RGB'))"
                )
            img = np.asarray(img)
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(
                f"{name}[{i}] has shape {img.shape}; expected [H, W, 3] (RGB, "
                f"channels last), got {img.shape[-1] if img.ndim == 3 else img.ndim} "
                "channels/dims"
            )
        if img.dtype != np.uint8:
            raise ValueError(f"{name}[{i}] has dtype {img.dtype}; expected uint8 in [0, 255]")
        out.append(img)
    if not out:
        raise ValueError(f"{name} is empty; pass at least one image")
    return out


def by_component(named: dict, prefixes) -> list[tuple[str, dict]]:
    """``named`` parameters grouped by ``(label, name prefix)`` pairs in that order, then
    ``("other", rest)`` when any are left: every parameter once (``UnifiedPolicy.components``)."""
    out = [
        (label, {n: p for n, p in named.items() if n.startswith(prefix)})
        for label, prefix in prefixes
    ]
    seen = {n for _, group in out for n in group}
    rest = {n: p for n, p in named.items() if n not in seen}
    return out + ([("other", rest)] if rest else [])
