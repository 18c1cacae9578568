"""Learner configuration: the algorithm-side knobs (advantages, policy loss, SimPO), the
optimiser, the DeepSpeed engine (ZeRO stage, bf16, micro-batch token budget, reference
model) and the learner group's size and resources.

Defaults follow PairUni (the default algorithm, ``pair_grpo``): clip eps 0.2 on both sides,
no KL term (beta_KL = 0), learning rate 1e-6; the paper's rollout group size (4 for the 7B
model, 8 for 1B) is a rollout setting and lives with the rollout workers' config.
Choosing ``algorithm`` changes no other key: each paper's full settings (DSR's clip-higher
0.2 / 0.28, beta_KL 0.04, lr 3e-6 with cosine decay, ...) are written out, with their
sources, in the run configs under ``deploy/configs/`` (the README lists them).

Valid names come from the registries in ``learner.advantages`` and ``learner.losses``, so a
name added there is accepted here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from models.config import check

ALGORITHMS: dict[str, tuple[str | None, str]] = {
    "pair_grpo": ("pair_grpo", "clip"),
    "grpo": ("grpo", "clip"),
    "dsr_grpo": ("grpo", "clip"),
    "dsr_simpo": (None, "simpo"),
    "simpo": (None, "simpo"),  # online SimPO on any reward (DSR appendix A.4: CLIP score)
}
"""algorithm -> (advantage estimator in ADV_ESTIMATORS or None, objective in OBJECTIVES)."""

OPTIMIZERS = ("adamw", "fused_adam")
"""Names in ``learner.learner.OPTIMIZERS`` (kept here so validating a config imports no DeepSpeed)."""
ZERO_STAGES = (0, 1, 2)
"""ZeRO stages the learner supports."""


@dataclass(frozen=True)
class LearnerConfig:
    """How rewards become advantages and advantages become a loss."""

    # --- algorithm ---
    algorithm: str = "pair_grpo"
    """pair_grpo (PairUni) | grpo | dsr_grpo (DSR with GRPO) | dsr_simpo (DSR online SimPO) |
    simpo (online SimPO on other rewards, e.g. DSR appendix A.4's CLIP score)."""

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
    """beta_KL, weight of the KL to the reference policy (PairUni 0; DSR 0.04)."""
    kl_estimator: str = "k3"
    """Per-token KL estimator (Schulman 2020; verl ``kl_loss_type``): k1 (logp - ref) | k2
    (0.5 * (logp - ref)^2) | k3 (exp(ref - logp) - (ref - logp) - 1, clamped at 10 as verl's
    ``low_var_kl``). Default k3 (DeepSeekMath GRPO eq. 4; verl's default ``low_var_kl``)."""
    loss_agg: str = "task-token-mean"
    """Token aggregation: token-mean (DAPO) | seq-mean-token-mean (GRPO) | task-token-mean |
    seq-mean-token-sum-norm (Dr. GRPO: token sums / ``loss_agg_constant``, mean over sequences)."""
    loss_agg_constant: float = 0.0
    """The constant length normaliser of loss_agg=seq-mean-token-sum-norm (Dr. GRPO's
    MAX_TOKENS; verl ``loss_scale_factor``, whose default is the padded response length).
    Required > 0 with that mode, unused by the others (default 0: unset). A good value: the
    maximum generated length (``model.max_new_tokens`` for answers); for images the number of
    image tokens (576 for Janus-Pro at 384 px). One constant serves both tasks, so a long image
    rollout then weighs more than a short answer: pick it for the task that matters most."""
    dual_clip: bool = False
    """Dual-clip PPO (Ye et al. 2020, "Mastering complex control in MOBA games"; verl applies it
    always): a token with A < 0 has its loss capped at -clip_ratio_c * A. Default off (the
    PairUni and DSR objective, unchanged)."""
    clip_ratio_c: float = 3.0
    """The dual clip's bound c on the ratio for A < 0; must be > 1 (default 3.0: verl
    ``clip_ratio_c``). Read only with ``dual_clip``."""

    ppo_epochs: int = 1
    """Optimiser steps per rollout batch (verl ``ppo_epochs``, OpenRLHF ``max_epochs``). Epochs
    after the first reuse the batch: the ratio to the sampling policy moves off 1 and the clip
    range bounds it (PairUni and DSR: 1, strictly on-policy)."""

    # --- online SimPO (DSR section 3.3, eq. 5) ---
    simpo_beta: float = 2.0
    """SimPO beta, scale of the length-normalised log-likelihood reward (DSR 2.0)."""
    simpo_gamma: float = 0.5
    """SimPO gamma, the target reward margin (DSR 0.5)."""

    # --- optimiser ---
    lr: float = 1e-6
    """Learning rate (PairUni 1e-6)."""
    lr_schedule: str = "constant"
    """Learning-rate schedule after warm-up (``learner.schedule``): constant | cosine | linear
    (PairUni: constant; DSR section 4.1: cosine)."""
    warmup_steps: int = 0
    """Optimiser steps of linear warm-up from 0 to ``lr`` (DSR section 4.1: 5; PairUni: none stated)."""
    min_lr_ratio: float = 0.0
    """Floor of the decay, as a fraction of ``lr`` (cosine / linear end there)."""
    lr_decay_steps: int = 0
    """Optimiser steps the schedule spans, warm-up included; 0: ``train.steps x ppo_epochs``
    (the driver fills it in). Past it the factor stays at ``min_lr_ratio``."""
    optimizer: str = "adamw"
    """Optimiser: adamw (torch.optim.AdamW, no compiled ops) | fused_adam (DeepSpeed FusedAdam)."""
    weight_decay: float = 0.0
    """Decoupled (AdamW) weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam (beta1, beta2)."""
    adam_eps: float = 1e-8
    """Adam epsilon in the update's denominator."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 turns clipping off."""

    # --- DeepSpeed engine (learner.learner) ---
    zero_stage: int = 2
    """ZeRO stage: 0 (data parallel) | 1 (shard optimiser state) | 2 (+ shard gradients)."""
    bf16: bool = True
    """bf16 mixed precision (fp32 master weights) on a GPU learner; a CPU learner trains in fp32."""
    gradient_checkpointing: bool = False
    """Recompute the language model's activations in backward (saves memory, costs compute)."""
    micro_batch_tokens: int = 8192
    """Token budget of one micro-batch: completion tokens (x2 for CFG-combined image tokens)."""
    use_ref_model: bool = True
    """Keep a frozen copy of the initial policy for the KL term; built only when kl_coef > 0."""

    # --- learner group (learner.group) ---
    num_learners: int = 1
    """Learner actors (data-parallel ranks); 0 runs one learner in the driver process (no Ray)."""
    learner_num_cpus: float = 1.0
    """CPUs reserved per learner actor."""
    learner_num_gpus: float = 0.0
    """GPUs per learner actor: 0 (CPU, gloo) or a whole number >= 1 (nccl); a fraction only with one learner."""

    def with_horizon(self, train_steps: int) -> LearnerConfig:
        """This config with ``lr_decay_steps`` resolved for a run of ``train_steps`` updates
        (each ``ppo_epochs`` optimiser steps); an explicit value is kept."""
        if self.lr_decay_steps:
            return self
        return replace(self, lr_decay_steps=train_steps * self.ppo_epochs)

    @property
    def adv_estimator(self) -> str | None:
        """Name in ``learner.advantages.ADV_ESTIMATORS`` (None for SimPO, which ranks rewards)."""
        return ALGORITHMS[self.algorithm][0]

    @property
    def policy_loss(self) -> str:
        """Name in ``learner.objectives.OBJECTIVES`` (the objective this algorithm trains)."""
        return ALGORITHMS[self.algorithm][1]

    def validate(self) -> None:
        # The registries hold torch functions: imported here, so that reading a config (the
        # CLI's `config keys`, a driver on a CPU-only head) does not import torch.
        from learner.advantages import ADV_SCALES, REWARD_COMBINE
        from learner.losses import AGG_MODES, KL_ESTIMATORS

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
        one_of("learner.kl_estimator", self.kl_estimator, KL_ESTIMATORS, "use 'k3'")
        check(
            self.loss_agg_constant >= 0,
            "learner.loss_agg_constant",
            self.loss_agg_constant,
            "must be >= 0 (0: unset)",
            "use 0, or the maximum generated length with loss_agg=seq-mean-token-sum-norm",
        )
        check(
            self.loss_agg != "seq-mean-token-sum-norm" or self.loss_agg_constant > 0,
            "learner.loss_agg_constant",
            self.loss_agg_constant,
            "must be > 0 when learner.loss_agg='seq-mean-token-sum-norm' (the constant that "
            "divides each sequence's summed token losses)",
            "set it to the maximum generated length (for images the number of image tokens, "
            "576 for Janus-Pro)",
        )
        check(
            self.clip_ratio_c > 1,
            "learner.clip_ratio_c",
            self.clip_ratio_c,
            "must be > 1 (the dual clip caps the loss of a token with A < 0 at "
            "-clip_ratio_c * A; c <= 1 would cap tokens at ratio 1)",
            "use 3.0 (verl)",
        )
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
        self._validate_schedule()
        check(
            isinstance(self.ppo_epochs, int) and self.ppo_epochs >= 1,
            "learner.ppo_epochs",
            self.ppo_epochs,
            "must be an integer >= 1",
            "use 1 (on-policy, the papers' setting)",
        )
        self._validate_engine()

    def _validate_schedule(self) -> None:
        from learner.schedule import SCHEDULES

        check(
            self.lr_schedule in SCHEDULES,
            "learner.lr_schedule",
            self.lr_schedule,
            f"must be one of {SCHEDULES}",
            "use 'constant' (PairUni) or 'cosine' (DSR)",
        )
        check(
            isinstance(self.warmup_steps, int) and self.warmup_steps >= 0,
            "learner.warmup_steps",
            self.warmup_steps,
            "must be an integer >= 0",
            "use 0, or 5 as DSR does",
        )
        check(
            0.0 <= self.min_lr_ratio <= 1.0,
            "learner.min_lr_ratio",
            self.min_lr_ratio,
            "must be in [0, 1]",
            "use 0.0 (decay to zero)",
        )
        check(
            isinstance(self.lr_decay_steps, int) and self.lr_decay_steps >= 0,
            "learner.lr_decay_steps",
            self.lr_decay_steps,
            "must be an integer >= 0 (0: train.steps x ppo_epochs)",
            "leave it 0",
        )
        check(
            not self.lr_decay_steps
            or self.lr_schedule == "constant"
            or self.lr_decay_steps > self.warmup_steps,
            "learner.lr_decay_steps",
            self.lr_decay_steps,
            f"must exceed learner.warmup_steps={self.warmup_steps} for a decaying schedule",
            "raise train.steps or lower the warm-up",
        )

    def _validate_engine(self) -> None:
        """The optimiser, DeepSpeed and group fields (``validate`` calls this)."""
        check(
            self.optimizer in OPTIMIZERS,
            "learner.optimizer",
            self.optimizer,
            f"must be one of {OPTIMIZERS}",
            "use 'adamw'",
        )
        check(
            self.weight_decay >= 0,
            "learner.weight_decay",
            self.weight_decay,
            "must be >= 0",
            "use 0.0",
        )
        check(
            len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
            "learner.adam_betas",
            self.adam_betas,
            "must be two numbers in [0, 1)",
            "use [0.9, 0.999]",
        )
        check(self.adam_eps > 0, "learner.adam_eps", self.adam_eps, "must be > 0", "use 1e-8")
        check(
            self.grad_clip >= 0,
            "learner.grad_clip",
            self.grad_clip,
            "must be >= 0 (0 turns clipping off)",
            "use 1.0",
        )
        check(
            self.zero_stage in ZERO_STAGES,
            "learner.zero_stage",
            self.zero_stage,
            f"must be one of {ZERO_STAGES} (stage 3 shards the parameters, which the log-prob "
            "recompute and the weight publisher need whole)",
            "use 2",
        )
        check(
            self.micro_batch_tokens >= 1,
            "learner.micro_batch_tokens",
            self.micro_batch_tokens,
            "must be >= 1",
            "use 8192 (a rollout longer than the budget gets a micro-batch of its own)",
        )
        check(
            not (self.kl_coef > 0 and not self.use_ref_model),
            "learner.use_ref_model",
            self.use_ref_model,
            f"must be true when learner.kl_coef={self.kl_coef} > 0 (the KL term needs the "
            "reference policy's log-probs)",
            "set learner.use_ref_model=true, or learner.kl_coef=0",
        )
        check(
            self.num_learners >= 0,
            "learner.num_learners",
            self.num_learners,
            "must be >= 0",
            "use 1 (one learner actor) or 0 (in the driver process)",
        )
        check(
            self.learner_num_cpus > 0,
            "learner.learner_num_cpus",
            self.learner_num_cpus,
            "must be > 0",
            "use 1",
        )
        g = self.learner_num_gpus
        check(
            g >= 0 and (g == int(g) or self.num_learners <= 1),
            "learner.learner_num_gpus",
            g,
            "must be 0 or a whole number of GPUs when num_learners > 1 (nccl needs one GPU "
            "per rank)",
            "use 0 (CPU) or 1",
        )
