"""DSR's unpaired data (DSR section 4.1): readers for T2I-CompBench prompt files, COCO
captions (JSON + image folder) and JourneyDB (annotation JSONL + image folder), and the
builder of a manifest of single-task items (`pairuni pair pairing.mode=unpaired`).

DSR trains generation on T2I-CompBench's training prompts and understanding on images
sampled from JourneyDB and COCO, and never joins them ("non-parallel"): each prompt becomes
a gen_only item, each image an und_only item of the captioning task (the model describes
the image; there is no question and no reference answer). The texts that come with the
images (COCO captions, JourneyDB's prompt and caption) are read and kept on the item as
``references``, but they do not enter the manifest: DSR trains on no image-text pair.

Readers follow ``pairing.datasets``: rows plus a per-row ``ReadIssue`` list (file, row,
field, reason); ``strict=True`` stops at the first. A file that is not in the format at all
(not JSON, no ``images`` list) is a ``DataError`` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pairing.config import PairingConfig, UnpairedSources
from pairing.datasets import (
    DataError,
    ReadResult,
    _Collector,
    expand_paths,
    image_problem,
    jsonl_objects,
)
from pairing.manifest import Pair, write_manifest

T2I_SOURCE, COCO_SOURCE, JDB_SOURCE = "t2i_compbench", "coco", "journeydb"


@dataclass(frozen=True)
class ImageItem:
    """One image without a question (DSR's understanding task: describe it)."""

    image_ref: str
    """The image file's path (``pairing.datasets.load_image_ref`` reads it back)."""
    image: bytes = field(repr=False)
    source: str
    """coco | journeydb."""
    references: tuple[str, ...] = ()
    """Texts the data set gives with the image (COCO captions; JourneyDB's caption, then its
    prompt); not training targets."""


@dataclass(frozen=True)
class PromptItem:
    """One generation prompt without an image."""

    ref: str
    """``<file>#line=<n>`` (1-based)."""
    prompt: str
    category: str
    """The file name without its extension and a ``_train`` / ``_val`` / ``_test`` suffix
    (T2I-CompBench: color, shape, texture, spatial, non_spatial, complex, ...)."""
    source: str = T2I_SOURCE


def _sample(n: int, k: int, seed: int, salt: str) -> set[int] | None:
    """Indices of k of n rows drawn with ``seed`` (None: keep all, k = 0 or k >= n)."""
    if k <= 0 or k >= n:
        return None
    return set(random.Random(f"{seed}:{salt}").sample(range(n), k))


def _read_bytes(path: Path, out: _Collector, file: str, row, field_name: str) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError as e:
        return out.issue(file, row, field_name, f"cannot read {path} ({e.strerror})")
    problem = image_problem(data)
    if problem:
        return out.issue(file, row, field_name, f"{path}: {problem}")
    return data


# ----------------------------------------------------------------------------- T2I-CompBench


def prompt_category(path: str) -> str:
    """``color_train.txt`` -> color; ``non_spatial_val.txt`` -> non_spatial."""
    stem = Path(path).stem
    for suffix in ("_train", "_val", "_test"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def read_prompts(
    paths: tuple[str, ...], *, limit: int = 0, seed: int = 0, strict: bool = False
) -> ReadResult:
    """Prompt files with one prompt per line (T2I-CompBench as released). An empty line in
    the middle of a file is an issue; trailing whitespace is not a line. ``limit`` > 0 keeps
    that many prompts drawn with ``seed`` over all files (the rest counted as not_sampled)."""
    out = _Collector(strict)
    found: list[PromptItem] = []
    for path in expand_paths(paths, "pairing.unpaired.prompts"):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e}); expected one prompt per line") from e
        category = prompt_category(path)
        for n, line in enumerate(text.rstrip().splitlines(), start=1):
            prompt = " ".join(line.split())
            if not prompt:
                out.issue(path, n, "<line>", "empty line")
                continue
            found.append(PromptItem(f"{path}#line={n}", prompt, category))
    keep = _sample(len(found), limit, seed, "prompts")
    out.items = [it for i, it in enumerate(found) if keep is None or i in keep]
    if keep is not None:
        out.excluded["not_sampled"] = len(found) - len(out.items)
    return out.result()


# ----------------------------------------------------------------------------- COCO


