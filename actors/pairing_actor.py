"""Streams PairUG pairs in batches of B, shuffled per epoch, resumable exactly.

Epoch e visits every pair once, in the order ``permutation(N)`` of a generator seeded with
``seed + e``. A batch that crosses the end of epoch e takes the rest of epoch e and then
the start of epoch e + 1, so no pair repeats within an epoch and none is skipped, and an
epoch boundary is not special. The state is (epoch, cursor, seed): restoring it continues
the same sequence.

A plain class; the driver wraps it with ``actors.group.as_actor``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np


@dataclass
class PairBatch:
    """B pairs with their Pair-GRPO weights w_p and the epoch each was drawn in."""

    pairs: list
    weights: np.ndarray
    """float32 [B]: w_p of each pair (PairUni eq. 3)."""
    epochs: np.ndarray
    """int64 [B]: the epoch each pair belongs to (two values when the batch crosses a boundary)."""


def pair_weight(pair, where: str) -> float:
    """w_p of a ``pairing.manifest.Pair`` (attribute) or a dict (key); finite and >= 0."""
    w = pair.get("weight") if isinstance(pair, dict) else getattr(pair, "weight", None)
    if w is None:
        raise ValueError(
            f"{where}: no field 'weight' (the Pair-GRPO weight w_p); pairs come from "
            "pairing.manifest.Pair or dicts with a 'weight' key"
        )
    try:
        w = float(w)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: field 'weight'={w!r} is not a number") from None
    if not math.isfinite(w) or w < 0:
        raise ValueError(f"{where}: field 'weight'={w!r} must be a finite number >= 0")
    return w


def _pair_id(pair, i: int):
    pid = pair.get("pair_id") if isinstance(pair, dict) else getattr(pair, "pair_id", None)
    return i if pid is None else pid


class PairingActor:
    """Batches of pairs from a manifest path or a list of pairs, epoch after epoch."""

    def __init__(self, source, seed: int = 0, tasks: tuple[str, ...] | None = None):
        if isinstance(source, (str, os.PathLike)):
            from pairing.manifest import read_manifest

            path = os.fspath(source)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"no PairUG manifest at {path}; build one with `pairuni pair` or pass pairs"
                )
            pairs = read_manifest(path)
            origin = path
        else:
            pairs = list(source)
            origin = "pairs"
        if not pairs:
            raise ValueError(f"{origin}: no pairs to stream; the manifest is empty")
        if tasks is not None:
            # a run training some tasks only streams the items that have a half for them
            # (an epoch is then a pass over those): generation alone skips und_only images
            from pairing.manifest import item_tasks

            pairs = [p for p in pairs if set(item_tasks(p)) & set(tasks)]
            if not pairs:
                raise ValueError(f"{origin}: no item has a half for train.tasks={list(tasks)}")
        self.pairs = pairs
        self.weights = np.array(
            [
                pair_weight(p, f"{origin}: row {i} (pair_id {_pair_id(p, i)})")
                for i, p in enumerate(pairs)
            ],
            dtype=np.float32,
        )  # [N]
        self.seed = int(seed)
        self.epoch = 0
        self.cursor = 0
        self._perm_epoch, self._perm = -1, None

    def num_pairs(self) -> int:
        return len(self.pairs)

    def order(self, epoch: int) -> np.ndarray:
        """The visiting order of ``epoch``: a permutation of range(N) seeded with seed + epoch."""
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng(self.seed + epoch).permutation(len(self.pairs))
            self._perm_epoch = epoch
        return self._perm

    def next_indices(self, B: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (into the pair list) and epochs of the next B pairs; advances the cursor."""
        if not isinstance(B, (int, np.integer)) or B < 1:
            raise ValueError(f"batch size B={B!r} must be an integer >= 1")
        N = len(self.pairs)
        idx, ep = [], []
        need = int(B)
        while need:
            take = min(need, N - self.cursor)
            idx.append(self.order(self.epoch)[self.cursor : self.cursor + take])
            ep.append(np.full(take, self.epoch, dtype=np.int64))
            self.cursor += take
            need -= take
            if self.cursor == N:
                self.epoch, self.cursor = self.epoch + 1, 0
        return np.concatenate(idx), np.concatenate(ep)

    def next_batch(self, B: int) -> PairBatch:
        """The next B pairs (crossing into the next epoch when this one runs out)."""
        idx, ep = self.next_indices(B)
        return PairBatch([self.pairs[i] for i in idx], self.weights[idx], ep)

    def state(self) -> dict:
        """``{epoch, cursor, seed, num_pairs}``: everything needed to continue identically."""
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "seed": self.seed,
            "num_pairs": len(self.pairs),
        }

    def load_state(self, state: dict) -> None:
        """Continue from ``state()``; refuses a state of a different data set."""
        missing = [k for k in ("epoch", "cursor", "seed") if k not in state]
        if missing:
            raise ValueError(
                f"pairing state {state!r} lacks {missing}; expected PairingActor.state()"
            )
        N = len(self.pairs)
        if "num_pairs" in state and state["num_pairs"] != N:
            raise ValueError(
                f"pairing state was saved with {state['num_pairs']} pairs but this manifest has "
                f"{N}; resume with the manifest the run started with"
            )
        epoch, cursor = int(state["epoch"]), int(state["cursor"])
        if epoch < 0 or not 0 <= cursor < N:
            raise ValueError(
                f"pairing state epoch={epoch}, cursor={cursor}: need epoch >= 0 and 0 <= cursor < {N}"
            )
        self.epoch, self.cursor, self.seed = epoch, cursor, int(state["seed"])
        self._perm_epoch, self._perm = -1, None
