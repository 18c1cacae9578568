"""PairUni Algorithm 1 core: medoids, greedy matching (hand-derived, brute-force
equivalence, hypothesis invariants), input errors, determinism."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pairing import PairingInputError, build_pairs
from pairing.core import l2_normalise, medoids
from pairing.matching import exact_similarity, greedy_match


def _unit_angles(*degrees: float) -> np.ndarray:
    rad = np.deg2rad(np.asarray(degrees, np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)  # [N, 2]


def reference_greedy(u: np.ndarray, g: np.ndarray, neighbors: int, threshold: float):
    """Brute force: every pair, sorted by (-s, u, g), accepted while u unused and g not full."""
    uu, gg = np.meshgrid(np.arange(len(u)), np.arange(len(g)), indexing="ij")
    uu, gg = uu.ravel(), gg.ravel()
    s = exact_similarity(u, g, uu, gg)
    keep = s >= threshold
    uu, gg, s = uu[keep], gg[keep], s[keep]
    order = np.lexsort((gg, uu, -s))
    used, count, out = set(), np.zeros(len(g), int), []
    for a, b, x in zip(uu[order].tolist(), gg[order].tolist(), s[order].tolist()):
        if a in used or count[b] >= neighbors:
            continue
        used.add(a)
        count[b] += 1
        out.append((a, b, x))
    return out


# ----------------------------------------------------------------------------- hand-derived


def test_l2_normalise_hand_values():
    # [3, 4] has norm 5 -> [0.6, 0.8]; [0, -2] -> [0, -1].
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, -2.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, -1.0]], rtol=1e-6)
    assert out.dtype == np.float32


def test_medoids_hand_values_ties_and_empty_cluster():
    x = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6], [0, 1]], np.float32)
    assign = np.array([0, 0, 1, 1, 1])
    cents = np.array([[1, 0], [0, 1], [0.7, 0.7]], np.float32)  # cluster 2 is empty
    # cluster 0: <x0,c0>=1, <x1,c0>=0.6 -> 0. cluster 1: <x2,c1>=1, <x3,c1>=0.6, <x4,c1>=1:
    # tie between 2 and 4 -> lowest index 2. Empty cluster 2 gives no pick.
    assert medoids(x, assign, cents).tolist() == [0, 2]


def test_greedy_match_hand_derived():
    # u0 at 0°, u1 at 40°; g0 at 10°, g1 at 15°, g2 at 40°. Cosines:
    #   u0-g0 cos10=.985  u0-g1 cos15=.966  u0-g2 cos40=.766
    #   u1-g0 cos30=.866  u1-g1 cos25=.906  u1-g2 cos0=1
    # Descending: (u1,g2,1) take; (u0,g0,.985) take; everything else has a used u.
    u, g = _unit_angles(0, 40), _unit_angles(10, 15, 40)
    got, _ = greedy_match(u, g, neighbors=1, threshold=0.6, search_k=1)
    assert [(a, b) for a, b, _ in got] == [(1, 2), (0, 0)]
    assert got[0][2] == pytest.approx(1.0, abs=1e-6)
    assert got[1][2] == pytest.approx(math.cos(math.radians(10)), abs=1e-6)
    # δ = 0.99: only (u1, g2) qualifies (cos10 = .985 < .99).
    got, _ = greedy_match(u, g, neighbors=1, threshold=0.99)
    assert [(a, b) for a, b, _ in got] == [(1, 2)]


def test_greedy_ties_broken_by_und_then_gen_index():
    # Two identical u and two identical g, all at 0°: every pair has s=1. Order by
    # (u, g): (u0,g0) take, (u0,g1) u0 used, (u1,g0) g0 full (n=1), (u1,g1) take.
    u, g = _unit_angles(0, 0), _unit_angles(0, 0)
    got, _ = greedy_match(u, g, neighbors=1, threshold=0.5)
    assert [(a, b) for a, b, _ in got] == [(0, 0), (1, 1)]
    # n=2: (u0,g0) take, (u1,g0) take; g1 gets nothing.
    got, _ = greedy_match(u, g, neighbors=2, threshold=0.5)
    assert [(a, b) for a, b, _ in got] == [(0, 0), (1, 0)]


def test_retrieved_weight_is_sqrt_similarity():
    ps = build_pairs(
        _unit_angles(0, 0, 90),
        _unit_angles(0, 0, 60, 90),
        num_clusters=1,
        threshold=0.4,
        kmeans_backend="faiss",
    )
    assert ps.retrieved
    for p in ps.retrieved:
        assert p.weight == pytest.approx(math.sqrt(p.similarity))
    assert all(a.weight == 1.0 and a.similarity == 1.0 for a in ps.aligned)


def test_requery_path_matches_reference_on_dense_clusters():
    # 3 tight clusters, k=2 candidates per list: lists run out and must be re-queried.
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 8))
    u = l2_normalise(centers[rng.integers(0, 3, 60)] + 0.05 * rng.standard_normal((60, 8)))
    g = l2_normalise(centers[rng.integers(0, 3, 50)] + 0.05 * rng.standard_normal((50, 8)))
    for n in (1, 3):
        got, stats = greedy_match(u, g, neighbors=n, threshold=0.9, search_k=2)
        assert stats["requery_rounds"] > 0
        assert got == reference_greedy(u, g, n, 0.9)


# ----------------------------------------------------------------------------- hypothesis


def _nonzero_rows(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    x[np.abs(x).sum(axis=1) == 0, 0] = 1.0
    return x


@st.composite
def feature_sets(draw):
    d = draw(st.integers(2, 4))
    elems = st.integers(-2, 2)  # small integers: many exact ties and duplicates
    u = draw(arrays(np.int8, (draw(st.integers(0, 12)), d), elements=elems))
    g = draw(arrays(np.int8, (draw(st.integers(0, 12)), d), elements=elems))
    return _nonzero_rows(u), _nonzero_rows(g)


THRESHOLDS = st.sampled_from([-1.0, -0.3, 0.0, 0.5, 0.7, 0.95, 1.0])


@settings(max_examples=150, deadline=None)
@given(feature_sets(), st.integers(1, 3), THRESHOLDS, st.integers(1, 4))
def test_greedy_match_equals_bruteforce(sets, neighbors, threshold, search_k):
    u, g = (l2_normalise(x) if len(x) else x for x in sets)
    got, _ = greedy_match(u, g, neighbors=neighbors, threshold=threshold, search_k=search_k)
    assert got == reference_greedy(u, g, neighbors, threshold)


@settings(max_examples=60, deadline=None)
@given(
    feature_sets(),
    st.integers(1, 3),
    THRESHOLDS,
    st.integers(1, 5),
    st.sampled_from(["faiss", "sklearn"]),
)
def test_build_pairs_invariants(sets, neighbors, threshold, k, backend):
    und, gen = sets
    nu, ng = len(und), len(gen)
    if nu + ng == 0:
        return
    k = min(k, nu + ng)
    ps = build_pairs(
        3.0 * und,
        gen,
        num_clusters=k,
        neighbors=neighbors,
        threshold=threshold,
        kmeans_backend=backend,
    )  # raw (unnormalised) inputs are allowed
    u, g = l2_normalise(und) if nu else und, l2_normalise(gen) if ng else gen
    x = np.concatenate([u, g]) if nu and ng else (u if nu else g)
    assert ps.assignments.shape == (nu + ng,) and ps.centroids.shape == (k, x.shape[1])

    # One aligned pick per non-empty cluster: the member with the largest <x, c>.
    nonempty = np.unique(ps.assignments)
    assert sorted(a.cluster for a in ps.aligned) == nonempty.tolist()
    scores = (x.astype(np.float64) * ps.centroids[ps.assignments]).sum(1)
    for a in ps.aligned:
        i = a.index + (nu if a.source == "gen" else 0)
        assert ps.assignments[i] == a.cluster
        assert scores[i] >= scores[ps.assignments == a.cluster].max() - 1e-9

    picked_u = {a.index for a in ps.aligned if a.source == "und"}
    picked_g = {a.index for a in ps.aligned if a.source == "gen"}
    used_u, count = set(), np.zeros(ng, int)
    for p in ps.retrieved:
        assert p.und_index not in picked_u and p.gen_index not in picked_g
        assert p.und_index not in used_u
        used_u.add(p.und_index)
        count[p.gen_index] += 1
        assert p.similarity >= threshold
        assert p.similarity == pytest.approx(float(u[p.und_index] @ g[p.gen_index]), abs=1e-5)
    assert (count <= neighbors).all()
    # Maximal: no unsaturated gen item has an unused, unpicked und item at s >= δ.
    free_u = [i for i in range(nu) if i not in picked_u and i not in used_u]
    for j in range(ng):
        if j in picked_g or count[j] >= neighbors or not free_u:
            continue
        s = exact_similarity(u, g, free_u, [j] * len(free_u))
        assert (s < threshold).all()
    sims = [p.similarity for p in ps.retrieved]
    assert sims == sorted(sims, reverse=True)  # greedy order


# ----------------------------------------------------------------------------- errors, seeds


@pytest.mark.parametrize(
    ("und", "gen", "kwargs", "match"),
    [
        (np.ones((3, 4)), np.ones((3, 5)), {}, "dimensions differ"),
        (np.array([[1.0, np.nan]]), np.ones((2, 2)), {}, r"und_features: row 0 has NaN"),
        (np.ones((2, 2)), np.array([[1.0, 1.0], [np.inf, 0]]), {}, r"gen_features: row 1"),
        (
            np.ones((2, 2)),
            np.ones((2, 2)),
            {"num_clusters": 5},
            r"num_clusters=5 must be in \[1, 4\]",
        ),
        (np.ones((2, 2)), np.ones((2, 2)), {"threshold": 1.5}, r"threshold=1.5"),
        (np.ones((2, 2)), np.ones((2, 2)), {"neighbors": 0}, "neighbors=0"),
        (
            np.ones((2, 2)),
            np.ones((2, 2)),
            {"kmeans_backend": "x"},
            r"valid: \['faiss', 'sklearn'\]",
        ),
        (np.ones(4), np.ones((2, 2)), {}, "2-D array"),
        (np.zeros((1, 2)), np.ones((2, 2)), {}, "row 0 has zero norm"),
    ],
)
def test_bad_inputs_raise_clear_errors(und, gen, kwargs, match):
    kwargs = {"num_clusters": 1, **kwargs}
    with pytest.raises(PairingInputError, match=match):
        build_pairs(und, gen, **kwargs)


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_same_seed_same_pairs(backend):
    rng = np.random.default_rng(3)
    u, g = rng.standard_normal((120, 16)), rng.standard_normal((150, 16))
    runs = [
        build_pairs(u, g, num_clusters=12, threshold=0.3, seed=7, kmeans_backend=backend)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].assignments, runs[1].assignments)
    assert runs[0].aligned == runs[1].aligned and runs[0].retrieved == runs[1].retrieved


def test_core_imports_no_distribution_packages():
    code = (
        "import sys, pairing, pairing.core, pairing.matching, pairing.manifest, "
        "pairing.config; bad = {'ray', 'deepspeed', 'vllm'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
