"""The PairUG manifest: the typed ``Pair`` the runtime streams, and its parquet IO.

Aligned pairs (k-means medoids) come from the medoid's own instance: the image I is shared
by both halves, and the half the instance lacks (the caption C of an understanding
instance, or Q/A of a generation instance) is left empty and marked in
``needs_augmentation`` rather than invented; the augmentation step completes the quadruple.

A manifest may also hold single-task items (DSR section 4.1 trains on unpaired data;
``pairing.unpaired``): ``kind`` und_only (an image and no generation half) or gen_only (a
prompt and no understanding half), weight 1, each its own advantage group (its own
``pair_id``). An und_only item of ``task_kind`` caption has no question and no answer:
the task is to describe the image. Manifests written before these columns existed read as
before (``task_kind`` qa, ``gen_source`` None).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields

from pairing.core import PairSet

PAIR_KINDS = ("aligned", "retrieved")
SINGLE_KINDS = ("und_only", "gen_only")
KINDS = PAIR_KINDS + SINGLE_KINDS
AUGMENT = ("understanding", "generation")
TASK_KINDS = ("qa", "caption")
OPTIONAL_COLUMNS = ("task_kind", "gen_source")
"""Columns added after the first manifests; missing ones are filled on read (``_fill``)."""


@dataclass(frozen=True)
class Pair:
    """One PairUG pair: an understanding half (I, Q, A) and a generation half (I, C)."""

    pair_id: int
    kind: str
    """aligned | retrieved (pairs) | und_only | gen_only (single-task items, no pair)."""
    similarity: float
    """s_p: 1 for aligned, the features' cosine for retrieved; 1 for single-task items."""
    weight: float
    """w_p in Pair-GRPO (PairUni eq. 3): 1 for aligned, sqrt(s_p) for retrieved."""
    und_image: str | None
    """Image ref of the understanding half (``pairing.datasets.load_image_ref``)."""
    question: str | None
    choices: tuple[str, ...]
    answer: str | None
    category: str | None
    und_source: str | None
    verifier: str | None
    gen_image: str | None
    """Image ref of the generation half (the same image for aligned pairs)."""
    prompt: str | None
    """The generation prompt (caption C)."""
    needs_augmentation: str | None
    """None, or the half still to be written: understanding (Q, A) | generation (C)."""
    cluster: int = -1
    """k-means cluster of an aligned pair's medoid; -1 for retrieved pairs and single items."""
    task_kind: str | None = "qa"
    """The understanding half's task: qa (question, reference answer; every pair) | caption
    (und_only images: describe the image; ``question`` is "", ``answer`` None) | None
    (gen_only: no understanding half)."""
    gen_source: str | None = None
    """Where a gen_only prompt comes from (t2i_compbench); None for pairs."""

    @property
    def is_pair(self) -> bool:
        """Both halves present (aligned or retrieved); False for und_only / gen_only."""
        return self.kind in PAIR_KINDS


def pairs_from_pairset(ps: PairSet, und_items: Sequence, gen_items: Sequence) -> list[Pair]:
    """Map feature indices of ``ps`` to instances: aligned pairs (by cluster), then retrieved
    pairs in greedy order. ``und_items[i]`` / ``gen_items[j]`` are the instances of rows i, j."""
    out: list[Pair] = []

    def und_half(u) -> dict:
        return dict(
            und_image=u.image_ref,
            question=u.question,
            choices=tuple(u.choices),
            answer=u.answer,
            category=u.category,
            und_source=u.source,
            verifier=u.verifier,
        )

    empty_und = dict(
        question=None, choices=(), answer=None, category=None, und_source=None, verifier=None
    )
    for a in ps.aligned:
        if a.source == "und":
            u = und_items[a.index]
            out.append(
                Pair(
                    len(out),
                    "aligned",
                    a.similarity,
                    a.weight,
                    **und_half(u),
                    gen_image=u.image_ref,
                    prompt=None,
                    needs_augmentation="generation",
                    cluster=a.cluster,
                )
            )
        else:
            g = gen_items[a.index]
            out.append(
                Pair(
                    len(out),
                    "aligned",
                    a.similarity,
                    a.weight,
                    und_image=g.image_ref,
                    **empty_und,
                    gen_image=g.image_ref,
                    prompt=g.prompt,
                    needs_augmentation="understanding",
                    cluster=a.cluster,
                )
            )
    for r in ps.retrieved:
        u, g = und_items[r.und_index], gen_items[r.gen_index]
        out.append(
            Pair(
                len(out),
                "retrieved",
                r.similarity,
                r.weight,
                **und_half(u),
                gen_image=g.image_ref,
                prompt=g.prompt,
                needs_augmentation=None,
            )
        )
    return out


