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
AUGMENT_SIDES = ("und", "gen")
VARIANTS = ("one_object", "two_objects", "text", "ai_generated")
VARIANT_SELECTORS = ("keyword", "fixed")
RESPONSE_FORMATS = ("json_object", "none")
MODES = ("paired", "unpaired")


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
    kind_field: str = "ability"
    """Dotted path of the task kind that `exclude_kinds` is matched against. Orsta's is `ability` (e.g. `cv_detection`, `math`); a file without it is an error while `exclude_kinds` is non-empty."""
    exclude_kinds: tuple[str, ...] = ("detection", "grounding")
    """Task kinds left out of U (PairUni section 3.1: Orsta's detection and grounding items are excluded, Janus-Pro fails on them). A row is excluded when its `kind_field` value, split at non-alphanumerics, contains one of these words (`cv_detection` matches `detection`); excluded rows are counted per kind in the report. Empty: keep every row."""


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
class UnpairedSources:
    """DSR's unpaired training data (DSR section 4.1): generation prompts without images and
    images without text, never joined (`pairing.mode=unpaired`). Each image becomes an
    understanding-only item of the captioning task, each prompt a generation-only item."""

    prompts: tuple[str, ...] = ()
    """T2I-CompBench prompt files or globs: one prompt per line, as released (`color_train.txt`, ...); the file name without `_train`/`_val` is the item's category. DSR trains on its training set (5,600 prompts)."""
    coco_captions: tuple[str, ...] = ()
    """COCO captions JSON files (`images` [{id, file_name}], `annotations` [{image_id, caption}]); every listed image is one item, its captions are not used."""
    coco_image_root: str = ""
    """Folder the COCO `file_name`s are in (default: the JSON's directory)."""
    journeydb: tuple[str, ...] = ()
    """JourneyDB annotation JSONL files (one image a line: `img_path`, optional `prompt` and `Task2.Caption`)."""
    journeydb_image_root: str = ""
    """Folder the JourneyDB `img_path`s are relative to (default: `imgs` beside the JSONL, as released)."""
    images_per_source: int = 0
    """Images drawn per image source (COCO, JourneyDB) at random with `pairing.seed`, in file order; 0: all. DSR: 2800 each."""
    prompts_limit: int = 0
    """Prompts drawn at random with `pairing.seed` over all prompt files, in file order; 0: all (DSR: all 5,600)."""


