"""The Janus family: the one place that touches Janus internals.

``UnifiedModel`` implements ``models.interface.UnifiedPolicy`` (and ``DecoderBackbone``)
and is registered as ``model.arch: janus`` (``JANUS``, ``models.registry``). It wraps
transformers' native ``JanusForConditionalGeneration`` with its processor and exposes what
the rest of pairuni needs: sampling text and image tokens with their log-probs,
teacher-forced log-probs (differentiable), VQ decode/encode, the DSR dual likelihoods
(DSR eq. 3) and the trainable-parameter split. Outputs with n samples per prompt are
grouped by prompt: the n samples of prompt 0 first, then those of prompt 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from models import image_tokens, static_sampler, text_tokens, vq
from models.checks import (
    as_rgb_list,
    by_component,
    check_cfg,
    check_n,
    check_temperature,
    check_text,
)
from models.interface import ImageSamples, TextSamples
from models.prompts import DESCRIBE_QUESTION
from models.registry import Family
from models.text_tokens import Padded

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Frozen by default: the SigLIP understanding tower and the VQ tokenizer.
VISION_TOWER, VQ_MODEL = "model.vision_model.", "model.vqmodel."
# The parameters both tasks run through: the language model, its token embeddings included.
LANGUAGE_MODEL = "model.language_model."
LM_HEAD = "lm_head."
# The token embedding: the vLLM text backend embeds prompts and fed-back tokens with it.
EMBED = LANGUAGE_MODEL + "embed_tokens.weight"
# ``pairuni model info``'s components: label -> parameter-name prefix.
COMPONENTS = (
    ("vision tower (SigLIP)", VISION_TOWER),
    ("understanding aligner", "model.aligner."),
    ("VQ model", VQ_MODEL),
    ("generation embeddings", "model.generation_embeddings."),
    ("generation aligner", "model.generation_aligner."),
    ("generation head", "model.generation_head."),
    ("language model", LANGUAGE_MODEL),
    ("LM head", LM_HEAD),
)
# Image-token samplers by name: same arguments, same draws for the same seed.
IMAGE_SAMPLERS = {"reference": image_tokens.sample, "static": static_sampler.sample}


class UnifiedModel:
    """A Janus model + processor, with pairuni's sampling and scoring API."""

    def __init__(self, hf_model, processor, *, train_vision_tower: bool = False):
        self.hf = hf_model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.train_vision_tower = train_vision_tower
        cfg = self.hf.generation_config
        cfg.bos_token_id = self.tokenizer.bos_token_id
        cfg.pad_token_id = self.tokenizer.pad_token_id
        cfg.eos_token_id = self.tokenizer.eos_token_id
        boi = self.tokenizer.convert_tokens_to_ids(self.tokenizer.boi_token)
        cfg.generation_kwargs = {
            **(getattr(cfg, "generation_kwargs", None) or {}),
            "boi_token_id": boi,
        }
        for name, p in self.hf.named_parameters():
            p.requires_grad_(self._is_trainable(name))

    # ---- properties ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.hf.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hf.dtype

    @property
    def num_image_tokens(self) -> int:
        return self.hf.config.vision_config.num_image_tokens

    @property
    def image_size(self) -> int:
        """Side of generated images in pixels (VQ grid side x 16)."""
        grid = self.hf.config.vq_config.num_patches
        return grid * 2 ** (len(self.hf.config.vq_config.channel_multiplier) - 1)

    def _is_trainable(self, name: str) -> bool:
        if name.startswith(VQ_MODEL):
            return False
        return self.train_vision_tower or not name.startswith(VISION_TOWER)

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Named parameters that train: LM, heads, embeddings, aligners (not SigLIP, not VQ)."""
        return {n: p for n, p in self.hf.named_parameters() if self._is_trainable(n)}

    def shared_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Trainable parameters that understanding and generation both use: the language
        model (token embeddings included). The text head, the image-generation embedding,
        aligner and head, and the understanding aligner each serve one task only."""
        return {
            n: p for n, p in self.trainable_parameters().items() if n.startswith(LANGUAGE_MODEL)
        }

    def components(self) -> list[tuple[str, dict[str, torch.nn.Parameter]]]:
        """Every parameter once, by Janus component (``COMPONENTS``), in that order."""
        return by_component(dict(self.hf.named_parameters()), COMPONENTS)

    # ---- modes --------------------------------------------------------------------------
    @property
    def module(self) -> torch.nn.Module:
        """The ``JanusForConditionalGeneration`` owning every parameter."""
        return self.hf

    def train(self, mode: bool = True) -> UnifiedModel:
        self.hf.train(mode)
        return self

    def eval(self) -> UnifiedModel:
        self.hf.eval()
        return self

    def freeze(self) -> UnifiedModel:
        """No gradients anywhere, eval mode: a frozen reference copy."""
        self.hf.requires_grad_(False).eval()
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each decoder layer in the backward pass (active in train mode only)."""
        self.hf.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )

    def to(self, device=None, dtype=None) -> UnifiedModel:
        self.hf.to(device=device, dtype=dtype)
        return self

    # ---- image generation ---------------------------------------------------------------
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
        """Sample n images' tokens per prompt from the CFG-combined policy (with log-probs).

        ``implementation`` picks the loop from ``IMAGE_SAMPLERS``: ``reference`` (plain loop,
        dynamic cache) or ``static`` (static KV cache, CUDA graphs on GPU).
        ``logprob_mode`` says which policy's log-probs come back for the drawn tokens: the
        one the learner scores (``image_logprobs(mode=...)``): ``combined`` (the CFG mix they
        were drawn from) or ``conditional`` (softmax(l_c / T), T2I-R1's policy).
        """
        prompts = check_text("prompts", prompts)
        check_n(n)
        check_cfg(cfg_weight)
        check_temperature(temperature)
        if implementation not in IMAGE_SAMPLERS:
            raise ValueError(
                f"implementation={implementation!r} is not one of {tuple(IMAGE_SAMPLERS)}"
            )
        if logprob_mode not in ("combined", "conditional"):
            raise ValueError(
                f"logprob_mode={logprob_mode!r} is not one of ('combined', 'conditional')"
            )
        tokens, logprobs = IMAGE_SAMPLERS[implementation](
            self.hf, self.tokenizer, prompts, n, cfg_weight, temperature, seed, greedy, logprob_mode
        )
        return ImageSamples(tokens, logprobs)

    def image_logprobs(
        self,
        prompts: list[str],
        tokens: torch.Tensor,
        cfg_weight: float = 5.0,
        mode: str = "combined",
        temperature: float = 1.0,
        chunk: int = image_tokens.LOGPROB_CHUNK,
        order: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced log-probs ``[N, K]`` of image tokens; differentiable.

        ``prompts`` has one entry per row of ``tokens`` or one per group of n rows.
        ``chunk`` bounds memory: image positions per head -> log-softmax pass, recomputed in
        the backward pass (0: one pass over all K, ~1.2 GB of fp32 logits per 16 rows).
        ``order`` must be None: Janus draws image tokens in raster order, one at a time.
        """
        if order is not None:
            raise ValueError(
                "order is a masked-diffusion sampler's reveal steps; Janus (model.arch=janus) "
                "draws image tokens in raster order and takes none"
            )
        prompts = check_text("prompts", prompts)
        if mode == "combined":
            check_cfg(cfg_weight)
        check_temperature(temperature)
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.ndim != 2 or tokens.shape[1] != self.num_image_tokens:
            raise ValueError(
                f"tokens has shape {tuple(tokens.shape)}; expected [N, "
                f"{self.num_image_tokens}] image token ids"
            )
        if tokens.shape[0] % len(prompts):
            raise ValueError(
                f"{tokens.shape[0]} token rows do not divide into {len(prompts)} prompts"
            )
        return image_tokens.logprobs(
            self.hf, self.tokenizer, prompts, tokens, cfg_weight, temperature, mode, chunk
        )

    def image_supervised_logprobs(
        self, prompts: list[str], codes: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The SFT image objective: the exact teacher-forced conditional log-probs of every
        code (``image_logprobs(..., mode="conditional")``) and an all-true mask;
        ``generator`` is unused (nothing is drawn)."""
        lp = self.image_logprobs(prompts, codes, mode="conditional")  # [N, K]
        return lp, torch.ones_like(lp, dtype=torch.bool)

    def image_streams(self, mode: str) -> int:
        """Sequences one image row costs when scored in ``mode``: the conditional and the
        unconditional stream for the CFG mix, the conditional one alone otherwise."""
        return 2 if mode == "combined" else 1

    @torch.no_grad()
    def decode_images(self, tokens: torch.Tensor) -> np.ndarray:
        """VQ-decode image tokens ``[N, K]`` into uint8 RGB images ``[N, H, W, 3]``.

        Each distinct row is decoded once (the decoder is per image, so equal rows decode
        to equal images): a group whose samples agree, as they increasingly do under RL,
        costs one decode instead of n."""
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)  # [U, K], [N]
        pixels = self.hf.model.vqmodel.decode(unique.to(self.device))  # [U, 3, H, W] in [-1, 1]
        pixels = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).cpu().numpy()[inverse.numpy()]

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        """VQ token ids ``[N, K]`` of images (resized and padded to the VQ resolution).

        Codes are picked by cosine, as Janus's tokenizer does (``models/vq.py`` says why this
        is not transformers' ``vqmodel.encode``)."""
        images = as_rgb_list(images)
        side = self.image_size
        px = self.processor.image_processor(
            images,
            size={"height": side, "width": side},
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
            return_tensors="pt",
        ).pixel_values  # [N, 3, S, S] in [-1, 1]
        return vq.encode(self.hf.model.vqmodel, px.to(self.device, self.dtype))

    # ---- understanding ------------------------------------------------------------------
    def _understanding_inputs(self, images, questions):
        questions = check_text("questions", questions)
        images = as_rgb_list(images)
        if len(images) != len(questions):
            raise ValueError(
                f"{len(images)} images for {len(questions)} questions; pass one image per question"
            )
        return images, questions

    def prompt_length(self, image, question: str) -> int:
        """Tokens of the understanding prompt for ``question`` about ``image`` as the model
        reads it (the image's placeholder tokens included)."""
        from models.prompts import understanding_prompt

        proc = self.processor
        enc = proc(text=[understanding_prompt(question, proc.image_token)], images=[image])
        return len(enc["input_ids"][0])

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
        """Sample n answers per (image, question), with per-token log-probs."""
        images, questions = self._understanding_inputs(images, questions)
        check_n(n)
        check_temperature(temperature)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be >= 1")
        ids, lps = text_tokens.sample(
            self.hf, self.processor, images, questions, n, temperature, max_new_tokens, seed, greedy
        )
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return TextSamples(ids, lps, [t.strip() for t in texts])

    def text_logprobs(
        self, images, questions: list[str], token_ids: list[list[int]], temperature: float = 1.0
    ) -> Padded:
        """Teacher-forced log-probs of answers, padded ``[N, T]`` + mask; differentiable."""
        images, questions = self._understanding_inputs(images, questions)
        check_temperature(temperature)
        if not token_ids or any(len(t) == 0 for t in token_ids):
            raise ValueError("token_ids must hold at least one non-empty answer per row")
        if len(token_ids) % len(questions):
            raise ValueError(
                f"{len(token_ids)} answers do not divide into {len(questions)} questions"
            )
        return text_tokens.logprobs(
            self.hf, self.processor, images, questions, token_ids, temperature
        )

    # ---- DSR dual likelihoods (DSR eq. 3) -----------------------------------------------
    @torch.no_grad()
    def dual_likelihood_understanding(self, images, texts: list[str]) -> list[float]:
        """R_U = mean_t log pi(x_V,t | Y_T): the image's own VQ tokens given the sampled text.

        The text plays the generation prompt; the policy is the conditional one (no CFG).
        """
        texts = check_text("texts", texts)
        codes = self.encode_images(images)
        lp = self.image_logprobs(texts, codes, mode="conditional")  # [N, K]
        return lp.mean(-1).tolist()

    @torch.no_grad()
    def dual_likelihood_generation(self, images, prompts: list[str]) -> list[float]:
        """R_G = mean_t log pi(x_T,t | Y_V): the prompt's tokens given the generated image.

        The prompt is scored as the answer to ``DESCRIBE_QUESTION`` about the image.
        """
        prompts = check_text("prompts", prompts)
        ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        lp = self.text_logprobs(images, [DESCRIBE_QUESTION] * len(prompts), ids)
        return ((lp.values * lp.mask).sum(-1) / lp.mask.sum(-1)).tolist()

    # ---- the language model as a plain decoder (``models.interface.DecoderBackbone``) -----
    def backbone_config(self, dtype: str) -> dict:
        """``config.json`` of the language model as a ``LlamaForCausalLM`` checkpoint."""
        return llama_config(self.hf.config.text_config, dtype)

    def backbone_name(self, name: str) -> str | None:
        return to_llama_name(name)

    def input_embeddings(self) -> tuple[str, torch.Tensor]:
        """The token-embedding table's parameter name and weight."""
        return EMBED, self.hf.get_input_embeddings().weight

    @torch.no_grad()
    def prompt_embeds(self, images, questions: list[str]) -> list[torch.Tensor]:
        """One ``[L_i, D]`` input embedding per understanding prompt, without padding: the
        embeddings ``text_logprobs`` teacher-forces the answer after (SigLIP features
        scattered into the image placeholders); the processor's left padding is dropped."""
        images, questions = self._understanding_inputs(images, questions)
        emb, mask = text_tokens.prompt_embeddings(
            self.hf, self.processor, images, questions, 1
        )  # [B, L, D], [B, L]
        return [e[m.bool()].contiguous() for e, m in zip(emb, mask)]

    def release_backbone(self) -> None:
        """Free this copy's decoder layers, final norm and text head (another engine holds
        them); embeddings, towers and aligners stay, and so does every trainable name."""
        self.hf.model.language_model.layers = torch.nn.ModuleList()
        self.hf.model.language_model.norm = torch.nn.Identity()
        self.hf.lm_head = torch.nn.Identity()

    # ---- checkpoints --------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write an HF-format checkpoint directory (model, tokenizer, processor)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(path)
        self.processor.save_pretrained(path)


def to_llama_name(name: str) -> str | None:
    """HF Janus parameter name -> its name in a plain Llama checkpoint; None if not the LM.

    ``model.language_model.layers.0.self_attn.q_proj.weight -> model.layers.0.self_attn.
    q_proj.weight``; ``lm_head.weight`` stays. The vision tower, aligners and the image-
    generation heads are not part of the language model.
    """
    if name.startswith(LANGUAGE_MODEL):
        return "model." + name[len(LANGUAGE_MODEL) :]
    if name.startswith(LM_HEAD):
        return name
    return None


def llama_config(text_config, dtype: str) -> dict:
    """``config.json`` of Janus's language model as a ``LlamaForCausalLM`` checkpoint."""
    cfg = text_config.to_dict()
    cfg.update(architectures=["LlamaForCausalLM"], model_type="llama", dtype=dtype)
    cfg.pop("_name_or_path", None)
    return cfg


def tiny_unified_model(
    seed: int = 0, shape=None, *, train_vision_tower: bool = False, palette: bool = False
) -> UnifiedModel:
    """A tiny random Janus (+ offline-built tokenizer and processor); fp32, CPU.

    ``palette``: with the closed-form palette VQ tokenizer and vision tower the quickstart's
    toy world uses (``models/palette_vq.py``, ``models/palette_vision.py``) in place of
    random ones."""
    from models.tiny import TinyShape, build_tiny_janus

    hf, processor = build_tiny_janus(seed, shape or TinyShape())
    if palette:
        from models.palette_vision import set_palette_vision
        from models.palette_vq import set_palette_vq

        set_palette_vq(hf.model.vqmodel)
        set_palette_vision(hf.model.vision_model)
    return UnifiedModel(hf, processor, train_vision_tower=train_vision_tower)


def check_checkpoint_dir(path: str | os.PathLike, key: str = "model.path") -> None:
    """Raise, naming ``key`` and the fix, unless ``path`` holds a transformers-format Janus
    checkpoint (a ``config.json`` with ``model_type: janus``). Cheap: reads one JSON file, so
    a run checks its paths with it before any actor starts."""
    import json

    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{key}: no model checkpoint at {path} (expected {config_file}); give a "
            "local Janus checkpoint directory, or write one with `pairuni model tiny --out DIR`"
        )
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{config_file} is not a readable JSON object: {e}") from e
    if model_type != "janus":
        what = (
            "DeepSeek's original Janus / Janus-Pro format, which transformers' Janus cannot load"
            if model_type == "multi_modality"
            else "not a Janus checkpoint in transformers' format (model_type 'janus')"
        )
        raise ValueError(
            f"{key}: {config_file} has model_type {model_type!r}: {what}. Convert an "
            f"original-format checkpoint once with `pairuni model convert --src {path} --out "
            f"{path}-hf` and point {key} at the output"
        )


def load_unified_model(
    path: str | os.PathLike,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    *,
    train_vision_tower: bool = False,
) -> UnifiedModel:
    """Load a local Janus checkpoint directory in transformers' format (``model_type: janus``).

    DeepSeek's original layout (``model_type: multi_modality``) is refused: transformers would
    fall back to a default text config and miss every weight. ``pairuni model convert``
    converts it once."""
    from transformers import JanusForConditionalGeneration, JanusProcessor

    path = Path(path)
    check_checkpoint_dir(path)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not one of {tuple(DTYPES)}")
        dtype = DTYPES[dtype]
    hf = JanusForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=True)
    processor = JanusProcessor.from_pretrained(path, local_files_only=True)
    # The unconditional CFG prompt is filled with the tokenizer's pad token. A pad token the
    # tokenizer states is kept; only a tokenizer without one takes the config's.
    tokenizer = processor.tokenizer
    if tokenizer.pad_token_id is None:
        pad_id = hf.config.text_config.pad_token_id
        if pad_id is None:
            raise ValueError(
                f"{path}: no pad token (tokenizer_config.json pad_token and config.json "
                "text_config.pad_token_id are both unset); the unconditional CFG prompt needs "
                "one: set pad_token in tokenizer_config.json (Janus-Pro's is '<｜▁pad▁｜>')"
            )
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    hf.to(device).eval()
    return UnifiedModel(hf, processor, train_vision_tower=train_vision_tower)


def toy_janus(seed: int = 0, *, hidden: int = 128, layers: int = 2) -> UnifiedModel:
    """The quickstart's tiny Janus: ``hidden`` wide (head_dim 64), ``layers`` deep, with the
    palette VQ tokenizer and vision tower."""
    from models.tiny import TinyShape

    shape = TinyShape(hidden=hidden, layers=layers, heads=hidden // 64, intermediate=2 * hidden)
    return tiny_unified_model(seed, shape, palette=True)


JANUS = Family(
    "janus", load=load_unified_model, tiny=tiny_unified_model, check_checkpoint=check_checkpoint_dir,
    toy=toy_janus,
)  # fmt: skip
"""Janus / Janus-Pro in transformers' format (``model.arch: janus``)."""
