"""Training checkpoints: one directory per step, written whole or not at all.

    <run_dir>/checkpoints/step_000012/
        learner/             DeepSpeed engine state (parameters, optimizer, scheduler)
        trainer_state.json   step, weight version, pairing cursor (epoch, position, seed)
        rng.pt               python / numpy / torch RNG states of the driver
        config.yaml          the resolved run config
    <run_dir>/checkpoints/latest   name of the newest complete checkpoint

A checkpoint is written into ``step_XXXXXX.tmp`` and renamed when complete, so a crash while
writing never leaves a directory that looks complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deploy.config import write_resolved


@dataclass
class TrainerState:
    """What the driver needs, besides the learner, to continue bit-for-bit."""

    step: int
    weight_version: int
    pairing: dict
    """PairingActor.state(): epoch, cursor, seed."""


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: str | Path, state: TrainerState, cfg, save_learner) -> Path:
    """Write a checkpoint for ``state.step``; ``save_learner(dir)`` writes the learner part."""
    root = checkpoint_root(run_dir)
    final = root / f"step_{state.step:06d}"
    tmp = root / f"step_{state.step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_learner(str(tmp / "learner"))
    (tmp / "trainer_state.json").write_text(
        json.dumps(
            {"step": state.step, "weight_version": state.weight_version, "pairing": state.pairing},
            indent=2,
        )
    )
    torch.save(rng_state(), tmp / "rng.pt")
    write_resolved(cfg, tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    (root / "latest").write_text(final.name)
    return final


def resolve(path: str | Path) -> Path:
    """A checkpoint dir from itself, a run dir or a checkpoints dir (newest complete one)."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / "trainer_state.json").is_file():
            return candidate
        if (candidate / "latest").is_file():
            return candidate / (candidate / "latest").read_text().strip()
    raise FileNotFoundError(
        f"no checkpoint at {path}: expected a step_XXXXXX directory with trainer_state.json, "
        "or a run directory whose checkpoints/latest names one (--resume)"
    )


def load(path: str | Path) -> tuple[Path, TrainerState, dict]:
    """(checkpoint dir, trainer state, rng state) of a checkpoint."""
    ckpt = resolve(path)
    raw = json.loads((ckpt / "trainer_state.json").read_text())
    rng = torch.load(ckpt / "rng.pt", weights_only=False)
    return ckpt, TrainerState(raw["step"], raw["weight_version"], raw["pairing"]), rng
