"""Learner step time and peak memory for a random Janus of a published shape.

    python -m bench.learner --size tiny                 # CPU
    python -m bench.learner --size 1b --gc on,off       # GPU: bf16, checkpointing on / off

One step = the adapter's teacher-forced log-probs of a generation batch (``image_logprobs``,
CFG-combined: 2 streams x (prompt + K image tokens)) and of an understanding batch
(``text_logprobs``: SigLIP tower + question + answer), a policy-gradient surrogate
``-(A * log pi)`` averaged per task and summed (``task-token-mean``), backward, and a plain
``torch.optim.AdamW`` step on the trainable parameters (parameters in the model dtype: no fp32
master copy, unlike the DeepSpeed learner). Each configuration runs in its own process, so
its peak memory (CUDA allocator peak, or max RSS on the CPU) is its own. One summary line
per configuration, then each chunk size's peak memory and step time as a ratio against the
first chunk size given (same run).

``--chunk 0,64`` compares the one-pass image log-probs (``[2N, K, 16384]`` fp32 logits
alive at once) with the chunked ones (``model.image_logprob_chunk``). On a CPU the 1B shape
fits with a shallow text model and no optimizer:

    python -m bench.learner --size 1b --layers 2 --dtype float32 --gen-batch 16 \
        --und-batch 0 --no-optimizer --gc off --chunk 0,64 --warmup 0 --steps 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time

import numpy as np
import torch

from bench.image_rollout import CAPTIONS
from bench.shapes import SIZES, build, peak_memory, sync

QUESTION = "what is in the picture?"


def make_batch(m, args, rng):
    K, V = m.num_image_tokens, m.module.config.vq_config.num_embeddings
    side = m.module.config.vision_config.image_size
    Bg, Bu = args.gen_batch, args.und_batch
    return dict(
        prompts=[CAPTIONS[i % len(CAPTIONS)] for i in range(Bg)],
        tokens=torch.as_tensor(rng.integers(0, V, size=(Bg, K))),
        adv_g=torch.as_tensor(rng.standard_normal(Bg), dtype=torch.float32),
        images=rng.integers(0, 256, size=(Bu, side, side, 3), dtype=np.uint8),
        questions=[QUESTION] * Bu,
        answers=[
            rng.integers(10, len(m.tokenizer) - 10, args.answer_len).tolist() for _ in range(Bu)
        ],
        adv_u=torch.as_tensor(rng.standard_normal(Bu), dtype=torch.float32),
    )


def step(m, opt, b, cfg_weight: float, chunk: int) -> float:
    """One surrogate step (no optimizer step when ``opt`` is None); returns the loss."""
    dev = m.device
    lp_g = m.image_logprobs(b["prompts"], b["tokens"], cfg_weight=cfg_weight, chunk=chunk)
    loss = -(b["adv_g"].to(dev)[:, None] * lp_g).mean()  # lp_g [Bg, K]
    if b["questions"]:
        lp_u = m.text_logprobs(b["images"], b["questions"], b["answers"])  # padded [Bu, T]
        mask = lp_u.mask.to(lp_u.values.dtype)
        loss = loss - (b["adv_u"].to(dev)[:, None] * lp_u.values * mask).sum() / mask.sum()
    loss.backward()
    if opt is not None:
        opt.step()
    m.module.zero_grad(set_to_none=True)
    return loss.detach()


def run_one(args, gc: bool, chunk: int) -> dict:
    m = build(args.size, args.device, args.dtype, args.layers, args.image_tokens, args.seed)
    m.module.train()
    if gc:
        m.module.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    params = list(m.trainable_parameters().values())
    opt = None
    if not args.no_optimizer:
        opt = torch.optim.AdamW(params, lr=1e-6, fused=m.device.type == "cuda")
    b = make_batch(m, args, np.random.default_rng(args.seed))
    if m.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step(m, opt, b, args.cfg, chunk)
    sync(args.device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step(m, opt, b, args.cfg, chunk)
    sync(args.device)
    sec = (time.perf_counter() - t0) / args.steps
    return {
        "size": args.size,
        "dtype": args.dtype,
        "device": str(m.device),
        "grad_ckpt": gc,
        "logprob_chunk": chunk,
        "optimizer": opt is not None,
        "gen_batch": args.gen_batch,
        "und_batch": args.und_batch,
        "image_tokens": m.num_image_tokens,
        "answer_len": args.answer_len,
        "trainable_B": sum(p.numel() for p in params) / 1e9,
        "step_s": sec,
        "peak_GiB": peak_memory(args.device),
        "loss": float(loss),
    }


def summary(r: dict) -> str:
    return (
        f"[{r['size']} {r['dtype']} {r['device']}] grad_ckpt={'on' if r['grad_ckpt'] else 'off'} "
        f"chunk={r['logprob_chunk']} {'adamw' if r['optimizer'] else 'no optimizer'} | gen {r['gen_batch']}x{r['image_tokens']} und {r['und_batch']}x{r['answer_len']} "
        f"trainable {r['trainable_B']:.3f} B | step {r['step_s']:.3f} s | peak {r['peak_GiB']:.2f} GiB"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--gc", default="on,off", help="gradient checkpointing: on, off or on,off")
    p.add_argument("--chunk", default="64", help="image log-prob chunks, e.g. 0,64 (0: one pass)")
    p.add_argument("--no-optimizer", action="store_true", help="forward + backward only")
    p.add_argument("--gen-batch", type=int, default=8, help="generated images per step")
    p.add_argument("--und-batch", type=int, default=8, help="understanding answers (0: none)")
    p.add_argument("--answer-len", type=int, default=32)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--layers", type=int, default=None, help="override the text depth (CPU runs)")
    p.add_argument("--image-tokens", type=int, default=None, help="override K (CPU runs)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=None, help="append one JSON line per configuration")
    p.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gcs = args.gc.split(",")
    if any(g not in ("on", "off") for g in gcs):
        raise SystemExit(f"--gc {args.gc!r}: use on, off or on,off")
    chunks = [int(c) for c in args.chunk.split(",")]
    if len(gcs) == 1 and len(chunks) == 1:
        row = run_one(args, gcs[0] == "on", chunks[0])
        print(json.dumps(row) if args.json_only else summary(row), flush=True)
        return [row]
    rows = []
    argv = list(argv if argv is not None else sys.argv[1:])
    base = [  # the same arguments without --gc X / --chunk X
        a
        for i, a in enumerate(argv)
        if not a.startswith(("--gc", "--chunk"))
        and not (i > 0 and argv[i - 1] in ("--gc", "--chunk"))
    ]
    for g, c in itertools.product(gcs, chunks):  # a fresh process each: its own peak memory
        cmd = [sys.executable, "-m", "bench.learner", *base, "--gc", g, "--chunk", str(c)]
        out = subprocess.run([*cmd, "--json-only"], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(summary(rows[-1]), flush=True)
    for g in gcs:  # memory and time of each chunk size against the first, same run
        same = [r for r in rows if r["grad_ckpt"] == (g == "on")]
        for r in same[1:]:
            print(
                f"  grad_ckpt={g}: chunk {r['logprob_chunk']} / chunk {same[0]['logprob_chunk']}:"
                f" peak {r['peak_GiB'] / same[0]['peak_GiB']:.2f}x, "
                f"step time {r['step_s'] / same[0]['step_s']:.2f}x"
            )
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return rows


if __name__ == "__main__":
    main()
