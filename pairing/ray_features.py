"""Feature extraction on a Ray cluster: Ray Data ``map_batches`` over an actor pool (each
actor loads the extractor once; GPUs when ``ray_gpus_per_actor`` > 0). Same output as
``pairing.features.extract_features``. The only pairing module that imports ray besides
the CLI.
"""

from __future__ import annotations

import time

import numpy as np

from pairing.config import FeatureConfig
from pairing.features import FeatureResult, build_extractor


class _EmbedActor:
    """Ray Data UDF: one extractor per actor, bytes in, unit features out."""

    def __init__(self, cfg: FeatureConfig):
        import torch

        device = "cuda" if cfg.ray_gpus_per_actor > 0 and torch.cuda.is_available() else "cpu"
        self.extractor = build_extractor(cfg, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feats, errors = self.extractor.embed([bytes(b) for b in batch["image"]])  # [b, D]
        return {
            "i": batch["i"],
            "feature": feats,
            "error": np.asarray([e or "" for e in errors], dtype=object),
        }


def extract_features_ray(images: list[bytes], cfg: FeatureConfig) -> FeatureResult:
    """Embed ``images`` with an actor pool of ``cfg.ray_actors`` on the connected cluster
    (``ray.init()`` joins RAY_ADDRESS or starts a local one)."""
    import ray

    if not ray.is_initialized():
        ray.init()
    t0 = time.perf_counter()
    rows = [{"i": i, "image": b} for i, b in enumerate(images)]
    blocks = max(1, min(len(rows), 4 * cfg.ray_actors, -(-len(rows) // cfg.batch_size)))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    gpus = cfg.ray_gpus_per_actor
    ds = ds.map_batches(
        _EmbedActor,
        fn_constructor_kwargs={"cfg": cfg},
        batch_size=cfg.batch_size,
        batch_format="numpy",
        concurrency=cfg.ray_actors,
        num_gpus=gpus or None,
        num_cpus=None if gpus else 1,
    )
    feats, failed = None, {}
    for b in ds.iter_batches(batch_size=1024, batch_format="numpy"):
        if feats is None:
            feats = np.zeros((len(images), b["feature"].shape[1]), np.float32)
        feats[b["i"]] = b["feature"]
        failed.update({int(i): str(e) for i, e in zip(b["i"], b["error"]) if e})
    dt = time.perf_counter() - t0
    if feats is None:
        feats = np.zeros((0, 0), np.float32)
    return FeatureResult(feats, failed, images_per_s=len(images) / dt if dt > 0 else 0.0)
