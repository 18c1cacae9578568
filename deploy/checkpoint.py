"""Training checkpoints: one directory per step, written whole or not at all.

    <run_dir>/checkpoints/step_000012/
        learner/             DeepSpeed engine state (parameters, optimizer, scheduler)
        trainer_state.json   step, weight version, pairing cursor (epoch, position, seed)
        rng.pt               python / numpy / torch RNG states of the driver (tensors and
                             lists only: it loads with ``torch.load(weights_only=True)``)
        config.yaml          the resolved run config
        pending.pkl          train.max_staleness >= 1 only: the batches sampled ahead of the
                             step (rollouts with their rewards), finished before the save
    <run_dir>/checkpoints/latest   name of the newest complete checkpoint

Crash-safe at every point (``save``): a checkpoint is written into ``step_XXXXXX.tmp``,
its files and directory fsynced, and renamed into place; ``latest`` is replaced by an
atomic rename too. A step already saved is never written again, and no complete copy is
deleted before its replacement is in place. ``resolve`` takes the newest complete ``step_*``
directory (``latest`` is for people and tools; a crash can leave it one behind).

DeepSpeed's own loader unpickles its files (``learner/``): resume only from checkpoints
written by someone you trust.
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
    """The driver's RNG states as tensors, lists and numbers (``weights_only`` loadable)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])


CRASH_AT: str | None = None
"""Test hook: the name of a point in ``save`` at which it raises (a crash there)."""


def _point(name: str) -> None:
    if name == CRASH_AT:
        raise RuntimeError(f"crash injected at {name}")


def _fsync_tree(path: Path) -> None:
    """fsync every file under ``path``, then the directories (so a rename lands on data)."""
    for p in sorted(path.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for d in [*(q for q in path.rglob("*") if q.is_dir()), path, path.parent]:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _complete(ckpt: Path) -> bool:
    return (
        ckpt.name.startswith("step_")
        and not ckpt.name.endswith((".tmp", ".old"))
        and (ckpt / "trainer_state.json").is_file()
    )


def _write_latest(root: Path, name: str) -> None:
    tmp = root / "latest.tmp"
    with open(tmp, "w") as f:
        f.write(name)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / "latest")


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(
    run_dir: str | Path, state: TrainerState, cfg, save_learner, pending: list | None = None
) -> Path:
    """Write a checkpoint for ``state.step``; ``save_learner(dir)`` writes the learner part.
    ``pending``: the batches sampled ahead (asynchronous training), pickled beside it.
    A step that already has a complete checkpoint is not written again."""
    root = checkpoint_root(run_dir)
    final = root / f"step_{state.step:06d}"
    if _complete(final):
        _write_latest(root, final.name)
        return final
    tmp = root / f"step_{state.step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _point("learner")
    save_learner(str(tmp / "learner"))
    torch.save(rng_state(), tmp / "rng.pt")
    if pending is not None:
        import pickle

        staleness = getattr(getattr(cfg, "train", None), "max_staleness", None)
        with open(tmp / PENDING, "wb") as f:
            pickle.dump({"max_staleness": staleness, "batches": pending}, f)
    write_resolved(cfg, tmp)
    _point("state")
    # trainer_state.json last: a directory holding it is complete
    (tmp / "trainer_state.json").write_text(
        json.dumps(
            {"step": state.step, "weight_version": state.weight_version, "pairing": state.pairing},
            indent=2,
        )
    )
    _fsync_tree(tmp)
    _point("rename")
    if final.exists():  # an incomplete leftover of a crashed save: out of the way first
        old = root / f"{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    _point("latest")
    _write_latest(root, final.name)
    return final


def newest_complete(root: Path) -> Path | None:
    """The complete ``step_*`` checkpoint with the highest step under ``root``."""
    done = [p for p in root.glob("step_*") if p.is_dir() and _complete(p)]
    return max(done, key=lambda p: p.name) if done else None


def resolve(path: str | Path) -> Path:
    """A checkpoint dir from itself, a run dir or a checkpoints dir: the newest complete
    one. ``latest`` is not trusted: a crash between a checkpoint's rename and ``latest``'s
    leaves it one behind, and an older save could leave it naming a broken directory."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if _complete(candidate):
            return candidate
        newest = newest_complete(candidate) if candidate.is_dir() else None
        if newest is not None:
            return newest
    raise FileNotFoundError(
        f"no complete checkpoint at {path}: expected a step_XXXXXX directory with "
        "trainer_state.json, or a run directory with one under checkpoints/ (--resume)"
    )


def load(path: str | Path) -> tuple[Path, TrainerState, dict]:
    """(checkpoint dir, trainer state, rng state) of a checkpoint."""
    ckpt = resolve(path)
    raw = json.loads((ckpt / "trainer_state.json").read_text())
    rng = torch.load(ckpt / "rng.pt", weights_only=True)
    return ckpt, TrainerState(raw["step"], raw["weight_version"], raw["pairing"]), rng


PENDING = "pending.pkl"


def load_pending(ckpt: Path, max_staleness: int) -> list:
    """The batches a checkpoint saved as sampled ahead, [(Sampled, epoch), ...] in step order
    (empty for a synchronous checkpoint). They were sampled for ``train.max_staleness`` of
    the saving run; a run resumed with another value is refused (its batch schedule
    differs). Unpickled: resume only from checkpoints written by someone you trust."""
    import pickle

    path = Path(ckpt) / PENDING
    if not path.is_file():
        return []
    with open(path, "rb") as f:
        saved = pickle.load(f)
    if saved["batches"] and saved["max_staleness"] != max_staleness:
        raise ValueError(
            f"{path}: the checkpoint holds batches sampled ahead with train.max_staleness="
            f"{saved['max_staleness']}; resume with the same train.max_staleness (got "
            f"{max_staleness})"
        )
    return list(saved["batches"])