@dataclass(frozen=True)
class FeatureConfig:
    """Image features: extractor by name, batching, cache, and the Ray Data path."""

    extractor: str = "resnet50"
    """resnet50 (torchvision, fc removed; the paper's default) | hf:<local dir> (transformers AutoModel) | pixels (no model: the resized image, a baseline for synthetic data)."""
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
class AugmentConfig:
    """Quadruple augmentation (PairUni section 2.1.1, Appendix E) with an OpenAI-compatible VLM."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """Endpoint root; the client POSTs <base_url>/chat/completions (a vLLM server, `pairuni serve augment`, ...)."""
    model: str = ""
    """Model name sent in every request; part of the cache key (`pairuni augment` requires it)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never logged); empty or unset: no Authorization header."""
    caption_template: str = "caption_v2"
    """Understanding images -> detail prompt C (PairUni Fig. 11, the understanding prompt; one JSON reply with a question too): a packaged template name or a YAML path. caption_v1 is the earlier one-half form."""
    qa_template: str = "qa_v2"
    """Generation images -> question, four options, answer (PairUni Fig. 10, the generation prompt, per image class; one JSON reply with a detail prompt too): a packaged template name or a YAML path. qa_v1 is the earlier one-half form."""
    variant_by: str = "keyword"
    """How an item's template variant is chosen: keyword (from its text and source) | fixed (`variant`)."""
    variant: str = "one_object"
    """Variant for variant_by=fixed, and the keyword selector's fallback: one_object | two_objects | text | ai_generated."""
    sides: tuple[str, ...] = ("und", "gen")
    """Which sets to complete: und (write C for U items) and/or gen (write Q, A for G items)."""
    limit: int = 0
    """At most this many items per side, in input order (0: all); for trial runs."""
    max_concurrency: int = 8
    """Requests in flight at once."""
    timeout_s: float = 120.0
    """Per-request timeout in seconds; a timeout is retried."""
    max_retries: int = 4
    """Retries of one request after a timeout, a connection error, HTTP 429 or 5xx."""
    backoff_s: float = 1.0
    """First retry delay; doubles per retry (with jitter), capped by max_backoff_s; Retry-After wins."""
    max_backoff_s: float = 30.0
    """Longest delay between retries, in seconds."""
    repair_rounds: int = 1
    """Re-asks with the validation error before an item is recorded as rejected."""
    temperature: float = 0.2
    """Sampling temperature sent to the endpoint."""
    max_tokens: int = 512
    """Completion token limit sent to the endpoint."""
    response_format: str = "json_object"
    """json_object (ask the server for JSON mode) | none (for servers without it)."""
    caption_min_words: int = 15
    """Shortest accepted detail prompt, in words (Figs. 10, 11 ask for about 30)."""
    caption_max_words: int = 60
    """Longest accepted detail prompt, in words."""
    question_max_words: int = 60
    """Longest accepted question, in words."""
    option_max_words: int = 20
    """Longest accepted option, in words."""
    max_image_side: int = 1024
    """Images with a longer side are downscaled (JPEG) before upload; smaller ones go as they are."""
    cache_dir: str = ".cache/augment"
    """Directory of the answer cache keyed by (item id, template version, model); empty disables."""
    output_dir: str = "runs/augment"
    """Directory for quadruples.jsonl, rejected.jsonl and report.json."""
    progress: bool = True
    """Show a progress bar (items/s, rejection rate)."""

    def validate(self) -> None:
        check(
            self.base_url.startswith(("http://", "https://")),
            "pairing.augment.base_url",
            self.base_url,
            "must be an http(s) URL",
            "set pairing.augment.base_url=http://127.0.0.1:8000/v1",
        )
        check(
            self.variant_by in VARIANT_SELECTORS,
            "pairing.augment.variant_by",
            self.variant_by,
            f"must be one of {VARIANT_SELECTORS}",
            "use keyword",
        )
        check(
            self.variant in VARIANTS,
            "pairing.augment.variant",
            self.variant,
            f"must be one of {VARIANTS}",
            "use one_object",
        )
        check(
            len(self.sides) > 0 and all(s in AUGMENT_SIDES for s in self.sides),
            "pairing.augment.sides",
            self.sides,
            f"must be a non-empty subset of {AUGMENT_SIDES}",
            "use [und, gen]",
        )
        check(
            self.response_format in RESPONSE_FORMATS,
            "pairing.augment.response_format",
            self.response_format,
            f"must be one of {RESPONSE_FORMATS}",
            "use none if the server rejects response_format",
        )
        for key, value, least, fix in (
            ("limit", self.limit, 0, "use 0 for all items"),
            ("max_concurrency", self.max_concurrency, 1, "use 8"),
            ("max_retries", self.max_retries, 0, "use 4"),
            ("repair_rounds", self.repair_rounds, 0, "use 1"),
            ("max_tokens", self.max_tokens, 1, "use 512"),
            ("caption_min_words", self.caption_min_words, 1, "use 15"),
            ("question_max_words", self.question_max_words, 1, "use 60"),
            ("option_max_words", self.option_max_words, 1, "use 20"),
            ("max_image_side", self.max_image_side, 32, "use 1024"),
        ):
            check(value >= least, f"pairing.augment.{key}", value, f"must be >= {least}", fix)
        check(
            self.caption_max_words >= self.caption_min_words,
            "pairing.augment.caption_max_words",
            self.caption_max_words,
            f"must be >= caption_min_words ({self.caption_min_words})",
            "use 60",
        )
        for key, value in (
            ("timeout_s", self.timeout_s),
            ("backoff_s", self.backoff_s),
            ("max_backoff_s", self.max_backoff_s),
        ):
            check(value > 0, f"pairing.augment.{key}", value, "must be > 0", "use the default")
        check(
            self.temperature >= 0,
            "pairing.augment.temperature",
            self.temperature,
            "must be >= 0",
            "use 0.2",
        )
        check(
            bool(self.output_dir),
            "pairing.augment.output_dir",
            self.output_dir,
            "must not be empty",
            "set pairing.augment.output_dir=runs/augment",
        )