def _schema():
    import pyarrow as pa

    s, f, i = pa.string(), pa.float64(), pa.int64()
    return pa.schema([
        ("pair_id", i), ("kind", s), ("similarity", f), ("weight", f), ("und_image", s),
        ("question", s), ("choices", pa.list_(s)), ("answer", s), ("category", s),
        ("und_source", s), ("verifier", s), ("gen_image", s), ("prompt", s),
        ("needs_augmentation", s), ("cluster", i), ("task_kind", s), ("gen_source", s),
    ])  # fmt: skip


def write_manifest(pairs: Sequence[Pair], path: str) -> None:
    """Write pairs as parquet (one row per pair, columns = ``Pair`` fields)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {f.name: [] for f in fields(Pair)}
    for p in pairs:
        for k, v in asdict(p).items():
            cols[k].append(list(v) if k == "choices" else v)
    pq.write_table(pa.table(cols, schema=_schema()), path)


def iter_manifest(path: str, batch_size: int = 1024) -> Iterator[Pair]:
    """Stream ``Pair``s from a manifest; a missing column names the file and the column."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    want = [f.name for f in fields(Pair) if f.name in names or f.name not in OPTIONAL_COLUMNS]
    missing = [c for c in want if c not in names]
    if missing:
        raise ValueError(
            f"{path}: not a PairUG manifest, missing columns {missing}. "
            "Fix: rebuild it with `pairuni pair`"
        )
    for batch in pf.iter_batches(batch_size=batch_size, columns=want):
        for rec in batch.to_pylist():
            if rec["kind"] not in KINDS:
                raise ValueError(
                    f"{path}: pair_id {rec['pair_id']}: kind {rec['kind']!r} not in {KINDS}"
                )
            rec["choices"] = tuple(rec["choices"] or ())
            if "task_kind" not in rec:  # written before single-task items existed
                rec["task_kind"] = "qa" if rec["kind"] in PAIR_KINDS else None
            if rec["task_kind"] not in (*TASK_KINDS, None):
                raise ValueError(
                    f"{path}: pair_id {rec['pair_id']}: task_kind {rec['task_kind']!r} "
                    f"not in {TASK_KINDS}"
                )
            yield Pair(**rec)


def read_manifest(path: str) -> list[Pair]:
    return list(iter_manifest(path))


def task_kind(item) -> str | None:
    """The understanding half's task: qa (question + reference answer) | caption (describe
    the image, DSR) | None (no understanding half). Manifests from before single-task items
    carry no field: their rows are pairs, qa. ``item``: a ``Pair`` or a dict."""
    if isinstance(item, dict):
        return item.get("task_kind", "qa")
    return getattr(item, "task_kind", "qa")


def item_tasks(item) -> tuple[str, ...]:
    """The tasks (und, gen) a manifest item gives a request for: an understanding half is an
    image with a question and a reference answer, or an image to describe (task_kind
    caption); a generation half is a prompt. A half still to be written by augmentation
    gives none. The driver builds requests by this rule (``deploy.dataflow.build_requests``)."""
    get = item.get if isinstance(item, dict) else lambda k, d=None: getattr(item, k, d)
    out = []
    if get("und_image") and (
        task_kind(item) == "caption" or (get("question") and get("answer") is not None)
    ):
        out.append("und")
    if get("prompt"):
        out.append("gen")
    return tuple(out)
