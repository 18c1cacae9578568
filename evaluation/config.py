"""Evaluation settings (``eval.*``): benchmarks for `pairuni eval`, held-out slices for
``train.eval_every``, and the generation-benchmark writers. Imports no model library."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.config import check

GEN_SCORERS = ("toy_judge", "hps", "clip_score")
"""Scores computed here on generated images (``evaluation.scores.SCORERS``)."""


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: lmms-eval benchmarks, held-out slices during training, generation sets."""

    benchmarks: tuple[str, ...] = ()
    """lmms-eval task names `pairuni eval` runs (mmmu_val, mmstar, mme, pope, ...)."""
    data: dict[str, str] = field(default_factory=dict)
    """Task -> a local copy of its dataset in the task's own schema: a parquet file, a folder
    of parquet files or a `datasets.save_to_disk` folder. Empty: lmms-eval loads the task's
    own dataset_path (which needs the hub, or its cache)."""
    limit: int = 0
    """Items per lmms-eval task (0: all of them)."""
    batch_size: int = 8
    """Requests per model call in the lmms-eval plugin."""
    max_new_tokens: int = 0
    """Cap on an answer's tokens in lmms-eval tasks (0: what the task asks)."""
    out: str = ""
    """Where `pairuni eval` writes results.json and results.md (empty: <run dir>/eval)."""
    python: str = ""
    """Interpreter with lmms-eval that runs the benchmarks (empty: .venv-eval/bin/python of
    this checkout when it exists, else the current one)."""
    geneval: tuple[str, ...] = ()
    """GenEval's evaluation_metadata.jsonl: `pairuni eval` writes images in GenEval's layout."""
    t2i_compbench: tuple[str, ...] = ()
    """T2I-CompBench prompt files (<category>_val.txt): images in its layout, per category."""
    wise: tuple[str, ...] = ()
    """WISE prompt JSON files: one image per prompt_id."""
    und_heldout: tuple[str, ...] = ()
    """Held-out understanding data for train.eval_every: parquet files in the verl / Orsta
    layout (what pairing.und reads)."""
    gen_heldout: tuple[str, ...] = ()
    """Held-out generation prompts for train.eval_every: JSONL files (a `prompt` per line) or
    webdataset shards (what pairing.gen reads)."""
    und_items: int = 200
    """Held-out understanding items evaluated (the first ones; 0: all)."""
    gen_prompts: int = 32
    """Held-out generation prompts evaluated (the first ones; 0: all)."""
    answer_samples: int = 8
    """Answers sampled per held-out question at model.text_temperature (the sampled
    accuracy, beside the greedy one)."""
    image_samples: int = 4
    """Images sampled per held-out prompt."""
    gen_scorers: tuple[str, ...] = ("toy_judge",)
    """Scores of generated images: toy_judge | hps | clip_score (hps and clip_score use the
    rewards.hps / rewards.clip_score settings: their checkpoints)."""
    num_cpus: float = 0.0
    """CPUs of the evaluator actor during training (0: it takes turns with the others)."""
    num_gpus: float = 0.0
    """GPUs of the evaluator actor during training."""

    def validate(self) -> None:
        for key in ("limit", "und_items", "gen_prompts"):
            v = getattr(self, key)
            check(v >= 0, f"eval.{key}", v, "must be >= 0", "use 0 for all")
        for key in ("batch_size", "answer_samples", "image_samples"):
            v = getattr(self, key)
            check(v >= 1, f"eval.{key}", v, "must be >= 1", "use the default")
        check(
            self.max_new_tokens >= 0,
            "eval.max_new_tokens",
            self.max_new_tokens,
            "must be >= 0",
            "use 0 (the task's)",
        )
        bad = [s for s in self.gen_scorers if s not in GEN_SCORERS]
        check(
            not bad,
            "eval.gen_scorers",
            self.gen_scorers,
            f"{bad} unknown; valid: {list(GEN_SCORERS)}",
            "use e.g. [toy_judge] or [hps, clip_score]",
        )
        unknown = [k for k in self.data if k not in self.benchmarks]
        check(
            not unknown,
            "eval.data",
            dict(self.data),
            f"names tasks {unknown} that eval.benchmarks {list(self.benchmarks)} does not run",
            "add them to eval.benchmarks, or drop them from eval.data",
        )
        check(
            self.num_cpus >= 0 and self.num_gpus >= 0,
            "eval.num_cpus" if self.num_cpus < 0 else "eval.num_gpus",
            self.num_cpus if self.num_cpus < 0 else self.num_gpus,
            "must be >= 0",
            "use 0",
        )

        check(
            len(self.geneval) <= 1,
            "eval.geneval",
            self.geneval,
            "is one file",
            "give GenEval's evaluation_metadata.jsonl",
        )

    @property
    def has_heldout(self) -> bool:
        """Whether train.eval_every has anything to evaluate."""
        return bool(self.und_heldout or self.gen_heldout)
