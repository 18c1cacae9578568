"""Text rollout speed: the vLLM backend against the HF backend, in one run, same requests.

    .venv-vllm/bin/python -m bench.text_rollout                 # CPU, tiny model, 32 x n=4
    .venv-vllm/bin/python -m bench.text_rollout --batch 8 --n 2 --max-new-tokens 32

Runs under the vLLM lane's interpreter (both backends import there). For the tiny random
Janus (head_dim 64) it times ``generate`` on ``--batch`` understanding requests with
``--n`` samples each (after one warm-up call; best of ``--repeats``) for: ``hf``
(``HFTextBackend``, models/'s KV-cached loop), ``vllm`` (``VLLMTextBackend``, compiled)
and ``vllm-eager`` (``enforce_eager``). It prints output tokens per wall second and per
CPU-second of the process (the engine core runs in-process, so its threads count; CPU
time depends far less on the neighbours of a shared machine than wall time), the ratios
to ``hf``, the engine start time, and the share of a vLLM call spent computing prompt
embeddings in the worker (vision tower + aligner + token embeddings): the cost of the
prompt_embeds design over an out-of-tree Janus model in vLLM, which would run the same
vision tower inside the engine instead.

GPU: the 1B-shaped comparison needs a GPU machine with vLLM installed; the GPU machines
here have none, so the line reports it as pending.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def requests(batch: int, n: int, seed: int = 0):
    from actors.types import RolloutRequest

    rng = np.random.default_rng(seed)
    questions = ["What colour is the shape?", "How many objects are there?", "Describe it."]
    return [
        RolloutRequest(
            request_id=i,
            pair_id=i,
            task="und",
            prompt=questions[i % len(questions)],
            n=n,
            seed=seed * 100_003 + i,
            image=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        )
        for i in range(batch)
    ]


def time_backend(name: str, backend, reqs, warm, repeats: int) -> dict:
    """Tokens/s of the fastest of ``repeats`` timed ``generate`` calls, after a warm-up.

    The fastest, because the machine is shared: the others measure the neighbours too.
    """
    backend.generate(warm)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = backend.generate(reqs)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    dt = min(times)
    tokens = sum(len(ro.token_ids) for ro in out)
    return {
        "backend": name,
        "seconds": dt,
        "seconds_all": times,
        "cpu_seconds": min(cpu),
        "tokens": tokens,
        "tokens_per_s": tokens / dt,
        "tokens_per_cpu_s": tokens / min(cpu),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32, help="requests per call")
    p.add_argument("--n", type=int, default=4, help="samples per request")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--backends", default="hf,vllm,vllm-eager")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per backend (best kept)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads of each (0: all cores)")
    p.add_argument("--out", default="", help="also write the results as JSON here")
    args = p.parse_args()
    if args.threads:
        import os

        import torch

        torch.set_num_threads(args.threads)  # the HF backend and the worker's embeddings
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{args.threads - 1}"  # vLLM's own

    from actors.backends.vllm_backend import (
        VLLMTextBackend,
        prompt_embeds,
    )
    from actors.config import RolloutConfig
    from actors.text_rollout import HFTextBackend
    from models.compat import processor_without_torchvision
    from models.config import ModelConfig

    processor_without_torchvision()  # the HF backend builds the processor here too
    model_cfg = ModelConfig(max_new_tokens=args.max_new_tokens)
    reqs, warm = requests(args.batch, args.n, 1), requests(2, args.n, 2)
    rows = []
    for name in args.backends.split(","):
        t0 = time.perf_counter()
        if name == "hf":
            backend = HFTextBackend(model_cfg, RolloutConfig())
        elif name in ("vllm", "vllm-eager"):
            cfg = RolloutConfig(text_backend="vllm", text_vllm_eager=name == "vllm-eager")
            backend = VLLMTextBackend(model_cfg, cfg)
        else:
            raise SystemExit(f"--backends: {name!r} is not one of hf, vllm, vllm-eager")
        start = time.perf_counter() - t0
        row = {**time_backend(name, backend, reqs, warm, args.repeats), "start_s": start}
        if name != "hf":
            t0 = time.perf_counter()
            prompt_embeds(backend.policy, reqs)
            row["embed_share"] = (time.perf_counter() - t0) / row["seconds"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        del backend
    base = next((r for r in rows if r["backend"] == "hf"), None)
    head = f"batch {args.batch} x n={args.n}, max_new_tokens {args.max_new_tokens}: "
    parts = []
    for r in rows:
        ratio = ""
        if base and r["backend"] != "hf":
            ratio = (
                f" ({r['tokens_per_s'] / base['tokens_per_s']:.2f}x hf; per CPU-second "
                f"{r['tokens_per_cpu_s'] / base['tokens_per_cpu_s']:.2f}x)"
            )
        extra = f", embeds {100 * r['embed_share']:.1f}% of the call" if "embed_share" in r else ""
        parts.append(
            f"{r['backend']} {r['tokens_per_s']:.0f} tok/s, {r['tokens_per_cpu_s']:.0f} "
            f"tok/CPU-s{ratio}, start {r['start_s']:.1f} s{extra}"
        )
    gpu = "gpu 1B-shaped: pending (no GPU machine with vLLM installed)"
    print(head + "; ".join(parts) + "; " + gpu)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "args": vars(args), "gpu": gpu}, f, indent=1)


if __name__ == "__main__":
    main()
