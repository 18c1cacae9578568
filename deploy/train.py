"""The training loop.

    ray job submit --working-dir . --runtime-env deploy/runtime_env.yaml -- \\
        python -m deploy.train --config deploy/configs/<run>.yaml [key.sub=value ...]

One step: pairs -> understanding jobs to the text pool and generation jobs to the image pool
at the same time, each finished chunk's rewards requested at once -> Pair-GRPO advantages ->
learner update -> publish weights -> rollout workers (and the DSR endpoint) load the new
version before the next step samples. With ``train.max_staleness`` k >= 1 the batches of
the next k steps are sampled and scored meanwhile (``deploy/pipeline.py``).
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from actors.types import Rollout
from deploy import checkpoint
from deploy.config import RunConfig, load_config, write_resolved
from deploy.dataflow import (
    build_requests,
    diversity_metrics,
    reward_metrics,
    task_rewards,
)
from deploy.metrics import MetricsWriter, plot_curves
from deploy.pipeline import (
    Producer,
    RewardStream,
    Sampled,
    check_endpoint_versions,
    reward_versions,
    sample_batch,
)
from deploy.resources import ensure_cluster
from evaluation.during_training import TrainingEval, heldout_problems
from models.config import ConfigError
from models.registry import family
from models.tasks import Task
from rewards.spec import request_items

log = logging.getLogger("pairuni.train")
EVAL_CURVES = (
    "eval/und_accuracy_greedy",
    "eval/und_accuracy_sampled",
    "eval/gen_toy_judge_mean",
    "eval/gen_strict_success",
    "eval/gen_hps_mean",
)
"""train.eval_every's curves in curves.png (those a run logs)."""


def score(rollouts: list[Rollout], terms: dict[str, float], clients: dict) -> None:
    """Fill ``rollout.rewards[term]`` for every term (NaN where the endpoint gave none, or
    where the rollout has nothing it scores: its spec's ``item_of`` says so) and
    ``rollout.reward_details`` with the parts the endpoint reported."""
    for term in terms:
        todo, items = request_items(term, rollouts)
        values, details = clients[term].score_with_details(items) if todo else ([], [])
        for r in rollouts:
            r.rewards[term] = math.nan
        for r, v, d in zip(todo, values, details):
            r.rewards[term] = float(v)
            r.reward_details.update({f"{term}/{k}": x for k, x in d.items()})


def check_failures(rewards: torch.Tensor, limit: float, clients: dict, step: int) -> None:
    """Stop the run when the step's share of failed (NaN) rewards exceeds ``limit``."""
    frac = float(torch.isnan(rewards).double().mean()) if len(rewards) else 0.0
    if frac > limit:
        details = "; ".join(
            f"{k} at {c.target}: {c.stats()['failures']}"
            for k, c in clients.items()
            if c.num_failed
        )
        raise RuntimeError(
            f"step {step}: {frac:.0%} of rewards failed, above "
            f"train.max_failed_reward_fraction={limit}. Failed endpoints: {details or 'none'}"
        )


def policy_rewards(cfg: RunConfig):
    """``cfg.rewards`` with the DSR endpoint's copy built as the policy is: an empty
    ``rewards.dual.model_path`` means ``model.path`` (of family ``model.arch``), so a DSR run
    needs the checkpoint named once (empty both: the tiny random model); and the copy always
    scores with the run's ``model.diffusion`` (a masked-diffusion family's estimator: steps,
    prompt dropping, mask seed), so R_U and R_G are the policy's own estimate, also for the
    alternating strategy's other model, which this run's model settings describe too."""
    import dataclasses

    dual = dataclasses.replace(cfg.rewards.dual, diffusion=cfg.model.diffusion)
    if not dual.model_path:
        # empty model.path too: the tiny random model, of the policy's family (model.arch)
        dual = dataclasses.replace(dual, model_path=cfg.model.path, arch=cfg.model.arch)
    return dataclasses.replace(cfg.rewards, dual=dual)


