"""`pairuni sft`: supervised fine-tuning on PairUG, both tasks, with the RL learner's engine.

    pairuni sft --config deploy/configs/quickstart.yaml sft.manifest=PATH [key.sub=value ...]

Each step draws ``sft.pairs_per_step`` pairs (seeded shuffle, epochs as needed); every pair
gives an understanding example (its image + question -> the answer's tokens and EOS) and a
generation example (its prompt -> the VQ codes of its image, ``UnifiedModel.encode_images``).
``sft.und_per_step`` / ``sft.gen_per_step`` draw the two halves in different numbers when
the tasks should get different amounts of supervision.
The loss is ``learner.losses.nll_loss`` (the "nll" entry of ``POLICY_LOSSES``) with the
run's ``learner.loss_agg``; the update is one step of the same DeepSpeed engine the RL
learner uses (``learner.learner.Learner``: optimiser registry, gradient clipping, ZeRO, bf16
on GPU), at ``sft.lr``. Generation targets are scored by the family's supervised image
objective (``image_supervised_logprobs``): Janus's exact conditional log-probs (no CFG:
supervised learning fits p(image | prompt); CFG is a sampling-time mix), Show-o's
masked-token cross-entropy on randomly masked canvases (``sft/nll_gen`` then averages the
masked codes only). Its randomness comes from a generator seeded by (``run.seed``, step).

The run directory gets ``sft/metrics.jsonl`` (+ TensorBoard), ``sft/curves.png`` and the
fine-tuned model as a Hugging Face directory (``sft/model``; `pairuni train` takes it as
``model.path``). This is the warm start of the quickstart and, on real data, the SFT stage
the PairUni paper runs on PairUG.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from deploy.config import RunConfig, load_config, write_resolved
from models.tasks import TASKS, Task


def _answer_ids(tokenizer, answer: str) -> list[int]:
    return [*tokenizer(answer, add_special_tokens=False).input_ids, tokenizer.eos_token_id]


class SftData:
    """The manifest's usable halves, with images decoded once and VQ codes cached."""

    def __init__(self, manifest: str, model):
        from deploy.dataflow import decode_image_bytes, question_with_choices
        from pairing.datasets import load_image_ref
        from pairing.manifest import read_manifest

        self.und, self.gen = [], []
        gen_images = []
        for p in read_manifest(manifest):
            if p.question and p.answer is not None and p.und_image:
                img = decode_image_bytes(load_image_ref(p.und_image), f"pair {p.pair_id} und_image")
                prompt = question_with_choices(p.question, p.choices)  # as RL prompts it
                self.und.append((img, prompt, _answer_ids(model.tokenizer, p.answer)))
            if p.prompt and p.gen_image:
                gen_images.append(
                    decode_image_bytes(load_image_ref(p.gen_image), f"pair {p.pair_id} gen_image")
                )
                self.gen.append(p.prompt)
        if not self.und and not self.gen:
            raise ValueError(f"{manifest}: no pair has an understanding or a generation half")
        self.codes = (
            torch.cat(
                [model.encode_images(gen_images[i : i + 64]) for i in range(0, len(gen_images), 64)]
            )
            if gen_images
            else None
        )  # [N_gen, K]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of SFT step ``step`` of a run seeded ``seed``: a function of both
    alone, so a rerun (or a resumed run) draws the same masks."""
    (state,) = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state) >> 1)


def sft_step(
    learner,
    data: SftData,
    und_idx,
    gen_idx,
    agg: str,
    agg_constant: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One optimiser step of the NLL on the chosen examples (both tasks in one loss);
    ``generator`` feeds the family's supervised image objective (default: seeded 0)."""
    from learner.losses import nll_loss

    model, engine = learner.model, learner.engine
    task_ids, metrics = [], {}
    model.train()
    values, masks = [], []
    if len(und_idx):
        u = [data.und[i] for i in und_idx]
        lp = model.text_logprobs([x[0] for x in u], [x[1] for x in u], [x[2] for x in u])
        values.append(lp.values)
        masks.append(lp.mask)
        task_ids += [Task.UND.id] * len(u)
    if len(gen_idx):
        prompts = [data.gen[i] for i in gen_idx]
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        lp, mask = model.image_supervised_logprobs(prompts, data.codes[gen_idx], gen)  # [B, K]
        values.append(lp)
        masks.append(mask.to(lp.device))
        task_ids += [Task.GEN.id] * len(prompts)
    T = max(v.shape[1] for v in values)
    lp_all = torch.cat([torch.nn.functional.pad(v, (0, T - v.shape[1])) for v in values])  # [N, T]
    mask_all = torch.cat([torch.nn.functional.pad(m, (0, T - m.shape[1])) for m in masks])  # [N, T]
    tids = torch.tensor(task_ids, device=lp_all.device)
    loss, m = nll_loss(lp_all, mask_all, agg=agg, task_ids=tids, agg_constant=agg_constant or None)
    for task in TASKS:
        name, t = task.value, task.id
        sel = tids == t
        if bool(sel.any()):
            tok = mask_all[sel]
            metrics[f"sft/nll_{name}"] = float(-(lp_all[sel].detach() * tok).sum() / tok.sum())
    engine.backward(loss)
    engine.step()
    model.eval()
    gn = engine.get_global_grad_norm()
    metrics.update({"sft/loss": float(loss.detach()), "sft/tokens": m["tokens"]})
    metrics["sft/grad_norm"] = float("nan") if gn is None else float(gn)
    return metrics


