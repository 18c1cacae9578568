"""Sampler vs learner log-probs, and the learner's image log-prob memory, on a random model.

    python -m bench.logprob_gap --size tiny                 # CPU, fp32
    python -m bench.logprob_gap --size 1b                   # GPU, bf16

PPO's ratio is exp(learner log-prob - sampler log-prob). On-policy it should be 1; what the
two code paths give in practice is a numerical gap (bf16 matmuls in a different order: a
batched decode step with a KV cache against one teacher-forced pass). For each image
log-prob mode (``combined``: the CFG mix the tokens are drawn from; ``conditional``:
softmax(l_c / T)) this samples N images (``--impl``, the reference loop by default) and scores the same tokens
teacher-forced, then does the same for understanding answers, and prints per token the max
and mean |learner - sampler|, the mean signed gap and the share of tokens whose ratio lies
outside PPO's clip [0.8, 1.2]. It also prints the peak memory of one teacher-forced
``image_logprobs`` forward + backward at N rows above the model's own memory and its
gradients, in one pass (``chunk=0``) and in chunks of ``--chunk`` image positions (CUDA
allocator peak; on the CPU the rows are skipped: ``bench.learner --chunk 0,64`` measures RSS).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.image_rollout import CAPTIONS
from bench.shapes import SIZES, build, sync


def gap_stats(learner: torch.Tensor, sampler: torch.Tensor) -> dict:
    d = (learner.float() - sampler.float()).flatten()
    ratio = d.exp()
    return {
        "max_abs": d.abs().max().item(),
        "mean_abs": d.abs().mean().item(),
        "mean": d.mean().item(),
        "clipped_frac": ((ratio < 0.8) | (ratio > 1.2)).float().mean().item(),
        "tokens": d.numel(),
    }


def image_gaps(m, prompts, n, cfg, seed, impl) -> dict:
    out = {}
    for mode in ("combined", "conditional"):
        s = m.sample_image_tokens(
            prompts, n, cfg, 1.0, seed, implementation=impl, logprob_mode=mode
        )
        with torch.no_grad():
            lp = m.image_logprobs(prompts, s.tokens, cfg, mode=mode)
        out[mode] = gap_stats(lp, s.logprobs)
    return out


def text_gaps(m, n_rows, n, seed, max_new_tokens) -> dict:
    rng = np.random.default_rng(seed)
    side = m.image_size
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n_rows)]
    questions = [f"What is in picture {i}?" for i in range(n_rows)]
    s = m.sample_text(images, questions, n, 1.0, max_new_tokens, seed)
    with torch.no_grad():
        lp = m.text_logprobs(
            [im for im in images for _ in range(n)],
            [q for q in questions for _ in range(n)],
            s.token_ids,
        )
    sampler = torch.nn.utils.rnn.pad_sequence([t.float().cpu() for t in s.logprobs], True)
    mask = lp.mask.bool().cpu()
    return gap_stats(lp.values.float().cpu()[mask], sampler[mask])


def logprob_memory(m, prompts, n, cfg, seed, chunk) -> dict:
    """Peak CUDA memory of image_logprobs forward + backward above the model's own."""
    s = m.sample_image_tokens(prompts, n, cfg, 1.0, seed)
    m.module.train()
    for _ in range(2):  # the first pass allocates the gradients: measure the second
        m.module.zero_grad(set_to_none=False)
        torch.cuda.empty_cache()
        sync(m.device)
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        m.image_logprobs(prompts, s.tokens, cfg, chunk=chunk).sum().backward()
        sync(m.device)
        sec = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() - base
    m.module.zero_grad(set_to_none=True)
    m.module.eval()
    return {"rows": s.tokens.shape[0], "chunk": chunk, "peak_GiB": peak / 2**30, "sec": sec}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--rows", type=int, default=16, help="images (and answers) per measurement")
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--answer-len", type=int, default=32)
    p.add_argument(
        "--impl", default="reference", help="image sampler: reference | static (compiles on GPU)"
    )
    p.add_argument("--chunk", type=int, default=64, help="image log-prob chunk vs one pass")
    p.add_argument("--layers", type=int, default=None, help="override the text depth (CPU runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="append one JSON line")
    args = p.parse_args(argv)
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.rows % args.n:
        p.error(f"--rows {args.rows} is not a multiple of --n {args.n}")
    m = build(args.size, args.device, dtype, layers=args.layers, seed=args.seed)
    prompts = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.rows // args.n)]
    row = {"size": args.size, "dtype": dtype, "device": args.device, "rows": args.rows}
    row["image"] = image_gaps(m, prompts, args.n, args.cfg, args.seed, args.impl)
    row["text"] = text_gaps(m, args.rows // args.n, args.n, args.seed, args.answer_len)
    if torch.device(args.device).type == "cuda":
        row["image_logprobs_memory"] = [
            logprob_memory(m, prompts, args.n, args.cfg, args.seed, c) for c in (0, args.chunk)
        ]
    for name, g in [*(("image/" + k, v) for k, v in row["image"].items()), ("text", row["text"])]:
        print(
            f"[{args.size} {dtype}] {name:18s} |learner - sampler| per token: max "
            f"{g['max_abs']:.3g}, mean {g['mean_abs']:.3g}; mean signed {g['mean']:+.2g}; "
            f"ratio outside [0.8, 1.2]: {100 * g['clipped_frac']:.2f}% of {g['tokens']} tokens"
        )
    for mem in row.get("image_logprobs_memory", []):
        one_pass = row["image_logprobs_memory"][0]
        print(
            f"[{args.size} {dtype}] image_logprobs fwd+bwd at N={mem['rows']}, chunk "
            f"{mem['chunk']}: peak {mem['peak_GiB']:.2f} GiB above the model and its gradients "
            f"({mem['peak_GiB'] / one_pass['peak_GiB']:.2f}x one pass), {mem['sec']:.3f} s "
            f"({mem['sec'] / one_pass['sec']:.2f}x)"
        )
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
