"""Reward endpoints: what they load, how they batch and scale, and how the driver calls them.

One flat frozen dataclass; per-endpoint settings carry the endpoint's name as a prefix
(``accuracy_*``, ``hps_*``, ``dual_*``) so that every key is one dotted override away
(``rewards.hps_max_batch_size=32``).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.config import DTYPES, check

ENDPOINTS = ("accuracy", "hps", "dual", "toy_judge")
HPS_ARCHS = ("ViT-H-14", "tiny")
PRECISIONS = ("fp32", "bf16", "fp16")
CLIENT_MODES = ("handle", "http")


@dataclass(frozen=True)
class RewardsConfig:
    """Reward endpoints (accuracy, HPSv2, DSR dual likelihood) and the driver's client."""

    endpoints: tuple[str, ...] = ("accuracy", "hps")
    """Endpoints to serve, from accuracy | hps | dual | toy_judge (the toy world's judge)."""
    host: str = "127.0.0.1"
    """Address the Serve HTTP proxy binds to (127.0.0.1: this machine only)."""
    port: int = 8000
    """Port of the Serve HTTP proxy."""
    access_log: bool = True
    """Serve's access log (a line per request) in the replicas' logs; off in the quickstart.
    With ``serve run deploy/serve_rewards.yaml`` it is each application's ``logging_config``."""

    accuracy_max_batch_size: int = 64
    """Accuracy: most items scored in one dynamic batch."""
    accuracy_batch_wait_s: float = 0.005
    """Accuracy: longest wait for a dynamic batch to fill, in seconds."""
    accuracy_num_replicas: int = 1
    """Accuracy: replicas when not autoscaling (min == max)."""
    accuracy_min_replicas: int = 1
    """Accuracy: autoscaling lower bound (autoscaling is on when min < max)."""
    accuracy_max_replicas: int = 1
    """Accuracy: autoscaling upper bound."""
    accuracy_num_cpus: float = 0.5
    """Accuracy: CPUs reserved per replica."""
    accuracy_math_timeout_s: float = 5.0
    """Accuracy: hard limit on one math answer's check (math-verify in a worker process,
    killed past it); a check over the limit is a failed reward (NaN), counted in healthz."""
    accuracy_math_workers: int = 2
    """Accuracy: math checker processes per replica; one hanging check holds one of them."""

    hps_checkpoint: str = ""
    """HPSv2: local HPS v2.0/v2.1 `*_compressed.pt` ({'state_dict': ...}); required to serve ViT-H-14."""
    hps_allow_random_weights: bool = False
    """HPSv2: serve ViT-H-14 with random weights when hps_checkpoint is empty (benchmarks only)."""
    hps_arch: str = "ViT-H-14"
    """HPSv2: OpenCLIP architecture, ViT-H-14 (the published one) | tiny (tests, benchmarks)."""
    hps_device: str = "cpu"
    """HPSv2: torch device, cpu | cuda | cuda:N."""
    hps_precision: str = "fp32"
    """HPSv2: autocast dtype on GPU, fp32 | bf16 | fp16 (CPU always runs fp32)."""
    hps_seed: int = 0
    """HPSv2: seed of the random weights when hps_checkpoint is empty."""
    hps_max_batch_size: int = 16
    """HPSv2: most images scored in one dynamic batch."""
    hps_batch_wait_s: float = 0.01
    """HPSv2: longest wait for a dynamic batch to fill, in seconds."""
    hps_num_replicas: int = 1
    """HPSv2: replicas when not autoscaling (min == max)."""
    hps_min_replicas: int = 1
    """HPSv2: autoscaling lower bound (autoscaling is on when min < max)."""
    hps_max_replicas: int = 1
    """HPSv2: autoscaling upper bound."""
    hps_num_cpus: float = 1.0
    """HPSv2: CPUs reserved per replica."""
    hps_num_gpus: float = 0.0
    """HPSv2: GPU fraction per replica (0.25 packs four replicas on one GPU)."""

    dual_model_path: str = ""
    """DSR: local unified-model checkpoint directory. Empty: the tiny random model (tests)."""
    dual_device: str = "cpu"
    """DSR: torch device of the scoring copy of the policy."""
    dual_dtype: str = "float32"
    """DSR: parameter dtype of the scoring copy, float32 | bfloat16 | float16."""
    dual_seed: int = 0
    """DSR: seed of the tiny random model when dual_model_path is empty."""
    dual_max_batch_size: int = 8
    """DSR: most rollouts scored in one dynamic batch."""
    dual_batch_wait_s: float = 0.01
    """DSR: longest wait for a dynamic batch to fill, in seconds."""
    dual_num_replicas: int = 1
    """DSR: replicas when not autoscaling (min == max)."""
    dual_min_replicas: int = 1
    """DSR: autoscaling lower bound (autoscaling is on when min < max)."""
    dual_max_replicas: int = 1
    """DSR: autoscaling upper bound."""
    dual_num_cpus: float = 1.0
    """DSR: CPUs reserved per replica."""
    dual_num_gpus: float = 0.0
    """DSR: GPU fraction per replica."""

    toy_judge_max_batch_size: int = 64
    """Toy judge (toy world only): most images scored in one dynamic batch."""
    toy_judge_batch_wait_s: float = 0.005
    """Toy judge: longest wait for a dynamic batch to fill, in seconds."""
    toy_judge_num_replicas: int = 1
    """Toy judge: replicas when not autoscaling (min == max)."""
    toy_judge_min_replicas: int = 1
    """Toy judge: autoscaling lower bound (autoscaling is on when min < max)."""
    toy_judge_max_replicas: int = 1
    """Toy judge: autoscaling upper bound."""
    toy_judge_num_cpus: float = 0.25
    """Toy judge: CPUs reserved per replica."""

    target_ongoing_requests: float = 2.0
    """Autoscaling target: requests in flight per replica."""
    max_ongoing_requests: int = 64
    """Requests a replica accepts at once before Serve queues them."""
    max_items_per_request: int = 256
    """Largest request (items); a bigger one is refused with HTTP 413."""
    max_text_chars: int = 16384
    """Longest response/answer/prompt text accepted, in characters."""
    min_image_side: int = 8
    """Smallest image side accepted, in pixels."""
    max_image_side: int = 2048
    """Largest image side accepted, in pixels."""

    client_mode: str = "handle"
    """How the driver calls endpoints: handle (same Ray cluster) | http."""
    client_timeout_s: float = 60.0
    """Per-call timeout of one request, in seconds."""
    client_max_retries: int = 3
    """Retries after a 5xx or a timeout (never after a 4xx)."""
    client_backoff_s: float = 0.2
    """First retry delay; doubled per retry (exponential backoff)."""
    client_backoff_max_s: float = 5.0
    """Longest retry delay, in seconds."""
    client_max_concurrency: int = 8
    """Requests one client has in flight at once."""
    client_chunk_size: int = 64
    """Items per request the client sends (<= max_items_per_request)."""

    def check_deployable(self, endpoints) -> None:
        """Refuse what would serve meaningless rewards: HPS's ViT-H-14 without its weights.

        Called where the endpoints to deploy are known, before any actor starts (the run
        config's reward terms, ``pairuni serve rewards``, ``serve run``)."""
        check(
            "hps" not in endpoints
            or self.hps_arch != "ViT-H-14"
            or bool(self.hps_checkpoint)
            or self.hps_allow_random_weights,
            "rewards.hps_checkpoint",
            self.hps_checkpoint,
            "the hps endpoint needs the HPS v2 weights: without them ViT-H-14 scores with "
            "random weights, a reward that means nothing",
            "set rewards.hps_checkpoint to a local HPS_v2.1_compressed.pt (or HPS_v2_compressed"
            ".pt); for a benchmark of random weights set rewards.hps_allow_random_weights=true, "
            "for tests rewards.hps_arch=tiny",
        )

    def endpoint_setting(self, endpoint: str, name: str):
        """``endpoint_setting("hps", "max_batch_size")`` -> ``self.hps_max_batch_size``."""
        return getattr(self, f"{endpoint}_{name}")

    def validate(self) -> None:
        bad = [e for e in self.endpoints if e not in ENDPOINTS]
        check(
            not bad and len(self.endpoints) > 0,
            "rewards.endpoints",
            self.endpoints,
            f"must be a non-empty subset of {ENDPOINTS}",
            "e.g. [accuracy, hps]",
        )
        check(0 < self.port < 65536, "rewards.port", self.port, "must be in 1..65535", "use 8000")
        check(
            self.accuracy_math_timeout_s > 0,
            "rewards.accuracy_math_timeout_s",
            self.accuracy_math_timeout_s,
            "must be > 0",
            "use 5",
        )
        check(
            self.accuracy_math_workers >= 1,
            "rewards.accuracy_math_workers",
            self.accuracy_math_workers,
            "must be >= 1",
            "use 2",
        )
        check(
            self.hps_arch in HPS_ARCHS,
            "rewards.hps_arch",
            self.hps_arch,
            f"must be one of {HPS_ARCHS}",
            "use ViT-H-14 with a published HPS checkpoint",
        )
        check(
            self.hps_precision in PRECISIONS,
            "rewards.hps_precision",
            self.hps_precision,
            f"must be one of {PRECISIONS}",
            "use bf16 on GPU, fp32 on CPU",
        )
        for key in ("hps_device", "dual_device"):
            dev = getattr(self, key)
            check(
                dev == "cpu" or dev.startswith("cuda"),
                f"rewards.{key}",
                dev,
                "must be cpu, cuda or cuda:N",
                "use cpu without a GPU",
            )
        check(
            self.dual_dtype in DTYPES,
            "rewards.dual_dtype",
            self.dual_dtype,
            f"must be one of {DTYPES}",
            "use float32 on CPU, bfloat16 on GPU",
        )
        check(
            not (self.hps_arch == "tiny" and self.hps_checkpoint),
            "rewards.hps_checkpoint",
            self.hps_checkpoint,
            "a published checkpoint needs hps_arch=ViT-H-14",
            "set rewards.hps_arch=ViT-H-14",
        )
        for e in ENDPOINTS:
            lo, hi = (
                self.endpoint_setting(e, "min_replicas"),
                self.endpoint_setting(e, "max_replicas"),
            )
            check(
                self.endpoint_setting(e, "max_batch_size") >= 1,
                f"rewards.{e}_max_batch_size",
                self.endpoint_setting(e, "max_batch_size"),
                "must be >= 1",
                "use 16",
            )
            check(
                self.endpoint_setting(e, "batch_wait_s") >= 0,
                f"rewards.{e}_batch_wait_s",
                self.endpoint_setting(e, "batch_wait_s"),
                "must be >= 0",
                "use 0.01",
            )
            check(
                self.endpoint_setting(e, "num_replicas") >= 1,
                f"rewards.{e}_num_replicas",
                self.endpoint_setting(e, "num_replicas"),
                "must be >= 1",
                "use 1",
            )
            check(
                1 <= lo <= hi,
                f"rewards.{e}_min_replicas",
                lo,
                f"must satisfy 1 <= min <= {e}_max_replicas ({hi})",
                "set min <= max",
            )
            check(
                self.endpoint_setting(e, "num_cpus") >= 0,
                f"rewards.{e}_num_cpus",
                self.endpoint_setting(e, "num_cpus"),
                "must be >= 0",
                "use 1",
            )
        for key in ("hps_num_gpus", "dual_num_gpus"):
            check(
                0 <= getattr(self, key) <= 1 or float(getattr(self, key)).is_integer(),
                f"rewards.{key}",
                getattr(self, key),
                "must be a fraction in [0, 1] or a whole number of GPUs",
                "use 0.25 or 1",
            )
        check(
            self.hps_num_gpus == 0 or self.hps_device.startswith("cuda"),
            "rewards.hps_device",
            self.hps_device,
            "replicas that reserve a GPU must run on it",
            "set rewards.hps_device=cuda",
        )
        check(
            self.target_ongoing_requests > 0,
            "rewards.target_ongoing_requests",
            self.target_ongoing_requests,
            "must be > 0",
            "use 2",
        )
        check(
            self.max_ongoing_requests >= 1,
            "rewards.max_ongoing_requests",
            self.max_ongoing_requests,
            "must be >= 1",
            "use 64",
        )
        check(
            self.max_items_per_request >= 1,
            "rewards.max_items_per_request",
            self.max_items_per_request,
            "must be >= 1",
            "use 256",
        )
        check(
            self.max_text_chars >= 1,
            "rewards.max_text_chars",
            self.max_text_chars,
            "must be >= 1",
            "use 16384",
        )
        check(
            1 <= self.min_image_side <= self.max_image_side,
            "rewards.min_image_side",
            self.min_image_side,
            f"must satisfy 1 <= min <= max_image_side ({self.max_image_side})",
            "use 8 and 2048",
        )
        check(
            self.client_mode in CLIENT_MODES,
            "rewards.client_mode",
            self.client_mode,
            f"must be one of {CLIENT_MODES}",
            "use handle inside the cluster, http outside",
        )
        check(
            self.client_timeout_s > 0,
            "rewards.client_timeout_s",
            self.client_timeout_s,
            "must be > 0",
            "use 60",
        )
        check(
            self.client_max_retries >= 0,
            "rewards.client_max_retries",
            self.client_max_retries,
            "must be >= 0",
            "use 3",
        )
        check(
            0 <= self.client_backoff_s <= self.client_backoff_max_s,
            "rewards.client_backoff_s",
            self.client_backoff_s,
            f"must satisfy 0 <= backoff <= client_backoff_max_s ({self.client_backoff_max_s})",
            "use 0.2 and 5",
        )
        check(
            self.client_max_concurrency >= 1,
            "rewards.client_max_concurrency",
            self.client_max_concurrency,
            "must be >= 1",
            "use 8",
        )
        check(
            1 <= self.client_chunk_size <= self.max_items_per_request,
            "rewards.client_chunk_size",
            self.client_chunk_size,
            f"must satisfy 1 <= chunk <= max_items_per_request ({self.max_items_per_request})",
            "use 64",
        )
