"""DSR dual self-reward: the policy scores its own rollouts by the reversed likelihood.

DSR eq. 3, through the unified-model adapter (``models``):

* understanding rollout (image I, sampled text Y_T): R_U = mean_t log pi(x_V,t | Y_T), the
  input image's VQ tokens X_V given the sampled text;
* generation rollout (prompt X_T, generated image Y_V): R_G = mean_t log pi(x_T,t | Y_V),
  the prompt's tokens given the decoded generated image.

The scorer needs the *current* policy: ``apply_named_weights`` copies a new weight version
(name -> numpy array, the trainable parameters the learner publishes) into it. Pure
torch/numpy, no ray; torch is imported where weights are copied, so that the ``dual``
endpoint's declaration at the end of this module is read without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from models.config import DTYPES, MaskedDiffusionConfig, check
from models.tasks import TASKS as ALL_TASKS
from models.tasks import Task
from rewards.spec import EndpointSettings, EndpointSpec, Scorer, declare
from rewards.types import Limits, RewardInputError, image_field, text_field

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
    import torch

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
        arch: str = "janus",
        diffusion: MaskedDiffusionConfig | None = None,
    ):
        if model is None:
            from models.config import ModelConfig
            from models.registry import build_policy

            # The builder the learner and the rollout workers use: the same parameter names,
            # so the policy's weight versions load into this copy; ``diffusion`` (the run's
            # model.diffusion) gives a masked-diffusion family the policy's own estimator.
            model = build_policy(
                ModelConfig(
                    arch=arch,
                    path=model_path,
                    dtype=dtype,
                    device=device,
                    seed=seed,
                    diffusion=diffusion or MaskedDiffusionConfig(),
                )
            )
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


# ---- the endpoint ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DualItem:
    """One request item: ``task`` (understanding | generation), ``image``, ``text``: for
    understanding the input image and the sampled answer, for generation the generated image
    and the prompt."""

    task: str
    image: np.ndarray  # [H, W, 3] uint8
    text: str


DUAL_TASKS = tuple(t.display for t in ALL_TASKS)


def parse_item(item: dict, field: str, lim: Limits) -> DualItem:
    """A request item -> ``DualItem``; ``RewardInputError`` naming the field if bad."""
    task = item.get("task")
    if task not in DUAL_TASKS:
        raise RewardInputError(f"{field}.task", f"{task!r} is not one of {list(DUAL_TASKS)}")
    return DualItem(task, image_field(item, field, lim), text_field(item, "text", field, lim))


def item_of(rollout) -> dict | None:
    """R_U: the input image given the sampled answer (None for an empty answer: it has no
    likelihood to score); R_G: the prompt given the generated image."""
    if rollout.task == Task.UND:
        if not (rollout.text or "").strip():
            return None
        return {"task": Task.UND.display, "image": rollout.request.image, "text": rollout.text}
    return {"task": Task.GEN.display, "image": rollout.image, "text": rollout.request.prompt}


@dataclass(frozen=True)
class DualSettings(EndpointSettings):
    """The DSR endpoint (``rewards.dual.*``): a scoring copy of the policy."""

    max_batch_size: int = 8
    arch: str = "janus"
    """Model family of the scoring copy (``model.arch`` of the run it scores for)."""
    model_path: str = ""
    """Local unified-model checkpoint directory. Empty: the run's model.path (the policy's
    start; the endpoint then follows its weights), or the tiny random model when that is
    empty too (tests)."""
    device: str = "cpu"
    """Torch device of the scoring copy of the policy."""
    dtype: str = "float32"
    """Parameter dtype of the scoring copy, float32 | bfloat16 | float16."""
    seed: int = 0
    """Seed of the tiny random model when model_path is empty."""
    follow_policy: bool = True
    """Load every weight version the trained policy publishes (DSR's self-reward). False:
    score with the checkpoint at model_path, frozen (the alternating strategy, DSR section
    4.5, where each model is rewarded by the other's likelihoods)."""
    diffusion: MaskedDiffusionConfig = dataclasses.field(default_factory=MaskedDiffusionConfig)
    """Image-token estimator of a masked-diffusion scoring copy (Show-o: steps, prompt-drop
    probability, mask seed; the keys of model.diffusion). A training run replaces it with its
    own model.diffusion (``deploy.train.policy_rewards``), so that R_U / R_G are the
    policy's own estimate; set here, it counts for a reward server started on its own."""

    def check_settings(self, key: str) -> None:
        from models.registry import FAMILIES

        super().check_settings(key)
        check(
            self.arch in FAMILIES,
            f"{key}.arch",
            self.arch,
            f"must be a registered model family, one of {list(FAMILIES)}",
            "use the run's model.arch",
        )
        check(
            self.device == "cpu" or self.device.startswith("cuda"),
            f"{key}.device",
            self.device,
            "must be cpu, cuda or cuda:N",
            "use cpu without a GPU",
        )
        check(
            self.dtype in DTYPES,
            f"{key}.dtype",
            self.dtype,
            f"must be one of {DTYPES}",
            "use float32 on CPU, bfloat16 on GPU",
        )
        self.diffusion.validate()  # its keys are model.diffusion's, what a run copies here


class DualEndpointScorer(Scorer):
    """The replica's ``DualScorer``; follows the policy's weight versions."""

    def __init__(self, s: DualSettings):
        self.model = DualScorer(
            model_path=s.model_path,
            device=s.device,
            dtype=s.dtype,
            seed=s.seed,
            batch_size=s.max_batch_size,
            arch=s.arch,
            diffusion=s.diffusion,
        )

    def score(self, items: list[DualItem]) -> list[float]:
        return self.model.score(
            [it.task for it in items], [it.image for it in items], [it.text for it in items]
        )

    @property
    def version(self) -> int:
        return self.model.version

    def load_weights(self, named: dict, version: int) -> int:
        return self.model.load_weights(named, version)

    def stats(self) -> dict:
        return {"version": self.model.version}


SPEC = declare(
    EndpointSpec(
        name="dual",
        tasks=(Task.UND, Task.GEN),
        settings=DualSettings,
        parse_item=parse_item,
        item_of=item_of,
        make_scorer=DualEndpointScorer,
        title="pairuni DSR dual-likelihood reward",
        follows_policy=True,
    )
)
