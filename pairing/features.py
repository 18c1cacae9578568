"""Image features for pairing: extractors chosen by name, batched extraction with a
progress bar, and an on-disk cache keyed by (dataset fingerprint, extractor id).

Extractors (weights from local files only):
  resnet50        torchvision ResNet-50, classification head replaced by Identity (2048-d),
                  the paper's default; `weights` names a state_dict file.
  hf:<local dir>  any transformers vision backbone (DINOv2/v3, CLIP vision, ...): AutoModel +
                  AutoImageProcessor from that directory; pooled output, else mean of tokens.
  pixels          no model: the image itself, resized to image_size x image_size, scaled to
                  [-1, 1] and flattened. Images with the same colours in the same places are
                  similar, others less so. A baseline for synthetic data (the toy world) and
                  tests; on photographs it pairs by layout and colour only.
Outputs are L2-normalised float32.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pairing.config import FeatureConfig
from pairing.datasets import describe_image_error

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureError(ValueError):
    """An extractor that cannot be built (unknown name, missing local file)."""


@dataclass
class FeatureResult:
    features: np.ndarray
    """[N, D] float32, unit rows; rows of failed images are zero."""
    failed: dict[int, str] = field(default_factory=dict)
    """Row -> reason for images that could not be decoded or embedded."""
    from_cache: bool = False
    images_per_s: float = 0.0


class Extractor:
    """A torch image encoder with its preprocessing; ``embed`` maps bytes to unit features."""

    def __init__(self, extractor_id: str, model, preprocess: Callable, pool: Callable, device: str):
        self.extractor_id, self.model, self.preprocess, self.pool = (
            extractor_id,
            model,
            preprocess,
            pool,
        )
        self.device = device
        self.model.eval().to(device)
        import torch
        from PIL import Image

        with torch.inference_mode():  # D from one blank image, so a failed batch has a shape
            blank = self.preprocess(Image.new("RGB", (32, 32)))[None].to(device)  # [1, 3, H, W]
            self.dim = int(self.pool(self.model, blank).shape[-1])

    def embed(self, images: list[bytes]) -> tuple[np.ndarray, list[str | None]]:
        """[B, D] float32 unit rows (zero where failed) and a reason per failed image."""
        import torch
        from PIL import Image

        out = np.zeros((len(images), self.dim), np.float32)
        tensors, errors, ok = [], [None] * len(images), []
        for i, data in enumerate(images):
            try:
                with Image.open(io.BytesIO(data)) as im:
                    tensors.append(self.preprocess(im.convert("RGB")))
                ok.append(i)
            except Exception as e:
                errors[i] = describe_image_error(e)
        if tensors:
            with torch.inference_mode():
                x = torch.stack(tensors).to(self.device)  # [b, 3, H, W]
                feats = self.pool(self.model, x).float().cpu().numpy()  # [b, D]
            norms = np.linalg.norm(feats, axis=1, keepdims=True)  # [b, 1]
            good = (norms[:, 0] > 0) & np.isfinite(feats).all(axis=1)
            out[np.asarray(ok)[good]] = feats[good] / norms[good]
            for i in np.asarray(ok)[~good]:
                errors[int(i)] = "zero or non-finite feature vector"
        return out, errors


# ----------------------------------------------------------------------------- registry


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _load_state_dict(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _build_resnet50(cfg: FeatureConfig, arg: str) -> Extractor:
    """torchvision ResNet-50 with fc = Identity: the 2048-d pooled feature (PairUni App. C)."""
    import torch
    import torchvision
    from torchvision import transforms

    torch.manual_seed(0)  # fixed random init when allowed (tests)
    model = torchvision.models.resnet50(weights=None)
    if cfg.weights:
        path = Path(cfg.weights)
        if not path.is_file():
            raise FeatureError(
                f"pairing.features.weights={cfg.weights!r}: file not found. Fix: "
                "point it at a local ResNet-50 state_dict (.pth/.safetensors)"
            )
        sd = {k: v for k, v in _load_state_dict(path).items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise FeatureError(
                f"{path}: not a torchvision ResNet-50 state_dict (missing "
                f"{missing[:3]}, unexpected {unexpected[:3]})"
            )
    elif not cfg.allow_random_weights:
        raise FeatureError(
            "pairing.features.weights is empty. Fix: set it to a local ResNet-50 "
            "state_dict, or allow_random_weights=true for tests"
        )
    model.fc = torch.nn.Identity()
    s = cfg.image_size
    prep = transforms.Compose(
        [
            transforms.Resize(round(s * 256 / 224)),
            transforms.CenterCrop(s),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return Extractor(extractor_id(cfg), model, prep, lambda m, x: m(x), cfg.device)


def _build_hf(cfg: FeatureConfig, arg: str) -> Extractor:
    """transformers AutoModel + AutoImageProcessor from a local directory."""
    from transformers import AutoImageProcessor, AutoModel

    path = Path(arg)
    if not (path / "config.json").is_file():
        raise FeatureError(
            f"pairing.features.extractor='hf:{arg}': no config.json in {path}. "
            "Fix: point it at a local transformers model directory"
        )
    if not (path / "preprocessor_config.json").is_file():
        raise FeatureError(
            f"{path}: no preprocessor_config.json. Fix: save the model's image "
            "processor there (processor.save_pretrained(dir))"
        )
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    proc = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)

    def prep(im):
        return proc(images=im, return_tensors="pt")["pixel_values"][0]  # [3, H, W]

    def pool(m, x):
        out = m(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(dim=1)  # [b, T, D] -> [b, D]
        return pooled.reshape(len(x), -1)  # [b, D]

    return Extractor(extractor_id(cfg), model, prep, pool, cfg.device)


def _build_pixels(cfg: FeatureConfig, arg: str) -> Extractor:
    """The resized image as its own feature (module docstring)."""
    import torch
    from torchvision import transforms

    s = cfg.image_size
    prep = transforms.Compose(
        [
            # box filter: each feature pixel is the mean of the input pixels it covers
            transforms.Resize((s, s), interpolation=transforms.InterpolationMode.BOX),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [0, 1] -> [-1, 1]
        ]
    )
    return Extractor(extractor_id(cfg), torch.nn.Flatten(), prep, lambda m, x: m(x), cfg.device)


EXTRACTORS: dict[str, Callable[[FeatureConfig, str], Extractor]] = {
    "resnet50": _build_resnet50,
    "hf": _build_hf,
    "pixels": _build_pixels,
}


def extractor_id(cfg: FeatureConfig) -> str:
    """Cache identity of the extractor without loading it: name, weights digest, input size."""
    name, _, arg = cfg.extractor.partition(":")
    if name == "resnet50":
        path = Path(cfg.weights)
        wid = _file_digest(path) if cfg.weights and path.is_file() else "random-seed0"
        return f"resnet50:{wid}:{cfg.image_size}"
    if name == "pixels":
        return f"pixels:{cfg.image_size}"
    path = Path(arg)
    h = hashlib.blake2b(digest_size=8)
    for f in sorted(path.iterdir()) if path.is_dir() else []:
        if f.is_file():  # size + mtime of each file: a re-saved model gets a new id
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{name}:{path.resolve()}:{h.hexdigest()}"


def build_extractor(cfg: FeatureConfig, device: str | None = None) -> Extractor:
    """The extractor named by ``cfg.extractor`` ('resnet50', 'hf:<dir>' or 'pixels')."""
    name, _, arg = cfg.extractor.partition(":")
    if name not in EXTRACTORS:
        raise FeatureError(
            f"unknown extractor {cfg.extractor!r}; valid: resnet50, hf:<local dir>, pixels"
        )
    if device is not None:
        from dataclasses import replace

        cfg = replace(cfg, device=device)
    return EXTRACTORS[name](cfg, arg)


# ----------------------------------------------------------------------------- extraction


def extract_features(
    images: list[bytes],
    extractor: Extractor,
    batch_size: int,
    desc: str = "features",
    progress: bool = True,
) -> FeatureResult:
    """Batched ``extractor.embed`` over all images, with a tqdm bar showing images/s."""
    from tqdm import tqdm

    feats, failed = np.zeros((len(images), extractor.dim), np.float32), {}
    t0 = time.perf_counter()
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
        for a in range(0, len(images), batch_size):
            out, errors = extractor.embed(images[a : a + batch_size])
            feats[a : a + len(out)] = out
            failed.update({a + i: e for i, e in enumerate(errors) if e})
            bar.update(len(errors))
    dt = time.perf_counter() - t0
    return FeatureResult(feats, failed, images_per_s=len(images) / dt if dt > 0 else 0.0)


def dataset_fingerprint(refs: list[str], images: list[bytes]) -> str:
    """Hash of every (ref, image bytes): the same rows with the same pixels, the same key."""
    h = hashlib.blake2b(digest_size=16)
    for ref, data in zip(refs, images, strict=True):
        h.update(ref.encode())
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def cache_path(cache_dir: str, fingerprint: str, extractor_id: str) -> Path:
    key = hashlib.blake2b(f"{fingerprint}|{extractor_id}".encode(), digest_size=12).hexdigest()
    return Path(cache_dir) / f"{fingerprint[:12]}-{key}.npz"


def cached_features(
    cache_dir: str,
    refs: list[str],
    images: list[bytes],
    extractor_id: str,
    compute: Callable[[], FeatureResult],
) -> FeatureResult:
    """Load features for (dataset, extractor) from ``cache_dir`` or compute and store them."""
    if not cache_dir:
        return compute()
    path = cache_path(cache_dir, dataset_fingerprint(refs, images), extractor_id)
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            failed = {int(k): v for k, v in json.loads(str(z["failed"])).items()}
            return FeatureResult(z["features"], failed, from_cache=True)
    res = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(
        tmp,
        features=res.features,
        failed=np.asarray(json.dumps(res.failed)),
        extractor_id=np.asarray(extractor_id),
    )
    os.replace(tmp, path)
    return res