def run_sft(cfg: RunConfig, out: str | Path | None = None) -> Path:
    """Fine-tune ``cfg.model`` on ``cfg.sft.manifest``; returns the exported model directory."""
    from deploy.metrics import MetricsWriter, plot_curves
    from learner.learner import Learner, release_distributed

    s = cfg.sft
    if not s.manifest:
        raise ValueError("sft.manifest is empty; set it to a PairUG manifest (`pairuni pair`)")
    run_dir = Path(cfg.run.dir) / "sft"
    write_resolved(cfg, run_dir)
    learner_cfg = dataclasses.replace(
        cfg.learner, lr=s.lr, num_learners=0, kl_coef=0.0, lr_schedule="constant", warmup_steps=0
    )  # SFT keeps sft.lr throughout; the RL schedule is the RL run's
    torch.manual_seed(cfg.run.seed)
    learner = Learner(cfg.model, learner_cfg)
    data = SftData(s.manifest, learner.model)
    rng = np.random.default_rng(cfg.run.seed)
    streams = {"und": _Stream(len(data.und), rng), "gen": _Stream(len(data.gen), rng)}
    writer = MetricsWriter(run_dir)
    from tqdm import tqdm

    t0 = time.perf_counter()
    try:
        for step in tqdm(range(1, s.steps + 1), desc="sft", unit="step"):
            und_idx = streams["und"].take(s.per_step("und"))
            gen_idx = streams["gen"].take(s.per_step("gen"))
            m = sft_step(
                learner,
                data,
                und_idx,
                gen_idx,
                cfg.learner.loss_agg,
                cfg.learner.loss_agg_constant,
                step_generator(cfg.run.seed, step),
            )
            m["time/elapsed"] = time.perf_counter() - t0
            writer.write(step, m)
    finally:
        writer.close()
    plot_curves(
        writer.path, run_dir / "curves.png", ["sft/nll_und", "sft/nll_gen", "sft/grad_norm"]
    )
    path = Path(out) if out else run_dir / "model"
    learner.export(str(path))
    release_distributed()  # the in-process learner's world-size-1 group: free it for what follows
    return path


class _Stream:
    """Indices 0..n-1 in seeded shuffled epochs."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.n, self.rng, self.order, self.pos = n, rng, np.zeros(0, np.int64), 0

    def take(self, k: int) -> np.ndarray:
        if self.n == 0:
            return np.zeros(0, np.int64)
        out = []
        while len(out) < k:
            if self.pos >= len(self.order):
                self.order, self.pos = self.rng.permutation(self.n), 0
            out.append(int(self.order[self.pos]))
            self.pos += 1
        return np.asarray(out)


def add_sft_command(subparsers) -> None:
    """Register `sft` on the `pairuni` sub-parsers."""
    p = subparsers.add_parser("sft", help="supervised fine-tuning on a PairUG manifest")
    p.add_argument("--config", required=True, help="YAML run config (its sft: section)")
    p.add_argument("--out", default=None, help="model directory (default <run dir>/sft/model)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sft.steps=100")

    def run(args) -> None:
        cfg = load_config(RunConfig, args.config, args.overrides)
        path = run_sft(cfg, args.out)
        print(f"fine-tuned model: {path}\nmetrics: {Path(cfg.run.dir) / 'sft' / 'metrics.jsonl'}")

    p.set_defaults(func=run)
