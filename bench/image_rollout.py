"""Image-token rollout speed: static sampler vs reference loop vs transformers' generate.

    python -m bench.image_rollout --size tiny --batch 16,32,64
    python -m bench.image_rollout --size 1b --batch 16,32,64        # on a GPU

For each batch (images per call, ``n`` per prompt) it times, on one random model:
``hf`` = ``generate(generation_mode="image", guidance_scale=w, do_sample=True)``,
``reference`` = ``models/image_tokens.sample`` and ``static`` = ``models/static_sampler``,
and prints one summary line: images/s of each, the ratios, whether static and reference
drew the same tokens from the same seed, and the fraction of the memory-bandwidth roofline
that ``static`` reaches:

    roofline time = sum over decode steps i of (W + kv_col * (L + i)) / B_copy

with ``W`` the bytes of the weights a decode step reads (text layers, final norm, image
head and aligner), ``kv_col`` the K+V bytes of one sequence position over all layers and
all 2N streams, ``L`` the prompt length, and ``B_copy`` the measured device copy bandwidth.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench.shapes import SIZES, build, copy_bandwidth, sync
from models import image_tokens, static_sampler

CAPTIONS = [
    "a red circle",
    "two blue squares on a white background",
    "a small yellow star above a large green triangle in the middle of the picture",
    "a cat",
    "a dog next to a tree under the sun",
    "three black dots in a line",
    "a house with a red door and two windows on a sunny day with clouds in the sky",
    "a blue ring",
]


def prompts_for(batch: int, n: int) -> list[str]:
    if batch % n:
        raise SystemExit(f"--batch {batch} is not a multiple of --n {n}")
    return [CAPTIONS[i % len(CAPTIONS)] for i in range(batch // n)]


def hf_generate(m, prompts, n, cfg_weight, seed):
    """transformers' own CFG image generation on the same prompts (n rows each)."""
    ids, mask = image_tokens.image_prompt_ids(m.tokenizer, prompts, n, m.device)
    N = ids.shape[0] // 2
    torch.manual_seed(seed)
    return m.module.generate(
        input_ids=ids[:N],
        attention_mask=mask[:N],
        generation_mode="image",
        guidance_scale=cfg_weight,
        do_sample=True,
    )


def decode_bytes(m, L: int, N: int) -> tuple[int, int]:
    """(W, kv_col): weight bytes one decode step reads, K+V bytes per cache position."""
    hf, tc = m.module, m.module.config.text_config
    mods = [hf.model.language_model.layers, hf.model.language_model.norm]
    mods += [hf.model.generation_head, hf.model.generation_aligner]
    W = sum(p.numel() * p.element_size() for mod in mods for p in mod.parameters())
    D = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    elt = torch.finfo(m.dtype).bits // 8
    kv_col = 2 * tc.num_hidden_layers * 2 * N * tc.num_key_value_heads * D * elt
    return W, kv_col


def timed(fn, device, repeats: int) -> tuple[float, object]:
    out, best = None, float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_batch(m, args, batch: int, bw: float) -> dict:
    prompts, n, w, T = prompts_for(batch, args.n), args.n, args.cfg, 1.0
    K = m.num_image_tokens
    impls = {
        "hf": lambda: hf_generate(m, prompts, n, w, args.seed),
        "reference": lambda: image_tokens.sample(
            m.module, m.tokenizer, prompts, n, w, T, args.seed
        ),
        "static": lambda: static_sampler.sample(
            m.module, m.tokenizer, prompts, n, w, T, args.seed, kv_bucket=args.kv_bucket
        ),
    }
    secs, outs, first = {}, {}, {}
    for name in args.impls.split(","):
        for i in range(args.warmup):  # the first call compiles (static on CUDA): report it
            t0 = time.perf_counter()
            impls[name]()
            sync(m.device)
            if i == 0:
                first[f"{name}_first_call_s"] = time.perf_counter() - t0
                print(
                    f"  {name:9s} batch {batch}: first call {first[f'{name}_first_call_s']:.1f} s"
                )
        secs[name], outs[name] = timed(impls[name], m.device, args.repeats)
        print(f"  {name:9s} batch {batch}: {secs[name]:.3f} s ({batch / secs[name]:.2f} img/s)")
    L = image_tokens.image_prompt_ids(m.tokenizer, prompts, 1, "cpu")[0].shape[1]
    W, kv_col = decode_bytes(m, L, batch)
    roof_s = sum(W + kv_col * (L + i) for i in range(1, K)) / bw
    row = {
        "size": args.size,
        "batch": batch,
        "n": n,
        "image_tokens": K,
        "prompt_len": L,
        "dtype": args.dtype,
        "device": str(m.device),
        "copy_GBps": bw / 1e9,
        "GB_per_step": (W + kv_col * (L + K / 2)) / 1e9,
        **{f"{k}_img_s": batch / v for k, v in secs.items()},
        **first,
    }
    if "static" in secs:
        row["roofline_frac"] = roof_s / secs["static"]
        for base in ("hf", "reference"):
            if base in secs:
                row[f"static_over_{base}"] = secs[base] / secs["static"]
    if "static" in outs and "reference" in outs:
        row["same_tokens"] = bool(torch.equal(outs["static"][0], outs["reference"][0]))
    return row


def summary(r: dict) -> str:
    rates = " ".join(f"{k[:-6]} {r[k]:.2f}" for k in r if k.endswith("_img_s"))
    ratios = " ".join(f"static/{k[12:]} {r[k]:.2f}x" for k in r if k.startswith("static_over_"))
    roof = f"roofline {100 * r['roofline_frac']:.1f}%" if "roofline_frac" in r else ""
    same = f"same_tokens={r['same_tokens']}" if "same_tokens" in r else ""
    return (
        f"[{r['size']} {r['dtype']} {r['device']}] batch={r['batch']} K={r['image_tokens']} "
        f"L={r['prompt_len']} | img/s: {rates} | {ratios} | {roof} "
        f"({r['GB_per_step']:.3f} GB/step, copy {r['copy_GBps']:.1f} GB/s) | {same}"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--batch", default="16,32,64", help="images per call, comma separated")
    p.add_argument("--n", type=int, default=4, help="images per prompt (GRPO group size)")
    p.add_argument("--cfg", type=float, default=5.0, help="guidance weight w")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--layers", type=int, default=None, help="override the text depth (CPU runs)")
    p.add_argument("--image-tokens", type=int, default=None, help="override K (CPU runs)")
    p.add_argument("--kv-bucket", type=int, default=static_sampler.KV_BUCKET)
    p.add_argument("--impls", default="hf,reference,static")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="timed runs; the best is kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=None, help="append one JSON line per configuration")
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    m = build(args.size, args.device, args.dtype, args.layers, args.image_tokens, args.seed)
    bw = copy_bandwidth(args.device)
    print(f"copy bandwidth {bw / 1e9:.1f} GB/s")
    rows = []
    for batch in [int(b) for b in args.batch.split(",")]:
        rows.append(run_batch(m, args, batch, bw))
        static_sampler.release(m.module)  # free this batch's KV cache
        print(summary(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return rows


if __name__ == "__main__":
    main()
