"""Rollout configuration: worker pools (count and resources per role) and sampling knobs.

Text workers, image workers and their resources are set independently, so each role
scales on its own. ``*_workers = 0`` runs that pool
in-process (local mode, for tests). The rollout group size G is PairUni's (8 for the 1B
model, 4 for 7B; DSR uses 8).

The policy's sampling knobs (temperatures, ``max_new_tokens``, ``cfg_weight``) live in
``ModelConfig`` alone: workers sample and the learner scores with the same values, so
``logprob_diff`` stays ~0 by construction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from models.config import check


@dataclass(frozen=True)
class RolloutConfig:
    """Rollout worker pools and how they sample."""

    # --- text (understanding) workers ---
    text_workers: int = 2
    """Number of text rollout actors; 0 runs one worker in-process (local mode)."""
    text_num_cpus: float = 1.0
    """CPUs reserved per text worker (fractions allowed)."""
    text_num_gpus: float = 0.0
    """GPU fraction per text worker (e.g. 0.5 puts two on one GPU); 0 on CPU."""
    text_backend: str = "hf"
    """Text sampling backend, a name in actors.text_rollout.TEXT_BACKENDS: hf | vllm."""
    text_python: str = ""
    """Interpreter the text workers run under (Ray runtime_env py_executable), e.g. .venv-vllm/bin/python; empty: the driver's."""
    text_top_p: float = 1.0
    """Nucleus (top-p) mass of text sampling (vllm backend only; the learner scores the untruncated policy, so keep 1.0 on-policy)."""
    text_vllm_kv_cache_gib: int = 1
    """KV-cache memory of a vLLM text worker on CPU, GiB (VLLM_CPU_KVCACHE_SPACE, unless set in its environment)."""
    text_vllm_eager: bool = False
    """Run vLLM's model eagerly (no torch.compile): faster engine start, slower decoding."""
    text_batch_size: int = 8
    """Requests per text sampling call (each with G samples); also the unit of re-dispatch."""

    # --- image (generation) workers ---
    image_workers: int = 1
    """Number of image rollout actors; 0 runs one worker in-process (local mode)."""
    image_num_cpus: float = 1.0
    """CPUs reserved per image worker (fractions allowed)."""
    image_num_gpus: float = 0.0
    """GPU fraction per image worker; 0 on CPU."""
    image_batch_size: int = 4
    """Requests per image sampling call (each with G samples, doubled by CFG)."""

    # --- sampling ---
    group_size: int = 8
    """G, samples per prompt (PairUni 8 for 1B / 4 for 7B; DSR 8)."""
    und_group_size: int = 0
    """Samples per understanding request; 0 means ``group_size``. Text rollouts cost far less
    than image rollouts, so a larger understanding group buys exploration cheaply."""
    gen_group_size: int = 0
    """Samples per generation request; 0 means ``group_size``."""

    # --- faults ---
    max_restarts: int = 3
    """Restarts allowed per worker slot before the run fails."""
    request_timeout_s: float = 600.0
    """A sampling call running longer than this is killed and re-dispatched to a restarted worker.
    Counted from when its worker is built and holds the weights (a restart's model build is
    not counted)."""

    def group_sizes(self) -> tuple[int, int]:
        """(understanding, generation) samples per request."""
        return self.und_group_size or self.group_size, self.gen_group_size or self.group_size

    def validate(self) -> None:
        from actors.text_rollout import TEXT_BACKENDS

        for role in ("text", "image"):
            n = getattr(self, f"{role}_workers")
            check(
                isinstance(n, int) and n >= 0,
                f"rollout.{role}_workers",
                n,
                "must be an integer >= 0",
                "use 0 for in-process, N >= 1 for N Ray actors",
            )
            cpus = getattr(self, f"{role}_num_cpus")
            check(
                cpus > 0,
                f"rollout.{role}_num_cpus",
                cpus,
                "must be > 0 (an actor with no CPU may be scheduled onto an overloaded node)",
                "use 1.0, or a fraction like 0.5 to pack workers",
            )
            gpus = getattr(self, f"{role}_num_gpus")
            check(
                gpus >= 0 and (gpus <= 1 or float(gpus).is_integer()),
                f"rollout.{role}_num_gpus",
                gpus,
                "must be >= 0, a fraction of one GPU or a whole number of GPUs",
                "use 0 on CPU, 1 or 0.5 on GPU",
            )
            bs = getattr(self, f"{role}_batch_size")
            check(
                isinstance(bs, int) and bs >= 1,
                f"rollout.{role}_batch_size",
                bs,
                "must be an integer >= 1",
                "use 8 for text, 4 for images",
            )
        check(
            self.text_backend in TEXT_BACKENDS,
            "rollout.text_backend",
            self.text_backend,
            f"is not one of {sorted(TEXT_BACKENDS)}",
            f"use one of {sorted(TEXT_BACKENDS)}",
        )
        check(
            0 < self.text_top_p <= 1,
            "rollout.text_top_p",
            self.text_top_p,
            "must be in (0, 1]",
            "use 1.0 (on-policy: the learner scores the untruncated distribution)",
        )
        check(
            self.text_top_p == 1.0 or self.text_backend == "vllm",
            "rollout.text_top_p",
            self.text_top_p,
            f"only the vllm backend samples with top-p; text_backend={self.text_backend!r} does not",
            "use 1.0, or rollout.text_backend=vllm",
        )
        check(
            isinstance(self.text_vllm_kv_cache_gib, int) and self.text_vllm_kv_cache_gib >= 1,
            "rollout.text_vllm_kv_cache_gib",
            self.text_vllm_kv_cache_gib,
            "must be a whole number of GiB >= 1",
            "use 1 for tiny models on CPU, more for real ones",
        )
        check(
            not self.text_python
            or (os.path.isfile(self.text_python) and os.access(self.text_python, os.X_OK)),
            "rollout.text_python",
            self.text_python,
            "is not an executable file",
            "build the environment (`make .venv-vllm`) and give the path of its bin/python, "
            "or leave it empty to run text workers under the driver's interpreter",
        )
        check(
            isinstance(self.group_size, int) and self.group_size >= 2,
            "rollout.group_size",
            self.group_size,
            "must be an integer >= 2 (group normalisation needs a sample std)",
            "use 8 (PairUni 1B) or 4 (PairUni 7B)",
        )
        for task in ("und", "gen"):
            n = getattr(self, f"{task}_group_size")
            check(
                isinstance(n, int) and (n == 0 or n >= 2),
                f"rollout.{task}_group_size",
                n,
                "must be 0 (use rollout.group_size) or an integer >= 2",
                "leave it at 0 unless the two tasks need different group sizes",
            )
        check(
            isinstance(self.max_restarts, int) and self.max_restarts >= 0,
            "rollout.max_restarts",
            self.max_restarts,
            "must be an integer >= 0",
            "use 3",
        )
        check(
            self.request_timeout_s > 0,
            "rollout.request_timeout_s",
            self.request_timeout_s,
            "must be > 0 seconds",
            "use 600",
        )

    def resources(self, role: str) -> dict[str, float]:
        """``ray.remote`` options of one worker of ``role`` (text | image)."""
        if role not in ("text", "image"):
            raise ValueError(f"role {role!r} is not one of ('text', 'image')")
        return {
            "num_cpus": getattr(self, f"{role}_num_cpus"),
            "num_gpus": getattr(self, f"{role}_num_gpus"),
        }
