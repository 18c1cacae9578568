"""Ablation on the toy world: Pair-GRPO vs GRPO without similarity weights vs random pairs.

    python -m bench.ablation [--seeds 0 1 2] [--config deploy/configs/quickstart.yaml] [k=v ...]

Per seed, one warm start (toy world, `pairuni pair`, SFT; ``deploy.quickstart.warm_start``)
is shared by the three variants, so they differ only in RL:

* ``pair_grpo``: the PairUG pairs, advantages scaled by w_p (1 aligned, sqrt(s_p) retrieved);
* ``grpo``: the same pairs, w_p = 1 (the paper's "w/o sim");
* ``random``: understanding and generation halves re-matched by a seeded permutation
  (``kind=retrieved``, w_p = 1: a random match has no similarity), trained with grpo.

Reported per variant, as gains over the SFT start (mean and sample std over seeds, and
each seed's value): every measure the quickstart reports (``deploy.quickstart.REPORTED``:
held-out understanding accuracy greedy and sampled, overall and per category; the toy
judge's strict success, each of its terms, its reward; distinct images per prompt), and
the mean over the run of ``grad/cos_und_gen`` (the cosine between the two tasks' gradients,
PairUni Fig. 1; logged every ``train.grad_cosine_every`` steps). The pair weights the run
trained with are summarised too (their spread decides how much pair_grpo can differ from
grpo). Written to ``<run.root>/ablation/results.json``. This measures the paper's claim on
this world; it does not assume it.

A variant may carry overrides after ``@`` for its RL run and its evaluations, so two settings
share one warm start: ``--variants pair_grpo
pair_grpo@model.diffusion.logprob_estimator=trajectory`` trains Pair-GRPO twice from the
same SFT model, once with each Show-o estimator. Such a variant's start is the SFT model
evaluated again under its own settings, so an override that changes evaluation (e.g.
``@model.cfg_weight=3``) does not count as a gain.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from deploy.config import RunConfig, load_config
from deploy.quickstart import (
    DEFAULT_CONFIG,
    REPORTED,
    _replace,
    evaluate_dir,
    image_grid,
    reinforce,
    warm_start,
)

VARIANTS = ("pair_grpo", "grpo", "random")


def random_pairs(manifest: str, out: str, seed: int) -> str:
    """The manifest's understanding halves re-matched to a permutation of its generation
    halves (weight 1, kind retrieved); halves missing on either side stay missing."""
    from pairing.manifest import read_manifest, write_manifest

    pairs = read_manifest(manifest)
    perm = np.random.default_rng(seed).permutation(len(pairs))
    out_pairs = []
    for i, p in enumerate(pairs):
        g = pairs[int(perm[i])]
        out_pairs.append(
            dataclasses.replace(
                p,
                kind="retrieved",
                similarity=0.0,
                weight=1.0,
                gen_image=g.gen_image,
                prompt=g.prompt,
                needs_augmentation=None if (p.question and g.prompt) else p.needs_augmentation,
                cluster=-1,
            )
        )
    write_manifest(out_pairs, out)
    return out


def flat(d: dict, prefix: str = "") -> dict[str, float]:
    """Nested measures as one level: ``{"gen_terms": {"shape": x}}`` -> ``{"gen_terms.shape": x}``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = float(v)
    return out


def measures(result: dict) -> dict[str, float]:
    """The reported measures of one ``deploy.quickstart.evaluate`` result, flattened."""
    return flat({k: result[k] for k in REPORTED})


def mean_metric(metrics_path: Path, key: str) -> float:
    """Mean of ``key`` over the rows of a run's metrics.jsonl that have it (NaN if none)."""
    from deploy.metrics import read_metrics

    vals = [r[key] for r in read_metrics(metrics_path) if r.get(key) is not None]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def weight_summary(manifest: str) -> dict[str, float]:
    """Spread of the Pair-GRPO weights w_p of a manifest's retrieved pairs."""
    from pairing.manifest import read_manifest

    w = np.array([p.weight for p in read_manifest(manifest) if p.kind == "retrieved"])
    if not len(w):
        return {"retrieved": 0}
    return {
        "retrieved": len(w),
        "min": float(w.min()),
        "mean": float(w.mean()),
        "max": float(w.max()),
    }


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """``<variant>[@key=value]...`` -> (variant, its RL overrides)."""
    variant, *overrides = spec.split("@")
    if variant not in VARIANTS:
        raise ValueError(f"variant {spec!r}: {variant!r} is not one of {VARIANTS}")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"variant {spec!r}: {bad[0]!r} is not a key=value override")
    return variant, overrides


