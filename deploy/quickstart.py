"""`pairuni quickstart` (`make quickstart`): the whole system on the toy world, with proof.

    pairuni quickstart [--config deploy/configs/quickstart.yaml] [key.sub=value ...]

1. toy world (``pairing/toyworld.py``): U parquet, G tar shards, held-out files;
2. `pairuni pair` on it (random-init ResNet-50 features; there are no weights here), then
   the toy world's augmentation completes the aligned pairs (``complete_aligned``);
3. a tiny model of family ``model.arch`` (Janus, or Show-o with ``model.arch=showo``) of
   ``quickstart.tiny_hidden`` with closed-form toy-world tokenizers (the family's ``toy``);
4. SFT warm start (``deploy/sft.py``) on the pairs;
5. Pair-GRPO on a local Ray cluster (``deploy/train.py``: text workers, image worker,
   accuracy + toy_judge Serve endpoints, DeepSpeed learner actor);
6. held-out evaluation before (the SFT model) and after RL: understanding accuracy with
   greedy answers (``UnifiedModel.sample_text(greedy=True)``) and with answers sampled as
   RL samples them (``model.text_temperature``, ``quickstart.eval_answer_samples`` per
   question), and the toy judge's mean reward on images sampled (CFG, T = 1, fixed seed)
   for held-out prompts.

The run directory (``run.root/run.name``, default ``runs/quickstart``) holds
``summary.json``, ``metrics.jsonl`` + ``tensorboard/``, ``curves.png`` and
``quickstart_curves.png`` (rewards per step, held-out start/end), ``samples_before_after.png``,
``checkpoints/`` and ``final_model/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from deploy.config import RunConfig, load_config
from evaluation.scores import by_category

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "quickstart.yaml"


# ----------------------------------------------------------------------------- held-out eval


def load_heldout(world: dict) -> tuple[list, list]:
    """Held-out understanding (image, prompt, answer, category) and generation prompts, read
    with the real readers from the toy world's eval files (``evaluation.heldout``)."""
    from evaluation.heldout import load_heldout as read

    h = read([world["und_eval"]], [world["gen_eval"]])
    return h.und, h.prompts


def evaluate(model, und: list, prompts: list[str], cfg: RunConfig, seed: int) -> dict:
    """``evaluation.heldout.evaluate`` (the one held-out evaluation, also train.eval_every's)
    with the quickstart's counts (``quickstart.eval_*_samples``), the run's sampling settings
    and the toy judge: understanding accuracy greedy and sampled, overall and per category;
    the toy judge's reward, its terms, strict success and distinct images per prompt."""
    from evaluation.heldout import HeldOut, Settings
    from evaluation.heldout import evaluate as evaluate_heldout
    from evaluation.scores import build_scorers

    settings = Settings(
        answer_samples=cfg.quickstart.eval_answer_samples,
        image_samples=cfg.quickstart.eval_image_samples,
        text_temperature=cfg.model.text_temperature,
        cfg_weight=cfg.model.cfg_weight,
    )
    scorers = build_scorers(["toy_judge"], cfg.rewards)
    return evaluate_heldout(model, HeldOut(und, prompts), settings, seed, scorers)


_by_category = by_category  # the per-category mean, evaluation.scores'


# ----------------------------------------------------------------------------- steps


def build_pairs(cfg: RunConfig, world: dict, run_dir: Path) -> tuple[str, dict]:
    """`pairuni pair` on the toy world, then the toy augmentation of aligned pairs."""
    from pairing.cli import run_pair
    from pairing.config import FeatureConfig, GenerationSource, PairingConfig, UnderstandingSource
    from pairing.toyworld import complete_aligned

    q = cfg.quickstart
    pcfg = PairingConfig(
        und=UnderstandingSource(paths=(world["und_train"],)),
        gen=GenerationSource(format="webdataset", paths=(world["gen_train"],)),
        features=FeatureConfig(
            extractor=q.pair_features,
            allow_random_weights=True,  # no weights here; the toy images are flat colours
            # flat-colour cells: 32 px keep them for resnet50 at a quarter of the cost; pixels
            # keeps 4 x 4 px per cell
            image_size=32 if q.pair_features == "resnet50" else 16,
            batch_size=64,
            cache_dir="",
        ),
        num_clusters=q.num_clusters,
        threshold=q.threshold,
        seed=cfg.run.seed,
        output_dir=str(run_dir / "pairing"),
    )
    pcfg.validate()
    report = run_pair(pcfg, strict=True)
    out = str(run_dir / "pairing" / "manifest_completed.parquet")
    filled = complete_aligned(
        report["settings"]["manifest"], Path(world["scenes"]).parent, out, cfg.run.seed
    )
    return out, {
        "pairs": report["pairs"],
        "augmented": filled,
        "agreement": pair_agreement(out, world),
    }


