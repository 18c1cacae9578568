"""`pairuni quickstart` (`make quickstart`): the whole system on the toy world, with proof.

    pairuni quickstart [--config deploy/configs/quickstart.yaml] [key.sub=value ...]

1. toy world (``pairing/toyworld.py``): U parquet, G tar shards, held-out files;
2. `pairuni pair` on it (random-init ResNet-50 features; there are no weights here), then
   the toy world's augmentation completes the aligned pairs (``complete_aligned``);
3. a tiny Janus of ``quickstart.tiny_hidden`` with the palette VQ (``models/palette_vq.py``);
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

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "quickstart.yaml"


# ----------------------------------------------------------------------------- held-out eval


def load_heldout(world: dict) -> tuple[list, list]:
    """Held-out understanding (image, prompt, answer, category) and generation prompts, read
    with the real readers from the toy world's eval files."""
    from deploy.dataflow import decode_image_bytes, question_with_choices
    from pairing.config import GenerationSource, UnderstandingSource
    from pairing.datasets import read_generation, read_understanding

    u = read_understanding(UnderstandingSource(paths=(world["und_eval"],)), strict=True)
    g = read_generation(GenerationSource(paths=(world["gen_eval"],)), strict=True)
    und = [
        (
            decode_image_bytes(it.image, it.image_ref),
            question_with_choices(it.question, it.choices),  # as deploy.dataflow.build_requests
            it.answer,
            it.category,
        )
        for it in u.items
    ]
    return und, [it.prompt for it in g.items]


