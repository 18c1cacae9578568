"""Checkpoints: crash-safe at every point of a save, never written twice, resumable."""

from __future__ import annotations

import random
import re
import shutil

import numpy as np
import pytest
import torch

from deploy import checkpoint
from deploy.checkpoint import TrainerState
from deploy.config import RunConfig


def _save(run_dir, step: int, mark: str = "x"):
    def save_learner(d):
        import os

        os.makedirs(d)
        with open(f"{d}/weights.bin", "w") as f:
            f.write(mark)

    state = TrainerState(step, step, {"epoch": 0, "cursor": step, "seed": 0})
    return checkpoint.save(run_dir, state, RunConfig(), save_learner)


@pytest.mark.parametrize("point", ["learner", "state", "rename", "latest"])
def test_a_crash_anywhere_in_a_save_leaves_a_complete_checkpoint(tmp_path, point, monkeypatch):
    _save(tmp_path, 1)
    monkeypatch.setattr(checkpoint, "CRASH_AT", point)
    with pytest.raises(RuntimeError, match=f"crash injected at {point}"):
        _save(tmp_path, 2)
    ckpt, state, _ = checkpoint.load(tmp_path)
    # before the rename the new one does not exist yet; after it, it is complete even though
    # latest still names step 1 (a stale latest is passed over for the newest complete one)
    assert state.step == (2 if point == "latest" else 1)
    assert (ckpt / "learner" / "weights.bin").is_file()
    monkeypatch.setattr(checkpoint, "CRASH_AT", None)
    _save(tmp_path, 2)  # the save is retried and lands
    assert checkpoint.load(tmp_path)[1].step == 2
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_000002"


def test_a_step_is_never_saved_twice(tmp_path):
    first = _save(tmp_path, 3, mark="first")
    again = _save(tmp_path, 3, mark="second")  # fit() used to save the final step twice
    assert again == first
    assert (first / "learner" / "weights.bin").read_text() == "first"


def test_a_half_deleted_checkpoint_is_passed_over(tmp_path):
    _save(tmp_path, 9)
    _save(tmp_path, 10)
    # what a SIGKILL during the old re-save left: latest names a directory without its state
    (tmp_path / "checkpoints" / "step_000010" / "trainer_state.json").unlink()
    assert checkpoint.resolve(tmp_path).name == "step_000009"
    shutil.rmtree(tmp_path / "checkpoints" / "step_000009")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        checkpoint.resolve(tmp_path)


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # a cached gaussian is part of the state too
    np.random.standard_normal()
    torch.save(checkpoint.rng_state(), tmp_path / "rng.pt")
    want = (random.random(), random.gauss(0, 1), np.random.random(), torch.rand(1).item())
    checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), random.gauss(0, 1), np.random.random(), torch.rand(1).item()) == want


def test_a_resumed_run_keeps_one_metrics_row_per_step(tmp_path):
    from deploy.metrics import MetricsWriter, read_metrics

    w = MetricsWriter(tmp_path, tensorboard=False)
    for step in (1, 2, 3, 4, 5):
        w.write(step, {"loss": float(step)})
    w.close()
    # resumed from the step-4 checkpoint: step 5 will be written again
    w = MetricsWriter(tmp_path, tensorboard=False, keep_until=4)
    w.write(5, {"loss": 50.0})
    w.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[-1]["loss"] == 50.0
    # a fresh run in the same directory starts its metrics anew
    MetricsWriter(tmp_path, tensorboard=False, keep_until=0).close()
    assert read_metrics(tmp_path / "metrics.jsonl") == []


def test_preflight_names_every_bad_path_before_anything_starts(tmp_path):
    from deploy.config import load_config
    from deploy.train import preflight

    cfg = load_config(RunConfig, "deploy/configs/smoke.yaml", [f"model.path={tmp_path}"])
    with pytest.raises(ValueError) as info:  # the missing manifest used to hang the driver
        preflight(cfg, resume=str(tmp_path / "nowhere"))
    msg = str(info.value)
    assert "train.manifest is empty" in msg and "model.path: no model checkpoint" in msg
    assert "--resume" in msg
    manifest = tmp_path / "m.parquet"
    manifest.write_bytes(b"")
    (tmp_path / "config.json").write_text('{"model_type": "multi_modality"}')
    cfg = load_config(
        RunConfig,
        "deploy/configs/smoke.yaml",
        [f"train.manifest={manifest}", f"model.path={tmp_path}"],
    )
    with pytest.raises(ValueError) as info:
        preflight(cfg)
    msg = str(info.value)  # every problem at once:
    assert "cannot be read" in msg  # a manifest that is not parquet (the actor would hang)
    # DeepSeek's original layout: the actor would fail in its constructor
    assert re.search("model.path: .*'multi_modality'.*pairuni model convert", msg)
    from pairing.synthetic import colour_square_manifest

    manifest = colour_square_manifest(tmp_path / "data")
    cfg = load_config(
        RunConfig,
        "deploy/configs/smoke.yaml",
        [f"train.manifest={manifest}", f"model.path={tmp_path}"],
    )
    (tmp_path / "config.json").write_text('{"model_type": "janus"}')
    preflight(cfg)
    preflight(load_config(RunConfig, "deploy/configs/smoke.yaml", [f"train.manifest={manifest}"]))


def test_preflight_refuses_a_random_weight_hps_reward(tmp_path):
    # rewards.hps.checkpoint="" used to build ViT-H-14 with random weights in any run
    from deploy.config import load_config
    from deploy.train import preflight
    from pairing.synthetic import colour_square_manifest

    manifest = colour_square_manifest(tmp_path / "data")
    base = ["deploy/configs/smoke.yaml", [f"train.manifest={manifest}"]]
    cfg = load_config(RunConfig, base[0], [*base[1], "rewards.hps.arch=ViT-H-14"])
    with pytest.raises(ValueError, match=r"rewards\.hps\.checkpoint=''.*Fix: set rewards\.hps\.c"):
        preflight(cfg)
    missing = str(tmp_path / "HPS_v2.1_compressed.pt")
    over = [*base[1], "rewards.hps.arch=ViT-H-14", f"rewards.hps.checkpoint={missing}"]
    cfg = load_config(RunConfig, base[0], over)
    with pytest.raises(ValueError, match="HPS_v2.1_compressed.pt': no such file"):
        preflight(cfg)
    toy = ["rewards.endpoints=[accuracy, toy_judge]", "train.gen_rewards={toy_judge: 1.0}"]
    for ok in (["rewards.hps.allow_random_weights=true"], toy):
        over = [*base[1], "rewards.hps.arch=ViT-H-14", *ok]
        preflight(load_config(RunConfig, base[0], over))
