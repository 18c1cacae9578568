"""Training-step time breakdown (smoke config) and weight-sync cost against a plain copy.

    python -m bench.step                       # both parts
    python -m bench.step --part sync --sizes-mb 100,1000
    python -m bench.step --part step --steps 3
    python -m bench.step --part async --steps 4 --reward-delay-ms 200

sync: the learner's path for one version — ``Publisher.publish`` (fp32 CPU tensors in the
workers' dtype: ``ray.put`` copies them straight from the parameters), a receiving actor
fetches the object (zero-copy) and copies it into its parameters (``load_into``) — timed end
to end, against the baseline of copying the same bytes tensor by tensor inside one process
(``Tensor.copy_``), measured in the same run; printed as ``sync/copy``. The same sync through
a staging buffer (every tensor flattened into one buffer first, then put: the path for casts
and GPU tensors, and what every version paid before) is timed alongside, interleaved, as
``staged/copy``. Minimum over ``--repeats``.

step: the smoke run (deploy/configs/smoke.yaml: 2 text workers, 1 image worker, 1 learner,
accuracy + tiny HPS) on the synthetic manifest; mean seconds per part of a step.

async: the smoke run's steps/s with ``train.max_staleness`` 0 and 1, as a ratio, and again
with every reward request delayed (``--reward-delay-ms``, a remote judge): how much of that
latency the streaming and the pipeline hide.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def _tensors(total_mb: int, chunk_mb: int = 16) -> dict[str, torch.Tensor]:
    """fp32 tensors of ``chunk_mb`` each adding up to ``total_mb``."""
    n = max(1, total_mb // chunk_mb)
    numel = chunk_mb * 2**20 // 4
    g = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(numel, generator=g) for i in range(n)}


class _Receiver:
    def __init__(self, shapes: dict[str, tuple]):
        self.params = {
            k: torch.nn.Parameter(torch.zeros(s), requires_grad=False) for k, s in shapes.items()
        }

    def load(self, ref) -> float:
        from actors.weights import fetch, load_into

        t0 = time.perf_counter()
        load_into(self.params, fetch(ref), ref.manifest)
        return time.perf_counter() - t0

    def checksum(self) -> float:
        return float(sum(p.double().sum() for p in self.params.values()))


def bench_sync(sizes_mb: list[int], repeats: int) -> None:
    import numpy as np
    import ray

    from actors.group import as_actor
    from actors.types import WeightsRef
    from actors.weights import Publisher, flatten_into, layout

    for mb in sizes_mb:
        src = _tensors(mb)
        # the receiver copies with as many threads as the in-process baseline (Ray gives an
        # actor num_cpus threads), so sync/copy compares copies of the same kind
        threads = torch.get_num_threads()
        receiver = as_actor(_Receiver, {"num_cpus": threads}).remote(
            {k: v.shape for k, v in src.items()}
        )
        dst = {k: torch.zeros_like(v) for k, v in src.items()}
        manifest, size = layout(src)
        staging = np.zeros(size, dtype=np.uint8)
        syncs, staged, copies, loads = [], [], [], []
        publisher = Publisher()  # as the learner: one Publisher for the run
        for version in range(repeats):
            t0 = time.perf_counter()
            ref = publisher.publish(src, version)
            loads.append(ray.get(receiver.load.remote(ref)))
            syncs.append(time.perf_counter() - t0)
            del ref
            t0 = time.perf_counter()
            flatten_into(staging, src, manifest)
            ref = WeightsRef(version, ray.put(staging), manifest)
            ray.get(receiver.load.remote(ref))
            staged.append(time.perf_counter() - t0)
            del ref
            t0 = time.perf_counter()
            for k, v in src.items():
                dst[k].copy_(v)
            copies.append(time.perf_counter() - t0)
        want = float(sum(v.double().sum() for v in src.values()))
        assert abs(ray.get(receiver.checksum.remote()) - want) < 1e-6 * abs(want) + 1e-3
        s, st, c, ld = min(syncs), min(staged), min(copies), min(loads)
        print(
            f"sync {mb:>5} MB: object-store sync {s * 1e3:8.1f} ms (receiver copy-in "
            f"{ld * 1e3:7.1f} ms) | staged {st * 1e3:8.1f} ms | in-process copy "
            f"{c * 1e3:7.1f} ms | sync/copy {s / c:5.2f}x | staged/copy {st / c:5.2f}x "
            f"| {mb / 1024 / s:5.2f} GB/s",
            flush=True,
        )
        ray.kill(receiver)


def bench_step(steps: int) -> None:
    from deploy.train import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = _smoke_config(tmp)
        t0 = time.perf_counter()
        trainer = Trainer(cfg)
        start = time.perf_counter() - t0
        rows = []
        try:
            for _ in range(steps + 1):
                rows.append(trainer.step())
        finally:
            trainer.close()
    rows = rows[1:]  # the first step pays one-time costs (allocations, caches)
    print(f"step: start-up {start:.1f} s; mean of {len(rows)} steps after a warm-up step:")
    parts = sorted(k for k in rows[0] if k.startswith("time/"))
    for k in parts:
        v = statistics.mean(r[k] for r in rows)
        print(f"  {k:<20} {v:7.3f} s  ({v / statistics.mean(r['time/step'] for r in rows):5.1%})")


def _smoke_config(tmp: str, *overrides: str):
    """The smoke config on a colour-square manifest written under ``tmp``, plus overrides."""
    from deploy.config import RunConfig, load_config
    from pairing.synthetic import colour_square_manifest

    return load_config(
        RunConfig,
        "deploy/configs/smoke.yaml",
        [
            f"run.root={tmp}",
            f"train.manifest={colour_square_manifest(tmp + '/data')}",
            "rewards.port=18331",
            *overrides,
        ],
    )


def _steps_per_s(staleness: int, steps: int, delay_s: float) -> tuple[float, dict]:
    """Steps/s of the smoke run with ``train.max_staleness=staleness`` over ``steps`` steps
    after a warm-up step (start-up excluded), every reward request delayed by ``delay_s``."""
    import asyncio

    from deploy.train import Trainer
    from rewards.client import RewardClient

    send = RewardClient._send

    async def delayed(self, items, http):
        await asyncio.sleep(delay_s)  # a remote judge's latency
        return await send(self, items, http)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = _smoke_config(
            tmp,
            f"train.max_staleness={staleness}",
            f"train.steps={steps + 3}",  # the pipeline stays full while timed
        )
        RewardClient._send = delayed if delay_s else send
        trainer = Trainer(cfg)
        try:
            rows = [trainer.step()]  # warm-up: one-time costs, and the pipeline fills
            t0 = time.perf_counter()
            rows += [trainer.step() for _ in range(steps)]
            wall = time.perf_counter() - t0
        finally:
            RewardClient._send = send
            trainer.close()
    return steps / wall, {
        k: statistics.mean(r[k] for r in rows[1:]) for k in rows[-1] if "time/" in k
    }


def bench_async(steps: int, delay_ms: float) -> None:
    """k = 0 vs k = 1 on the smoke config, without and with an injected reward latency."""
    delay = delay_ms / 1000
    rate = {}
    for k in (0, 1):
        for d in (0.0, delay):
            rate[k, d], times = _steps_per_s(k, steps, d)
            print(
                f"async: max_staleness={k} reward delay {d * 1e3:4.0f} ms: "
                f"{rate[k, d]:.3f} steps/s ("
                + ", ".join(f"{n.split('/')[1]} {v:.2f}" for n, v in sorted(times.items()))
                + " s)",
                flush=True,
            )
    # Before streaming, a step scored its understanding terms, then its generation terms,
    # one round each after sampling: the smoke run's two terms pay 2 x delay per step.
    injected = 2 * delay
    for k in (0, 1):
        exposed = 1 / rate[k, delay] - 1 / rate[k, 0.0]
        print(
            f"async: max_staleness={k}: {delay_ms:.0f} ms per reward call adds "
            f"{exposed * 1e3:.0f} ms per step of the {injected * 1e3:.0f} ms a serial "
            f"scoring round per term adds: {1 - exposed / injected:.0%} hidden"
        )
    for d in (0.0, delay):
        print(
            f"async: steps/s k=1 / k=0 (reward delay {d * 1e3:.0f} ms): "
            f"{rate[1, d] / rate[0, d]:.2f}x"
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--part", choices=["sync", "step", "async", "all"], default="all")
    p.add_argument("--reward-delay-ms", type=float, default=200.0, help="async: injected")
    p.add_argument("--sizes-mb", default="100,1000")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    import ray

    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    try:
        if args.part in ("sync", "all"):
            bench_sync([int(x) for x in args.sizes_mb.split(",")], args.repeats)
        if args.part in ("step", "all"):
            bench_step(args.steps)
        if args.part in ("async", "all"):
            bench_async(args.steps, args.reward_delay_ms)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
