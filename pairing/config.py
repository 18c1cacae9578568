"""Pairing configuration: where U and G come from, how images become features, and the
PairUni Algorithm 1 knobs (K clusters, n neighbours, threshold δ).

One frozen dataclass for the package (``PairingConfig``); the sources and the feature
extractor are nested frozen dataclasses. ``deploy/config.py`` builds it from YAML and
dotted overrides (``pairing.threshold=0.7``) and calls ``validate()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.config import check

KMEANS_BACKENDS = ("sklearn", "faiss")
SEARCH_BACKENDS = ("auto", "flat", "ivf")
GEN_FORMATS = ("webdataset", "folder_jsonl")
FEATURE_BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class UnderstandingSource:
    """Understanding set U = {(I, Q, A)} in the verl/Orsta parquet layout."""

    paths: tuple[str, ...] = ()
    """Parquet files or glob patterns, read in the given order (each glob sorted)."""
    prompt_field: str = "prompt"
    """Column of chat messages [{role, content}]; the user text holds the question and `<image>`."""
    images_field: str = "images"
    """Column of a list of {bytes} image structs; the first image is the instance's image."""
    answer_field: str = "reward_model.ground_truth"
    """Dotted path of the reference answer (a letter for multiple choice)."""
    verifier_field: str = "reward_model.verifier"
    """Dotted path of the verifier name (optional; empty in the manifest when absent)."""
    source_field: str = "data_source"
    """Column naming the data source."""
    category_field: str = "ability"
    """Column naming the category (ability); `category` is the Orsta name."""


@dataclass(frozen=True)
class GenerationSource:
    """Generation set G = {(I, C)}: webdataset tar shards or an image folder + JSONL."""

    format: str = "webdataset"
    """webdataset (tar shards, `<key>.jpg|png` + `<key>.txt`) | folder_jsonl (JSONL rows naming images)."""
    paths: tuple[str, ...] = ()
    """Tar shards or glob patterns (webdataset), or JSONL files (folder_jsonl)."""
    image_root: str = ""
    """folder_jsonl: directory the JSONL image paths are relative to (default: the JSONL's directory)."""
    image_field: str = "image"
    """folder_jsonl: JSONL key of the image path."""
    caption_field: str = "prompt"
    """folder_jsonl: JSONL key of the caption (the generation prompt C)."""
    caption_ext: str = "txt"
    """webdataset: extension of the caption member."""
    image_exts: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
    """webdataset: extensions accepted as the image member."""


@dataclass(frozen=True)
class FeatureConfig:
    """Image features: extractor by name, batching, cache, and the Ray Data path."""

    extractor: str = "resnet50"
    """resnet50 (torchvision, fc removed; the paper's default) | hf:<local dir> (transformers AutoModel)."""
    weights: str = ""
    """resnet50: local state_dict file (.pth/.pt/.safetensors). Ignored for hf:<dir>."""
    allow_random_weights: bool = False
    """Allow resnet50 with random init when `weights` is empty (tests only; features are meaningless)."""
    image_size: int = 224
    """Square input side in pixels (resize shorter side to 8/7 of it, then centre crop)."""
    batch_size: int = 64
    """Images per forward pass."""
    device: str = "cpu"
    """Torch device for local extraction: cpu | cuda | cuda:N."""
    cache_dir: str = ".cache/pairing_features"
    """Directory of cached features, keyed by (dataset fingerprint, extractor id); empty disables."""
    backend: str = "local"
    """local (in-process) | ray (Ray Data map_batches over an actor pool)."""
    ray_actors: int = 2
    """ray backend: actor-pool size."""
    ray_gpus_per_actor: float = 0.0
    """ray backend: GPUs per actor (0 on CPU clusters)."""


