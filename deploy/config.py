"""Typed run config: package dataclasses composed, loaded from YAML + dotted overrides.

    cfg = load_config(RunConfig, "deploy/configs/smoke.yaml", ["learner.lr=1e-5"])
    write_resolved(cfg, run_dir)            # run_dir/config.yaml, every key resolved

Rules: every key must exist (an unknown one is an error that suggests the closest valid key),
values are type-checked against the dataclass annotations (ints are accepted for floats,
lists for tuples), and each section's ``validate()`` runs after construction. Override values
are parsed as YAML scalars, so ``a.b=3`` is an int, ``a.b=true`` a bool, ``a.b=[1,2]`` a list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from actors.config import RolloutConfig
from evaluation.config import EvalConfig
from learner.config import LearnerConfig
from models.config import (  # noqa: F401  (the config machinery, re-exported for callers)
    ConfigError,
    ModelConfig,
    apply_overrides,
    check,
    describe,
    field_docs,
    from_dict,
    load_config,
    to_dict,
    validate_all,
    write_resolved,
)
from models.tasks import Task
from rewards.config import RewardsConfig
from rewards.spec import endpoints as reward_endpoints


@dataclass(frozen=True)
class RunSection:
    """Where a run writes and how it is named."""

    name: str = "run"
    """Run name; the run directory is <root>/<name>."""
    root: str = "runs"
    """Parent directory of run directories."""
    seed: int = 0
    """Global seed (data order, sampling, initialisation)."""

    def validate(self) -> None:
        check(
            bool(self.name) and "/" not in self.name,
            "run.name",
            self.name,
            "must be a non-empty name without '/'",
            "use e.g. run.name=smoke",
        )

    @property
    def dir(self) -> Path:
        return Path(self.root) / self.name


@dataclass(frozen=True)
class TrainSection:
    """The training loop (deploy/train.py)."""

    manifest: str = ""
    """PairUG manifest (parquet) written by `pairuni pair`."""
    steps: int = 100
    """Training steps (one learner update each)."""
    pairs_per_step: int = 8
    """B: pairs drawn per step; each gives G understanding and G generation rollouts."""
    und_rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0})
    """Reward terms of understanding rollouts and their weights (accuracy | dual); each term
    is the reward endpoint of its name, which rewards.endpoints must list."""
    gen_rewards: dict[str, float] = field(default_factory=lambda: {"hps": 1.0})
    """Reward terms of generation rollouts and their weights (hps | dual | toy_judge); each
    term is the reward endpoint of its name, which rewards.endpoints must list."""
    tasks: tuple[str, ...] = ("und", "gen")
    """The tasks trained (DSR section 4.5's strategies): und and gen jointly (the default,
    PairUni and DSR's unified model), or one alone. A task left out gets no requests, no
    rollout workers and no reward endpoints; its reward terms are ignored."""
    strategy: str = "joint"
    """joint: one policy trains train.tasks (default) | alternate: DSR section 4.5's two
    models, a generation model and an understanding model from the same start, trained in
    turns, one epoch each, each rewarded by the other's (frozen) dual likelihood
    (``deploy/alternate.py``). With alternate, train.steps is ignored: each turn is one pass
    over the items of its task."""
    alternate_epochs: int = 2
    """alternate: turns in all (each one epoch of one model); DSR trains 5 epochs, not stating
    how they split between the two models."""
    alternate_first: str = "gen"
    """alternate: the model trained in the first turn, gen | und (DSR does not say)."""
    max_failed_reward_fraction: float = 0.25
    """A step whose share of NaN (failed) rewards exceeds this stops the run."""
    checkpoint_every: int = 0
    """Checkpoint every k steps (0: only at the end and on SIGTERM / Ctrl-C)."""
    eval_every: int = 0
    """Every k steps (and at the last), evaluate the policy on the held-out slices of
    ``eval.*`` (``evaluation/during_training.py``) and log ``eval/*`` metrics. 0: off."""
    grad_cosine_every: int = 0
    """Every k steps (and at the first), log grad/cos_und_gen: the cosine between the
    understanding and generation losses' gradients on the shared parameters, from the same
    batch before its update (PairUni Fig. 1). Costs one extra backward per task. 0: off."""
    # --- asynchronous training (deploy/pipeline.py) ---
    max_staleness: int = 0
    """0: synchronous on-policy steps (sample, score, train, publish). k >= 1: the rollouts of
    step s+k are sampled and scored while the learner trains on step s, with the weights of
    step s: rollouts are at most k learner steps behind (verl's one-step off-policy recipe
    is k = 1; AReaL's max_head_offpolicyness). Rewards stream as chunks finish either way."""

    def validate(self) -> None:
        check(self.steps >= 1, "train.steps", self.steps, "must be >= 1", "use e.g. 100")
        check(
            self.eval_every >= 0,
            "train.eval_every",
            self.eval_every,
            "must be >= 0",
            "use 0 (off) or e.g. 50",
        )
        check(
            self.grad_cosine_every >= 0,
            "train.grad_cosine_every",
            self.grad_cosine_every,
            "must be >= 0",
            "use 0 (off) or e.g. 10",
        )
        check(
            self.pairs_per_step >= 1,
            "train.pairs_per_step",
            self.pairs_per_step,
            "must be >= 1",
            "use e.g. 8",
        )
        check(
            0.0 <= self.max_failed_reward_fraction <= 1.0,
            "train.max_failed_reward_fraction",
            self.max_failed_reward_fraction,
            "must be in [0, 1]",
            "use 0.25",
        )
        check(
            self.max_staleness >= 0,
            "train.max_staleness",
            self.max_staleness,
            "must be >= 0",
            "use 0 (synchronous) or 1 (one step off-policy)",
        )
        check(
            self.checkpoint_every >= 0,
            "train.checkpoint_every",
            self.checkpoint_every,
            "must be >= 0",
            "use 0 to checkpoint only at the end",
        )
        names = tuple(t.value for t in Task)
        check(
            self.strategy in ("joint", "alternate"),
            "train.strategy",
            self.strategy,
            "must be joint or alternate",
            "use joint (one model) or alternate (DSR section 4.5's two models)",
        )
        check(
            self.strategy == "joint" or self.max_staleness == 0,
            "train.max_staleness",
            self.max_staleness,
            "the alternating strategy runs synchronous turns",
            "use 0 with train.strategy=alternate",
        )
        check(
            self.strategy == "joint" or set(self.tasks) == set(names),
            "train.tasks",
            self.tasks,
            "alternate trains both tasks, one model each; train.tasks is for joint runs",
            "leave train.tasks at [und, gen]",
        )
        check(
            self.alternate_epochs >= 1 and self.alternate_first in names,
            "train.alternate_epochs" if self.alternate_epochs < 1 else "train.alternate_first",
            self.alternate_epochs if self.alternate_epochs < 1 else self.alternate_first,
            "alternate_epochs must be >= 1 and alternate_first und or gen",
            "use alternate_epochs 2, alternate_first gen",
        )
        check(
            bool(self.tasks) and all(t in names for t in self.tasks),
            "train.tasks",
            self.tasks,
            f"must be a non-empty subset of {list(names)}",
            "use [und, gen] (joint), [und] or [gen]",
        )
        for task in self.tasks:
            key = f"train.{task}_rewards"
            check(
                bool(self.rewards(task)),
                key,
                getattr(self, f"{task}_rewards"),
                f"needs at least one reward term (train.tasks trains {task})",
                "e.g. {accuracy: 1.0} for und, {hps: 1.0} for gen",
            )

    def rewards(self, task: str) -> dict[str, float]:
        """The reward terms of ``task`` (und | gen) this run uses: none when it is not trained."""
        if task not in self.tasks:
            return {}
        return dict(getattr(self, f"{Task(task).value}_rewards"))

    @property
    def terms(self) -> dict[str, float]:
        """Every reward term the run uses (the endpoints it deploys), over its tasks."""
        return {k: v for task in self.tasks for k, v in self.rewards(task).items()}


@dataclass(frozen=True)
class SftSection:
    """Supervised fine-tuning on PairUG (deploy/sft.py, `pairuni sft`)."""

    manifest: str = ""
    """PairUG manifest (parquet) whose pairs are the SFT examples."""
    steps: int = 200
    """Optimiser steps."""
    pairs_per_step: int = 16
    """Pairs per step; each gives one understanding and one generation example."""
    und_per_step: int = 0
    """Understanding examples per step when the tasks should differ (0: pairs_per_step)."""
    gen_per_step: int = 0
    """Generation examples per step when the tasks should differ (0: pairs_per_step)."""
    lr: float = 1e-3
    """Learning rate of SFT (RL keeps learner.lr)."""

    def validate(self) -> None:
        check(self.steps >= 1, "sft.steps", self.steps, "must be >= 1", "use e.g. 200")
        check(
            self.pairs_per_step >= 1,
            "sft.pairs_per_step",
            self.pairs_per_step,
            "must be >= 1",
            "use e.g. 16",
        )
        check(self.lr > 0, "sft.lr", self.lr, "must be > 0", "use 1e-3 for the tiny model")
        for key in ("und_per_step", "gen_per_step"):
            v = getattr(self, key)
            check(v >= 0, f"sft.{key}", v, "must be >= 0", "use 0 (sft.pairs_per_step)")

    def per_step(self, task: str) -> int:
        """Examples of ``task`` (und | gen) per step."""
        return getattr(self, f"{task}_per_step") or self.pairs_per_step


@dataclass(frozen=True)
class QuickstartSection:
    """The toy-world quickstart (deploy/quickstart.py, `pairuni quickstart`)."""

    tiny_hidden: int = 128
    """Hidden size of the tiny Janus built for the toy world."""
    tiny_layers: int = 2
    """Language-model layers of the tiny Janus."""
    und_train: int = 600
    """Understanding items written to the toy world's training parquet."""
    gen_train: int = 240
    """Generation items written to the toy world's training shard."""
    num_clusters: int = 64
    """K of `pairuni pair` on the toy world (aligned pairs)."""
    threshold: float = 0.9
    """δ of `pairuni pair` on the toy world (retrieved pairs)."""
    pair_features: str = "resnet50"
    """Image features `pairuni pair` compares on the toy world: resnet50 (random weights:
    every toy image looks alike to it, s >= 0.99, so w_p ~ 1) | pixels (the image itself:
    similarities spread, so with a lower threshold the Pair-GRPO weight varies)."""
    eval_image_samples: int = 4
    """Images sampled per held-out prompt to measure the generation reward."""
    eval_answer_samples: int = 8
    """Answers sampled per held-out question (at model.text_temperature, as RL samples) for
    the sampled accuracy, reported beside the greedy one."""

    def validate(self) -> None:
        check(
            self.tiny_hidden >= 64 and self.tiny_hidden % 64 == 0,
            "quickstart.tiny_hidden",
            self.tiny_hidden,
            "must be a multiple of 64 (head_dim 64)",
            "use 128",
        )
        check(self.tiny_layers >= 1, "quickstart.tiny_layers", self.tiny_layers, ">= 1", "use 2")
        check(
            self.pair_features in ("resnet50", "pixels"),
            "quickstart.pair_features",
            self.pair_features,
            "must be resnet50 or pixels",
            "use resnet50 (the paper's extractor) or pixels (spread similarities)",
        )
        for key in (
            "und_train",
            "gen_train",
            "num_clusters",
            "eval_image_samples",
            "eval_answer_samples",
        ):
            v = getattr(self, key)
            check(v >= 1, f"quickstart.{key}", v, "must be >= 1", "use the default")


def reward_terms(task: str) -> tuple[str, ...]:
    """The reward terms ``task`` (und | gen) may use: the endpoints declared for it."""
    return tuple(name for name, spec in reward_endpoints().items() if task in spec.tasks)


@dataclass(frozen=True)
class RunConfig:
    """The whole training run: one section per package.

    The offline PairUG builder has its own config (``pairing.config.PairingConfig``, read by
    `pairuni pair`): it is a separate job whose output, the manifest, a run names.
    """

    run: RunSection = field(default_factory=RunSection)
    """Run directory and seed."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The unified model (models/)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Rollout workers: counts, resources, sampling (actors/)."""
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    """Reward endpoints (rewards/)."""
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    """Advantages, losses, optimiser, DeepSpeed (learner/)."""
    train: TrainSection = field(default_factory=TrainSection)
    """The training loop (deploy/train.py)."""
    sft: SftSection = field(default_factory=SftSection)
    """Supervised fine-tuning (deploy/sft.py)."""
    quickstart: QuickstartSection = field(default_factory=QuickstartSection)
    """The toy-world quickstart (deploy/quickstart.py)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation: `pairuni eval` and train.eval_every (evaluation/)."""

    def validate(self) -> None:
        for task in self.train.tasks:
            key, terms = f"train.{task}_rewards", self.train.rewards(task)
            valid = reward_terms(task)
            for term in terms:
                check(
                    term in valid,
                    key,
                    terms,
                    f"'{term}' is not a reward term for {task} rollouts; valid: {list(valid)}",
                    "use one of the valid terms",
                )
                check(
                    term in self.rewards.endpoints,
                    key,
                    terms,
                    f"'{term}' names the reward endpoint {term}, which rewards.endpoints "
                    f"{list(self.rewards.endpoints)} does not list",
                    f"add {term} to rewards.endpoints, or drop the term",
                )
        check(
            self.train.strategy == "joint"
            or (self.train.rewards("und") == {"dual": 1.0} == self.train.rewards("gen")),
            "train.strategy",
            self.train.strategy,
            "alternate rewards each model with the other's dual likelihood alone",
            "set train.und_rewards={dual: 1.0} and train.gen_rewards={dual: 1.0}",
        )
        dsr = self.learner.algorithm.startswith("dsr")
        uses_dual = "dual" in self.train.terms
        check(
            not dsr or uses_dual,
            "learner.algorithm",
            self.learner.algorithm,
            "DSR algorithms score rollouts with the dual self-reward",
            "set train.und_rewards={dual: 1.0} and train.gen_rewards={dual: 1.0}",
        )
