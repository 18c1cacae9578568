"""Model families by name (``model.arch``), and the one builder of a policy.

A family is registered here once, as the import path of its ``Family`` object, so that
naming the registry (config validation does) imports no model library. The learner, the
rollout workers and the DSR reward endpoint all build their copy with ``build_policy``, so
every copy has the same parameter names (what weight sync moves) and the same dtype rule.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.config import ModelConfig
    from models.interface import UnifiedPolicy

FAMILIES = {"janus": "models.unified:JANUS", "showo": "models.showo:SHOWO"}
"""``model.arch`` -> ``module:attribute`` of its ``Family``."""


@dataclass(frozen=True)
class Family:
    """What a model family registers: how to load it, build a tiny random one, check a path."""

    name: str
    load: Callable[..., UnifiedPolicy]
    """``load(path, dtype, device, *, train_vision_tower)``: a local checkpoint directory."""
    tiny: Callable[..., UnifiedPolicy]
    """``tiny(seed, *, train_vision_tower)``: a tiny random model, float32 on the CPU."""
    check_checkpoint: Callable[[str | os.PathLike, str], None]
    """``check_checkpoint(path, key)``: raise, naming ``key`` and the fix, unless ``path``
    holds a checkpoint this family loads. Cheap (no weights read): runs before any actor."""
    toy: Callable[..., UnifiedPolicy] | None = None
    """``toy(seed, *, hidden, layers)``: the tiny model of the quickstart's toy world, with
    closed-form image tokenizers for its flat-colour cells in place of pretrained ones
    (Janus: ``models/palette_vq.py`` + ``models/palette_vision.py``; Show-o:
    ``models.showo_vq.CellPalette``); None when the family has no toy-world instance."""
    configure: Callable[[UnifiedPolicy, ModelConfig], None] | None = None
    """``configure(policy, model_cfg)``: apply the family's own ``model.*`` settings (Show-o:
    ``model.diffusion``) to a built policy; None when it has none."""


def family(arch: str) -> Family:
    """The registered family ``arch``; a ValueError names ``model.arch`` and the choices."""
    if arch not in FAMILIES:
        raise ValueError(f"model.arch={arch!r} is not a registered family; one of {list(FAMILIES)}")
    module, attr = FAMILIES[arch].split(":")
    return getattr(importlib.import_module(module), attr)


def build_policy(
    model_cfg: ModelConfig, *, dtype: str | None = None, device: str | None = None
) -> UnifiedPolicy:
    """The policy ``model_cfg`` names: its checkpoint (``model.path``), or the family's tiny
    random model (seed ``model.seed``) when the path is empty; in ``dtype`` (default
    ``model.dtype``) on ``device`` (default ``model.device``), in eval mode, with the SigLIP
    tower trainable iff ``model.train_vision_tower``."""
    fam = family(model_cfg.arch)
    dtype = dtype or model_cfg.dtype
    device = device or model_cfg.device
    if model_cfg.path:
        m = fam.load(model_cfg.path, dtype, device, train_vision_tower=model_cfg.train_vision_tower)
    else:
        m = fam.tiny(model_cfg.seed, train_vision_tower=model_cfg.train_vision_tower)
        m.to(device, _torch_dtype(dtype))
    if fam.configure is not None:
        fam.configure(m, model_cfg)
    return m.eval()


def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)
