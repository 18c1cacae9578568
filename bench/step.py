"""Training-step time breakdown (smoke config) and weight-sync cost against a plain copy.

    python -m bench.step                       # both parts
    python -m bench.step --part sync --sizes-mb 100,1000
    python -m bench.step --part step --steps 3

sync: the learner's path for one version — flatten the trainable tensors into one buffer,
one ``ray.put``, a receiving actor fetches it (zero-copy) and copies it into its parameters
(``actors.weights.load_into``) — timed end to end, against the baseline of copying the
same bytes tensor by tensor inside one process (``Tensor.copy_``), measured in the same run.
Printed as ``sync/copy``: how many plain copies one object-store sync costs.

step: the smoke run (deploy/configs/smoke.yaml: 2 text workers, 1 image worker, 1 learner,
accuracy + tiny HPS) on the synthetic manifest; mean seconds per part of a step.
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
    import ray

    from actors.group import as_actor
    from actors.weights import flatten, publish

    for mb in sizes_mb:
        src = _tensors(mb)
        receiver = as_actor(_Receiver, {"num_cpus": 1}).remote({k: v.shape for k, v in src.items()})
        dst = {k: torch.zeros_like(v) for k, v in src.items()}
        syncs, copies, loads, flats = [], [], [], []
        for version in range(repeats):
            t0 = time.perf_counter()
            ref = publish(src, version)
            loads.append(ray.get(receiver.load.remote(ref)))
            syncs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            flatten(src)
            flats.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for k, v in src.items():
                dst[k].copy_(v)
            copies.append(time.perf_counter() - t0)
            del ref
        want = float(sum(v.double().sum() for v in src.values()))
        assert abs(ray.get(receiver.checksum.remote()) - want) < 1e-6 * abs(want) + 1e-3
        s, c, ld = min(syncs), min(copies), min(loads)
        print(
            f"sync {mb:>5} MB: object-store sync {s * 1e3:8.1f} ms (receiver copy-in "
            f"{ld * 1e3:7.1f} ms) | in-process copy {c * 1e3:7.1f} ms | sync/copy {s / c:5.2f}x "
            f"| {mb / 1024 / s:5.2f} GB/s",
            flush=True,
        )
        ray.kill(receiver)


def bench_step(steps: int) -> None:
    from deploy.config import RunConfig, load_config
    from deploy.train import Trainer
    from pairing.synthetic import colour_square_manifest

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            RunConfig,
            "deploy/configs/smoke.yaml",
            [
                f"run.root={tmp}",
                f"train.manifest={colour_square_manifest(tmp + '/data')}",
                "rewards.port=18331",
            ],
        )
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--part", choices=["sync", "step", "all"], default="all")
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
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
