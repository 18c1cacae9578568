"""Ablation on the toy world: Pair-GRPO vs GRPO without similarity weights vs random pairs.

    python -m bench.ablation [--seeds 0 1 2] [--config deploy/configs/quickstart.yaml] [k=v ...]

Per seed, one warm start (toy world, `pairuni pair`, SFT; ``deploy.quickstart.warm_start``)
is shared by the three variants, so they differ only in RL:

* ``pair_grpo``: the PairUG pairs, advantages scaled by w_p (1 aligned, sqrt(s_p) retrieved);
* ``grpo``: the same pairs, w_p = 1 (the paper's "w/o sim");
* ``random``: understanding and generation halves re-matched by a seeded permutation
  (``kind=retrieved``, w_p = 1: a random match has no similarity), trained with grpo.

Reported per variant: held-out understanding accuracy (greedy and sampled) and toy-judge
reward gains over the SFT start (mean and sample std over seeds, and each seed's value), written to
``<run.root>/ablation/results.json``. This measures the paper's claim on this world; it
does not assume it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from deploy.config import RunConfig, load_config
from deploy.quickstart import DEFAULT_CONFIG, _replace, evaluate_dir, reinforce, warm_start

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


def run_seed(base: RunConfig, seed: int, root: Path) -> dict:
    cfg = _replace(base, run={"seed": seed, "root": str(root), "name": f"seed{seed}"})
    times: dict[str, float] = {}
    ws = warm_start(cfg, times)
    start = {
        "und": ws.before["und_accuracy"],
        "und_sampled": ws.before["und_accuracy_sampled"],
        "gen": ws.before["gen_reward"],
    }
    out = {"start": start, "variants": {}}
    for variant in VARIANTS:
        t0 = time.perf_counter()
        algo = "pair_grpo" if variant == "pair_grpo" else "grpo"
        vcfg = _replace(cfg, run={"name": f"seed{seed}_{variant}"}, learner={"algorithm": algo})
        manifest = ws.manifest
        if variant == "random":
            manifest = random_pairs(
                ws.manifest, str(root / f"seed{seed}_random_pairs.parquet"), seed
            )
        final = reinforce(vcfg, ws, manifest)
        end = evaluate_dir(vcfg, ws, final)
        out["variants"][variant] = {
            "und_gain": end["und_accuracy"] - start["und"],
            "und_sampled_gain": end["und_accuracy_sampled"] - start["und_sampled"],
            "gen_gain": end["gen_reward"] - start["gen"],
            "und_end": end["und_accuracy"],
            "gen_end": end["gen_reward"],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"[ablation] seed {seed} {variant}: {out['variants'][variant]}", flush=True)
    return out


def summarise(per_seed: dict[int, dict]) -> dict:
    table = {}
    for variant in VARIANTS:
        row = {}
        for key in ("und_gain", "und_sampled_gain", "gen_gain"):
            vals = np.array([r["variants"][variant][key] for r in per_seed.values()])
            row[key] = {
                "mean": float(vals.mean()),
                "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                "per_seed": [round(float(v), 4) for v in vals],
            }
        table[variant] = row
    return table


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options and ``key=value`` overrides in any order: an override after ``--seeds 0 1``
    is taken out first (``nargs="+"`` would read it as a seed)."""
    parser = argparse.ArgumentParser(prog="bench.ablation", description=__doc__)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    base = load_config(RunConfig, args.config, args.overrides)
    root = Path(base.run.root) / "ablation"
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per_seed = {s: run_seed(base, s, root) for s in args.seeds}
    table = summarise(per_seed)
    result = {
        "table": table,
        "per_seed": per_seed,
        "rl_steps": base.train.steps,
        "sft_steps": base.sft.steps,
        "wall_s": round(time.perf_counter() - t0, 1),
        "load_average": list(os.getloadavg()),
    }
    (root / "results.json").write_text(json.dumps(result, indent=2))
    heads = ("und gain, greedy", "und gain, sampled", "gen gain")
    print(f"\n{'variant':<10}" + "".join(f"{h + ' (mean ± std)':>32}" for h in heads))
    for v, row in table.items():
        cells = [row[k] for k in ("und_gain", "und_sampled_gain", "gen_gain")]
        print(f"{v:<10}" + "".join(f"{c['mean']:>+24.3f} ± {c['std']:.3f}" for c in cells))
    print(f"seeds {args.seeds}; {result['wall_s']} s; results: {root / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
