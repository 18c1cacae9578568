"""`pairuni pair`: read U and G, embed the images, build PairUG, write the manifest and
the report. ``deploy/cli.py`` registers ``add_pair_command``; ``run_pair`` does the work.

    pairuni pair --config deploy/configs/pairing.yaml [--strict] [pairing.threshold=0.7 ...]
    pairuni pair pairing.mode=unpaired pairing.unpaired.prompts=[...] ...   # DSR's data
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.config import ConfigError
from pairing.config import FeatureConfig, PairingConfig
from pairing.core import build_pairs
from pairing.datasets import DataError, read_generation, read_understanding
from pairing.features import (
    FeatureResult,
    build_extractor,
    cached_features,
    extract_features,
    extractor_id,
)
from pairing.manifest import pairs_from_pairset, write_manifest
from pairing.quadruples import complete_pairs, load_quadruples
from pairing.report import RowIssue, build_report, write_report


@dataclass(frozen=True)
class PairCommandConfig:
    """The YAML of `pairuni pair`: one `pairing:` section (keys read `pairing.threshold`)."""

    pairing: PairingConfig = field(default_factory=PairingConfig)
    """The PairUG builder."""


def load_pairing_config(yaml_path: str | None, overrides: list[str]) -> PairingConfig:
    """YAML + dotted overrides -> validated ``PairingConfig``."""
    from models.config import load_config

    return load_config(PairCommandConfig, yaml_path, overrides).pairing


def add_pair_command(subparsers) -> None:
    """Register `pair` on the `pairuni` sub-parsers."""
    p = subparsers.add_parser("pair", help="build the PairUG pair manifest (PairUni Alg. 1)")
    p.add_argument("--config", default=None, help="YAML file with a `pairing:` section")
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first row that cannot be read (default: skip and report)",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. pairing.threshold=0.7")
    p.set_defaults(
        func=lambda args: run_pair(
            load_pairing_config(args.config, args.overrides), strict=args.strict
        )
    )


def _features(cfg: FeatureConfig, items: list, desc: str, get_extractor) -> FeatureResult:
    refs, images = [it.image_ref for it in items], [it.image for it in items]
    if not items:
        return FeatureResult(np.zeros((0, 0), np.float32))

    def compute() -> FeatureResult:
        if cfg.backend == "ray":
            from pairing.ray_features import extract_features_ray

            return extract_features_ray(images, cfg)
        return extract_features(images, get_extractor(), cfg.batch_size, desc=desc)

    return cached_features(cfg.cache_dir, refs, images, extractor_id(cfg), compute)


def _ref_location(ref: str) -> tuple[str, str]:
    path, _, frag = ref.partition("#")
    return path, frag or "-"


def run_pair(cfg: PairingConfig, *, strict: bool) -> dict:
    """Build PairUG from ``cfg``: manifest.parquet, report.json, issues.jsonl,
    similarity_hist.png and config.json in ``cfg.output_dir``. Returns the report.
    ``pairing.mode=unpaired`` builds DSR's single-task manifest instead
    (``pairing.unpaired.run_unpaired``)."""
    if cfg.mode == "unpaired":  # DSR section 4.1: single-task items, no pairs
        from pairing.unpaired import run_unpaired

        return run_unpaired(cfg, strict=strict)
    t0 = time.perf_counter()
    quads = load_quadruples(cfg.quadruples) if cfg.quadruples else None  # fail fast
    und = read_understanding(cfg.und, strict=strict)
    gen = read_generation(cfg.gen, strict=strict)
    issues = [RowIssue("und", "read", **dataclasses.asdict(i)) for i in und.issues]
    issues += [RowIssue("gen", "read", **dataclasses.asdict(i)) for i in gen.issues]
    t_read = time.perf_counter() - t0

    extractor = []  # built once, on first use (not at all when both sets are cached)

    def get_extractor():
        if not extractor:
            extractor.append(build_extractor(cfg.features))
        return extractor[0]

    t1 = time.perf_counter()
    feats = {}
    for side, res in (("und", und), ("gen", gen)):
        fr = _features(cfg.features, res.items, f"{side} features", get_extractor)
        for i, reason in sorted(fr.failed.items()):
            file, row = _ref_location(res.items[i].image_ref)
            iss = RowIssue(side, "features", file, row, "image", reason)
            if strict:
                raise DataError(f"{iss} (strict mode)")
            issues.append(iss)
        ok = np.asarray([i for i in range(len(res.items)) if i not in fr.failed], np.int64)
        feats[side] = (fr, ok)
    t_feat = time.perf_counter() - t1

    (uf, u_ok), (gf, g_ok) = feats["und"], feats["gen"]
    n_items = len(u_ok) + len(g_ok)
    if not 1 <= cfg.num_clusters <= n_items:
        raise ConfigError(
            "pairing.num_clusters",
            cfg.num_clusters,
            f"must be in [1, {n_items}] (items with features: {len(u_ok)} und + {len(g_ok)} gen)",
            "lower it, e.g. to about items/20",
        )
    dim = max(uf.features.shape[1] if len(u_ok) else 0, gf.features.shape[1] if len(g_ok) else 0)
    u_x = uf.features[u_ok] if len(u_ok) else np.zeros((0, dim), np.float32)  # [Nu, D]
    g_x = gf.features[g_ok] if len(g_ok) else np.zeros((0, dim), np.float32)  # [Ng, D]
    ps = build_pairs(
        u_x,
        g_x,
        num_clusters=cfg.num_clusters,
        neighbors=cfg.neighbors,
        threshold=cfg.threshold,
        seed=cfg.seed,
        kmeans_backend=cfg.kmeans_backend,
        search_backend=cfg.search_backend,
        ivf_min_pairs=cfg.ivf_min_pairs,
    )
    und_ok, gen_ok = [und.items[i] for i in u_ok], [gen.items[j] for j in g_ok]
    pairs = pairs_from_pairset(ps, und_ok, gen_ok)
    # Aligned pairs take their missing half from `pairuni augment`'s quadruples.
    completed, augmented = pairs, None
    if quads is not None:
        completed, augmented = complete_pairs(pairs, quads, und_ok, gen_ok)

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(completed, str(out / "manifest.parquet"))
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    stats = {
        "read_s": t_read,
        "features_s": t_feat,
        **ps.stats,
        "und_features_from_cache": uf.from_cache,
        "gen_features_from_cache": gf.from_cache,
        "und_images_per_s": uf.images_per_s,
        "gen_images_per_s": gf.images_per_s,
        "wall_s": time.perf_counter() - t0,
    }
    settings = {
        "num_clusters": cfg.num_clusters,
        "neighbors": cfg.neighbors,
        "threshold": cfg.threshold,
        "extractor": cfg.features.extractor,
        "exclude_kinds": list(cfg.und.exclude_kinds),
        "kmeans_backend": cfg.kmeans_backend,
        "seed": cfg.seed,
        "manifest": str(out / "manifest.parquet"),
    }
    report = build_report(
        pairs,
        und_rows=und.rows,
        gen_rows=gen.rows,
        issues=issues,
        gen_paired_items=len({r.gen_index for r in ps.retrieved}),
        settings=settings,
        stats=stats,
        und_excluded=und.excluded,
    )  # accounting by origin: the pairs before completion
    if augmented is not None:
        report["pairs"]["needs_augmentation"] = dict(
            Counter(p.needs_augmentation for p in completed if p.needs_augmentation)
        )
        report["augmentation"] = {**augmented, "quadruples": list(cfg.quadruples)}
    write_report(report, pairs, issues, str(out))
    _print_summary(report, out)
    return report


def _print_summary(report: dict, out: Path) -> None:
    p, u, g = report["pairs"], report["und"], report["gen"]
    print(
        f"PairUG: {p['total']} pairs ({p['aligned']} aligned, {p['retrieved']} retrieved) "
        f"-> {out / 'manifest.parquet'}"
    )
    for name, side in (("und", u), ("gen", g)):
        excluded = (
            f"{side['excluded']} excluded {side['excluded_by_kind']} + "
            if side.get("excluded")
            else ""
        )
        print(
            f"  {name}: {side['rows']} rows = {excluded}{side['read_errors']} read errors + "
            f"{side['feature_errors']} feature errors + {side['aligned']} aligned + "
            f"{side['retrieved']} retrieved + {side['unpaired_no_match']} unpaired (no match)"
        )
    if report["issues_total"]:
        print(f"  {report['issues_total']} skipped rows listed in {out / 'issues.jsonl'}")
