"""HPSv2 reward: human-preference score of an image for its prompt (Wu et al., 2023).

score(I, C) = <f_I / |f_I|, f_C / |f_C|>, the cosine of the OpenCLIP ViT-H-14 image and text
embeddings after fine-tuning on human preferences (the reference's ``torch.diagonal(
image_features @ text_features.T)``). Weights come from a published HPS v2.0 / v2.1
checkpoint (``HPS_v2_compressed.pt`` / ``HPS_v2.1_compressed.pt``, a dict whose
``state_dict`` is an OpenCLIP state dict) at a local path; nothing downloads.

Preprocessing follows the reference ``hpsv2`` package (its ``image_transform(...,
resize_longest_max=True)``): RGB, longest side resized to 224 with bicubic interpolation
(``round(side * scale)``), zero-padded to a square (left/top get ``pad // 2``), then
``ToTensor`` and OpenAI CLIP mean/std. One deliberate difference: the reference skips the
padding when the longest side is already 224, which leaves a non-square tensor the ViT
cannot take; here every image is padded.

The ``hpsv2`` wheel is not a dependency: its 1.2.0 wheel lacks its tokenizer file and pins
protobuf<4, which breaks Ray. OpenCLIP (``open-clip-torch``) provides the architecture and
the bundled BPE tokenizer.

Pure torch/open_clip, no ray; torch is imported where a model is built or run, so that the
``hps`` endpoint's declaration at the end of this module (its items, settings and scorer) is
read without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from models.config import check
from models.tasks import Task
from rewards.spec import EndpointSettings, EndpointSpec, Scorer, declare
from rewards.types import Limits, image_field, text_field

if TYPE_CHECKING:
    import torch

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
"""A ~1.7 M-parameter CLIP with ViT-H-14's input size and tokenizer (tests, benchmarks)."""


def _open_clip_named(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import open_clip

        return open_clip.create_model(name, pretrained=None)

    return build


def _tiny() -> torch.nn.Module:
    from open_clip.model import CLIP

    return CLIP(**TINY_CLIP_CFG)


ARCHS: dict[str, Callable[[], torch.nn.Module]] = {
    "ViT-H-14": _open_clip_named("ViT-H-14"),
    "tiny": _tiny,
}
"""HPS architectures by name: a builder of the random-weight OpenCLIP model."""

PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""Autocast precision name -> torch dtype name."""


def build_clip(arch: str, seed: int = 0) -> torch.nn.Module:
    """The random-weight OpenCLIP model ``arch`` (a name in ``ARCHS``), seeded, in eval mode."""
    import torch

    if arch not in ARCHS:
        raise ValueError(f"unknown HPS architecture {arch!r}; valid: {sorted(ARCHS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ARCHS[arch]()
    return model.eval()


def load_hps_checkpoint(model: torch.nn.Module, path: str) -> None:
    """Load a published HPS checkpoint (``{'state_dict': ...}``) into ``model`` in place."""
    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"HPS checkpoint {path!r} (config key rewards.hps.checkpoint) does not exist; "
            "point it at a local HPS_v2_compressed.pt or HPS_v2.1_compressed.pt"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        keys = sorted(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"HPS checkpoint {path!r} has no 'state_dict' entry (found {keys}); "
            "expected the published {'state_dict': ...} layout"
        )
    state = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"HPS checkpoint {path!r} does not fit the model (rewards.hps.arch): {e}"
        ) from None


def preprocess(image: np.ndarray | Image.Image, size: int = 224) -> torch.Tensor:
    """One RGB image -> normalised ``[3, size, size]`` float tensor, as ``hpsv2`` does."""
    import torch

    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    img = img.convert("RGB")
    w, h = img.size
    scale = size / float(max(h, w))
    new_h, new_w = round(h * scale), round(w * scale)
    if (new_h, new_w) != (h, w):
        img = img.resize((new_w, new_h), Image.BICUBIC)
    pad_h, pad_w = size - new_h, size - new_w
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(img, (pad_w // 2, pad_h // 2))
    x = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)  # [S, S, 3]
    x = x.permute(2, 0, 1)  # [3, S, S]
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


class HpsScorer:
    """Batched HPSv2 scoring: ``score(images, prompts) -> list[float]``."""

    def __init__(
        self,
        arch: str = "ViT-H-14",
        checkpoint: str = "",
        device: str = "cpu",
        precision: str = "fp32",
        seed: int = 0,
        batch_size: int = 64,
    ):
        import open_clip

        model = build_clip(arch, seed)
        if checkpoint:
            load_hps_checkpoint(model, checkpoint)
        self._setup(model, open_clip.get_tokenizer("ViT-H-14"), device, precision, batch_size)

    def _setup(self, model, tokenizer, device: str, precision: str, batch_size: int) -> None:
        """Place ``model`` (an OpenCLIP model) and keep what ``score`` needs."""
        import torch

        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {sorted(PRECISIONS)}")
        self.model = model
        self.device = torch.device(device)
        self.model.to(self.device)
        self.dtype = getattr(torch, PRECISIONS[precision])
        self.batch_size = batch_size
        self.tokenizer = tokenizer  # bundled BPE, context 77
        size = self.model.visual.image_size
        self.image_size = size[0] if isinstance(size, (tuple, list)) else int(size)

    def pixels(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        """One image -> the model's normalised input (HPS: ``preprocess``, hpsv2's padding)."""
        return preprocess(image, self.image_size)

    def _autocast(self):
        import torch

        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def score(
        self, images: Sequence[np.ndarray | Image.Image] | np.ndarray, prompts: Sequence[str]
    ) -> list[float]:
        """HPS of each (image, prompt) pair, in order; images uint8 ``[H, W, 3]`` or PIL."""
        import torch

        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        out: list[float] = []
        with torch.inference_mode():
            for s in range(0, len(prompts), self.batch_size):
                pix = torch.stack(
                    [self.pixels(im) for im in images[s : s + self.batch_size]]
                )  # [B, 3, S, S]
                tok = self.tokenizer(list(prompts[s : s + self.batch_size]))  # [B, 77]
                pix = pix.to(self.device, non_blocking=True)
                tok = tok.to(self.device, non_blocking=True)
                with self._autocast():
                    f_img = self.model.encode_image(pix, normalize=True)  # [B, D]
                    f_txt = self.model.encode_text(tok, normalize=True)  # [B, D]
                out.extend((f_img.float() * f_txt.float()).sum(-1).tolist())
        return out


# ---- the endpoint ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ImagePromptItem:
    """One request item of an image reward: ``image`` and its ``prompt`` (non-empty)."""

    image: np.ndarray  # [H, W, 3] uint8
    prompt: str


def parse_item(item: dict, field: str, lim: Limits) -> ImagePromptItem:
    """A request item -> ``ImagePromptItem``; ``RewardInputError`` naming the field if bad."""
    return ImagePromptItem(image_field(item, field, lim), text_field(item, "prompt", field, lim))


def item_of(rollout) -> dict:
    """A generation rollout's item: the decoded image and the prompt it was drawn for."""
    return {"image": rollout.image, "prompt": rollout.request.prompt}


