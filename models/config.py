"""Model configuration, and the error type every package's config uses.

Each package owns one frozen dataclass (``ModelConfig`` here, ``PairingConfig`` in
``pairing/config.py``, ...). ``deploy/config.py`` composes them into the run config, reads
YAML and dotted overrides, and calls ``validate()`` on each. A field's docstring (the string
literal right under it) is its one-line documentation; ``deploy/config.py`` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work, named so that a person can fix it.

    The message reads ``<key>=<value>: <constraint>. Fix: <fix>``.
    """

    def __init__(self, key: str, value: Any, constraint: str, fix: str):
        self.key, self.value, self.constraint, self.fix = key, value, constraint, fix
        super().__init__(f"{key}={value!r}: {constraint}. Fix: {fix}")


def check(ok: bool, key: str, value: Any, constraint: str, fix: str) -> None:
    """Raise ``ConfigError(key, value, constraint, fix)`` unless ``ok``."""
    if not ok:
        raise ConfigError(key, value, constraint, fix)


DTYPES = ("float32", "bfloat16", "float16")
LOGPROB_MODES = ("combined", "conditional")
IMAGE_IMPLEMENTATIONS = ("reference", "static")  # the keys of models.unified.IMAGE_SAMPLERS


@dataclass(frozen=True)
class ModelConfig:
    """The unified model: where it loads from and how it samples."""

    path: str = ""
    """Local checkpoint directory (HF format, as published for Janus-Pro). Empty: a tiny random model."""
    dtype: str = "float32"
    """Parameter dtype: float32 (CPU) | bfloat16 | float16."""
    device: str = "cpu"
    """Torch device for this role's copy of the model: cpu | cuda | cuda:N."""
    cfg_weight: float = 5.0
    """Classifier-free guidance weight w for image tokens; must be > 1 (Janus-Pro uses 5)."""
    image_temperature: float = 1.0
    """Sampling temperature for image tokens."""
    text_temperature: float = 1.0
    """Sampling temperature for text answers."""
    max_new_tokens: int = 64
    """Longest sampled answer, in tokens."""
    image_logprob_mode: str = "combined"
    """Image-token policy the learner scores: combined (CFG-mixed, as sampled) | conditional (T2I-R1)."""
    image_logprob_chunk: int = 64
    """Image positions per chunk when the learner scores image tokens (head, log-softmax and
    their backward recomputed per chunk): bounds the [2N, K, 16384] fp32 logits; 0 = one pass."""
    image_implementation: str = "reference"
    """Image-token sampling loop: reference (plain loop) | static (static KV cache, CUDA graphs on GPU)."""
    train_vision_tower: bool = False
    """Train the SigLIP understanding tower too (frozen by default)."""
    seed: int = 0
    """Seed of the tiny random model when path is empty."""

    def validate(self) -> None:
        check(
            self.dtype in DTYPES,
            "model.dtype",
            self.dtype,
            f"must be one of {DTYPES}",
            "use float32 on CPU, bfloat16 on GPU",
        )
        check(
            self.cfg_weight > 1.0,
            "model.cfg_weight",
            self.cfg_weight,
            "must be > 1 (transformers' Janus image generation divides by it)",
            "use 5.0 as Janus-Pro does",
        )
        check(
            self.image_temperature > 0,
            "model.image_temperature",
            self.image_temperature,
            "must be > 0",
            "use 1.0",
        )
        check(
            self.text_temperature > 0,
            "model.text_temperature",
            self.text_temperature,
            "must be > 0",
            "use 1.0",
        )
        check(
            self.max_new_tokens >= 1,
            "model.max_new_tokens",
            self.max_new_tokens,
            "must be >= 1",
            "use 64",
        )
        check(
            self.image_logprob_mode in LOGPROB_MODES,
            "model.image_logprob_mode",
            self.image_logprob_mode,
            f"must be one of {LOGPROB_MODES}",
            "use 'combined'",
        )
        check(
            self.image_logprob_chunk >= 0,
            "model.image_logprob_chunk",
            self.image_logprob_chunk,
            "must be >= 0 (0: no chunking)",
            "use 64",
        )
        check(
            self.image_implementation in IMAGE_IMPLEMENTATIONS,
            "model.image_implementation",
            self.image_implementation,
            f"must be one of {IMAGE_IMPLEMENTATIONS}",
            "use 'static' for rollout speed, 'reference' to debug",
        )
        check(
            self.device == "cpu" or self.device.startswith("cuda"),
            "model.device",
            self.device,
            "must be cpu, cuda or cuda:N",
            "use cpu without a GPU",
        )
