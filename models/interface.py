"""What every model family gives the rest of pairuni: the ``UnifiedPolicy`` contract.

The learner, the rollout workers, the reward endpoints, export and evaluation hold a
policy only through this interface; nothing outside ``models/`` names a family's classes or
its underlying modules. A family is registered once in ``models.registry.FAMILIES`` and
selected by ``model.arch``; ``models.registry.build_policy`` is the one builder that
learner and workers share. This module imports no heavy library, so configs and type hints
can name it for free.

The contract, written against both kinds of family the project targets:

* **Autoregressive image tokens** (Janus, implemented: ``models.unified.UnifiedModel``).
  An image is K discrete VQ codes drawn left to right; classifier-free guidance mixes a
  conditional and an unconditional stream's logits, ``l_u + w (l_c - l_u)``.
* **Masked discrete diffusion** (Show-o: ``models/showo.py``; Lumina-DiMOO not yet). An
  image is K codes revealed over a few unmasking steps, many per step.

What the learner needs from image tokens is the same for both: ``image_logprobs`` returns
``[N, K]`` per-token log-probs, differentiable with respect to the trainable parameters,
of exactly the policy ``sample_image_tokens`` drew from (``logprob_mode``), so that
``exp(learner - sampler)``, PPO's ratio, is 1 on-policy up to numerical error. For the
autoregressive family each entry is the exact causal conditional log pi(x_k | x_<k, prompt).
For a masked-diffusion family each entry is an *estimate*: the log-prob of token k when it
is predicted in one unmasking step from the state in which the sampler revealed it (or,
where the sampler's states are not kept, from a fully masked canvas: the one-step
estimate); the sampler must return the same estimate for the tokens it drew. Nothing in
the learner relies on the entries summing to an exact sequence log-likelihood; a family
says in its docstring which estimate it implements. ``image_logprobs`` takes the tokens
(plus prompts and the guidance settings) and, where the sampler gave one, ``order``: the
step that revealed each token (``ImageSamples.order``, kept on the rollout as
``Rollout.image_order``). Anything else a family needs to reproduce its estimate is a
function of (prompt, tokens, order, seed), never hidden sampler state the learner cannot
see.

Supervised fine-tuning does not go through ``image_logprobs``: ``image_supervised_logprobs``
is the family's own training objective (required). For an autoregressive family it is the
same teacher-forced log-probs; for a masked-diffusion family it is the masked-token
cross-entropy on randomly masked canvases, because fitting the one-step estimate teaches
only each token's marginal given the prompt, which parallel unmasking cannot sample from.

Text answers are autoregressive in both families: ``sample_text`` / ``text_logprobs`` are
softmax(lm_head / T) per answer token, padded ``[N, T]`` with a mask.

Samples come grouped by prompt: the n samples of prompt 0 first, then those of prompt 1;
log-prob calls take one prompt per row or one per group of n rows.

Weights: ``trainable_parameters()`` names what trains and what weight sync moves (the
names are the flat buffer's manifest; learner and workers build the same family, so the
names agree). ``module`` is the ``torch.nn.Module`` that owns every parameter (what
DeepSpeed wraps); mode switches go through ``train`` / ``eval``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch

    from models.text_tokens import Padded


@dataclass
class ImageSamples:
    """``tokens [N, K]`` and their log-probs under the sampling policy, ``logprobs [N, K]``;
    for a masked-diffusion family scoring by trajectory, ``order [N, K]``, the step that
    revealed each token, which ``image_logprobs(order=...)`` needs to score them again."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    order: torch.Tensor | None = None


@dataclass
class TextSamples:
    """Sampled answers: token ids (eos included when emitted), per-token log-probs, decoded texts."""

    token_ids: list[list[int]]
    logprobs: list[torch.Tensor]
    texts: list[str]


