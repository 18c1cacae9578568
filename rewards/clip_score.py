"""CLIP-score reward: the cosine of an image's and its prompt's CLIP embeddings.

The baseline DSR compares its dual self-reward with (DSR appendix A.4, after SimpleAR):
generation rollouts scored by a CLIP model, score(I, C) = <f_I / |f_I|, f_C / |f_C|> in
[-1, 1] (no 2.5 x max(., 0) rescaling as in CLIPScore: GRPO's group normalisation removes
any affine map, and SimPO ranks). The model is any OpenCLIP architecture with its bundled
tokenizer (``arch``, e.g. ViT-L-14 or ViT-H-14) and weights from a local OpenCLIP checkpoint
file (``checkpoint``, what ``open_clip.create_model(arch, pretrained=FILE)`` reads); images
go through OpenCLIP's own evaluation transform for that model (resize the short side, centre
crop, the model's mean / std), so a score equals what ``open_clip.create_model_and_transforms``
gives. Nothing downloads.

One module is the whole endpoint: its items and settings are HPS's (an image and its
prompt; the OpenCLIP placement keys), its scorer is HPS's batching over a different model
and transform, and its declaration at the end makes it ``rewards.clip_score.*``, the
``clip_score`` reward term of generation rollouts and a Serve application.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.config import check
from models.tasks import Task
from rewards.hps import (
    HpsEndpointScorer,
    HpsScorer,
    build_clip,
    check_placement,
    item_of,
    parse_item,
)
from rewards.spec import EndpointSettings, EndpointSpec, declare


class ClipScorer(HpsScorer):
    """Batched CLIP scores: ``score(images, prompts) -> list[float]``."""

    def __init__(
        self,
        arch: str = "ViT-L-14",
        checkpoint: str = "",
        device: str = "cpu",
        precision: str = "fp32",
        seed: int = 0,
        batch_size: int = 64,
    ):
        import open_clip
        import torch

        if arch == "tiny":  # tests: HPS's tiny CLIP (ViT-H-14's tokenizer and input size)
            model, tok = build_clip("tiny", seed), open_clip.get_tokenizer("ViT-H-14")
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = open_clip.create_model(arch, pretrained=checkpoint or None)
            tok = open_clip.get_tokenizer(arch)
        if arch == "tiny" and checkpoint:
            model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        self._setup(model.eval(), tok, device, precision, batch_size)
        v = model.visual
        self.transform = open_clip.image_transform(
            v.image_size,
            is_train=False,
            mean=getattr(v, "image_mean", None),
            std=getattr(v, "image_std", None),
        )

    def pixels(self, image: np.ndarray | Image.Image):
        img = image if isinstance(image, Image.Image) else Image.fromarray(image)
        return self.transform(img.convert("RGB"))


@dataclass(frozen=True)
class ClipScoreSettings(EndpointSettings):
    """The CLIP-score endpoint (``rewards.clip_score.*``)."""

    max_batch_size: int = 32
    arch: str = "ViT-L-14"
    """OpenCLIP architecture with a bundled tokenizer (ViT-L-14, ViT-H-14, ...) | tiny (tests)."""
    checkpoint: str = ""
    """Local OpenCLIP weights file for ``arch``; required (random weights mean nothing)."""
    allow_random_weights: bool = False
    """Serve with random weights when checkpoint is empty (benchmarks only)."""
    device: str = "cpu"
    """Torch device, cpu | cuda | cuda:N."""
    precision: str = "fp32"
    """Autocast dtype on GPU, fp32 | bf16 | fp16 (CPU always runs fp32)."""
    seed: int = 0
    """Seed of the random weights when checkpoint is empty."""

    def check_settings(self, key: str) -> None:
        super().check_settings(key)
        check(bool(self.arch), f"{key}.arch", self.arch, "is empty", "use ViT-L-14")
        check_placement(self, key)

    def check_deployable(self, key: str) -> None:
        check(
            self.arch == "tiny" or bool(self.checkpoint) or self.allow_random_weights,
            f"{key}.checkpoint",
            self.checkpoint,
            f"the clip_score endpoint needs CLIP weights for {self.arch}: random weights "
            "score nothing",
            f"set {key}.checkpoint to a local OpenCLIP weights file for {key}.arch",
        )


class ClipEndpointScorer(HpsEndpointScorer):
    """The replica's ``ClipScorer``; scores items as the HPS endpoint does."""

    def __init__(self, s: ClipScoreSettings):
        self.model = ClipScorer(
            s.arch, s.checkpoint, s.device, s.precision, s.seed, s.max_batch_size
        )


SPEC = declare(
    EndpointSpec(
        name="clip_score",
        tasks=(Task.GEN,),
        settings=ClipScoreSettings,
        parse_item=parse_item,
        item_of=item_of,
        make_scorer=ClipEndpointScorer,
        title="pairuni CLIP-score reward",
    )
)
