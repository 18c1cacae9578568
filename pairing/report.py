"""The report next to a manifest: counts by kind, source and category; every input row
accounted for (excluded by kind, read error, feature error, aligned, retrieved, or unpaired
with the reason); the similarity histogram of retrieved pairs (like PairUni Figure 8)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pairing.manifest import Pair

NO_MATCH = (
    "no_match",
    "no partner left at similarity >= threshold: every candidate was "
    "used by a higher-similarity pair (the greedy matching is maximal)",
)


@dataclass(frozen=True)
class RowIssue:
    """An input row that produced no item: which set, which stage, where and why."""

    side: str
    """und | gen."""
    stage: str
    """read (the reader skipped it) | features (its image could not be embedded)."""
    file: str
    row: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"[{self.side}/{self.stage}] {self.file} row {self.row}: field {self.field!r}: {self.reason}"


def _side(
    rows: int,
    read_errors: int,
    feature_errors: int,
    aligned: int,
    paired: int,
    excluded: dict[str, int] | None = None,
) -> dict:
    """One side's accounting; ``excluded`` (rows per excluded kind) adds the keys
    ``excluded`` and ``excluded_by_kind`` when given."""
    n_excluded = sum((excluded or {}).values())
    unpaired = rows - n_excluded - read_errors - feature_errors - aligned - paired
    out = {"rows": rows}
    if excluded is not None:
        out |= {"excluded": n_excluded, "excluded_by_kind": dict(excluded)}
    return out | {
        "read_errors": read_errors,
        "feature_errors": feature_errors,
        "aligned": aligned,
        "retrieved": paired,
        "unpaired_no_match": unpaired,
        "accounted": unpaired >= 0,
    }


def build_report(
    pairs: Sequence[Pair],
    *,
    und_rows: int,
    gen_rows: int,
    issues: Sequence[RowIssue],
    gen_paired_items: int,
    settings: dict,
    stats: dict,
    bins: int = 40,
    und_excluded: dict[str, int] | None = None,
) -> dict:
    """Counts and accounting: every input row of U and G is excluded by its kind (U only,
    ``pairing.und.exclude_kinds``; ``und_excluded`` counts them per kind), a read error, a
    feature error, an aligned pick, in a retrieved pair, or unpaired for lack of a match.
    ``gen_paired_items`` counts generation items with at least one retrieved pair;
    ``settings`` records K, n, δ and the extractor."""
    kinds = Counter(p.kind for p in pairs)
    aligned_und = sum(p.kind == "aligned" and p.needs_augmentation == "generation" for p in pairs)
    aligned_gen = kinds["aligned"] - aligned_und
    retrieved = [p for p in pairs if p.kind == "retrieved"]
    n_issue = Counter((i.side, i.stage) for i in issues)

    def by(attr: str) -> dict:
        table: dict[str, Counter] = {}
        for p in pairs:
            table.setdefault(getattr(p, attr) or "(none)", Counter())[p.kind] += 1
        return {k: dict(v) for k, v in sorted(table.items())}

    sims = np.asarray([p.similarity for p in retrieved], np.float64)
    lo = float(settings.get("threshold", 0.0))
    counts, edges = np.histogram(sims, bins=bins, range=(min(lo, 1.0), 1.0))
    return {
        "settings": settings,
        "pairs": {
            "total": len(pairs),
            "aligned": kinds["aligned"],
            "retrieved": kinds["retrieved"],
            "aligned_from_und": aligned_und,
            "aligned_from_gen": aligned_gen,
            "needs_augmentation": dict(
                Counter(p.needs_augmentation for p in pairs if p.needs_augmentation)
            ),
        },
        "by_source": by("und_source"),
        "by_category": by("category"),
        "und": _side(
            und_rows,
            n_issue["und", "read"],
            n_issue["und", "features"],
            aligned_und,
            kinds["retrieved"],
            und_excluded,
        ),
        "gen": _side(
            gen_rows,
            n_issue["gen", "read"],
            n_issue["gen", "features"],
            aligned_gen,
            gen_paired_items,
        ),
        "unpaired_reasons": {
            "excluded": "row of an excluded task kind (pairing.und.exclude_kinds)",
            "read_error": "row skipped by the reader (see issues)",
            "feature_error": "image could not be decoded or embedded",
            NO_MATCH[0]: NO_MATCH[1],
        },
        "similarity": {
            "count": int(sims.size),
            "min": float(sims.min()) if sims.size else None,
            "mean": float(sims.mean()) if sims.size else None,
            "median": float(np.median(sims)) if sims.size else None,
            "max": float(sims.max()) if sims.size else None,
            "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        },
        "issues_total": len(issues),
        "issues": [str(i) for i in issues[:200]],
        "stats": stats,
    }


def plot_similarity(pairs: Sequence[Pair], threshold: float, path: str) -> None:
    """Histogram of retrieved-pair similarities with δ marked (PairUni Figure 8 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims = [p.similarity for p in pairs if p.kind == "retrieved"]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.hist(sims, bins=40, range=(min(threshold, 1.0), 1.0), color="#4C72B0", edgecolor="white")
    ax.axvline(threshold, color="#C44E52", linestyle="--", label=f"δ = {threshold:g}")
    n_aligned = sum(p.kind == "aligned" for p in pairs)
    ax.set_title(f"PairUG retrieved pairs: {len(sims)} (plus {n_aligned} aligned, s = 1)")
    ax.set_xlabel("cosine similarity s_p")
    ax.set_ylabel("pairs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: dict, pairs: Sequence[Pair], issues: Sequence, out_dir: str) -> dict:
    """report.json, issues.jsonl (every skipped row) and similarity_hist.png in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    with open(out / "issues.jsonl", "w") as fh:
        for i in issues:
            fh.write(json.dumps(asdict(i)) + "\n")
    plot_similarity(
        pairs, float(report["settings"].get("threshold", 0.0)), str(out / "similarity_hist.png")
    )
    return report
