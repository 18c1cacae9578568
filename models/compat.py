"""Running the model families where an optional dependency is missing."""

from __future__ import annotations

import sys


def processor_without_torchvision() -> None:
    """Let ``models.tiny`` build its processor where torchvision cannot be imported.

    The vLLM environment has no torchvision (its PyPI wheels are CUDA builds that fail
    beside the CPU torch). transformers ships the same Janus
    image processor on a PIL backend; point the torchvision module's name at it. Only in
    this process, and only when torchvision is missing.
    """
    try:
        import torchvision  # noqa: F401

        return
    except ImportError:
        pass
    import types

    from transformers.models.janus import image_processing_pil_janus as pil

    name = "transformers.models.janus.image_processing_janus"
    if name not in sys.modules:
        shim = types.ModuleType(name)
        shim.JanusImageProcessor = pil.JanusImageProcessorPil
        sys.modules[name] = shim
