"""Bounded load test of the reward endpoints on loopback (127.0.0.1 only, fixed durations).

    .venv/bin/python bench/reward_load.py [--clients 8] [--duration 10] [--items 1]

Starts a local Ray cluster and Serve on a free loopback port with three applications: the
accuracy endpoint, the tiny-HPS endpoint with dynamic batching (``rewards.hps.max_batch_size``), and
the same tiny-HPS endpoint with batching off (max batch 1) — so the batched/unbatched ratio
is measured in the same run, on the same machine, under the same load. N concurrent HTTP
clients hammer each endpoint in turn for ``--duration`` seconds; it prints requests/s,
items/s, p50/p99 latency and errors per endpoint, and the ratios.

``--gpu-hps`` instead measures the random-weight ViT-H-14 scorer on a GPU (no Ray): images/s
at batch 64 and against one image at a time, in fp16 and bf16.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _payloads(endpoint: str, items: int, seed: int = 0) -> list[dict]:
    from rewards.types import encode_png

    rng = np.random.default_rng(seed)
    out = []
    for k in range(16):  # a few distinct bodies, cycled
        if endpoint == "accuracy":
            pool = [
                {
                    "response": f"Let me think step by step. The answer is ({'ABCD'[k % 4]}).",
                    "answer": "B",
                    "choices": ["red", "blue", "green", "yellow"],
                },
                {
                    "response": rf"So the total is $\frac{{{k + 1}}}{{2}}$.",
                    "answer": str((k + 1) / 2),
                    "kind": "math",
                },
            ]
            body = [pool[(k + i) % 2] for i in range(items)]
        else:
            body = [
                {
                    "image": encode_png(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)),
                    "prompt": f"a photo of object {k}-{i}",
                }
                for i in range(items)
            ]
        out.append({"items": body})
    return out


async def _load(url: str, payloads: list[dict], clients: int, duration: float) -> dict:
    import httpx

    lat: list[float] = []
    errors = 0
    done_items = 0
    stop = time.perf_counter() + duration

    async def worker(c: int, http: httpx.AsyncClient) -> None:
        nonlocal errors, done_items
        k = c
        while time.perf_counter() < stop:
            body = payloads[k % len(payloads)]
            k += clients
            t0 = time.perf_counter()
            try:
                r = await http.post(url, json=body)
                ok = r.status_code == 200 and len(r.json()["rewards"]) == len(body["items"])
            except Exception:
                ok = False
            lat.append(time.perf_counter() - t0)
            if ok:
                done_items += len(body["items"])
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*[worker(c, http) for c in range(clients)])
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    return {
        "requests": len(lat),
        "req_s": len(lat) / wall,
        "items_s": done_items / wall,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "errors": errors,
    }


def run_serve_bench(args) -> None:
    import ray
    from ray import serve
    from ray.serve.api import RunTarget, run_many

    from rewards.accuracy import AccuracySettings
    from rewards.config import RewardsConfig
    from rewards.hps import HpsSettings
    from rewards.serve import build_app

    ray.init(
        num_cpus=4,
        include_dashboard=False,
        logging_level="ERROR",
        _temp_dir=tempfile.mkdtemp(prefix="ray_", dir="/tmp"),
        log_to_driver=False,
    )
    port = _free_port()
    common = dict(port=port, accuracy=AccuracySettings(num_cpus=1.0), max_ongoing_requests=256)
    hps = dict(arch="tiny", num_cpus=1.0)
    batched = RewardsConfig(
        **common,
        hps=HpsSettings(**hps, max_batch_size=args.max_batch, batch_wait_s=args.batch_wait),
    )
    unbatched = RewardsConfig(**common, hps=HpsSettings(**hps, max_batch_size=1, batch_wait_s=0.0))
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    t0 = time.perf_counter()
    run_many(
        [
            RunTarget(build_app("accuracy", batched), name="accuracy", route_prefix="/accuracy"),
            RunTarget(build_app("hps", batched), name="hps", route_prefix="/hps"),
            RunTarget(build_app("hps", unbatched), name="hps1", route_prefix="/hps1"),
        ]
    )
    print(
        f"serve up in {time.perf_counter() - t0:.1f}s on 127.0.0.1:{port}; {args.clients} "
        f"clients x {args.duration:.0f}s per endpoint, {args.items} item(s) per request; "
        f"HPS batching: max {args.max_batch}, wait {args.batch_wait * 1e3:.0f} ms"
    )
    results = {}
    try:
        for name, endpoint in (
            ("accuracy", "accuracy"),
            ("hps (batched)", "hps"),
            ("hps (max batch 1)", "hps1"),
        ):
            url = f"http://127.0.0.1:{port}/{endpoint}/score"
            payloads = _payloads("accuracy" if endpoint == "accuracy" else "hps", args.items)
            asyncio.run(_load(url, payloads, args.clients, 1.0))  # warm-up, not counted
            results[name] = r = asyncio.run(_load(url, payloads, args.clients, args.duration))
            print(
                f"{name:>18}: {r['req_s']:7.1f} req/s {r['items_s']:8.1f} items/s  "
                f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                f"errors {r['errors']}/{r['requests']}",
                flush=True,
            )
    finally:
        serve.shutdown()
        ray.shutdown()
    b, u = results["hps (batched)"], results["hps (max batch 1)"]
    print(
        f"HPS batched / unbatched throughput (items/s): {b['items_s'] / u['items_s']:.2f}x; "
        f"p50 latency ratio {b['p50_ms'] / u['p50_ms']:.2f}x"
    )
    print(f"total errors: {sum(r['errors'] for r in results.values())}")


def run_gpu_bench(args) -> None:
    import torch

    from rewards.hps import HpsScorer, preprocess

    assert torch.cuda.is_available(), "--gpu-hps needs CUDA"
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(64)]
    prompts = [f"a photo of object {i}" for i in range(64)]
    print(f"device: {torch.cuda.get_device_name()}; ViT-H-14 random weights; 512x512 inputs")
    for precision in ("bf16", "fp16"):
        scorer = HpsScorer("ViT-H-14", device="cuda", precision=precision, batch_size=64)
        scorer.score(imgs[:8], prompts[:8])  # warm-up

        def timed(fn, reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            torch.cuda.synchronize()
            return (time.perf_counter() - t0) / reps

        t_batch = timed(lambda s=scorer: s.score(imgs, prompts), args.gpu_reps)
        t_single = timed(lambda s=scorer: [s.score([im], [p]) for im, p in zip(imgs, prompts)], 1)
        # Model time only (inputs preprocessed once): what the GPU itself sustains.
        pix = torch.stack([preprocess(im) for im in imgs]).cuda()  # [64, 3, 224, 224]
        tok = scorer.tokenizer(prompts).cuda()

        def model_only(s=scorer, pix=pix, tok=tok):
            with torch.inference_mode(), s._autocast():
                s.model.encode_image(pix, normalize=True)
                s.model.encode_text(tok, normalize=True)

        t_model = timed(model_only, args.gpu_reps)
        print(
            f"{precision}: batch 64 {64 / t_batch:7.1f} img/s end to end "
            f"({64 / t_model:7.1f} img/s model only); one at a time {64 / t_single:6.1f} img/s; "
            f"batched/single {t_single / t_batch:.1f}x",
            flush=True,
        )
        del scorer
        torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per endpoint")
    p.add_argument("--items", type=int, default=1, help="items per request")
    p.add_argument("--max-batch", type=int, default=16, help="HPS dynamic batch size")
    p.add_argument("--batch-wait", type=float, default=0.01, help="HPS batch wait, seconds")
    p.add_argument("--gpu-hps", action="store_true", help="ViT-H-14 GPU throughput instead")
    p.add_argument("--gpu-reps", type=int, default=5)
    args = p.parse_args()
    if not 0 < args.duration <= 120:
        p.error("--duration must be in (0, 120] seconds (the bench is bounded)")
    run_gpu_bench(args) if args.gpu_hps else run_serve_bench(args)


if __name__ == "__main__":
    main()
