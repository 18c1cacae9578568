"""The whole system on the tiny model: `deploy/configs/smoke.yaml` on a local Ray cluster.

2 text workers, 1 image worker, 1 DeepSpeed learner actor, accuracy + tiny-HPS Serve
endpoints, a synthetic PairUG manifest built here. One run of 3 steps (a text worker is
killed during step 2), then a run resumed from its step-2 checkpoint.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from deploy.config import RunConfig, load_config
from pairing.synthetic import colour_square_manifest


def _manifest(tmp_path) -> str:
    return colour_square_manifest(tmp_path / "data")


def _cfg(tmp_path, manifest, name, *extra) -> RunConfig:
    return load_config(
        RunConfig,
        "deploy/configs/smoke.yaml",
        [
            f"run.root={tmp_path}",
            f"run.name={name}",
            f"train.manifest={manifest}",
            "rewards.port=18321",
            *extra,
        ],
    )


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_smoke_run_versions_fault_and_resume(ray_local, tmp_path):
    import ray

    from deploy.train import Trainer

    manifest = _manifest(tmp_path)
    trainer = Trainer(_cfg(tmp_path, manifest, "a"))
    first_version = trainer.version
    submit, killed = trainer.text_pool.submit, []

    def submit_then_kill(requests, **kw):
        """Step 2: kill a text worker while its chunk is in flight."""
        job = submit(requests, **kw)
        if trainer.step_num == 1:
            ray.kill(trainer.text_pool.workers[0], no_restart=True)
            killed.append(trainer.step_num)
        return job

    trainer.text_pool.submit = submit_then_kill
    try:
        trainer.fit()  # 3 steps, a checkpoint after each (checkpoint_every: 1)
        assert killed == [1] and sum(trainer.text_pool.restarts) >= 1
        final = {k: v.clone() for k, v in trainer.learners.state_dict().items()}
    finally:
        trainer.close()
    run_a = tmp_path / "a"
    rows = _rows(run_a)
    assert (run_a / "curves.png").is_file() and (run_a / "tensorboard").is_dir()

    # every step: 4 pairs x (und + gen) x G=4 rollouts, none lost to the killed worker
    assert [r["rollout/count"] for r in rows] == [2 * 2 * 4] * 3
    versions = [first_version] + [r["weight_version"] for r in rows]
    assert all(b > a for a, b in zip(versions, versions[1:])), versions
    # each step sampled with the version published after the previous step
    assert [r["rollout/weight_version_min"] for r in rows] == versions[:-1]
    for r in rows:
        assert abs(r["logprob_diff"]) < 1e-3  # sampler vs learner on the same weights
        assert math.isfinite(r["loss"]) and r["reward/nan_count"] == 0
    run_a = tmp_path / "a"
    assert (run_a / "config.yaml").is_file()
    assert (run_a / "checkpoints" / "latest").read_text() == "step_000003"

    # export: a Hugging Face directory holding the final policy
    from deploy.cli import main as cli
    from models import load_unified_model

    assert cli(["export", "--checkpoint", str(run_a), "--out", str(tmp_path / "hf")]) == 0
    exported = load_unified_model(tmp_path / "hf").trainable_parameters()
    for name in ("lm_head.weight", "model.generation_head.vision_head.weight"):
        assert torch.equal(exported[name].detach(), final[name]), name

    # resume from step 2: the third step repeats the uninterrupted run's loss
    cfg_b = _cfg(tmp_path, manifest, "b")
    resumed = Trainer(cfg_b, resume=str(run_a / "checkpoints" / "step_000002"))
    try:
        assert resumed.step_num == 2
        row = resumed.step()
    finally:
        resumed.close()
    assert row["loss"] == pytest.approx(rows[2]["loss"], abs=1e-5)
    assert row["reward/und_mean"] == pytest.approx(rows[2]["reward/und_mean"], abs=1e-9)


@pytest.mark.slow
def test_dsr_run_scores_with_the_current_policy_and_stops_on_sigterm(ray_local, tmp_path):
    import os
    import signal

    from deploy.train import Trainer

    cfg = _cfg(
        tmp_path,
        _manifest(tmp_path),
        "dsr",
        "learner.algorithm=dsr_grpo",
        "rewards.endpoints=[dual]",
        "train.und_rewards={dual: 1.0}",
        "train.gen_rewards={dual: 1.0}",
        "rollout.text_workers=1",
    )
    trainer = Trainer(cfg)
    update = trainer.learners.update

    def update_then_sigterm(batch):
        """A SIGTERM arrives during step 1: the run checkpoints after it and stops."""
        os.kill(os.getpid(), signal.SIGTERM)
        return update(batch)

    trainer.learners.update = update_then_sigterm
    try:
        last = trainer.fit()  # train.steps is 3
        (dual,) = trainer.followers  # the endpoints that load every weight version
        dual_version = dual.get_version.remote().result()
    finally:
        trainer.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert trainer.stopped_by == signal.SIGTERM  # main() exits 128 + 15 on this
    rows = _rows(tmp_path / "dsr")
    assert [r["step"] for r in rows] == [1] and last.name == "step_000001"
    row = rows[0]
    assert dual_version == trainer.version == row["weight_version"]
    assert row["reward/nan_count"] == 0 and math.isfinite(row["loss"])
    # R_U and R_G are mean log-likelihoods: negative, near -log V for a random tiny model
    assert -10.0 < row["reward/und_mean"] < 0 and -10.0 < row["reward/gen_mean"] < 0


@pytest.mark.slow
def test_a_failed_step_is_logged_numbered_and_the_last_good_one_checkpointed(ray_local, tmp_path):
    from deploy import checkpoint
    from deploy.train import Trainer

    cfg = _cfg(tmp_path, _manifest(tmp_path), "fail", "train.steps=4", "train.checkpoint_every=0")
    trainer = Trainer(cfg)
    hps = trainer.clients["hps"]
    real = hps.ascore_versioned

    async def fails_from_step_3(items):
        """The hps endpoint answers nothing from step 3 on (every reward NaN)."""
        if trainer.step_num >= 2:
            return [math.nan] * len(items), [{}] * len(items), set()
        return await real(items)

    hps.ascore_versioned = fails_from_step_3
    try:
        with pytest.raises(RuntimeError, match="step 3: .* of rewards failed") as info:
            trainer.fit()
        cursor_after_2 = trainer._completed_pairing
    finally:
        trainer.close()
    note = " ".join(getattr(info.value, "__notes__", []))
    assert "run stopped at step 3; checkpoint of step 2" in note, note
    rows = _rows(tmp_path / "fail")
    # steps 1 and 2 as usual, and the failing step 3's reward counts, numbered as the error
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[2]["failed"] == 1.0 and rows[2]["reward/nan_count"] > 0
    ckpt, state, _ = checkpoint.load(tmp_path / "fail")
    assert ckpt.name == "step_000002" and state.step == 2
    assert state.pairing == cursor_after_2  # the failed step's batch is not skipped on resume


@pytest.mark.slow
def test_a_failed_start_leaves_no_actors_or_serve_apps(ray_local, tmp_path):
    import json as _json

    from ray import serve

    from deploy.train import Trainer

    # a checkpoint whose learner part is missing: the start fails after every role is up
    ckpt = tmp_path / "broken" / "checkpoints" / "step_000001"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(
        _json.dumps({"step": 1, "weight_version": 1, "pairing": {}})
    )
    with pytest.raises(Exception):  # noqa: B017  (whatever the learner raises)
        Trainer(_cfg(tmp_path, _manifest(tmp_path), "broken"), resume=str(ckpt))
    assert not [a for a in serve.status().applications if a.startswith("pairuni-broken-")]


def test_dsr_unpaired_captioning_run(ray_local, tmp_path):
    # DSR's data path (DSR section 4.1) at smoke scale: an unpaired manifest of T2I-CompBench
    # prompts (gen_only) and COCO / JourneyDB images (und_only, the captioning task) from
    # `pairuni pair pairing.mode=unpaired`, trained with dual self-rewards alone.
    from deploy.train import Trainer
    from pairing.toyworld import write_dsr_manifest

    manifest = write_dsr_manifest(tmp_path / "dsr", seed=0, n=4)
    dsr = [
        "learner.algorithm=dsr_grpo",
        "rewards.endpoints=[dual]",
        "train.und_rewards={dual: 1.0}",
        "train.gen_rewards={dual: 1.0}",
        "rollout.text_workers=1",
        "train.steps=2",
        "train.pairs_per_step=4",
    ]
    # accuracy has nothing to check in a description: refused before anything starts
    bad = _cfg(
        tmp_path,
        manifest,
        "dsr_bad",
        *dsr,
        "rewards.endpoints=[accuracy, dual]",
        "train.und_rewards={accuracy: 1.0}",
    )
    with pytest.raises(ValueError, match=r"captioning items.*train\.und_rewards"):
        Trainer(bad)
    trainer = Trainer(_cfg(tmp_path, manifest, "dsr_unpaired", *dsr))
    try:
        trainer.fit()
    finally:
        trainer.close()
    rows = _rows(tmp_path / "dsr_unpaired")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["reward/nan_count"] == 0 and math.isfinite(row["loss"])
    # each item is its own group; over the two steps both kinds were drawn (seeded order),
    # and each was scored by its dual likelihood: a mean log-prob, < 0
    kinds = ("reward/und/und_only_mean", "reward/gen/gen_only_mean")
    assert all(any(k in row for row in rows) for k in kinds), sorted(rows[0])
    for row in rows:
        for k in kinds:
            if k in row:
                assert -10.0 < row[k] < 0, (k, row[k])


def test_one_task_alone(ray_local, tmp_path):
    # DSR section 4.5: a task trained alone; the other task has no workers and no endpoint
    from deploy.train import Trainer

    manifest = _manifest(tmp_path)
    for task, other in (("gen", "und"), ("und", "gen")):
        cfg = _cfg(tmp_path, manifest, f"only_{task}", f"train.tasks=[{task}]", "train.steps=1")
        trainer = Trainer(cfg)
        try:
            assert getattr(trainer, {"und": "image_pool", "gen": "text_pool"}[task]) is None
            assert set(trainer.clients) == set(cfg.train.rewards(task))
            trainer.fit()
        finally:
            trainer.close()
        (row,) = _rows(tmp_path / f"only_{task}")
        assert row[f"tokens/{task}"] > 0 and row[f"tokens/{other}"] == 0
        assert f"reward/{task}_mean" in row and f"reward/{other}_mean" not in row
        assert row["reward/nan_count"] == 0 and math.isfinite(row["loss"])


def test_dsr_alternating_two_models(ray_local, tmp_path):
    # DSR section 4.5 at smoke scale: a generation turn rewarded by the (frozen) start model,
    # then an understanding turn rewarded by the generation model's export.
    from deploy.alternate import run_alternating
    from pairing.toyworld import write_dsr_manifest

    cfg = _cfg(
        tmp_path,
        write_dsr_manifest(tmp_path / "dsr", seed=0, n=2),
        "alt",
        "learner.algorithm=dsr_grpo",
        "rewards.endpoints=[dual]",
        "train.und_rewards={dual: 1.0}",
        "train.gen_rewards={dual: 1.0}",
        "train.strategy=alternate",
        "train.alternate_epochs=2",
        "train.pairs_per_step=4",
        "rollout.text_workers=1",
    )
    state, signum = run_alternating(cfg)
    assert signum is None and state["turns_done"] == 2
    gen_model, und_model = state["models"]["gen"], state["models"]["und"]
    assert (tmp_path / "alt" / "models" / "gen" / "config.json").is_file()
    gen_rows, und_rows = _rows(tmp_path / "alt" / "gen"), _rows(tmp_path / "alt" / "und")
    assert len(gen_rows) == 1 and len(und_rows) == 1  # 2 prompts / 4; 4 images / 4
    assert gen_rows[0]["tokens/und"] == 0 and und_rows[0]["tokens/gen"] == 0
    for row in gen_rows + und_rows:
        # an empty description has no likelihood to score (NaN, zero advantage, counted);
        # the random tiny model ends some at once
        assert row["reward/nan_count"] <= 0.25 * row["rollout/count"]
        assert math.isfinite(row["loss"]) and row["reward_term/dual_mean"] < 0
    und_cfg = (tmp_path / "alt" / "und" / "config.yaml").read_text()
    assert gen_model in und_cfg and "follow_policy: false" in und_cfg
    assert und_model.endswith("models/und")
    # done: a second call with resume has nothing left; without it, it refuses
    assert run_alternating(cfg, resume=True)[0]["turns_done"] == 2
    with pytest.raises(FileExistsError, match="--resume"):
        run_alternating(cfg)


@pytest.mark.slow
def test_async_one_step_off_policy_with_a_killed_worker_and_a_resume(ray_local, tmp_path):
    # train.max_staleness=1: batch b+1 is sampled (and scored) while the learner trains on
    # batch b; a text worker is killed while batch 2 samples; a resume from the step-2
    # checkpoint (which saved the batches sampled ahead) repeats steps 3 and 4.
    import ray

    from deploy import checkpoint
    from deploy.train import Trainer

    manifest = _manifest(tmp_path)
    extra = ("train.max_staleness=1", "train.steps=4")
    trainer = Trainer(_cfg(tmp_path, manifest, "async", *extra))
    submit, calls = trainer.text_pool.submit, []

    def submit_then_kill(requests, **kw):
        """The third batch (index 2): kill a text worker while its chunk is in flight."""
        job = submit(requests, **kw)
        calls.append(len(requests))
        if len(calls) == 3:
            ray.kill(trainer.text_pool.workers[0], no_restart=True)
        return job

    trainer.text_pool.submit = submit_then_kill
    try:
        trainer.fit()  # 4 steps, a checkpoint after each
        assert len(calls) == 4 and sum(trainer.text_pool.restarts) >= 1
    finally:
        trainer.close()
    rows = _rows(tmp_path / "async")
    assert [r["rollout/count"] for r in rows] == [2 * 2 * 4] * 4  # none lost or duplicated
    # batches 0 and 1 sample with version 0; batch b >= 2 with the weights after step b - 1
    assert [r["rollout/weight_version_min"] for r in rows] == [0, 0, 1, 2]
    assert [r["offpolicy/staleness_max"] for r in rows] == [0, 1, 1, 1]
    assert [r["weight_version"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["logprob_diff/on_version"] < 1e-3  # same weights: sampler == learner
    for r in rows[1:]:
        assert "logprob_diff/on_version" not in r  # every rollout is one step stale
        assert r["logprob_diff"] > 0 and r["offpolicy/iw_min"] <= 1 <= r["offpolicy/iw_max"]
    for r in rows:
        assert math.isfinite(r["loss"]) and r["reward/nan_count"] == 0
    ckpt, _, _ = checkpoint.load(tmp_path / "async" / "checkpoints" / "step_000002")
    pending = checkpoint.load_pending(ckpt, 1)
    # after step 2: batch 2 (sampled with version 1 while step 2 trained) is saved with it
    assert [(s.index, s.version, len(s.und + s.gen)) for s, _ in pending] == [(2, 1, 16)]
    with pytest.raises(ValueError, match="train.max_staleness=1"):
        checkpoint.load_pending(ckpt, 0)

    resumed = Trainer(
        _cfg(tmp_path, manifest, "async_b", *extra),
        resume=str(tmp_path / "async" / "checkpoints" / "step_000002"),
    )
    try:
        again = [resumed.step(), resumed.step()]
    finally:
        resumed.close()
    for got, want in zip(again, rows[2:]):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)
        assert got["reward/und_mean"] == pytest.approx(want["reward/und_mean"], abs=1e-9)
        assert got["rollout/weight_version_min"] == want["rollout/weight_version_min"]


@pytest.mark.slow
def test_dsr_async_scores_each_batch_with_the_version_that_sampled_it(ray_local, tmp_path):
    # The DSR endpoint follows the policy; with max_staleness=1 it loads a batch's sampling
    # version before that batch is sampled, and every answer names the version it used.
    from deploy.train import Trainer

    cfg = _cfg(
        tmp_path,
        _manifest(tmp_path),
        "dsr_async",
        "learner.algorithm=dsr_grpo",
        "rewards.endpoints=[dual]",
        "train.und_rewards={dual: 1.0}",
        "train.gen_rewards={dual: 1.0}",
        "rollout.text_workers=1",
        "train.max_staleness=1",
        "train.checkpoint_every=0",
    )
    trainer = Trainer(cfg)
    try:
        trainer.fit()  # 3 steps
    finally:
        trainer.close()
    rows = _rows(tmp_path / "dsr_async")
    assert [r["rollout/weight_version_min"] for r in rows] == [0, 0, 1]
    assert [r["reward_version/dual"] for r in rows] == [0, 0, 1]
    assert all(r["reward/nan_count"] == 0 for r in rows)
