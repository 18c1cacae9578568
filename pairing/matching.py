"""Greedy retrieval matching (PairUni Algorithm 1, retrieval step) on faiss candidate lists.

The greedy rule: take pairs (u, g) with s_p >= δ in descending s_p (ties by u, then g);
accept a pair when u is still unused and g has fewer than n pairs. The result is maximal:
a rejected pair stays rejected because "u used" and "g full" only ever become true.

Fast path: each generation item g holds a candidate list from a top-k inner-product search,
re-scored exactly (``exact_similarity``) and sorted. A k-way merge over the lists (a heap of
each g's best untried candidate) visits pairs in the global greedy order. A list is only
trusted down to its *level*: the k-th search score plus the float32 error bound, above
which no unlisted item can lie. When the merge reaches the highest level of any unfinished
list, the blocked items (and only they) are re-queried against the still-unused items with
twice the k; a list that holds every unused item, or whose level is below δ, is complete.
With a flat index the result equals the brute-force greedy exactly; an IVF index (used
above a size threshold) makes the candidate lists, and so maximality, approximate.
"""

from __future__ import annotations

import heapq
import math
import time

import numpy as np

SEARCH_BACKENDS = ("auto", "flat", "ivf")
_QUERY_CHUNK = 4096


def exact_similarity(u_feats: np.ndarray, g_feats: np.ndarray, u_idx, g_idx) -> np.ndarray:
    """s_p for the pairs (u_idx[i], g_idx[i]): float64 dot product of the float32 unit rows.

    Each value depends only on its two rows (a per-row reduction along a contiguous axis),
    so the fast path and a brute-force reference get bit-identical values, hence the same
    greedy order even under ties. Clipped to [-1, 1].
    """
    u_idx, g_idx = np.asarray(u_idx, np.int64), np.asarray(g_idx, np.int64)
    out = np.empty(u_idx.size, np.float64)
    step = max(1, (1 << 25) // max(1, u_feats.shape[1]))  # ~256 MB of float64 per operand
    for a in range(0, u_idx.size, step):
        uu = u_feats[u_idx[a : a + step]].astype(np.float64)  # [m, D]
        gg = g_feats[g_idx[a : a + step]].astype(np.float64)  # [m, D]
        out[a : a + step] = (uu * gg).sum(axis=1)
    return np.clip(out, -1.0, 1.0, out=out)  # rounding can put parallel rows at 1 + 1e-8


def score_tolerance(dim: int) -> float:
    """Bound on |float32 inner product - exact| for unit vectors of dimension D: D·2^-23.

    (Higham: |fl(x·y) - x·y| <= γ_D Σ|x_i y_i| <= D·u/(1-D·u) with u = 2^-24 and
    Σ|x_i y_i| <= 1 by Cauchy-Schwarz; D·2^-23 = 2·D·u covers it with room to spare.)
    """
    return dim * 2.0**-23 + 1e-7


class _Searcher:
    """Top-k inner-product search over the understanding pool (flat, IVF, GPU copy)."""

    def __init__(self, base: np.ndarray, backend: str, ivf_min_pairs: float, n_queries: int):
        import faiss

        if backend not in SEARCH_BACKENDS:
            raise ValueError(f"unknown search_backend {backend!r}; valid: {list(SEARCH_BACKENDS)}")
        self.faiss = faiss
        n, d = base.shape
        self.ivf = n >= 1024 and (
            backend == "ivf" or (backend == "auto" and float(n) * float(n_queries) > ivf_min_pairs)
        )
        if self.ivf:
            nlist = int(4 * math.sqrt(n))
            self.nprobe = min(nlist, 32)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(base)
            index.add(base)
            index.nprobe = self.nprobe
        else:
            index = faiss.IndexFlatIP(d)
            index.add(base)
        self.index, self.n = index, n
        self.gpu_index = None
        if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            self._res = faiss.StandardGpuResources()
            self.gpu_index = faiss.index_cpu_to_gpu(self._res, 0, index)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None):
        """Scores [b, k] float32 and ids [b, k] (-1 past the end) among ``allowed`` ids."""
        if allowed is None:
            return (self.gpu_index or self.index).search(queries, k)
        bitmap = np.packbits(allowed, bitorder="little")  # kept alive through the call
        sel = self.faiss.IDSelectorBitmap(self.n, self.faiss.swig_ptr(bitmap))
        params = (
            self.faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe)
            if self.ivf
            else self.faiss.SearchParameters(sel=sel)
        )
        return self.index.search(queries, k, params=params)


