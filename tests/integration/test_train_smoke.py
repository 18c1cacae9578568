"""The whole system on the tiny model: `deploy/configs/smoke.yaml` on a local Ray cluster.

2 text workers, 1 image worker, 1 DeepSpeed learner actor, accuracy + tiny-HPS Serve
endpoints, a synthetic PairUG manifest built here. One run of 3 steps (a text worker is
killed during step 2), then a run resumed from its step-2 checkpoint.
"""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
from PIL import Image

from deploy.config import RunConfig, load_config
from pairing.manifest import Pair, write_manifest

COLOURS = {
    "red": (220, 30, 30),
    "blue": (30, 30, 220),
    "green": (30, 200, 30),
    "yellow": (230, 220, 40),
}


def _manifest(tmp_path) -> str:
    pairs = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        img = np.full((64, 64, 3), 255, np.uint8)
        img[16:48, 16:48] = rgb
        path = tmp_path / f"{name}.png"
        Image.fromarray(img).save(path)
        kind, sim = ("aligned", 1.0) if i % 2 == 0 else ("retrieved", 0.81)
        pairs.append(
            Pair(
                pair_id=i,
                kind=kind,
                similarity=sim,
                weight=math.sqrt(sim),
                und_image=str(path),
                question="What colour is the square?",
                choices=tuple(COLOURS),
                answer="ABCD"[i],
                category="colour",
                und_source="smoke",
                verifier=None,
                gen_image=str(path),
                prompt=f"a {name} square on a white background",
                needs_augmentation=None,
            )
        )
    out = tmp_path / "pairs.parquet"
    write_manifest(pairs, str(out))
    return str(out)


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
    cfg = _cfg(tmp_path, manifest, "a")
    trainer = Trainer(cfg)
    try:
        first_version = trainer.version
        killed = {}

        def kill_a_text_worker():
            time.sleep(1.0)
            victim = trainer.text_pool.workers[0]
            ray.kill(victim, no_restart=True)
            killed["worker"] = True

        rows = []
        for step in range(3):
            killer = threading.Thread(target=kill_a_text_worker) if step == 1 else None
            if killer:
                killer.start()
            rows.append(trainer.step())
            if killer:
                killer.join()
            trainer.metrics.write(trainer.step_num, rows[-1])
            trainer.save()
        assert killed and sum(trainer.text_pool.restarts) >= 1
    finally:
        trainer.metrics.close()
        trainer.close()

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