def evaluate(model, und: list, prompts: list[str], cfg: RunConfig, seed: int) -> dict:
    """Held-out und accuracy, greedy and sampled, and the mean toy-judge reward of sampled
    images (``cfg.quickstart.eval_*_samples`` per item, ``cfg.model`` sampling settings)."""
    import torch

    from rewards.accuracy import accuracy_reward, extract_choice
    from rewards.toy import toy_judge_reward

    images_in, questions = [x[0] for x in und], [x[1] for x in und]
    n_img, n_ans = cfg.quickstart.eval_image_samples, cfg.quickstart.eval_answer_samples
    with torch.no_grad():
        t = model.sample_text(images_in, questions, n=1, max_new_tokens=4, greedy=True)
        ts = model.sample_text(
            images_in,
            questions,
            n=n_ans,
            max_new_tokens=4,
            temperature=cfg.model.text_temperature,
            seed=seed,
        )
        s = model.sample_image_tokens(prompts, n=n_img, cfg_weight=cfg.model.cfg_weight, seed=seed)
        images = model.decode_images(s.tokens)  # [P * n, H, W, 3]
    correct = [accuracy_reward(txt, x[2], kind="choice") for txt, x in zip(t.texts, und)]
    sampled = [
        accuracy_reward(txt, und[i // n_ans][2], kind="choice") for i, txt in enumerate(ts.texts)
    ]  # [Q * n_ans]
    per_cat: dict[str, list[float]] = {}
    for c, x in zip(correct, und):
        per_cat.setdefault(x[3], []).append(c)
    rewards = np.array(
        [toy_judge_reward(img, prompts[i // n_img]) for i, img in enumerate(images)]
    )  # [P * n]
    return {
        "und_accuracy": float(np.mean(correct)),
        "und_accuracy_sampled": float(np.mean(sampled)),
        "und_answered_sampled": float(np.mean([extract_choice(x) is not None for x in ts.texts])),
        "und_accuracy_by_category": {k: float(np.mean(v)) for k, v in sorted(per_cat.items())},
        "gen_reward": float(rewards.mean()),
        "gen_reward_prompt_std": float(rewards.reshape(len(prompts), n_img).mean(1).std()),
        "images": images,
    }


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
            extractor="resnet50",
            allow_random_weights=True,  # no weights here; the toy images are flat colours
            image_size=32,  # flat-colour cells: 32 px keep them, at a quarter of the cost
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
    """The tiny Janus of the configured shape with the palette VQ, saved as a checkpoint."""
    from models.palette_vq import set_palette_vq
    from models.tiny import TinyShape
    from models.unified import tiny_unified_model

    q = cfg.quickstart
    shape = TinyShape(
        hidden=q.tiny_hidden,
        layers=q.tiny_layers,
        heads=q.tiny_hidden // 64,
        intermediate=2 * q.tiny_hidden,
    )
    m = tiny_unified_model(cfg.model.seed, shape)
    set_palette_vq(m.hf.model.vqmodel)
    m.save(path)
    return path


def image_grid(
    before: np.ndarray, after: np.ndarray, prompts: list[str], n: int, out: Path, rows: int = 8
) -> Path:
    """One row per held-out prompt: its n images before RL | its n images after RL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(rows, len(prompts))
    fig, axes = plt.subplots(rows, 2 * n, figsize=(1.3 * 2 * n, 1.45 * rows), squeeze=False)
    for r in range(rows):
        for j in range(n):
            for k, imgs in enumerate((before, after)):
                ax = axes[r, k * n + j]
                ax.imshow(imgs[r * n + j])
                ax.set_xticks([])
                ax.set_yticks([])
        axes[r, 0].set_ylabel(
            prompts[r].replace(" on a ", "\non a "), fontsize=5, rotation=0, ha="right"
        )
    axes[0, 0].set_title("before RL (SFT)", fontsize=8, loc="left")
    axes[0, n].set_title("after Pair-GRPO", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_quickstart(metrics_path: Path, summary: dict, out: Path) -> Path:
    """Training rewards per step (accuracy, toy judge) with the held-out start/end values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deploy.metrics import read_metrics

    rows = read_metrics(metrics_path)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key, start, end, title in (
        (
            axes[0],
            "reward/und_mean",
            "und_accuracy_start",
            "und_accuracy_end",
            "understanding accuracy",
        ),
        (axes[1], "reward/gen_mean", "gen_reward_start", "gen_reward_end", "toy judge reward"),
    ):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, ".", alpha=0.4, label="training rollouts")
            k = max(1, len(y) // 8)
            ax.plot(x[k - 1 :], np.convolve(y, np.ones(k) / k, mode="valid"), label=f"mean of {k}")
        last = rows[-1]["step"] if rows else 1
        ax.plot([0, last], [summary[start], summary[end]], "o--", color="k", label="held-out")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("RL step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
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
    from models.unified import load_unified_model

    return evaluate(load_unified_model(path), ws.und, ws.prompts, cfg, cfg.run.seed + 1)


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
    rl_cfg = _replace(
        cfg, model={"path": str(ws.sft_model)}, train={"manifest": manifest or ws.manifest}
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
        "und_accuracy_start": before["und_accuracy"],
        "und_accuracy_end": after["und_accuracy"],
        "gen_reward_start": before["gen_reward"],
        "gen_reward_end": after["gen_reward"],
        "und_accuracy_sampled_start": before["und_accuracy_sampled"],
        "und_accuracy_sampled_end": after["und_accuracy_sampled"],
        "und_answered_sampled_start": before["und_answered_sampled"],
        "und_answered_sampled_end": after["und_answered_sampled"],
        "und_accuracy_untrained": ws.untrained["und_accuracy"],
        "gen_reward_untrained": ws.untrained["gen_reward"],
        "und_accuracy_by_category_start": before["und_accuracy_by_category"],
        "und_accuracy_by_category_end": after["und_accuracy_by_category"],
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
    image_grid(
        before["images"], after["images"], ws.prompts, n, run_dir / "samples_before_after.png"
    )
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_quickstart(run_dir / "metrics.jsonl", summary, run_dir / "quickstart_curves.png")
    return summary


def _replace(cfg: RunConfig, **sections: dict) -> RunConfig:
    """``cfg`` with some fields of some sections replaced (validated again)."""
    from deploy.config import validate_all

    new = dataclasses.replace(
        cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()}
    )
    validate_all(new)
    return new


def _print_where(summary: dict, run_dir: Path) -> None:
    s = summary
    print(
        f"\nheld-out understanding accuracy: {s['und_accuracy_start']:.3f} (SFT) -> "
        f"{s['und_accuracy_end']:.3f} (after RL); untrained {s['und_accuracy_untrained']:.3f}\n"
        f"  sampled as RL samples:          {s['und_accuracy_sampled_start']:.3f} (SFT) -> "
        f"{s['und_accuracy_sampled_end']:.3f} (after RL)\n"
        f"held-out toy-judge reward:       {s['gen_reward_start']:.3f} (SFT) -> "
        f"{s['gen_reward_end']:.3f} (after RL); untrained {s['gen_reward_untrained']:.3f}\n"
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
