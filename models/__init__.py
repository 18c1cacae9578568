"""The unified-model adapter (Janus via transformers' native implementation)."""

from models.unified import (
    ImageSamples,
    TextSamples,
    UnifiedModel,
    load_unified_model,
    tiny_unified_model,
)

__all__ = [
    "ImageSamples",
    "TextSamples",
    "UnifiedModel",
    "load_unified_model",
    "tiny_unified_model",
]
