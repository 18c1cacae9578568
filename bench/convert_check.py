"""A random Janus of a published shape, written in DeepSeek's layout, converted back and compared.

    python -m bench.convert_check --size 1b --layers 2 --dtype bfloat16   # ~4 min, 2 CPU cores
    python -m bench.convert_check --size 1b --dtype bfloat16 --rows 1     # full depth, ~19 min

``models/convert.py`` is tested on the tiny model; this runs it at the size of a real
checkpoint without one. A random model (``bench.shapes.build``) is written in the original
layout (``bench.original_layout``: safetensors shards, dtype kept), converted with
``convert_checkpoint``, loaded with ``load_unified_model`` and checked against the source:
every tensor bit for bit (sha256 per tensor, taken before the source is freed, so that only
one copy of the model is in memory at a time), the config, and teacher-forced image and
text log-probs on the same random inputs, whose difference must be exactly 0.

Log-probs run in ``--score-dtype`` (default: the model's dtype); on a CPU they take most of
the time. CPUs without bf16 matmul kernels (AVX2 only) run bf16 several times slower than
fp32; ``--score-dtype float32`` upcasts both models (exactly) before scoring, at twice the
memory. ``bench.shapes.build`` keeps RoPE's ``inv_freq`` in float32, as loading does (see
``bench.shapes.float32_rope``). Prints the time, size and memory of each stage and one summary line;
exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.original_layout import write_original
from bench.shapes import DTYPES, SIZES, build, peak_memory
from models import load_unified_model
from models.convert import convert_checkpoint

PROMPTS = ["a red circle on a white background", "two blue squares", "a yellow star"]
QUESTIONS = ["what colour is it?", "how many shapes are there?", "describe the picture"]
# config keys that say where and when a config was written, not what it builds
_CONFIG_BOOKKEEPING = ("transformers_version", "_name_or_path", "architectures")


def rss_gib() -> float:
    """Resident memory of this process now, in GiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so RSS shows what is live."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def dir_gib(path: Path) -> float:
    """Size of the files directly in ``path``, in GiB."""
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 2**30


def fingerprints(hf) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """Name -> (dtype, shape, sha256 of the bytes) of every saved tensor of ``hf``, and of its
    buffers that are not saved (recomputed at load, e.g. RoPE's ``inv_freq``)."""
    out = {}
    tensors = dict(hf.state_dict())
    tensors.update({n: b for n, b in hf.named_buffers() if n not in tensors})
    for name, t in tensors.items():
        data = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        out[name] = (str(t.dtype), tuple(t.shape), hashlib.sha256(data).hexdigest())
    return out


def tensor_mismatches(src: dict, got: dict) -> list[str]:
    """Names whose tensors differ (missing, extra, dtype, shape or bytes), with the reason."""
    bad = [f"{k}: missing" for k in sorted(set(src) - set(got))]
    bad += [f"{k}: not in the source" for k in sorted(set(got) - set(src))]
    for k in sorted(set(src) & set(got)):
        (d0, s0, h0), (d1, s1, h1) = src[k], got[k]
        if (d0, s0) != (d1, s1):
            bad.append(f"{k}: {d0} {list(s0)} -> {d1} {list(s1)}")
        elif h0 != h1:
            bad.append(f"{k}: values differ")
    return bad


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def config_diff(src: dict, got: dict, dtype: str) -> dict[str, tuple[Any, Any]]:
    """Flattened config keys whose values differ (bookkeeping keys left out).

    A model built in memory has no ``dtype`` in its config (None); saved, it states the
    stored ``dtype``: that is not a difference."""
    a, b = _flat(src), _flat(got)
    a = {k: dtype if k.rsplit(".", 1)[-1] == "dtype" and v is None else v for k, v in a.items()}
    return {
        k: (a.get(k, "<absent>"), b.get(k, "<absent>"))
        for k in sorted(set(a) | set(b))
        if k.rsplit(".", 1)[-1] not in _CONFIG_BOOKKEEPING and a.get(k) != b.get(k)
    }