def with_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``cfg`` with dotted ``key=value`` overrides applied (validated again)."""
    from models.config import apply_overrides, from_dict, to_dict, validate_all

    if not overrides:
        return cfg
    new = from_dict(RunConfig, apply_overrides(to_dict(cfg), overrides))
    validate_all(new)
    return new


def run_seed(base: RunConfig, seed: int, root: Path, variants=VARIANTS) -> dict:
    cfg = _replace(base, run={"seed": seed, "root": str(root), "name": f"seed{seed}"})
    times: dict[str, float] = {}
    ws = warm_start(cfg, times)
    start = measures(ws.before)
    out = {"start": start, "pair_weights": weight_summary(ws.manifest), "variants": {}}
    for spec in variants:
        t0 = time.perf_counter()
        variant, overrides = parse_variant(spec)
        algo = "pair_grpo" if variant == "pair_grpo" else "grpo"
        name = f"seed{seed}_{spec}".replace("@", "_").replace("=", "-")
        vcfg = _replace(cfg, run={"name": name}, learner={"algorithm": algo})
        vcfg = with_overrides(vcfg, overrides)
        manifest = ws.manifest
        if variant == "random":
            manifest = random_pairs(
                ws.manifest, str(root / f"seed{seed}_random_pairs.parquet"), seed
            )
        before = evaluate_dir(vcfg, ws, ws.sft_model) if overrides else ws.before
        vstart = measures(before)
        final = reinforce(vcfg, ws, manifest)
        res = evaluate_dir(vcfg, ws, final)
        end = measures(res)
        # the held-out images before | after, to be looked at, not only scored
        image_grid(before, res, ws.prompts, cfg.quickstart.eval_image_samples,
                   Path(vcfg.run.dir) / "samples_before_after.png")  # fmt: skip
        metrics = Path(vcfg.run.dir) / "metrics.jsonl"
        out["variants"][spec] = {
            "gain": {k: end[k] - vstart[k] for k in vstart},
            "start": vstart,
            "end": end,
            "overrides": overrides,
            "rl_steps": vcfg.train.steps,
            "grad_cos_und_gen": mean_metric(metrics, "grad/cos_und_gen"),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        gain = out["variants"][spec]["gain"]
        print(
            f"[ablation] seed {seed} {spec}: strict {gain['gen_strict_success']:+.3f}, "
            f"position {gain['gen_terms.position']:+.3f}, und sampled "
            f"{gain['und_accuracy_sampled']:+.3f}, cos(und, gen) "
            f"{out['variants'][spec]['grad_cos_und_gen']:+.3f}",
            flush=True,
        )
    return out


def _stats(vals: list[float]) -> dict:
    a = np.array(vals, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "per_seed": [round(float(v), 4) for v in a],
    }


def summarise(per_seed: dict[int, dict]) -> dict:
    """Per variant: each measure's gain and the gradient cosine, mean ± std over seeds."""
    table = {}
    for variant in next(iter(per_seed.values()))["variants"]:
        runs = [r["variants"][variant] for r in per_seed.values()]
        row = {k: _stats([r["gain"][k] for r in runs]) for k in runs[0]["gain"]}
        row["grad_cos_und_gen"] = _stats([r["grad_cos_und_gen"] for r in runs])
        table[variant] = row
    return table


COLUMNS = (
    ("gen_strict_success", "strict"),
    ("gen_terms.position", "position"),
    ("gen_terms.shape", "shape"),
    ("und_accuracy", "und greedy"),
    ("und_accuracy_sampled", "und sampled"),
    ("und_accuracy_sampled_by_category.position", "und s. position"),
    ("und_accuracy_sampled_by_category.count", "und s. count"),
    ("grad_cos_und_gen", "cos(und, gen)"),
)
"""The printed table's columns: (key in the summary, heading); every key is in results.json."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options and ``key=value`` overrides in any order: an override after ``--seeds 0 1``
    is taken out first (``nargs="+"`` would read it as a seed)."""
    parser = argparse.ArgumentParser(prog="bench.ablation", description=__doc__)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS),
        help=f"RL variants: one of {VARIANTS}, each optionally followed by @key=value "
        "overrides for its RL run only",
    )  # fmt: skip

    def is_override(a: str) -> bool:  # not a variant spec such as pair_grpo@train.steps=3
        return "=" in a and not a.startswith("-") and a.split("@")[0] not in VARIANTS

    overrides = [a for a in argv if is_override(a)]
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    for spec in args.variants:
        try:
            parse_variant(spec)
        except ValueError as e:
            parser.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    base = load_config(RunConfig, args.config, args.overrides)
    root = Path(base.run.root) / "ablation"
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per_seed: dict[int, dict] = {}
    for seed in args.seeds:  # results.json is rewritten after every seed: nothing is lost
        per_seed[seed] = run_seed(base, seed, root, args.variants)
        table = summarise(per_seed)
        result = {
            "table": table,
            "per_seed": per_seed,
            "seeds_done": list(per_seed),
            "overrides": args.overrides,
            "rl_steps": base.train.steps,
            "sft_steps": base.sft.steps,
            "wall_s": round(time.perf_counter() - t0, 1),
            "load_average": list(os.getloadavg()),
        }
        (root / "results.json").write_text(json.dumps(result, indent=2))
    print("\ngains over the SFT start, mean ± std over seeds " + str(args.seeds))
    print(f"{'variant':<10}" + "".join(f"{h:>17}" for _, h in COLUMNS))
    for v, row in table.items():
        print(
            f"{v:<10}"
            + "".join(f"{row[k]['mean']:>+10.3f} ±{row[k]['std']:.3f}" for k, _ in COLUMNS)
        )
    for s, r in per_seed.items():
        print(f"seed {s}: pair weights of retrieved pairs {r['pair_weights']}")
    print(f"{result['wall_s']} s; results: {root / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
