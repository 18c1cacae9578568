"""``train.eval_every``: the held-out evaluation (``evaluation.heldout.evaluate``, the
quickstart's) on the policy being trained, logged as ``eval/*`` metrics.

An evaluator actor holds its own copy of the policy (``models.registry.build_policy``, as
the rollout workers do), the held-out slices of ``eval.*`` and the scorers of
``eval.gen_scorers``. Every ``train.eval_every`` steps, at step 0 and at the last step, the
driver publishes the learner's weights once more (the same flat buffer the workers load)
and the actor loads them and evaluates: greedy and sampled understanding accuracy, overall
and per category, and the scores of sampled images. The draws use one fixed seed, so the
points of a curve differ by the weights alone.
"""

from __future__ import annotations

import time

from evaluation.heldout import Settings, evaluate, flat_metrics, load_heldout


def heldout_problems(cfg) -> list[str]:
    """What stops ``train.eval_every`` before any actor starts (``cfg``: a ``RunConfig``):
    no held-out slice, or a held-out file that is not there."""
    from pathlib import Path

    if not cfg.train.eval_every:
        return []
    e = cfg.eval
    if not e.has_heldout:
        return [
            f"train.eval_every={cfg.train.eval_every} evaluates the held-out slices "
            "eval.und_heldout / eval.gen_heldout, both empty: set eval.und_heldout=[PARQUET] "
            "and/or eval.gen_heldout=[JSONL or TAR], or train.eval_every=0"
        ]
    return [
        f"eval.{key}: {path!r}: no such file"
        for key in ("und_heldout", "gen_heldout")
        for path in getattr(e, key)
        if not Path(path).is_file()
    ]


class HeldOutEvaluator:
    """A policy copy + held-out items + scorers; ``evaluate(ref)`` loads weights and scores."""

    def __init__(self, model_cfg, eval_cfg, rewards_cfg, seed: int):
        from evaluation.scores import build_scorers
        from models.registry import build_policy

        self.policy = build_policy(model_cfg)
        self.heldout = load_heldout(
            eval_cfg.und_heldout, eval_cfg.gen_heldout, eval_cfg.und_items, eval_cfg.gen_prompts
        )
        self.settings = Settings(
            answer_samples=eval_cfg.answer_samples,
            image_samples=eval_cfg.image_samples,
            text_temperature=model_cfg.text_temperature,
            cfg_weight=model_cfg.cfg_weight,
        )
        self.scorers = (
            build_scorers(eval_cfg.gen_scorers, rewards_cfg) if self.heldout.prompts else {}
        )
        self.seed = seed

    def sizes(self) -> tuple[int, int]:
        """(understanding items, generation prompts) held out."""
        return len(self.heldout.und), len(self.heldout.prompts)

    def evaluate(self, ref) -> dict[str, float]:
        """Load the published weights ``ref`` (a ``WeightsRef``) and evaluate."""
        from actors.weights import fetch, load_into

        if ref is not None:
            load_into(self.policy.trainable_parameters(), fetch(ref), ref.manifest)
        self.policy.eval()
        result = evaluate(self.policy, self.heldout, self.settings, self.seed, self.scorers)
        return flat_metrics(result)


class TrainingEval:
    """The driver's side: when to evaluate, and the evaluator actor (none when off)."""

    def __init__(self, cfg):
        self.every = cfg.train.eval_every
        self.last = cfg.train.steps
        self.actor = None
        if not self.every:
            return
        from actors.group import as_actor

        e = cfg.eval
        self.actor = as_actor(HeldOutEvaluator, {"num_cpus": e.num_cpus, "num_gpus": e.num_gpus})
        self.actor = self.actor.remote(cfg.model, e, cfg.rewards, cfg.run.seed + 1)

    def due(self, step: int) -> bool:
        """Step 0 (the start), every ``train.eval_every`` steps, and the last step."""
        return bool(self.every) and (step % self.every == 0 or step == self.last)

    def __call__(self, step: int, learners) -> dict[str, float]:
        """``eval/*`` metrics of the learner's current weights when ``step`` is due, else {}."""
        if self.actor is None or not self.due(step):
            return {}
        import ray

        t0 = time.perf_counter()
        metrics = ray.get(self.actor.evaluate.remote(learners.publish_weights()))
        return {**metrics, "time/eval": time.perf_counter() - t0}

    def shutdown(self) -> None:
        """Stop the evaluator actor (the driver's close does, with the other roles)."""
        if self.actor is not None:
            import ray

            ray.kill(self.actor)
            self.actor = None