def pair_agreement(manifest: str, world: dict) -> dict:
    """Share of retrieved pairs whose two images share colour / background / shape: how
    much the (random-feature) retrieval found look-alikes."""
    from pairing.manifest import read_manifest
    from pairing.toyworld import _ref_key, load_scenes

    scenes = load_scenes(Path(world["scenes"]).parent)
    same = {"colour": [], "background": [], "shape": []}
    for p in read_manifest(manifest):
        if p.kind != "retrieved":
            continue
        a, b = scenes[_ref_key(p.und_image)], scenes[_ref_key(p.gen_image)]
        for k in same:
            same[k].append(getattr(a, k) == getattr(b, k))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in same.items()}


def build_base_model(cfg: RunConfig, path: Path) -> Path:
    """The tiny model of family ``model.arch`` in the configured shape with closed-form image
    tokenizers for the toy world's flat-colour cells in place of pretrained ones (the
    family's ``toy`` builder: Janus gets the palette VQ and vision tower, Show-o the cell
    palette tokenizer), saved as a checkpoint."""
    from models.registry import family

    fam, q = family(cfg.model.arch), cfg.quickstart
    if fam.toy is None:
        raise ValueError(f"model.arch={cfg.model.arch!r} has no toy-world model for the quickstart")
    fam.toy(cfg.model.seed, hidden=q.tiny_hidden, layers=q.tiny_layers).save(path)
    return path