def read_coco(
    paths: tuple[str, ...],
    image_root: str = "",
    *,
    sample: int = 0,
    seed: int = 0,
    strict: bool = False,
) -> ReadResult:
    """Images listed in COCO captions JSON files (``images`` [{id, file_name}],
    ``annotations`` [{image_id, caption}]), read from ``image_root`` (default: the JSON's
    directory). One item per listed image, in the file's order, its captions as references.
    Rows are ``images[i]`` (and ``annotations[j]`` for a caption naming no listed image).
    ``sample`` > 0 keeps that many images per file, drawn with ``seed``."""
    out = _Collector(strict)
    for path in expand_paths(paths, "pairing.unpaired.coco_captions"):
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not a JSON file ({e})") from e
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError(
                f"{path}: no 'images' list; a COCO captions file has 'images' [{{id, "
                "file_name}] and 'annotations' [{image_id, caption}]. Fix: point "
                "pairing.unpaired.coco_captions at e.g. annotations/captions_train2017.json"
            )
        root = Path(image_root or os.path.dirname(path))
        captions: dict[object, list[str]] = {}
        images = data["images"]
        ids = {im.get("id") for im in images if isinstance(im, dict)}
        for j, ann in enumerate(data.get("annotations") or []):
            cap = ann.get("caption") if isinstance(ann, dict) else None
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            if image_id not in ids:
                out.issue(path, f"annotations[{j}]", "image_id", f"{image_id!r} is not in images")
            elif isinstance(cap, str) and cap.strip():
                captions.setdefault(image_id, []).append(" ".join(cap.split()))
        keep = _sample(len(images), sample, seed, f"coco:{path}")
        if keep is not None:
            out.excluded["not_sampled"] = out.excluded.get("not_sampled", 0)
            out.excluded["not_sampled"] += len(images) - len(keep)
        for i, im in enumerate(images):
            if keep is not None and i not in keep:
                continue
            row = f"images[{i}]"
            name = im.get("file_name") if isinstance(im, dict) else None
            if not isinstance(name, str) or not name:
                out.issue(path, row, "file_name", "missing file name")
                continue
            img_path = root / name
            data_bytes = _read_bytes(img_path, out, path, row, "file_name")
            if data_bytes is not None:
                refs = tuple(captions.get(im.get("id"), ()))
                out.items.append(ImageItem(str(img_path), data_bytes, COCO_SOURCE, refs))
    return out.result()


# ----------------------------------------------------------------------------- JourneyDB

JDB_IMAGE = "img_path"
"""JourneyDB's image field (``./000/<hash>.jpg``, relative to the ``imgs`` folder)."""
JDB_TEXTS = (("Task2", "Caption"), ("prompt",))
"""Optional texts kept as references: the caption (GPT-written), then the Midjourney prompt."""


def read_journeydb(
    paths: tuple[str, ...],
    image_root: str = "",
    *,
    sample: int = 0,
    seed: int = 0,
    strict: bool = False,
) -> ReadResult:
    """Images of JourneyDB annotation JSONL files (``train_anno_realease_repath.jsonl`` as
    released: one JSON object a line with ``img_path``, and optionally ``prompt`` and
    ``Task2.Caption``), read from ``image_root`` (default: ``imgs`` beside the JSONL). A line
    without ``img_path`` is an issue naming the field. ``sample`` > 0 keeps that many of each
    file's valid lines, drawn with ``seed``, before any image is read."""
    out = _Collector(strict)
    for path in expand_paths(paths, "pairing.unpaired.journeydb"):
        root = Path(image_root or os.path.join(os.path.dirname(path), "imgs"))
        entries: list[tuple[int, str, tuple[str, ...]]] = []
        for n, rec in jsonl_objects(path, out):
            rel = rec.get(JDB_IMAGE)
            if not isinstance(rel, str) or not rel.strip():
                keys = sorted(rec)[:8]
                out.issue(path, n, JDB_IMAGE, f"missing image path (the line's keys: {keys})")
                continue
            texts = []
            for keys in JDB_TEXTS:
                cur = rec
                for k in keys:
                    cur = cur.get(k) if isinstance(cur, dict) else None
                if isinstance(cur, str) and cur.strip():
                    texts.append(" ".join(cur.split()))
            entries.append((n, rel, tuple(texts)))
        keep = _sample(len(entries), sample, seed, f"journeydb:{path}")
        if keep is not None:
            out.excluded["not_sampled"] = out.excluded.get("not_sampled", 0)
            out.excluded["not_sampled"] += len(entries) - len(keep)
        for i, (n, rel, texts) in enumerate(entries):
            if keep is not None and i not in keep:
                continue
            img_path = root / rel
            data = _read_bytes(img_path, out, path, n, JDB_IMAGE)
            if data is not None:
                out.items.append(ImageItem(str(img_path), data, JDB_SOURCE, texts))
    return out.result()


# ----------------------------------------------------------------------------- manifest


