"""Random Janus models of published shapes for the benchmarks (no weights, no download).

``tiny`` is the test model (``models/tiny.py``). ``1b`` and ``7b`` follow Janus-Pro-1B / 7B:
a Llama text model (1B: hidden 2048, 24 layers, 16 heads, intermediate 5632; 7B: hidden
4096, 30 layers, 32 heads, intermediate 11008; vocab 102400), the SigLIP-L understanding
tower (1024 hidden, 24 layers, 384 px, patch 16) and a VQ tokenizer with 16384 codes,
576 image tokens (a 24 x 24 grid). ``layers`` / ``image_tokens`` shrink a shape so that it
runs on a CPU. The tokenizer is the tiny offline one (ids < 1000 fit any vocabulary).
"""

from __future__ import annotations

import contextlib
import time

import torch

SIZES = ("tiny", "1b", "7b")
TEXT = {
    "1b": dict(
        hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=5632
    ),
    "7b": dict(
        hidden_size=4096, num_hidden_layers=30, num_attention_heads=32, intermediate_size=11008
    ),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def janus_config(size: str, tokenizer, layers: int | None = None, image_tokens: int | None = None):
    """``JanusConfig`` of a published shape (``size`` in 1b | 7b)."""
    from transformers import JanusConfig, LlamaConfig
    from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

    t = dict(TEXT[size])
    if layers:
        t["num_hidden_layers"] = layers
    D = t["hidden_size"]
    text = LlamaConfig(
        vocab_size=102400,
        num_key_value_heads=t["num_attention_heads"],
        max_position_embeddings=16384,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **t,
    )
    vision = JanusVisionConfig(projection_dim=D, num_image_tokens=image_tokens or 576)
    vq = JanusVQVAEConfig(num_patches=24, projection_dim=D, image_token_embed_dim=D)
    image_id = tokenizer.convert_tokens_to_ids("<image_placeholder>")
    return JanusConfig(
        text_config=text,
        vision_config=vision,
        vq_config=vq,
        image_token_id=image_id,
        tie_word_embeddings=False,
    )


@contextlib.contextmanager
def _default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build(
    size: str,
    device: str = "cpu",
    dtype: str = "float32",
    layers: int | None = None,
    image_tokens: int | None = None,
    seed: int = 0,
):
    """A random ``UnifiedModel`` of ``size``, created directly on ``device`` in ``dtype``."""
    from transformers import JanusForConditionalGeneration

    from models.tiny import TinyShape, build_tiny_tokenizer, tiny_janus_config, tiny_processor
    from models.unified import UnifiedModel

    if size not in SIZES:
        raise ValueError(f"size={size!r} is not one of {SIZES}")
    t0 = time.perf_counter()
    tokenizer = build_tiny_tokenizer()
    if size == "tiny":
        shape = TinyShape(layers=layers or TinyShape.layers)
        config = tiny_janus_config(tokenizer, shape)
        if image_tokens:
            config.vision_config.num_image_tokens = image_tokens
    else:
        shape = TinyShape(image_size=384, patch=16)  # processor only: 576 tokens
        config = janus_config(size, tokenizer, layers, image_tokens)
    torch.manual_seed(seed)
    with torch.device(device), _default_dtype(DTYPES[dtype]):
        hf = JanusForConditionalGeneration(config)
    hf.to(dtype=DTYPES[dtype]).eval()
    float32_rope(hf)
    m = UnifiedModel(hf, tiny_processor(tokenizer, shape))
    n = sum(p.numel() for p in hf.parameters())
    print(
        f"built {size} ({n / 1e9:.2f} B params, {dtype}, {device}) in {time.perf_counter() - t0:.1f} s"
    )
    return m


def float32_rope(hf) -> int:
    """Recompute RoPE's ``inv_freq`` buffers in float32, as ``from_pretrained`` leaves them.

    A model created under a bf16 default dtype (and cast with ``.to(dtype)``) rotates with
    bf16-rounded frequencies, while a loaded checkpoint keeps them in float32 (recomputed at
    load, not stored): on the tiny model that alone moved bf16 log-probs by ~2e-3. ``build``
    calls this, so benchmarks rotate as a real checkpoint does. Returns how many changed."""
    changed = 0
    for mod in hf.modules():
        own = dict(mod.named_buffers(recurse=False))
        if "inv_freq" not in own or own["inv_freq"].dtype == torch.float32:
            continue
        fresh = type(mod)(mod.config).to(mod.inv_freq.device)
        for name in own:
            setattr(mod, name, getattr(fresh, name))
            changed += 1
    return changed


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device, nbytes: int | None = None, repeats: int = 10) -> float:
    """Measured device copy bandwidth in bytes/s: (read + write) bytes of ``dst.copy_(src)``."""
    if nbytes is None:
        nbytes = 2**30 if torch.device(device).type == "cuda" else 2**28
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    sync(device)
    return 2 * nbytes * repeats / (time.perf_counter() - t0)


def peak_memory(device) -> float:
    """Peak memory in GiB: allocator peak on CUDA, process max RSS on the CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