def image_grid(
    before: dict, after: dict, prompts: list[str], n: int, out: Path, rows: int = 8
) -> Path:
    """One row per held-out prompt: its n images before RL | its n images after RL. Each image
    is framed green when it is strictly right (the toy judge's four terms all 1), red when not,
    and each half of a row says how many of its n are right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(rows, len(prompts))
    fig, axes = plt.subplots(rows, 2 * n, figsize=(1.3 * 2 * n, 1.45 * rows), squeeze=False)
    for r in range(rows):
        for k, res in enumerate((before, after)):
            ok = res["gen_strict_by_image"][r * n : (r + 1) * n]
            for j in range(n):
                ax = axes[r, k * n + j]
                ax.imshow(res["images"][r * n + j])
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_color("tab:green" if ok[j] else "tab:red")
                    spine.set_linewidth(2.5)
            axes[r, k * n].set_title(f"{sum(ok)}/{n} right", fontsize=6, loc="left", pad=2)
        axes[r, 0].set_ylabel(
            prompts[r].replace(" on a ", "\non a "), fontsize=5, rotation=0, ha="right"
        )
    fig.suptitle(
        "held-out prompts: before RL (SFT, left) | after RL (right); green frame = the asked "
        "shape, colour, quadrant and background exactly",
        fontsize=7,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_quickstart(metrics_path: Path, summary: dict, out: Path) -> Path:
    """Per RL step on the training rollouts: understanding accuracy; each toy-judge term and
    the strict success rate; distinct samples per request (a collapse shows as a fall to 1).
    Held-out start/end values are the dashed black lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deploy.metrics import read_metrics
    from rewards.toy import TERMS

    rows = read_metrics(metrics_path)
    last = rows[-1]["step"] if rows else 1

    def curve(ax, key: str, label: str, smooth: bool = True, **kw) -> None:
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if not pts:
            return
        x, y = zip(*pts)
        k = max(1, len(y) // 12) if smooth else 1
        ax.plot(x[k - 1 :], np.convolve(y, np.ones(k) / k, mode="valid"), label=label, **kw)

    def heldout(ax, key: str) -> None:
        ax.plot(
            [0, last],
            [summary[f"{key}_start"], summary[f"{key}_end"]],
            "o--",
            color="k",
            label="held-out",
        )

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    ax = axes[0]
    curve(ax, "reward/und_mean", "training accuracy")
    heldout(ax, "und_accuracy_sampled")
    ax.set_title("understanding accuracy (sampled)", fontsize=9)
    ax = axes[1]
    for term in TERMS:
        curve(ax, f"reward_detail/toy_judge/{term}_mean", term, lw=1)
    curve(ax, "reward_detail/toy_judge/strict_mean", "strict success", lw=2.5, color="k")
    heldout(ax, "gen_strict_success")
    ax.set_title("generation: toy-judge terms and strict success", fontsize=9)
    ax = axes[2]
    for task in ("und", "gen"):
        curve(ax, f"rollout/{task}_distinct_per_request", task)
    ax.set_title("distinct samples per request (training)", fontsize=9)
    for i, ax in enumerate(axes):
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        if i < 2:
            ax.set_ylim(0, 1.02)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class WarmStart:
    """What the RL stage starts from: the pairs, the SFT model, held-out items and scores."""

    world: dict
    manifest: str
    base_model: Path
    sft_model: Path
    und: list
    prompts: list[str]
    untrained: dict
    before: dict
    pairing: dict


def _lap(times: dict, name: str, since: float) -> float:
    now = time.perf_counter()
    times[name] = round(now - since, 1)
    print(f"[quickstart] {name}: {times[name]} s", flush=True)
    return now


def warm_start(cfg: RunConfig, times: dict) -> WarmStart:
    """Toy world -> `pairuni pair` + augmentation -> base model -> SFT -> held-out eval."""
    from deploy.sft import run_sft
    from pairing.toyworld import WorldSize, write_world

    run_dir, q = Path(cfg.run.dir), cfg.quickstart
    run_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    size = WorldSize(und_train=q.und_train, gen_train=q.gen_train)
    world = write_world(run_dir / "world", cfg.run.seed, size)
    t = _lap(times, "toy_world", t)
    manifest, pairing_info = build_pairs(cfg, world, run_dir)
    t = _lap(times, "pairing", t)
    base = build_base_model(cfg, run_dir / "base_model")
    sft_cfg = _replace(cfg, model={"path": str(base)}, sft={"manifest": manifest})
    sft_model = run_sft(sft_cfg, run_dir / "sft" / "model")
    t = _lap(times, "sft", t)
    und, prompts = load_heldout(world)
    ws = WarmStart(world, manifest, base, sft_model, und, prompts, {}, {}, pairing_info)
    ws.untrained = evaluate_dir(cfg, ws, base)
    ws.before = evaluate_dir(cfg, ws, sft_model)
    _lap(times, "eval_before", t)
    return ws


def evaluate_dir(cfg: RunConfig, ws: WarmStart, path) -> dict:
    """``evaluate`` on the model directory ``path`` with the run's held-out settings."""
    from models.registry import build_policy

    model = build_policy(dataclasses.replace(cfg.model, path=str(path)))  # with model.diffusion
    return evaluate(model, ws.und, ws.prompts, cfg, cfg.run.seed + 1)


def init_ray(temp_dir: str | None = None) -> None:
    """A local Ray cluster (4 logical CPUs on a laptop) unless one is up already."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            logging_level="WARNING",
            _temp_dir=temp_dir or tempfile.mkdtemp(prefix="ray_qs_", dir="/tmp"),
            runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1"}},
        )


def reinforce(cfg: RunConfig, ws: WarmStart, manifest: str | None = None) -> Path:
    """Pair-GRPO (``cfg.learner.algorithm``) from the SFT model on a local Ray cluster;
    returns the final policy as a model directory in the run directory."""
    from deploy.train import Trainer

    init_ray()
    q = cfg.quickstart
    rl_cfg = _replace(
        cfg,
        model={"path": str(ws.sft_model)},
        train={"manifest": manifest or ws.manifest},
        # train.eval_every: the same held-out evaluation as before / after, during RL
        eval={
            "und_heldout": (ws.world["und_eval"],),
            "gen_heldout": (ws.world["gen_eval"],),
            "und_items": 0,
            "gen_prompts": 0,
            "answer_samples": q.eval_answer_samples,
            "image_samples": q.eval_image_samples,
            "gen_scorers": ("toy_judge",),
        },
    )
    trainer = Trainer(rl_cfg)
    try:
        trainer.fit()
        return Path(trainer.learners.export(str(Path(cfg.run.dir) / "final_model")))
    finally:
        trainer.close()


def run_quickstart(cfg: RunConfig) -> dict:
    """Every step of the module docstring; returns (and writes) ``summary.json``."""
    t0 = time.perf_counter()
    times: dict[str, float] = {}
    run_dir, q = Path(cfg.run.dir), cfg.quickstart
    ws = warm_start(cfg, times)
    t = time.perf_counter()
    final = reinforce(cfg, ws)
    t = _lap(times, "rl", t)
    after = evaluate_dir(cfg, ws, final)
    _lap(times, "eval_after", t)
    before = ws.before
    summary = {
        **start_end(before, after),
        "und_accuracy_untrained": ws.untrained["und_accuracy"],
        "gen_reward_untrained": ws.untrained["gen_reward"],
        "gen_strict_success_untrained": ws.untrained["gen_strict_success"],
        "heldout": {
            "und_items": len(ws.und),
            "gen_prompts": len(ws.prompts),
            "images_per_prompt": q.eval_image_samples,
            "answers_per_question": q.eval_answer_samples,
        },
        "pairing": ws.pairing,
        "rl_steps": cfg.train.steps,
        "sft_steps": cfg.sft.steps,
        "algorithm": cfg.learner.algorithm,
        "times_s": times,
        "wall_s": round(time.perf_counter() - t0, 1),
        "load_average": list(os.getloadavg()),
    }
    n = q.eval_image_samples
    image_grid(before, after, ws.prompts, n, run_dir / "samples_before_after.png")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_quickstart(run_dir / "metrics.jsonl", summary, run_dir / "quickstart_curves.png")
    return summary


REPORTED = (
    "und_accuracy",
    "und_accuracy_sampled",
    "und_answered_sampled",
    "und_accuracy_by_category",
    "und_accuracy_sampled_by_category",
    "gen_reward",
    "gen_terms",
    "gen_strict_success",
    "gen_strict_by_shape",
    "gen_distinct_per_prompt",
)
"""What ``evaluate`` measures that the summary (and ``bench.ablation``) report before and
after RL, as ``<key>_start`` (the SFT model) and ``<key>_end`` (the RL policy)."""


def start_end(before: dict, after: dict) -> dict:
    """``<key>_start`` / ``<key>_end`` for every key of ``REPORTED``."""
    out = {}
    for key in REPORTED:
        out[f"{key}_start"], out[f"{key}_end"] = before[key], after[key]
    return out


def _replace(cfg: RunConfig, **sections: dict) -> RunConfig:
    """``cfg`` with some fields of some sections replaced (validated again)."""
    from deploy.config import validate_all

    new = dataclasses.replace(
        cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()}
    )
    validate_all(new)
    return new


def report_lines(s: dict) -> list[str]:
    """The held-out results, SFT start -> after RL, one measure per line."""

    def row(label: str, start: float, end: float) -> str:
        return f"  {label:<34}{start:6.3f} -> {end:6.3f}  ({end - start:+.3f})"

    lines = ["held-out generation (toy judge), SFT -> after RL:"]
    lines.append(row("strict success (all four terms 1)", *_se(s, "gen_strict_success")))
    for shape, start in s["gen_strict_by_shape_start"].items():
        end = s["gen_strict_by_shape_end"][shape]
        lines.append(row(f"strict success, {shape} prompts", start, end))
    for term in s["gen_terms_start"]:
        lines.append(row(f"term: {term}", s["gen_terms_start"][term], s["gen_terms_end"][term]))
    lines.append(row("reward (1/2 product + 1/2 strict)", *_se(s, "gen_reward")))
    lines.append(row("distinct images per prompt", *_se(s, "gen_distinct_per_prompt")))
    lines.append("held-out understanding accuracy, SFT -> after RL:")
    lines.append(row("greedy", *_se(s, "und_accuracy")))
    lines.append(row("sampled as RL samples", *_se(s, "und_accuracy_sampled")))
    for how, key in (
        ("greedy", "und_accuracy_by_category"),
        ("sampled", "und_accuracy_sampled_by_category"),
    ):
        for cat, start in s[f"{key}_start"].items():
            lines.append(row(f"{how}, {cat} questions", start, s[f"{key}_end"][cat]))
    return lines


def _se(s: dict, key: str) -> tuple[float, float]:
    return s[f"{key}_start"], s[f"{key}_end"]


def _print_where(summary: dict, run_dir: Path) -> None:
    s = summary
    print("\n" + "\n".join(report_lines(s)))
    print(
        f"wall time {s['wall_s']} s; load average {s['load_average'][0]:.1f}\n\nLook at:\n"
        f"  {run_dir / 'summary.json'}\n  {run_dir / 'quickstart_curves.png'}\n"
        f"  {run_dir / 'samples_before_after.png'}\n  {run_dir / 'curves.png'}\n"
        f"  {run_dir / 'metrics.jsonl'}  (tensorboard --logdir {run_dir / 'tensorboard'})\n"
        f"  {run_dir / 'checkpoints'}  {run_dir / 'final_model'}"
    )


def add_quickstart_command(subparsers) -> None:
    """Register `quickstart` on the `pairuni` sub-parsers."""
    p = subparsers.add_parser(
        "quickstart", help="toy world -> pair -> SFT -> Pair-GRPO, with proof"
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML run config")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=10")

    def run(args) -> None:
        cfg = load_config(RunConfig, args.config, args.overrides)
        _print_where(run_quickstart(cfg), Path(cfg.run.dir))

    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="deploy.quickstart", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_quickstart_command(sub)
    args = parser.parse_args(["quickstart", *(argv or [])])
    args.func(args)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
