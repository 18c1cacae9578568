"""Learner configuration: the algorithm-side knobs (advantages, policy loss, SimPO, lr).

Defaults follow PairUni (the default algorithm, ``pair_grpo``): clip eps 0.2 on both sides,
no KL term (beta_KL = 0), learning rate 1e-6; the paper's rollout group size (4 for the 7B
model, 8 for 1B) is a rollout setting and lives with the rollout workers' config.
``LearnerConfig.paper_defaults(algorithm)`` gives each algorithm's published values:
DSR's GRPO uses clip-higher (eps_low 0.2, eps_high 0.28), beta_KL 0.04 and a token-level
loss (DAPO style), with G = 8; DSR's online SimPO uses beta 2.0 and gamma 0.5.

Valid names come from the registries in ``learner.advantages`` and ``learner.losses``, so a
name added there is accepted here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from learner.advantages import ADV_SCALES, REWARD_COMBINE
from learner.losses import AGG_MODES
from models.config import check

ALGORITHMS: dict[str, tuple[str | None, str]] = {
    "pair_grpo": ("pair_grpo", "clip"),
    "grpo": ("grpo", "clip"),
    "dsr_grpo": ("grpo", "clip"),
    "dsr_simpo": (None, "simpo"),
}
"""algorithm -> (advantage estimator in ADV_ESTIMATORS or None, policy loss in POLICY_LOSSES)."""

# Published values that differ from the dataclass defaults (PairUni's), per algorithm.
_PAPER_OVERRIDES: dict[str, dict[str, object]] = {
    "pair_grpo": {},  # PairUni: eps 0.2, beta_KL 0, lr 1e-6 (the defaults)
    "grpo": {"loss_agg": "seq-mean-token-mean", "kl_coef": 0.04},  # DeepSeekMath GRPO
    "dsr_grpo": {"eps_high": 0.28, "kl_coef": 0.04, "loss_agg": "token-mean"},  # DSR
    "dsr_simpo": {},  # DSR online SimPO: beta 2.0, gamma 0.5 (the defaults)
}


@dataclass(frozen=True)
class LearnerConfig:
    """How rewards become advantages and advantages become a loss."""

    # --- algorithm ---
    algorithm: str = "pair_grpo"
    """pair_grpo (PairUni) | grpo | dsr_grpo (DSR with GRPO) | dsr_simpo (DSR online SimPO)."""

    # --- advantages (learner.advantages) ---
    adv_scale: str = "group"
    """Advantage scale: group ((r - mean) / (std + eps), GRPO / PairUni eq. 2) | none (Dr. GRPO)."""
    adv_eps: float = 1e-6
    """eps added to the group std in the advantage denominator."""
    reward_combine: str = "sum_then_normalise"
    """Several reward terms of one task: sum_then_normalise | normalise_then_sum."""

    # --- policy loss (learner.losses) ---
    eps_low: float = 0.2
    """Lower clip range: ratio >= 1 - eps_low (PairUni 0.2; DSR 0.2)."""
    eps_high: float = 0.2
    """Upper clip range: ratio <= 1 + eps_high (PairUni 0.2; DSR clip-higher 0.28)."""
    kl_coef: float = 0.0
    """beta_KL, weight of the k3 KL to the reference policy (PairUni 0; DSR 0.04)."""
    loss_agg: str = "task-token-mean"
    """Token aggregation: token-mean (DAPO) | seq-mean-token-mean (GRPO) | task-token-mean."""

    # --- online SimPO (DSR section 3.3, eq. 5) ---
    simpo_beta: float = 2.0
    """SimPO beta, scale of the length-normalised log-likelihood reward (DSR 2.0)."""
    simpo_gamma: float = 0.5
    """SimPO gamma, the target reward margin (DSR 0.5)."""

    # --- optimiser ---
    lr: float = 1e-6
    """Learning rate (PairUni 1e-6)."""

    @classmethod
    def paper_defaults(cls, algorithm: str) -> LearnerConfig:
        """The published settings of ``algorithm`` (module docstring), validated."""
        check(
            algorithm in ALGORITHMS,
            "learner.algorithm",
            algorithm,
            f"must be one of {tuple(ALGORITHMS)}",
            "use 'pair_grpo'",
        )
        cfg = replace(cls(algorithm=algorithm), **_PAPER_OVERRIDES[algorithm])
        cfg.validate()
        return cfg

    @property
    def adv_estimator(self) -> str | None:
        """Name in ``learner.advantages.ADV_ESTIMATORS`` (None for SimPO, which ranks rewards)."""
        return ALGORITHMS[self.algorithm][0]

    @property
    def policy_loss(self) -> str:
        """Name in ``learner.losses.POLICY_LOSSES``."""
        return ALGORITHMS[self.algorithm][1]

    def validate(self) -> None:
        """Raise ``models.config.ConfigError`` naming the first field that cannot work."""

        def one_of(key: str, value: str, names, fix: str) -> None:
            check(value in names, key, value, f"must be one of {tuple(names)}", fix)

        one_of("learner.algorithm", self.algorithm, ALGORITHMS, "use 'pair_grpo'")
        one_of("learner.adv_scale", self.adv_scale, ADV_SCALES, "use 'group'")
        one_of(
            "learner.reward_combine",
            self.reward_combine,
            REWARD_COMBINE,
            "use 'sum_then_normalise'",
        )
        one_of("learner.loss_agg", self.loss_agg, AGG_MODES, "use 'task-token-mean'")
        check(self.adv_eps >= 0, "learner.adv_eps", self.adv_eps, "must be >= 0", "use 1e-6")
        check(
            0 <= self.eps_low < 1,
            "learner.eps_low",
            self.eps_low,
            "must be in [0, 1) (the lower clip bound 1 - eps_low must stay > 0)",
            "use 0.2",
        )
        check(
            self.eps_high >= 0,
            "learner.eps_high",
            self.eps_high,
            "must be >= 0",
            "use 0.2 (PairUni) or 0.28 (DSR clip-higher)",
        )
        check(
            self.kl_coef >= 0,
            "learner.kl_coef",
            self.kl_coef,
            "must be >= 0",
            "use 0 (PairUni) or 0.04 (DSR)",
        )
        check(
            not (self.algorithm == "dsr_simpo" and self.kl_coef > 0),
            "learner.kl_coef",
            self.kl_coef,
            "is unused by dsr_simpo (SimPO is reference-free)",
            "set learner.kl_coef=0, or use learner.algorithm=dsr_grpo",
        )
        check(
            self.simpo_beta > 0,
            "learner.simpo_beta",
            self.simpo_beta,
            "must be > 0",
            "use 2.0 (DSR)",
        )
        check(
            self.simpo_gamma >= 0,
            "learner.simpo_gamma",
            self.simpo_gamma,
            "must be >= 0",
            "use 0.5 (DSR)",
        )
        check(self.lr > 0, "learner.lr", self.lr, "must be > 0", "use 1e-6 (PairUni)")