def greedy_match(
    u: np.ndarray,
    g: np.ndarray,
    *,
    neighbors: int,
    threshold: float,
    search_k: int = 32,
    search_backend: str = "auto",
    ivf_min_pairs: float = 1e11,
) -> tuple[list[tuple[int, int, float]], dict]:
    """Greedy matching of unit rows u [Nu, D] and g [Ng, D]; returns [(u_i, g_j, s_p)] in
    acceptance order (descending s_p) and search counters.
    """
    nu, ng = len(u), len(g)
    stats = {"search_s": 0.0, "requery_rounds": 0, "requeried": 0, "exact_search": True}
    if nu == 0 or ng == 0:
        return [], stats
    tol = score_tolerance(u.shape[1])
    t0 = time.perf_counter()
    searcher = _Searcher(u, search_backend, ivf_min_pairs, ng)
    stats["exact_search"] = not searcher.ivf
    stats["search_s"] += time.perf_counter() - t0

    used = np.zeros(nu, bool)
    count = np.zeros(ng, np.int64)
    k_of = np.full(ng, max(search_k, 2 * neighbors), np.int64)
    level = np.full(ng, -np.inf)  # list g is trusted for s > level[g]; -inf: complete
    cand_u: list = [None] * ng
    cand_s: list = [None] * ng
    ptr = np.zeros(ng, np.int64)
    blocked: set[int] = set()
    heap: list[tuple[float, int, int]] = []  # (-s_p, u, g): pops the greedy order
    matches: list[tuple[int, int, float]] = []

    def advance(j: int) -> None:
        """Push g_j's best untried unused candidate, or mark it blocked / finished."""
        cu, cs, p = cand_u[j], cand_s[j], int(ptr[j])
        while p < len(cu):
            if cs[p] <= level[j]:
                break  # below the trusted level: unlisted items may come first
            if not used[cu[p]]:
                ptr[j] = p
                heapq.heappush(heap, (-float(cs[p]), int(cu[p]), j))
                return
            p += 1
        ptr[j] = p
        if level[j] > -np.inf:
            blocked.add(j)

    def load(gs: np.ndarray, allowed: np.ndarray | None) -> None:
        """(Re-)query the lists of gs among the allowed (unused) understanding items."""
        t = time.perf_counter()
        n_allowed = nu if allowed is None else int(allowed.sum())
        kk = int(min(k_of[gs].max(), n_allowed))
        for a in range(0, len(gs), _QUERY_CHUNK):
            chunk = gs[a : a + _QUERY_CHUNK]
            if kk == 0:
                scores, ids = np.zeros((len(chunk), 0), np.float32), np.zeros((len(chunk), 0), int)
            else:
                scores, ids = searcher.search(g[chunk], kk, allowed)  # [b, kk] each
            complete = np.full(len(chunk), kk >= n_allowed) | (kk == 0)
            if kk:
                complete |= ids[:, -1] < 0
            lev = (
                np.where(complete, -np.inf, scores[:, -1].astype(np.float64) + tol)
                if kk
                else np.full(len(chunk), -np.inf)
            )
            lev[lev < threshold] = -np.inf  # nothing unlisted can reach δ
            level[chunk] = lev
            rows, cols = np.nonzero((ids >= 0) & (scores >= threshold - tol))
            uu = ids[rows, cols].astype(np.int64)
            s = exact_similarity(u, g, uu, chunk[rows])
            keep = s >= threshold
            rows, uu, s = rows[keep], uu[keep], s[keep]
            order = np.lexsort((uu, -s, rows))  # per g: s_p descending, ties by u
            rows, uu, s = rows[order], uu[order], s[order]
            bounds = np.searchsorted(rows, np.arange(len(chunk) + 1))
            for r, j in enumerate(chunk.tolist()):
                cand_u[j], cand_s[j] = uu[bounds[r] : bounds[r + 1]], s[bounds[r] : bounds[r + 1]]
                ptr[j] = 0
                blocked.discard(j)
                advance(j)
        k_of[gs] = np.minimum(2 * np.maximum(k_of[gs], kk), max(nu, 1))
        stats["search_s"] += time.perf_counter() - t

    load(np.arange(ng), None)
    while True:
        active = count < neighbors
        trusted = float(level[active].max()) if active.any() else -np.inf  # L
        while heap and -heap[0][0] > trusted:
            neg_s, ui, j = heapq.heappop(heap)
            if not used[ui]:
                used[ui] = True
                count[j] += 1
                matches.append((ui, j, -neg_s))
            ptr[j] += 1
            if count[j] < neighbors:
                advance(j)
        if not blocked:
            if not heap:
                break
            continue  # L was stale (its item filled up); recompute it
        stalled = np.fromiter(sorted(blocked), np.int64)
        stats["requery_rounds"] += 1
        stats["requeried"] += len(stalled)
        load(stalled, ~used)
    return matches, stats
