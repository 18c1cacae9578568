"""DSR dual self-reward: the policy scores its own rollouts by the reversed likelihood.

DSR eq. 3, through the unified-model adapter (``models``):

* understanding rollout (image I, sampled text Y_T): R_U = mean_t log pi(x_V,t | Y_T), the
  input image's VQ tokens X_V given the sampled text;
* generation rollout (prompt X_T, generated image Y_V): R_G = mean_t log pi(x_T,t | Y_V),
  the prompt's tokens given the decoded generated image.

The scorer needs the *current* policy: ``apply_named_weights`` copies a new weight version
(name -> numpy array, the trainable parameters the learner publishes) into it. Pure
torch/numpy: no ray (``rewards/serve.py`` wraps it as a deployment).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from models.tasks import Task

TASKS: dict[str, Callable] = {
    Task.UND.display: lambda model, images, texts: model.dual_likelihood_understanding(
        images, texts
    ),
    Task.GEN.display: lambda model, images, texts: model.dual_likelihood_generation(images, texts),
}
"""Rollout task (its display name, the wire format's) -> its dual likelihood (R_U or R_G)."""


def apply_named_weights(model, named: dict) -> int:
    """Copy ``named`` (parameter name -> numpy array or tensor, e.g. the views
    ``actors.weights.unflatten_views`` gives of a published buffer) into ``model``'s
    parameters; returns the count.

    Every name must be a parameter of ``model.module`` with the same shape; nothing is copied if
    one is not (the model stays at its old version).
    """
    params = dict(model.module.named_parameters())
    unknown = sorted(set(named) - set(params))
    if unknown:
        raise KeyError(
            f"{len(unknown)} weight names are not parameters of the model, e.g. {unknown[:3]}"
        )
    for name, arr in named.items():
        if tuple(arr.shape) != tuple(params[name].shape):
            raise ValueError(
                f"weight {name!r} has shape {list(arr.shape)}; the model's "
                f"parameter has {list(params[name].shape)}"
            )
    with torch.no_grad():
        for name, arr in named.items():
            p = params[name]
            src = arr if isinstance(arr, torch.Tensor) else torch.from_numpy(np.asarray(arr))
            p.copy_(src.to(device=p.device, dtype=p.dtype))
    return len(named)


class DualScorer:
    """Batched DSR rewards: ``score(tasks, images, texts) -> list[float]`` in request order."""

    def __init__(
        self,
        model=None,
        *,
        model_path: str = "",
        device: str = "cpu",
        dtype: str = "float32",
        seed: int = 0,
        batch_size: int = 8,
    ):
        if model is None:
            from models import load_unified_model, tiny_unified_model

            if model_path:
                model = load_unified_model(model_path, dtype=dtype, device=device)
            else:
                model = tiny_unified_model(seed=seed).to(device)
        self.model = model
        self.batch_size = batch_size
        self.version = 0

    def load_weights(self, named: dict[str, np.ndarray], version: int) -> int:
        """Apply weight version ``version`` (name -> array); returns the parameters copied."""
        n = apply_named_weights(self.model, named)
        self.version = int(version)
        return n

    def score(
        self, tasks: Sequence[str], images: Sequence[np.ndarray], texts: Sequence[str]
    ) -> list[float]:
        """R_U / R_G of each rollout (DSR eq. 3); rollouts of one task run as batches."""
        if not len(tasks) == len(images) == len(texts):
            raise ValueError(f"{len(tasks)} tasks, {len(images)} images, {len(texts)} texts")
        bad = sorted({t for t in tasks if t not in TASKS})
        if bad:
            raise ValueError(f"unknown DSR tasks {bad}; valid: {sorted(TASKS)}")
        out = [float("nan")] * len(tasks)
        for task, fn in TASKS.items():
            idx = [i for i, t in enumerate(tasks) if t == task]
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s : s + self.batch_size]
                scores = fn(self.model, [images[i] for i in chunk], [texts[i] for i in chunk])
                for i, r in zip(chunk, scores):
                    out[i] = float(r)
        return out
