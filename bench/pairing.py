"""PairUG builder benchmark on synthetic clustered features (PairUni scale by default:
47k understanding + 60k generation items, 2048-d, K = 5000).

Times each stage; compares the faiss retrieval + greedy matching with a brute-force numpy
version in the same run (ratio, and the two must give identical pairs), and the two
k-means backends (ratio, plus cluster quality: mean cosine to the assigned centroid and
NMI against the generating clusters).

    .venv/bin/python bench/pairing.py                 # paper scale (several minutes on 2 cores)
    .venv/bin/python bench/pairing.py --scale 0.25    # 1/4 of the items and of K
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# This file is bench/pairing.py: drop its folder from sys.path so `pairing` is the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import numpy as np  # noqa: E402

from pairing.core import KMEANS, l2_normalise, medoids  # noqa: E402
from pairing.matching import exact_similarity, greedy_match, score_tolerance  # noqa: E402


def synthetic(n_und: int, n_gen: int, dim: int, n_true: int, seed: int):
    """Items = unit centre + noise of norm sigma (per cluster, sigma in [0.5, 1.0]), so
    same-cluster cosines spread around 1/(1+sigma^2) in [0.5, 0.8] and others sit near 0."""
    rng = np.random.default_rng(seed)
    centres = l2_normalise(rng.standard_normal((n_true, dim), dtype=np.float32))  # [C, D]
    sigma = rng.uniform(0.5, 1.0, n_true).astype(np.float32)  # [C]

    def draw(n):
        lab = rng.integers(0, n_true, n)
        noise = rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)  # [n, D]
        return l2_normalise(centres[lab] + sigma[lab, None] * noise), lab

    (u, lu), (g, lg) = draw(n_und), draw(n_gen)
    return u, g, np.concatenate([lu, lg])


def bruteforce_greedy(u: np.ndarray, g: np.ndarray, neighbors: int, threshold: float):
    """Reference: every (u, g) score by numpy matmul, pairs >= δ re-scored exactly, sorted by
    (-s, u, g), then the greedy loop."""
    tol = score_tolerance(u.shape[1])
    us, gs = [], []
    for a in range(0, len(g), 2048):
        s = g[a : a + 2048] @ u.T  # [b, Nu]
        gi, ui = np.nonzero(s >= threshold - tol)
        us.append(ui)
        gs.append(gi + a)
    uu, gg = np.concatenate(us), np.concatenate(gs)
    s = exact_similarity(u, g, uu, gg)
    keep = s >= threshold
    uu, gg, s = uu[keep], gg[keep], s[keep]
    order = np.lexsort((gg, uu, -s))
    used = np.zeros(len(u), bool)
    count = np.zeros(len(g), np.int64)
    out = []
    for a, b, x in zip(uu[order].tolist(), gg[order].tolist(), s[order].tolist()):
        if used[a] or count[b] >= neighbors:
            continue
        used[a] = True
        count[b] += 1
        out.append((a, b, x))
    return out, int(keep.sum())


def cluster_quality(x, centroids, assign, truth) -> dict:
    from sklearn.metrics import normalized_mutual_info_score

    c = l2_normalise(centroids)
    cos = np.empty(len(x))
    for a in range(0, len(x), 8192):
        cos[a : a + 8192] = (x[a : a + 8192] * c[assign[a : a + 8192]]).sum(1)
    return {
        "mean_cos_to_centroid": float(cos.mean()),
        "nmi_vs_truth": float(normalized_mutual_info_score(truth, assign)),
        "nonempty_clusters": int(np.unique(assign).size),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of items and of K")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--neighbors", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-sklearn", action="store_true", help="skip the slow k-means backend")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()

    nu, ng = round(47_000 * args.scale), round(60_000 * args.scale)
    k = max(1, round(5000 * args.scale))
    res: dict = {
        "und": nu,
        "gen": ng,
        "dim": args.dim,
        "K": k,
        "neighbors": args.neighbors,
        "threshold": args.threshold,
    }
    t = time.perf_counter()
    u, g, truth = synthetic(nu, ng, args.dim, k, args.seed)
    x = np.concatenate([u, g])  # [Nu+Ng, D]
    res["data_s"] = time.perf_counter() - t
    print(f"data: {nu} und + {ng} gen x {args.dim}, K={k} ({res['data_s']:.1f}s)", flush=True)

    for backend in ("faiss", "sklearn"):
        if backend == "sklearn" and args.skip_sklearn:
            continue
        t = time.perf_counter()
        cents, assign = KMEANS[backend](x, k, args.seed)
        res[f"kmeans_{backend}_s"] = time.perf_counter() - t
        res[f"kmeans_{backend}_quality"] = cluster_quality(x, cents, assign, truth)
        print(
            f"kmeans {backend}: {res[f'kmeans_{backend}_s']:.1f}s "
            f"{res[f'kmeans_{backend}_quality']}",
            flush=True,
        )
        if backend == "faiss":
            t = time.perf_counter()
            picks = medoids(x, assign, cents)
            res["medoids_s"] = time.perf_counter() - t
    if "kmeans_sklearn_s" in res:
        res["kmeans_sklearn_over_faiss"] = res["kmeans_sklearn_s"] / res["kmeans_faiss_s"]

    is_pick = np.zeros(len(x), bool)
    is_pick[picks] = True
    up, gp = u[~is_pick[:nu]], g[~is_pick[nu:]]
    t = time.perf_counter()
    fast, stats = greedy_match(up, gp, neighbors=args.neighbors, threshold=args.threshold)
    res["match_faiss_s"] = time.perf_counter() - t
    res["match_stats"] = stats
    print(
        f"retrieval+matching (faiss): {res['match_faiss_s']:.1f}s, {len(fast)} pairs, {stats}",
        flush=True,
    )
    t = time.perf_counter()
    ref, n_candidates = bruteforce_greedy(up, gp, args.neighbors, args.threshold)
    res["match_bruteforce_s"] = time.perf_counter() - t
    res["pairs_above_threshold"] = n_candidates
    res["bruteforce_over_faiss"] = res["match_bruteforce_s"] / res["match_faiss_s"]
    res["identical_pairs"] = fast == ref
    res["retrieved_pairs"] = len(fast)
    print(
        f"retrieval+matching (numpy brute force): {res['match_bruteforce_s']:.1f}s, "
        f"{len(ref)} pairs; identical: {res['identical_pairs']}",
        flush=True,
    )
    print(json.dumps(res, indent=2, default=float))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2, default=float)
    if not res["identical_pairs"]:
        raise SystemExit("faiss path and brute force disagree")


if __name__ == "__main__":
    main()