def caption_problems(manifest: str, und_terms: dict[str, float]) -> list[str]:
    """A manifest with captioning items (DSR: an image, no question, no reference answer)
    needs understanding reward terms that score a description without a reference; a term
    whose endpoint has nothing to score in one (its spec's ``item_of`` gives None, as
    accuracy's does) would fail every such rollout, so it is refused up front."""
    import numpy as np

    from actors.types import Rollout, RolloutRequest
    from models.prompts import DESCRIBE_QUESTION
    from pairing.manifest import read_manifest, task_kind

    try:
        captions = sum(1 for p in read_manifest(manifest) if task_kind(p) == "caption")
    except Exception as e:  # pyarrow raises several types for a bad file
        return [f"train.manifest={manifest!r}: cannot be read ({type(e).__name__}: {e})"]
    if not captions:
        return []
    probe = RolloutRequest(
        0, 0, Task.UND, DESCRIBE_QUESTION, 1, 0, image=np.zeros((8, 8, 3), np.uint8)
    )
    rollout = Rollout(probe, 0, np.ones(1, np.int64), np.zeros(1, np.float32), 0, text="a cat")
    blind = [t for t in und_terms if request_items(t, [rollout])[0] == []]
    return (
        [
            f"train.und_rewards has {blind}: {manifest} holds {captions} captioning items (no "
            "reference answer), which these endpoints cannot score; use the dual reward "
            "(train.und_rewards={dual: 1.0}, DSR) or a manifest of question items"
        ]
        if blind
        else []
    )


def preflight(cfg: RunConfig, resume: str | None = None) -> None:
    """The paths a run reads, checked before anything starts: an actor whose constructor
    fails on a missing file is restarted by Ray and the driver waits on it forever."""
    from pathlib import Path

    problems = []
    manifest = cfg.train.manifest
    if not manifest:
        problems.append("train.manifest is empty: give the PairUG manifest `pairuni pair` wrote")
    elif not Path(manifest).is_file():
        problems.append(f"train.manifest={manifest!r}: no such file")
    if cfg.model.path:
        try:
            family(cfg.model.arch).check_checkpoint(cfg.model.path, "model.path")
        except (OSError, ValueError) as e:
            problems.append(str(e))
    terms = cfg.train.terms
    try:
        cfg.rewards.check_deployable(terms)
    except ConfigError as e:
        problems.append(str(e))
    if manifest and Path(manifest).is_file():
        problems += caption_problems(manifest, cfg.train.rewards("und"))
    hps = cfg.rewards.hps.checkpoint
    if "hps" in terms and hps and not Path(hps).is_file():
        problems.append(f"rewards.hps.checkpoint={hps!r}: no such file")
    problems += heldout_problems(cfg)
    if resume:
        try:
            checkpoint.resolve(resume)
        except FileNotFoundError as e:
            problems.append(f"--resume {resume}: {e}")
    if problems:
        raise ValueError("cannot start the run:\n  " + "\n  ".join(problems))