def check_placement(s, key: str) -> None:
    """The device / precision / GPU checks of an OpenCLIP scorer's settings (``s``: fields
    device, precision, num_gpus), errors naming ``<key>.<field>``."""
    check(
        s.precision in PRECISIONS,
        f"{key}.precision",
        s.precision,
        f"must be one of {tuple(PRECISIONS)}",
        "use bf16 on GPU, fp32 on CPU",
    )
    check(
        s.device == "cpu" or s.device.startswith("cuda"),
        f"{key}.device",
        s.device,
        "must be cpu, cuda or cuda:N",
        "use cpu without a GPU",
    )
    check(
        s.num_gpus == 0 or s.device.startswith("cuda"),
        f"{key}.device",
        s.device,
        "replicas that reserve a GPU must run on it",
        f"set {key}.device=cuda",
    )


@dataclass(frozen=True)
class HpsSettings(EndpointSettings):
    """The HPSv2 endpoint (``rewards.hps.*``)."""

    checkpoint: str = ""
    """Local HPS v2.0/v2.1 `*_compressed.pt` ({'state_dict': ...}); required to serve ViT-H-14."""
    allow_random_weights: bool = False
    """Serve ViT-H-14 with random weights when checkpoint is empty (benchmarks only)."""
    arch: str = "ViT-H-14"
    """OpenCLIP architecture, ViT-H-14 (the published one) | tiny (tests, benchmarks)."""
    device: str = "cpu"
    """Torch device, cpu | cuda | cuda:N."""
    precision: str = "fp32"
    """Autocast dtype on GPU, fp32 | bf16 | fp16 (CPU always runs fp32)."""
    seed: int = 0
    """Seed of the random weights when checkpoint is empty."""

    def check_settings(self, key: str) -> None:
        super().check_settings(key)
        check(
            self.arch in ARCHS,
            f"{key}.arch",
            self.arch,
            f"must be one of {tuple(ARCHS)}",
            "use ViT-H-14 with a published HPS checkpoint",
        )
        check(
            not (self.arch == "tiny" and self.checkpoint),
            f"{key}.checkpoint",
            self.checkpoint,
            "a published checkpoint needs arch=ViT-H-14",
            f"set {key}.arch=ViT-H-14",
        )
        check_placement(self, key)

    def check_deployable(self, key: str) -> None:
        check(
            self.arch != "ViT-H-14" or bool(self.checkpoint) or self.allow_random_weights,
            f"{key}.checkpoint",
            self.checkpoint,
            "the hps endpoint needs the HPS v2 weights: without them ViT-H-14 scores with "
            "random weights, a reward that means nothing",
            f"set {key}.checkpoint to a local HPS_v2.1_compressed.pt (or HPS_v2_compressed.pt);"
            f" for a benchmark of random weights set {key}.allow_random_weights=true, for "
            f"tests {key}.arch=tiny",
        )


class HpsEndpointScorer(Scorer):
    """The replica's ``HpsScorer``, batched as the endpoint batches (``max_batch_size``)."""

    def __init__(self, s: HpsSettings):
        if not s.checkpoint and s.arch == "ViT-H-14":
            import logging

            logging.getLogger(__name__).warning(
                "hps: no rewards.hps.checkpoint; scoring with RANDOM weights"
            )
        self.model = HpsScorer(
            s.arch, s.checkpoint, s.device, s.precision, s.seed, s.max_batch_size
        )

    def score(self, items: list[ImagePromptItem]) -> list[float]:
        return self.model.score([it.image for it in items], [it.prompt for it in items])


SPEC = declare(
    EndpointSpec(
        name="hps",
        tasks=(Task.GEN,),
        settings=HpsSettings,
        parse_item=parse_item,
        item_of=item_of,
        make_scorer=HpsEndpointScorer,
        title="pairuni HPSv2 reward",
    )
)
