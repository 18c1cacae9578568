"""PairingActor: every epoch visits every pair once, batches cross epochs, state restores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.pairing_actor import PairingActor


def _pairs(n: int) -> list[dict]:
    # aligned pairs weigh 1, retrieved ones sqrt(s_p); here w = 1 - i / 100 to tell them apart
    return [{"pair_id": 100 + i, "weight": 1.0 - i / 100} for i in range(n)]


def _stream(actor: PairingActor, B: int, steps: int) -> list[tuple[int, int]]:
    out = []
    for _ in range(steps):
        b = actor.next_batch(B)
        assert len(b.pairs) == B and b.weights.shape == (B,) and b.epochs.shape == (B,)
        for p, w, e in zip(b.pairs, b.weights, b.epochs):
            assert w == np.float32(p["weight"])  # weights travel with their pair
            out.append((int(e), p["pair_id"]))
    return out


def test_epoch_order_is_the_seeded_permutation():
    # epoch e uses default_rng(seed + e).permutation(N): computed independently here.
    a = PairingActor(_pairs(5), seed=7)
    got = [p["pair_id"] for p in a.next_batch(10).pairs]
    want = [100 + int(i) for i in np.random.default_rng(7).permutation(5)]
    want += [100 + int(i) for i in np.random.default_rng(8).permutation(5)]
    assert got == want
    assert a.state() == {"epoch": 2, "cursor": 0, "seed": 7, "num_pairs": 5}


def test_batch_crossing_epoch_boundary():
    # N = 5, B = 3: batch 1 = epoch-0 positions 0..2; batch 2 = epoch-0 positions 3, 4 then
    # epoch-1 position 0; state afterwards (epoch 1, cursor 1).
    a = PairingActor(_pairs(5), seed=0)
    order0 = [100 + int(i) for i in np.random.default_rng(0).permutation(5)]
    order1 = [100 + int(i) for i in np.random.default_rng(1).permutation(5)]
    a.next_batch(3)
    b = a.next_batch(3)
    assert [p["pair_id"] for p in b.pairs] == [*order0[3:], order1[0]]
    assert b.epochs.tolist() == [0, 0, 1]
    assert a.state()["epoch"] == 1 and a.state()["cursor"] == 1


def test_state_restore_continues_identically():
    a = PairingActor(_pairs(7), seed=3)
    _stream(a, 4, 3)  # 12 pairs drawn: epoch 1, cursor 5
    saved = a.state()
    assert saved == {"epoch": 1, "cursor": 5, "seed": 3, "num_pairs": 7}
    rest = _stream(a, 4, 5)
    b = PairingActor(_pairs(7), seed=99)  # the seed comes from the state
    b.load_state(saved)
    assert _stream(b, 4, 5) == rest


def test_load_state_refuses_other_data_and_bad_values():
    a = PairingActor(_pairs(4))
    with pytest.raises(ValueError, match="saved with 5 pairs but this manifest has 4"):
        a.load_state({"epoch": 0, "cursor": 0, "seed": 0, "num_pairs": 5})
    with pytest.raises(ValueError, match="lacks \\['cursor'\\]"):
        a.load_state({"epoch": 0, "seed": 0})
    with pytest.raises(ValueError, match="0 <= cursor < 4"):
        a.load_state({"epoch": 0, "cursor": 4, "seed": 0})


def test_bad_pairs_name_row_and_field():
    with pytest.raises(ValueError, match=r"pairs: row 1 \(pair_id 101\): field 'weight'=nan"):
        PairingActor([{"pair_id": 100, "weight": 1.0}, {"pair_id": 101, "weight": float("nan")}])
    with pytest.raises(ValueError, match=r"row 0 \(pair_id 5\): no field 'weight'"):
        PairingActor([{"pair_id": 5}])
    with pytest.raises(ValueError, match="no pairs to stream"):
        PairingActor([])
    with pytest.raises(ValueError, match="B=0 must be an integer >= 1"):
        PairingActor(_pairs(2)).next_batch(0)
    with pytest.raises(FileNotFoundError, match="no PairUG manifest at /nonexistent.parquet"):
        PairingActor("/nonexistent.parquet")


def test_reads_a_manifest_file(tmp_path):
    manifest = pytest.importorskip("pairing.manifest")
    pairs = [
        manifest.Pair(
            pair_id=i, kind="retrieved", similarity=0.81, weight=0.9, und_image=f"u{i}",
            question="q", choices=("a", "b"), answer="A", category=None, und_source=None,
            verifier=None, gen_image=f"g{i}", prompt="p", needs_augmentation=None,
        )
        for i in range(3)
    ]  # fmt: skip
    path = tmp_path / "pairs.parquet"
    manifest.write_manifest(pairs, str(path))
    a = PairingActor(str(path), seed=0)
    b = a.next_batch(3)
    assert sorted(p.pair_id for p in b.pairs) == [0, 1, 2]
    np.testing.assert_allclose(b.weights, [0.9, 0.9, 0.9])  # sqrt(0.81) = 0.9


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    B=st.integers(1, 15),
    steps=st.integers(1, 12),
    seed=st.integers(0, 1000),
    restore_at=st.integers(0, 12),
)
def test_property_each_epoch_is_a_permutation_and_restore_is_exact(n, B, steps, seed, restore_at):
    a = PairingActor(_pairs(n), seed=seed)
    drawn = _stream(a, B, steps)
    # In draw order, epochs never go back, and each epoch is a prefix of a permutation:
    # no pair twice in an epoch; every complete epoch holds all n pairs (none skipped).
    epochs = [e for e, _ in drawn]
    assert epochs == sorted(epochs)
    for e in set(epochs):
        ids = [pid for ee, pid in drawn if ee == e]
        assert len(ids) == len(set(ids))
        if e < epochs[-1] or a.state()["epoch"] > e:
            assert sorted(ids) == [100 + i for i in range(n)]
    assert len(drawn) == B * steps
    # Restoring the state after `restore_at` batches replays the same continuation.
    k = min(restore_at, steps)
    first = PairingActor(_pairs(n), seed=seed)
    _stream(first, B, k)
    second = PairingActor(_pairs(n), seed=seed + 1)
    second.load_state(first.state())
    assert _stream(second, B, steps - k) == drawn[B * k :]