class Trainer:
    """Owns the actors of a run; ``step()`` is one pass of the dataflow."""

    def __init__(self, cfg: RunConfig, resume: str | None = None):
        preflight(cfg, resume)  # before any actor: a bad path is one clear error, not a hang
        self.cfg = cfg
        self.run_dir = cfg.run.dir
        write_resolved(cfg, self.run_dir)
        ensure_cluster(cfg, logging_level="WARNING")  # sized, or a clear shortfall
        try:
            self._start(resume)
        except BaseException:  # a failed start stops what it started (actors, Serve apps)
            self.close()
            raise

    def _start(self, resume: str | None) -> None:
        import ray

        from actors.group import WorkerGroup, as_actor
        from actors.pairing_actor import PairingActor
        from learner.group import LearnerGroup
        from rewards.client import RewardClient
        from rewards.serve import run_app_prefix, run_endpoints

        cfg = self.cfg
        t = cfg.train
        terms = t.terms
        # the endpoints the terms name, each listed in rewards.endpoints (RunConfig.validate)
        names = tuple(e for e in cfg.rewards.endpoints if e in terms)
        prefix = run_app_prefix(cfg.run.name)
        self._apps = [prefix + e for e in names]  # before deploying: cleaned if partial
        # one task alone streams only the items that have a half for it (joint training
        # streams every item, as before)
        only = None if set(t.tasks) == {task.value for task in Task} else tuple(t.tasks)
        self.pairing = as_actor(PairingActor, {"num_cpus": 0}).remote(
            t.manifest, cfg.run.seed, only
        )
        # a task that is not trained (train.tasks) has no workers
        self.text_pool = WorkerGroup.text(cfg.model, cfg.rollout) if "und" in t.tasks else None
        self.image_pool = WorkerGroup.image(cfg.model, cfg.rollout) if "gen" in t.tasks else None
        self.learners = LearnerGroup(cfg.model, cfg.learner.with_horizon(cfg.train.steps))
        self.evaluation = TrainingEval(cfg)  # train.eval_every: eval/* metrics (or nothing)
        handles = run_endpoints(policy_rewards(cfg), names, app_prefix=prefix)
        self.clients = {
            k: RewardClient(k, cfg.rewards, handle=handles.get(k), app=prefix + k) for k in terms
        }
        # endpoints that score with the policy (DSR) load every weight version it publishes
        self.followers = [h for e, h in handles.items() if cfg.rewards.follows_policy(e)]
        self._followers_version: int | None = None
        self._follower_terms = {e for e in names if cfg.rewards.follows_policy(e)}
        self._stream = RewardStream(self.clients)
        self._producer = Producer()
        self._scoring: list = []  # the reward futures of the batch the producer sampled last
        self._epochs: dict[int, float] = {}
        self.step_num, self.version = 0, 0
        restored = []
        if resume:
            ckpt, state, rng = checkpoint.load(resume)
            self.learners.load_checkpoint(str(ckpt / "learner"))
            ray.get(self.pairing.load_state.remote(state.pairing))
            checkpoint.set_rng_state(rng)
            self.step_num = state.step
            restored = checkpoint.load_pending(ckpt, t.max_staleness)
            log.info("resumed from %s at step %d", ckpt, self.step_num)
        self.sync_weights()
        for sampled, epoch in restored:  # batches sampled before the checkpoint, in order
            self._producer.add_done(sampled)
            self._epochs[sampled.index] = epoch
        # one row per step: rows past the step this run starts from (a resumed run repeats
        # them; a fresh run in an old directory starts at 0) are dropped
        self.metrics = MetricsWriter(self.run_dir, keep_until=self.step_num)
        self._completed_pairing: dict | None = None
        self._learner_moved = False
        self.stopped_by: int | None = None
        """The signal that stopped ``fit`` early, if one did."""

    def sync_weights(self) -> float:
        """Publish the learner's weights once; every consumer loads that version (with
        ``train.max_staleness`` >= 1 only the publishing: the producer loads each version
        into the workers before the batch it samples)."""
        t0 = time.perf_counter()
        ref = self.learners.publish_weights()
        self._latest = ref
        if not self.cfg.train.max_staleness:
            self._load_everywhere(ref)
        self.version = ref.version
        return time.perf_counter() - t0

    def _load_everywhere(self, ref) -> None:
        """Every rollout worker and every endpoint that follows the policy loads ``ref``
        (nothing to do where it is already loaded: batches ahead may share a version)."""
        for pool in (self.text_pool, self.image_pool):
            if pool is not None and pool.versions.version != ref.version:
                pool.broadcast_weights(ref)
        if self._followers_version != ref.version:
            for endpoint in self.followers:
                endpoint.load_weights.remote(ref.ref, ref.version, ref.manifest).result()
            self._followers_version = ref.version

    # ---- one batch: requests, sampling with streamed rewards ------------------------------
    def _draw(self, index: int):
        """The pairing batch of step ``index`` and its (understanding, generation) requests."""
        import ray

        from pairing.datasets import load_image_ref

        t = self.cfg.train
        batch = ray.get(self.pairing.next_batch.remote(t.pairs_per_step))
        und_reqs, gen_reqs = build_requests(
            batch.pairs,
            index,
            self.cfg.run.seed,
            self.cfg.rollout.group_sizes(),
            load_image_ref,
            tasks=t.tasks,
        )
        return batch, und_reqs, gen_reqs

    def _sample(self, index: int, version: int, und_reqs, gen_reqs, stop=None) -> Sampled:
        """Sample both pools together, each chunk's rewards requested as it completes (the
        rewards may still be coming in: ``_rewards_in``)."""
        t = self.cfg.train
        pools = {
            name: (pool, reqs, task)
            for name, pool, reqs, task in (
                ("text", self.text_pool, und_reqs, "und"),
                ("image", self.image_pool, gen_reqs, "gen"),
            )
            if pool is not None
        }
        terms = {task: t.rewards(task) for task in ("und", "gen")}
        done, times, futures = sample_batch(pools, self._stream, terms, stop)
        sampled = Sampled(index, version, done.get("text", []), done.get("image", []), times)
        sampled.reward_futures = futures
        return sampled

    def _rewards_in(self, sampled: Sampled) -> Sampled:
        """Wait for a batch's rewards; check the DSR version rule. ``time/reward``: the wait
        (the part of reward latency the overlap did not hide)."""
        if sampled.reward_futures:
            t0 = time.perf_counter()
            versions = reward_versions(sampled.reward_futures)
            check_endpoint_versions(
                versions, self._follower_terms, sampled.version, sampled.index + 1
            )
            sampled.endpoint_versions = {k: sorted(v) for k, v in versions.items()}
            sampled.reward_futures = []
            sampled.times["time/reward"] = time.perf_counter() - t0
        return sampled

    def _produce(self, index: int, und_reqs, gen_reqs, ref) -> Sampled:
        """The producer thread's work for one batch: load its version, sample, request its
        rewards (they finish while the next batch samples)."""
        t0 = time.perf_counter()
        if self.followers and self._followers_version != ref.version:
            # a DSR endpoint scores the previous batch with the previous version: its
            # scores come in before the endpoint moves on
            reward_versions(self._scoring)
        self._load_everywhere(ref)
        load_s = time.perf_counter() - t0
        sampled = self._sample(index, ref.version, und_reqs, gen_reqs, stop=self._producer.stop)
        self._scoring = list(sampled.reward_futures)
        sampled.times["time/weight_load"] = load_s
        sampled.times["time/produce"] = time.perf_counter() - t0
        return sampled

    def _fill_pipeline(self) -> None:
        """Submit every batch up to step ``step_num + k`` not yet submitted (with the current
        weights: batch b is submitted at the start of step b - k, or at start-up)."""
        t, producer = self.cfg.train, self._producer
        nxt = producer.next_index if producer.pending else self.step_num
        last = min(self.step_num + t.max_staleness, t.steps - 1)
        for b in range(nxt, last + 1):
            batch, und_reqs, gen_reqs = self._draw(b)
            self._epochs[b] = float(batch.epochs.max())
            producer.submit(b, self._produce, b, und_reqs, gen_reqs, self._latest)

    def step(self) -> dict[str, float]:
        import ray

        t = self.cfg.train
        t0 = time.perf_counter()
        if not t.max_staleness:
            self._completed_pairing = ray.get(self.pairing.state.remote())
            batch, und_reqs, gen_reqs = self._draw(self.step_num)
            sampled = self._rewards_in(
                self._sample(self.step_num, self.version, und_reqs, gen_reqs)
            )
            epoch = float(batch.epochs.max())
        else:
            self._fill_pipeline()
            sampled = self._rewards_in(self._producer.take(self.step_num))
            epoch = self._epochs.pop(self.step_num, math.nan)
        times = dict(sampled.times)
        times["time/wait_rollouts"] = time.perf_counter() - t0
        return self._train(sampled, epoch, times, t0)

    def _train(self, sampled: Sampled, epoch: float, times: dict, t0: float) -> dict[str, float]:
        """The learner's half of a step on a sampled and scored batch."""
        cfg, t = self.cfg, self.cfg.train
        und, gen = sampled.und, sampled.gen
        rollouts = und + gen
        rewards = torch.cat(
            [
                task_rewards(und, t.rewards("und"), cfg.learner.reward_combine),
                task_rewards(gen, t.rewards("gen"), cfg.learner.reward_combine),
            ]
        )
        try:
            check_failures(rewards, t.max_failed_reward_fraction, self.clients, self.step_num + 1)
        except RuntimeError:  # the failing step's reward counts reach metrics.jsonl first
            self.metrics.write(
                self.step_num + 1,
                {
                    **reward_metrics(rollouts, rewards),
                    "reward/nan_count": float(torch.isnan(rewards).sum()),
                    "failed": 1.0,
                },
            )
            raise
        train_batch = self.learners.objective.build_batch(rollouts, rewards, cfg.learner)
        adv = torch.as_tensor(train_batch.advantages, dtype=torch.float64)
        diagnostics = {}
        if t.grad_cosine_every and self.step_num % t.grad_cosine_every == 0:
            t2 = time.perf_counter()
            diagnostics = self.learners.grad_cosine(train_batch)
            diagnostics["time/grad_cosine"] = time.perf_counter() - t2
        staleness = [self.version - r.weight_version for r in rollouts]
        t2 = time.perf_counter()
        self._learner_moved = True  # from here a failure leaves the learner past step_num
        learner_metrics = self.learners.update(train_batch)
        times["time/learner"] = time.perf_counter() - t2
        times["time/weight_sync"] = self.sync_weights()
        times["time/step"] = time.perf_counter() - t0
        versions = {r.weight_version for r in rollouts}
        self.step_num += 1
        self._learner_moved = False
        out = {
            **learner_metrics,
            **diagnostics,
            **reward_metrics(rollouts, rewards),
            **diversity_metrics(rollouts),
            **times,
            "adv/mean": float(adv.mean()),
            "adv/abs_mean": float(adv.abs().mean()),
            "reward/nan_count": float(torch.isnan(rewards).sum()),
            "weight_version": float(self.version),
            "rollout/weight_version_min": float(min(versions)),
            "rollout/count": float(len(rollouts)),
            "pairs/epoch": epoch,
        }
        if t.max_staleness:
            out["offpolicy/staleness_mean"] = float(np.mean(staleness))
            out["offpolicy/staleness_max"] = float(max(staleness))
        for term, vs in sampled.endpoint_versions.items():
            if vs:
                out[f"reward_version/{term}"] = float(vs[0])
        return out

    def save(self, pairing: dict | None = None) -> Path:
        import ray

        # batches sampled ahead (max_staleness >= 1) are finished and saved with the
        # checkpoint: a resumed run trains on exactly what the uninterrupted one would
        pending = [
            (self._rewards_in(s), self._epochs.get(s.index, math.nan))
            for s in self._producer.drain()
        ]
        pairing = pairing if pairing is not None else ray.get(self.pairing.state.remote())
        state = checkpoint.TrainerState(self.step_num, self.version, pairing)
        return checkpoint.save(
            self.run_dir,
            state,
            self.cfg,
            self.learners.save_checkpoint,
            pending=pending if self.cfg.train.max_staleness else None,
        )

    def save_after_failure(self, start_step: int) -> Path | None:
        """A checkpoint of the last completed step after a failed one, when that is safe:
        some step completed in this run, and the failure came before the learner's update
        (the pairing cursor is put back to where that step left it)."""
        if self.step_num <= start_step or self._learner_moved or self.cfg.train.max_staleness:
            return None  # asynchronous: batches ahead are in an unknown state; the last
            # periodic checkpoint stands
        try:
            return self.save(self._completed_pairing)
        except Exception:  # the original error is what the user must see
            log.exception("could not write a checkpoint after the failure")
            return None

    @property
    def stop_requested(self) -> bool:
        return STOP.signum is not None

    def fit(self) -> Path | None:
        """Train to ``train.steps`` or until a signal; checkpoint at the end. Returns the
        last checkpoint (None when a signal came before any step of this run)."""
        t = self.cfg.train
        install_signal_handlers()
        start = self.step_num
        path = None
        try:
            from tqdm import tqdm

            bar = tqdm(total=t.steps, initial=self.step_num, desc="train", unit="step")
            if self.step_num == 0 and (m0 := self.evaluation(0, self.learners)):
                self.metrics.write(0, m0)  # the starting policy's held-out scores
            while self.step_num < t.steps and not self.stop_requested:
                m = self.step()
                m |= self.evaluation(self.step_num, self.learners)
                self.metrics.write(self.step_num, m)
                bar.update(1)
                bar.set_postfix(
                    {
                        k.split("/")[-1]: f"{m[k]:.3g}"
                        for k in ("reward/und_mean", "reward/gen_mean", "logprob_diff")
                        if k in m
                    }
                )
                if t.checkpoint_every and self.step_num % t.checkpoint_every == 0:
                    path = self.save()
            bar.close()
            if self.step_num > start or not self.stop_requested:
                path = self.save()  # a step saved above is not written again
        except Exception as e:
            saved = self.save_after_failure(start)
            where = (
                f"checkpoint of step {self.step_num}: {saved} (--resume {self.run_dir})"
                if saved
                else "no checkpoint written for this failure"
            )
            e.add_note(f"[pairuni] run stopped at step {self.step_num + 1}; {where}")
            raise
        finally:
            self.metrics.close()
            self.stopped_by, STOP.signum = STOP.signum, None  # this run's; not the next one's
        plot_curves(
            self.metrics.path,
            self.run_dir / "curves.png",
            [
                "reward/und_mean",
                "reward/gen_mean",
                "reward_detail/toy_judge/strict_mean",
                "rollout/gen_distinct_per_request",
                "grad/cos_und_gen",
                *EVAL_CURVES,
                "loss",
                "logprob_diff",
                "time/step",
            ],
        )
        return path

    def close(self) -> None:
        """Stop this run's actors and reward applications (those that were started)."""
        import ray

        from rewards.serve import delete_apps

        # Serve applications first and all at once: they outlive the driver if it is killed
        # (a job stop's SIGKILL), while actors die with it.
        if getattr(self, "_producer", None) is not None:
            self._producer.close()  # before the actors it samples with go
        if getattr(self, "_stream", None) is not None:
            self._stream.close()
        apps = getattr(self, "_apps", [])
        try:
            if left := delete_apps(apps):
                log.warning("Serve applications still deleting: %s", left)
        except Exception:  # never deployed, or Serve already down
            log.warning("could not delete Serve applications %s", apps, exc_info=True)
        for part in ("text_pool", "image_pool", "learners", "evaluation"):
            if getattr(self, part, None) is not None:
                getattr(self, part).shutdown()
        if getattr(self, "pairing", None) is not None:
            ray.kill(self.pairing)