def score_inputs(m, rows: int, answer_len: int, seed: int) -> dict:
    """Random image tokens, images and answer ids, ``rows`` of each, drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    codes = m.module.config.vq_config.num_embeddings
    vocab = min(len(m.tokenizer), m.module.config.text_config.vocab_size)
    return {
        "prompts": [PROMPTS[i % len(PROMPTS)] for i in range(rows)],
        "tokens": torch.randint(0, codes, (rows, m.num_image_tokens), generator=g),
        "images": rng.integers(0, 256, size=(rows, 96, 128, 3), dtype=np.uint8),
        "questions": [QUESTIONS[i % len(QUESTIONS)] for i in range(rows)],
        "answers": [rng.integers(0, vocab, size=answer_len).tolist() for _ in range(rows)],
    }


@torch.no_grad()
def score_image(m, inputs: dict) -> torch.Tensor:
    """Teacher-forced image log-probs [rows, K] (CFG-combined, as the learner scores them)."""
    return m.image_logprobs(inputs["prompts"], inputs["tokens"]).float()


@torch.no_grad()
def score_text(m, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced answer log-probs [rows, T] and their mask."""
    text = m.text_logprobs(inputs["images"], inputs["questions"], inputs["answers"])
    return text.values.float(), text.mask


class Stages:
    """Seconds, size and memory of each stage, printed as it ends (``phase``: whose model)."""

    def __init__(self) -> None:
        self.phase = "source"
        self.sec: dict[str, float] = {}
        self.gib: dict[str, float] = {}

    def run(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        gib: Callable[[Any], float] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``fn(*args, **kwargs)``, timed; ``gib(result)`` in GiB is printed when given."""
        key = f"{self.phase} {name}"
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        self.sec[key] = time.perf_counter() - t0
        what = ""
        if gib is not None:
            self.gib[key] = gib(result)
            what = f", {self.gib[key]:.2f} GiB"
        release_memory()
        print(
            f"  {key:20s} {self.sec[key]:7.1f} s{what}; RSS {rss_gib():.2f} GiB, "
            f"peak so far {peak_memory('cpu'):.2f} GiB",
            flush=True,
        )
        return result


def model_gib(m) -> float:
    """Bytes of a UnifiedModel's saved tensors, in GiB."""
    return sum(t.numel() * t.element_size() for t in m.module.state_dict().values()) / 2**30


def check(args) -> bool:
    """Build, write, convert, load and compare; True when everything matches."""
    dtype = DTYPES[args.dtype]
    score_dtype = DTYPES[args.score_dtype or args.dtype]
    st = Stages()
    tag = f"{args.size}" + (f" layers={args.layers}" if args.layers else "") + f" {args.dtype}"
    print(f"convert_check {tag} (scoring in {str(score_dtype).removeprefix('torch.')})")

    m = st.run("build", build, args.size, "cpu", args.dtype, layers=args.layers, gib=model_gib)
    src_params = sum(p.numel() for p in m.module.parameters())
    src_config = m.module.config.to_dict()
    src_fp = st.run("fingerprint", fingerprints, m.module)
    n_saved = len(m.module.state_dict())
    inputs = score_inputs(m, args.rows, args.answer_len, args.seed)

    with tempfile.TemporaryDirectory(prefix="convert_check-", dir=args.tmp) as tmp:
        root = Path(tmp)
        shards = max(1, math.ceil(model_gib(m) / args.shard_gib))
        orig = st.run(
            "write", write_original, m, root / "original", dtype=dtype, shards=shards, gib=dir_gib
        )
        if score_dtype != dtype:
            m.module.to(
                score_dtype
            )  # exact upcast; the fingerprints were taken in the stored dtype
        ref_image = st.run("score image", score_image, m, inputs)
        ref_text, ref_mask = st.run("score text", score_text, m, inputs)
        del m
        release_memory()
        st.phase = "loaded"

        lines: list[str] = []
        out = st.run(
            "convert", convert_checkpoint, orig, root / "hf", log=lines.append, gib=dir_gib
        )
        for line in lines:
            print(f"    {line}")
        got = st.run("load", load_unified_model, out, args.dtype, gib=model_gib)
        got_fp = st.run("fingerprint", fingerprints, got.module)
        got_params = sum(p.numel() for p in got.module.parameters())
        diff = config_diff(src_config, got.module.config.to_dict(), args.dtype)
        if score_dtype != dtype:
            got.module.to(score_dtype)
        got_image = st.run("score image", score_image, got, inputs)
        got_text, got_mask = st.run("score text", score_text, got, inputs)

    bad = tensor_mismatches(src_fp, got_fp)
    d_image = (got_image - ref_image).abs().max().item()
    mask_same = torch.equal(got_mask, ref_mask)
    d_text = (got_text - ref_text).abs().max().item()
    print(
        f"  tensors: {len(src_fp)} in the source ({n_saved} saved + {len(src_fp) - n_saved} "
        f"buffers recomputed at load), {len(got_fp)} loaded, {len(bad)} differ"
    )
    for line in bad[:20]:
        print(f"    {line}")
    print(f"  parameters: {src_params:,} source, {got_params:,} loaded")
    print(f"  config keys that differ after the round trip: {len(diff)}")
    for k, (a, b) in diff.items():
        print(f"    {k}: {a!r} -> {b!r}")
    rows, K = inputs["tokens"].shape
    print(
        f"  image log-probs [{rows}, {K}]: max |loaded - source| = {d_image:.3g} "
        f"(source mean {ref_image.mean().item():.4f})"
    )
    print(
        f"  text log-probs [{rows}, {args.answer_len}]: max |loaded - source| = {d_text:.3g}, "
        f"masks {'equal' if mask_same else 'DIFFER'}"
    )
    ok = not bad and src_params == got_params and d_image == 0 and d_text == 0 and mask_same
    sec, gib = st.sec, st.gib
    scoring = [
        sum(v for k, v in sec.items() if k.startswith(f"{who} score"))
        for who in ("source", "loaded")
    ]
    print(
        f"convert_check {tag}: {'OK' if ok else 'FAILED'}; {len(src_fp)} tensors, "
        f"{len(bad)} differ; {got_params / 1e9:.3f} B params; max |d logprob| image {d_image:.3g}, "
        f"text {d_text:.3g}; {len(diff)} config keys differ; build {sec['source build']:.0f} s "
        f"({gib['source build']:.2f} GiB), write {sec['source write']:.0f} s "
        f"({gib['source write']:.2f} GiB, {shards} shards), convert {sec['loaded convert']:.0f} s "
        f"({gib['loaded convert']:.2f} GiB), load {sec['loaded load']:.0f} s, scoring "
        f"{scoring[0]:.0f} + {scoring[1]:.0f} s; peak RSS {peak_memory('cpu'):.2f} GiB"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="1b")
    p.add_argument("--layers", type=int, default=None, help="text depth (default: the shape's)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="bfloat16", help="stored dtype")
    p.add_argument(
        "--score-dtype",
        choices=tuple(DTYPES),
        default=None,
        help="dtype the log-probs run in (default: --dtype; float32 is faster on CPUs "
        "without bf16 kernels)",
    )
    p.add_argument("--rows", type=int, default=2, help="images / answers scored")
    p.add_argument("--answer-len", type=int, default=8, help="answer tokens per row")
    p.add_argument("--shard-gib", type=float, default=1.0, help="original weight file size")
    p.add_argument("--tmp", default=None, help="directory for the temporary checkpoints")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    return 0 if check(args) else 1


if __name__ == "__main__":
    raise SystemExit(main())
