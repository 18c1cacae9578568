"""PairUni Algorithm 1 on features: k-means medoids (aligned picks) and kNN retrieval with
greedy matching (retrieved pairs). Pure numpy / faiss / scikit-learn.

Notation (PairUni section 2.1): U = understanding items, G = generation items, X = U ∪ G
(understanding first), K clusters, n = ``neighbors`` retrieved pairs per generation item at
most, δ = ``threshold``. A retrieved pair's weight is w_p = sqrt(s_p) (PairUni eq. 3);
an aligned pair's weight is 1.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from pairing.matching import exact_similarity, greedy_match

__all__ = [
    "AlignedPick",
    "PairSet",
    "PairingInputError",
    "RetrievedPair",
    "build_pairs",
    "exact_similarity",
    "l2_normalise",
    "medoids",
]

KMEANS_BACKENDS = ("sklearn", "faiss")


class PairingInputError(ValueError):
    """Features that cannot be paired (shape, non-finite rows, K, δ); the message says which."""


@dataclass(frozen=True)
class AlignedPick:
    """A cluster medoid: one instance that becomes an aligned quadruple (I, C, Q, A)."""

    source: str
    """'und' or 'gen': which set the medoid comes from."""
    index: int
    """Row of the medoid in its own set."""
    cluster: int
    """The cluster it represents."""

    @property
    def weight(self) -> float:
        return 1.0

    @property
    def similarity(self) -> float:
        return 1.0


@dataclass(frozen=True)
class RetrievedPair:
    """A generation item linked to a visually similar understanding item (s_p >= δ)."""

    und_index: int
    gen_index: int
    similarity: float
    """s_p: cosine of the two L2-normalised features."""

    @property
    def weight(self) -> float:
        """w_p = sqrt(s_p) (PairUni eq. 3); s_p < 0 (only possible with δ < 0) gives 0."""
        return math.sqrt(max(self.similarity, 0.0))


@dataclass
class PairSet:
    """The PairUG pair set on feature indices; ``pairing.pipeline`` maps it to instances."""

    assignments: np.ndarray
    """[Nu+Ng] int64: cluster of each item, understanding items first."""
    centroids: np.ndarray
    """[K, D] float32 k-means centroids."""
    aligned: list[AlignedPick]
    retrieved: list[RetrievedPair]
    num_und: int
    num_gen: int
    stats: dict = field(default_factory=dict)
    """Stage timings (s) and search counters."""


# ----------------------------------------------------------------------------- inputs


def l2_normalise(x: np.ndarray, name: str = "features") -> np.ndarray:
    """Rows scaled to unit L2 norm, float32. Zero rows cannot be normalised: error."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x.astype(np.float64), axis=1)  # [N]
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise PairingInputError(
            f"{name}: row {int(zero[0])} has zero norm (cannot normalise); {zero.size} such rows"
        )
    return (x / norms[:, None]).astype(np.float32)


def _check_features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise PairingInputError(f"{name}: expected a 2-D array [N, D], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise PairingInputError(f"{name}: expected numbers, got dtype {x.dtype}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1)) if x.size else np.zeros(0, int)
    if bad.size:
        raise PairingInputError(
            f"{name}: row {int(bad[0])} has NaN or inf values "
            f"({bad.size} such rows); drop or re-extract them"
        )
    return x


# ----------------------------------------------------------------------------- k-means


def _kmeans_sklearn(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MiniBatchKMeans (Euclidean on the unit rows); labels are the final nearest centroids."""
    from sklearn.cluster import MiniBatchKMeans

    batch = 1024
    km = MiniBatchKMeans(
        n_clusters=k,
        random_state=seed,
        n_init=1,
        batch_size=batch,
        init_size=min(len(x), max(3 * k, 3 * batch)),
    )
    km.fit(x)
    return km.cluster_centers_.astype(np.float32), km.labels_.astype(np.int64)


def _kmeans_faiss(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss spherical k-means (unit centroids, inner-product assignment), 20 iterations."""
    import faiss

    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=20,
        seed=seed,
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=1 << 20,
    )
    km.train(x)
    _, nearest = km.index.search(x, 1)  # [N, 1]
    return np.asarray(km.centroids, np.float32), nearest[:, 0].astype(np.int64)