def und_only(pair_id: int, it: ImageItem) -> Pair:
    """An image as an understanding-only captioning item: empty question, no answer."""
    return Pair(
        pair_id, "und_only", 1.0, 1.0,
        und_image=it.image_ref, question="", choices=(), answer=None, category="caption",
        und_source=it.source, verifier=None, gen_image=None, prompt=None,
        needs_augmentation=None, task_kind="caption",
    )  # fmt: skip


def gen_only(pair_id: int, it: PromptItem) -> Pair:
    """A prompt as a generation-only item: no image, no understanding half."""
    return Pair(
        pair_id, "gen_only", 1.0, 1.0,
        und_image=None, question=None, choices=(), answer=None, category=it.category,
        und_source=None, verifier=None, gen_image=None, prompt=it.prompt,
        needs_augmentation=None, task_kind=None, gen_source=it.source,
    )  # fmt: skip


def read_unpaired(src: UnpairedSources, *, seed: int = 0, strict: bool = False) -> dict:
    """Every configured source read: {source name: ReadResult} (only the configured ones)."""
    res = {}
    if src.prompts:
        res[T2I_SOURCE] = read_prompts(
            src.prompts, limit=src.prompts_limit, seed=seed, strict=strict
        )
    if src.coco_captions:
        res[COCO_SOURCE] = read_coco(
            src.coco_captions, src.coco_image_root,
            sample=src.images_per_source, seed=seed, strict=strict,
        )  # fmt: skip
    if src.journeydb:
        res[JDB_SOURCE] = read_journeydb(
            src.journeydb, src.journeydb_image_root,
            sample=src.images_per_source, seed=seed, strict=strict,
        )  # fmt: skip
    return res


def build_unpaired(results: dict) -> list[Pair]:
    """und_only items (images, in source order coco, journeydb), then gen_only items
    (prompts), numbered from 0."""
    items: list[Pair] = []
    for name in (COCO_SOURCE, JDB_SOURCE):
        for it in results[name].items if name in results else ():
            items.append(und_only(len(items), it))
    for it in results[T2I_SOURCE].items if T2I_SOURCE in results else ():
        items.append(gen_only(len(items), it))
    return items


def run_unpaired(cfg: PairingConfig, *, strict: bool) -> dict:
    """`pairuni pair` with ``pairing.mode=unpaired``: read the sources, write manifest.parquet
    (single-task items), report.json, issues.jsonl and config.json to ``output_dir``."""
    from pairing.report import RowIssue

    t0 = time.perf_counter()
    results = read_unpaired(cfg.unpaired, seed=cfg.seed, strict=strict)
    items = build_unpaired(results)
    side = {T2I_SOURCE: "gen", COCO_SOURCE: "und", JDB_SOURCE: "und"}
    issues = [
        RowIssue(side[name], "read", **dataclasses.asdict(i))
        for name, res in results.items()
        for i in res.issues
    ]
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(items, str(out / "manifest.parquet"))
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    kinds = Counter(p.kind for p in items)
    report = {
        "mode": "unpaired",
        "settings": {
            "seed": cfg.seed,
            "manifest": str(out / "manifest.parquet"),
            "images_per_source": cfg.unpaired.images_per_source,
            "prompts_limit": cfg.unpaired.prompts_limit,
        },
        "items": {
            "total": len(items),
            "und_only": kinds["und_only"],
            "gen_only": kinds["gen_only"],
        },
        "sources": {
            name: {
                "rows": res.rows,
                "read_errors": len(res.issues),
                "not_sampled": res.excluded.get("not_sampled", 0),
                "items": len(res.items),
                "accounted": res.rows
                == len(res.items) + len(res.issues) + res.excluded.get("not_sampled", 0),
            }
            for name, res in results.items()
        },
        "by_category": dict(sorted(Counter(p.category for p in items).items())),
        "issues_total": len(issues),
        "issues": [str(i) for i in issues[:200]],
        "stats": {"wall_s": time.perf_counter() - t0},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    with open(out / "issues.jsonl", "w") as fh:
        for i in issues:
            fh.write(json.dumps(dataclasses.asdict(i)) + "\n")
    print(
        f"unpaired: {len(items)} items ({kinds['und_only']} und_only, {kinds['gen_only']} "
        f"gen_only) -> {out / 'manifest.parquet'}"
    )
    for name, s in report["sources"].items():
        print(
            f"  {name}: {s['rows']} rows = {s['items']} items + {s['read_errors']} read errors "
            f"+ {s['not_sampled']} not sampled"
        )
    if issues:
        print(f"  {len(issues)} skipped rows listed in {out / 'issues.jsonl'}")
    return report
