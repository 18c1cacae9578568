"""The model layer: the ``UnifiedPolicy`` interface (``models.interface``), the family
registry and policy builder (``models.registry``), and the Janus family (``models.unified``).

The Janus names below load ``models.unified`` (and with it transformers, ~3 s) on first
use, so that light modules (``models.config``, ``models.tasks``) import without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.unified import (
        ImageSamples,
        TextSamples,
        UnifiedModel,
        check_checkpoint_dir,
        load_unified_model,
        tiny_unified_model,
    )

__all__ = [
    "ImageSamples",
    "TextSamples",
    "UnifiedModel",
    "check_checkpoint_dir",
    "load_unified_model",
    "tiny_unified_model",
]


def __getattr__(name: str):
    if name in __all__:
        from models import unified

        return getattr(unified, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