KMEANS = {"sklearn": _kmeans_sklearn, "faiss": _kmeans_faiss}


def medoids(x: np.ndarray, assignments: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Per non-empty cluster, the member with the largest <x_i, c_k>; ties -> lowest index.

    Returns the member indices, ordered by cluster id.
    """
    score = np.empty(len(x), np.float64)  # [N]: <x_i, c_{a(i)}>, in chunks to bound memory
    for a in range(0, len(x), 8192):
        xs = x[a : a + 8192].astype(np.float64)  # [m, D]
        cs = centroids[assignments[a : a + 8192]].astype(np.float64)  # [m, D]
        score[a : a + 8192] = (xs * cs).sum(axis=1)
    order = np.lexsort((np.arange(len(x)), -score, assignments))  # by cluster, score desc, index
    first = np.ones(order.size, bool)
    first[1:] = assignments[order[1:]] != assignments[order[:-1]]
    return order[first]


# ----------------------------------------------------------------------------- build


def build_pairs(
    und_features: np.ndarray,
    gen_features: np.ndarray,
    *,
    num_clusters: int,
    neighbors: int = 1,
    threshold: float = 0.6,
    seed: int = 0,
    kmeans_backend: str = "sklearn",
    search_backend: str = "auto",
    ivf_min_pairs: float = 1e11,
    search_k: int = 32,
) -> PairSet:
    """PairUni Algorithm 1: aligned picks = k-means medoids over U ∪ G; retrieved pairs =
    greedy matching of the remaining items by descending cosine s_p >= δ, each understanding
    item used once, each generation item at most ``neighbors`` times.
    """
    u = _check_features(und_features, "und_features")
    g = _check_features(gen_features, "gen_features")
    if u.shape[1] != g.shape[1]:
        raise PairingInputError(
            f"feature dimensions differ: und_features has D={u.shape[1]}, "
            f"gen_features has D={g.shape[1]}; extract both with one extractor"
        )
    nu, ng = len(u), len(g)
    if not 1 <= num_clusters <= nu + ng:
        raise PairingInputError(
            f"num_clusters={num_clusters} must be in [1, {nu + ng}] "
            f"(the number of items, {nu} und + {ng} gen)"
        )
    if not -1.0 <= threshold <= 1.0:
        raise PairingInputError(f"threshold={threshold} must be a cosine similarity in [-1, 1]")
    if neighbors < 1:
        raise PairingInputError(f"neighbors={neighbors} must be >= 1")
    if kmeans_backend not in KMEANS:
        raise PairingInputError(
            f"unknown kmeans_backend {kmeans_backend!r}; valid: {sorted(KMEANS)}"
        )

    stats: dict = {}
    t0 = time.perf_counter()
    u = l2_normalise(u, "und_features")
    g = l2_normalise(g, "gen_features")
    x = np.concatenate([u, g], axis=0)  # [Nu+Ng, D]

    t1 = time.perf_counter()
    centroids, assignments = KMEANS[kmeans_backend](x, num_clusters, seed)
    stats["kmeans_s"] = time.perf_counter() - t1

    picks = medoids(x, assignments, centroids)
    aligned = [
        AlignedPick("und", int(i), int(assignments[i]))
        if i < nu
        else AlignedPick("gen", int(i - nu), int(assignments[i]))
        for i in picks
    ]

    # Retrieval pools: items that are not aligned picks.
    is_pick = np.zeros(nu + ng, bool)
    is_pick[picks] = True
    u_pool = np.flatnonzero(~is_pick[:nu])
    g_pool = np.flatnonzero(~is_pick[nu:])
    t2 = time.perf_counter()
    matches, mstats = greedy_match(
        u[u_pool],
        g[g_pool],
        neighbors=neighbors,
        threshold=threshold,
        search_k=search_k,
        search_backend=search_backend,
        ivf_min_pairs=ivf_min_pairs,
    )
    stats["match_s"] = time.perf_counter() - t2
    stats.update(mstats)
    retrieved = [RetrievedPair(int(u_pool[a]), int(g_pool[b]), float(s)) for a, b, s in matches]
    stats["total_s"] = time.perf_counter() - t0
    return PairSet(
        assignments=assignments,
        centroids=centroids,
        aligned=aligned,
        retrieved=retrieved,
        num_und=nu,
        num_gen=ng,
        stats=stats,
    )