@runtime_checkable
class UnifiedPolicy(Protocol):
    """A unified understanding + generation model, as pairuni uses it (see the module text)."""

    tokenizer: object
    """The text tokenizer (``len``, ``eos_token_id``, ``batch_decode``)."""

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def num_image_tokens(self) -> int:
        """K: discrete tokens per generated image."""

    @property
    def image_size(self) -> int:
        """Side in pixels of generated (and encoded) images."""

    @property
    def module(self) -> torch.nn.Module:
        """The module owning every parameter (what DeepSpeed wraps)."""

    # ---- image generation -----------------------------------------------------------------
    def sample_image_tokens(
        self,
        prompts: list[str],
        n: int,
        cfg_weight: float = 5.0,
        temperature: float = 1.0,
        seed: int | None = None,
        greedy: bool = False,
        implementation: str = "reference",
        logprob_mode: str = "combined",
    ) -> ImageSamples:
        """n images' tokens per prompt, with the per-token log-probs ``image_logprobs``
        gives the same tokens in ``logprob_mode``."""

    def image_logprobs(
        self,
        prompts: list[str],
        tokens: torch.Tensor,
        cfg_weight: float = 5.0,
        mode: str = "combined",
        temperature: float = 1.0,
        chunk: int = 64,
        order: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced (or estimated) log-probs ``[N, K]``; differentiable. ``order``: the
        sampler's ``ImageSamples.order`` where it gave one (masked diffusion's trajectory
        estimate); an autoregressive family has one order and refuses another."""

    def image_supervised_logprobs(
        self, prompts: list[str], codes: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The supervised (SFT) image objective of the family: ``(values [N, K], mask [N, K])``
        for one prompt per row of ground-truth ``codes``; the loss is the NLL of ``values``
        where ``mask`` is True. Any randomness comes from ``generator`` (CPU), so a seeded
        SFT run repeats. Autoregressive (Janus): the exact conditional log-probs
        ``image_logprobs(..., mode="conditional")``, mask all True. Masked diffusion
        (Show-o): its training objective, log-probs on a partly masked canvas, mask = the
        masked positions."""

    def image_streams(self, mode: str) -> int:
        """Sequences the model runs per image row when ``image_logprobs`` scores in ``mode``
        (2 for CFG's conditional + unconditional pair; a masked-diffusion trajectory
        estimate runs that per unmasking step): the learner's micro-batch cost."""

    def decode_images(self, tokens: torch.Tensor) -> np.ndarray:
        """Image tokens ``[N, K]`` -> uint8 RGB ``[N, H, W, 3]``."""

    def encode_images(self, images) -> torch.Tensor:
        """uint8 RGB images -> their image tokens ``[N, K]``."""

    # ---- understanding --------------------------------------------------------------------
    def prompt_length(self, image, question: str) -> int:
        """Tokens of the understanding prompt as the model reads it (image tokens included)."""

    def sample_text(
        self,
        images,
        questions: list[str],
        n: int,
        temperature: float = 1.0,
        max_new_tokens: int = 64,
        seed: int | None = None,
        greedy: bool = False,
    ) -> TextSamples:
        """n answers per (image, question), with per-token log-probs."""

    def text_logprobs(
        self, images, questions: list[str], token_ids: list[list[int]], temperature: float = 1.0
    ) -> Padded:
        """Teacher-forced log-probs of answers, padded ``[N, T]`` + mask; differentiable."""

    # ---- DSR dual likelihoods (DSR eq. 3) -------------------------------------------------
    def dual_likelihood_understanding(self, images, texts: list[str]) -> list[float]:
        """R_U: mean log-prob of the image's own tokens given the text (no guidance)."""

    def dual_likelihood_generation(self, images, prompts: list[str]) -> list[float]:
        """R_G: mean log-prob of the prompt's tokens given the generated image."""

    # ---- parameters, modes, checkpoints ---------------------------------------------------
    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """What trains, by the names weight sync uses."""

    def shared_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Trainable parameters both tasks run through (the interference diagnostic's)."""

    def components(self) -> list[tuple[str, dict[str, torch.nn.Parameter]]]:
        """Every parameter, once, grouped into labelled components (``pairuni model info``)."""

    def train(self, mode: bool = True) -> UnifiedPolicy: ...

    def eval(self) -> UnifiedPolicy: ...

    def freeze(self) -> UnifiedPolicy:
        """No parameter takes gradients; eval mode (a reference model)."""

    def enable_gradient_checkpointing(self) -> None: ...

    def to(self, device=None, dtype=None) -> UnifiedPolicy: ...

    def save(self, path: str | os.PathLike) -> None:
        """A checkpoint directory this family's loader reads back."""


@runtime_checkable
class DecoderBackbone(Protocol):
    """Optional: a family whose language model is a plain decoder another engine can serve
    (the vLLM text backend serves it as a ``LlamaForCausalLM`` fed prompt embeddings)."""

    def backbone_config(self, dtype: str) -> dict:
        """The language model's ``config.json`` in the serving engine's architecture."""

    def backbone_name(self, name: str) -> str | None:
        """A trainable parameter's name in that checkpoint; None if not part of the decoder."""

    def input_embeddings(self) -> tuple[str, torch.Tensor]:
        """The token-embedding table's parameter name and weight."""

    def prompt_embeds(self, images, questions: list[str]) -> list[torch.Tensor]:
        """One ``[L_i, D]`` input embedding per understanding prompt (no padding), the very
        embeddings ``text_logprobs`` scores answers after."""

    def release_backbone(self) -> None:
        """Free this copy's decoder (the engine holds it); trainable names stay."""