@dataclass(frozen=True)
class AugmentServerConfig:
    """`pairuni serve augment`: a local model behind an OpenAI-compatible endpoint (Ray Serve)."""

    model_path: str = ""
    """Local checkpoint directory of the served model."""
    served_name: str = ""
    """Model name clients send (empty: the checkpoint directory's base name)."""
    backend: str = "hf"
    """hf (transformers through models/, CPU or one GPU); a vLLM backend plugs in beside it."""
    host: str = "127.0.0.1"
    """HTTP bind address."""
    port: int = 8000
    """HTTP port."""
    device: str = "cpu"
    """Torch device of the hf backend."""
    dtype: str = "float32"
    """Parameter dtype of the hf backend: float32 | bfloat16 | float16."""
    num_replicas: int = 1
    """Serve replicas (each holds one copy of the model)."""
    num_cpus: float = 1.0
    """CPUs per replica."""
    num_gpus: float = 0.0
    """GPUs per replica (0 on CPU)."""
    max_new_tokens: int = 512
    """Completion limit when a request names none; requests may ask for less, never more."""
    max_ongoing_requests: int = 8
    """Requests one replica accepts at once (it generates one at a time)."""

    def validate(self) -> None:
        check(
            bool(self.model_path),
            "serve_augment.model_path",
            self.model_path,
            "must name a local checkpoint directory",
            "pass --model PATH (write a tiny one with `pairuni model tiny --out DIR`)",
        )
        check(
            1 <= self.port <= 65535,
            "serve_augment.port",
            self.port,
            "must be a TCP port",
            "use 8000",
        )
        for key, value in (
            ("num_replicas", self.num_replicas),
            ("max_new_tokens", self.max_new_tokens),
            ("max_ongoing_requests", self.max_ongoing_requests),
        ):
            check(value >= 1, f"serve_augment.{key}", value, "must be >= 1", "use the default")
        check(
            self.num_cpus > 0 and self.num_gpus >= 0,
            "serve_augment.num_cpus",
            (self.num_cpus, self.num_gpus),
            "num_cpus must be > 0 and num_gpus >= 0",
            "use num_cpus=1, num_gpus=0 on CPU",
        )


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
    quadruples: tuple[str, ...] = ()
    """quadruples.jsonl files from `pairuni augment`: aligned pairs take their missing half from them."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Quadruple augmentation (`pairuni augment`); `pairuni pair` ignores it."""
    mode: str = "paired"
    """paired (PairUG from `und` and `gen`, PairUni Algorithm 1) | unpaired (DSR section 4.1: understanding-only and generation-only items from `unpaired`, no features, no pairs)."""
    unpaired: UnpairedSources = field(default_factory=UnpairedSources)
    """DSR's unpaired sources (`mode=unpaired`)."""

    def validate(self) -> None:
        check(
            self.mode in MODES,
            "pairing.mode",
            self.mode,
            f"must be one of {MODES}",
            "use paired for PairUG, unpaired for DSR's data",
        )
        if self.mode == "unpaired":
            self._validate_unpaired()
            return
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
            f.extractor in ("resnet50", "pixels")
            or (f.extractor.startswith("hf:") and len(f.extractor) > 3),
            "pairing.features.extractor",
            f.extractor,
            "must be resnet50, hf:<local dir> or pixels",
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

    def _validate_unpaired(self) -> None:
        u = self.unpaired
        check(
            bool(u.prompts or u.coco_captions or u.journeydb),
            "pairing.unpaired",
            "(no sources)",
            "mode=unpaired needs prompts, coco_captions or journeydb",
            "set pairing.unpaired.prompts=[data/t2i/color_train.txt] (and/or the image sources)",
        )
        for key, value in (
            ("images_per_source", u.images_per_source),
            ("prompts_limit", u.prompts_limit),
        ):
            check(value >= 0, f"pairing.unpaired.{key}", value, "must be >= 0", "use 0 for all")
        check(
            bool(self.output_dir),
            "pairing.output_dir",
            self.output_dir,
            "must not be empty",
            "set pairing.output_dir=runs/pairing",
        )
