"""Text sampling backends that live in their own Python environment.

``actors.text_rollout.TEXT_BACKENDS`` names each backend; a backend whose engine is an
optional dependency is registered there as a small factory defined here, which imports
the engine's module only when the backend is built. So the main environment (no vLLM)
can validate configs that name ``vllm`` and start actors that run it under another
interpreter (``rollout.text_python``), and never imports vLLM itself.
"""

from __future__ import annotations


def vllm_text_backend(model_cfg, cfg):
    """Build ``actors.backends.vllm_backend.VLLMTextBackend`` (imports vLLM only now)."""
    from actors.backends.vllm_backend import VLLMTextBackend

    return VLLMTextBackend(model_cfg, cfg)