@dataclass(frozen=True)
class PairingConfig:
    """The PairUG builder (PairUni section 2.1, Algorithm 1)."""

    und: UnderstandingSource = field(default_factory=UnderstandingSource)
    """Understanding set U."""
    gen: GenerationSource = field(default_factory=GenerationSource)
    """Generation set G."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """Image feature extraction."""
    num_clusters: int = 5000
    """K: k-means clusters over U ∪ G; each non-empty cluster gives one aligned pair (its medoid)."""
    neighbors: int = 1
    """n: most retrieved pairs per generation item."""
    threshold: float = 0.6
    """δ: least cosine similarity of a retrieved pair, in [-1, 1]."""
    seed: int = 0
    """Seed of k-means (same seed, same pairs)."""
    kmeans_backend: str = "faiss"
    """sklearn (MiniBatchKMeans) | faiss (spherical faiss.Kmeans, ~9x faster at the paper's scale)."""
    search_backend: str = "auto"
    """Candidate search: flat (exact inner product) | ivf (approximate) | auto (ivf above ivf_min_pairs)."""
    ivf_min_pairs: float = 1e11
    """auto: use IVF when (understanding pool size x generation pool size) exceeds this."""
    output_dir: str = "runs/pairing"
    """Directory for manifest.parquet, report.json and similarity_hist.png."""

    def validate(self) -> None:
        check(
            len(self.und.paths) > 0,
            "pairing.und.paths",
            self.und.paths,
            "must name at least one parquet file",
            "set pairing.und.paths=[data/u.parquet]",
        )
        check(
            len(self.gen.paths) > 0,
            "pairing.gen.paths",
            self.gen.paths,
            "must name at least one tar shard or JSONL file",
            "set pairing.gen.paths=[data/g-000.tar]",
        )
        check(
            self.gen.format in GEN_FORMATS,
            "pairing.gen.format",
            self.gen.format,
            f"must be one of {GEN_FORMATS}",
            "use webdataset for tar shards",
        )
        f = self.features
        check(
            f.extractor == "resnet50" or (f.extractor.startswith("hf:") and len(f.extractor) > 3),
            "pairing.features.extractor",
            f.extractor,
            "must be resnet50 or hf:<local dir>",
            "use resnet50 (the paper's default)",
        )
        check(
            f.extractor != "resnet50" or bool(f.weights) or f.allow_random_weights,
            "pairing.features.weights",
            f.weights,
            "resnet50 needs a local weights file (random features pair nothing meaningful)",
            "set pairing.features.weights=/path/resnet50.pth",
        )
        check(
            f.image_size >= 16,
            "pairing.features.image_size",
            f.image_size,
            "must be >= 16",
            "use 224",
        )
        check(
            f.batch_size >= 1, "pairing.features.batch_size", f.batch_size, "must be >= 1", "use 64"
        )
        check(
            f.backend in FEATURE_BACKENDS,
            "pairing.features.backend",
            f.backend,
            f"must be one of {FEATURE_BACKENDS}",
            "use local on one machine",
        )
        check(
            f.ray_actors >= 1, "pairing.features.ray_actors", f.ray_actors, "must be >= 1", "use 2"
        )
        check(
            f.ray_gpus_per_actor >= 0,
            "pairing.features.ray_gpus_per_actor",
            f.ray_gpus_per_actor,
            "must be >= 0",
            "use 0 without GPUs",
        )
        check(
            f.device == "cpu" or f.device.startswith("cuda"),
            "pairing.features.device",
            f.device,
            "must be cpu, cuda or cuda:N",
            "use cpu without a GPU",
        )
        check(
            self.num_clusters >= 1,
            "pairing.num_clusters",
            self.num_clusters,
            "must be >= 1",
            "use about (|U|+|G|)/20, e.g. 5000 for 107k items",
        )
        check(self.neighbors >= 1, "pairing.neighbors", self.neighbors, "must be >= 1", "use 1")
        check(
            -1.0 <= self.threshold <= 1.0,
            "pairing.threshold",
            self.threshold,
            "must be a cosine similarity in [-1, 1]",
            "use 0.6 as the paper does",
        )
        check(
            self.kmeans_backend in KMEANS_BACKENDS,
            "pairing.kmeans_backend",
            self.kmeans_backend,
            f"must be one of {KMEANS_BACKENDS}",
            "use faiss",
        )
        check(
            self.search_backend in SEARCH_BACKENDS,
            "pairing.search_backend",
            self.search_backend,
            f"must be one of {SEARCH_BACKENDS}",
            "use auto",
        )
        check(
            bool(self.output_dir),
            "pairing.output_dir",
            self.output_dir,
            "must not be empty",
            "set pairing.output_dir=runs/pairing",
        )