class _Stop:
    """The first SIGTERM / SIGINT of the process: the run checkpoints after the current step
    (or, during start-up, before its first) and exits 128 + the signal number."""

    signum: int | None = None


STOP = _Stop()


def _on_signal(signum, frame) -> None:
    if STOP.signum is None:
        log.warning("signal %d: checkpointing after the current step, then stopping", signum)
    STOP.signum = signum


def install_signal_handlers() -> None:
    """Install the graceful SIGTERM / SIGINT handlers (main thread only; idempotent)."""
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _on_signal)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deploy.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="YAML run config")
    parser.add_argument("--resume", default=None, help="checkpoint or run directory to resume")
    parser.add_argument("overrides", nargs="*", help="dotted overrides key.sub=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(RunConfig, args.config, args.overrides)
    install_signal_handlers()  # before start-up: a SIGTERM there stops the run cleanly too
    if cfg.train.strategy == "alternate":
        from deploy.alternate import run_alternating

        state, signum = run_alternating(cfg, resume=args.resume is not None)
        print(f"run directory: {cfg.run.dir}\nmodels: {state['models']}")
        if signum is not None:
            print(f"stopped by signal {signum}; resume with --resume {cfg.run.dir}")
            return 128 + signum
        return 0
    trainer = Trainer(cfg, resume=args.resume)
    try:
        path = trainer.fit()
    finally:
        trainer.close()
    print(f"run directory: {cfg.run.dir}\nlast checkpoint: {path}")
    if trainer.stopped_by is not None:  # stopped, not finished: a scheduler must not see success
        print(
            f"stopped by signal {trainer.stopped_by} at step {trainer.step_num} of "
            f"{cfg.train.steps}; resume with --resume {cfg.run.dir}"
        )
        return 128 + trainer.stopped_by
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
