"""Fast image-token rollout (``implementation="static"``): static KV cache, compiled step.

Samples the same policy as the reference loop in ``models/image_tokens.py``, the
CFG-combined distribution

    pi(x_t | c) = softmax((l_u + w * (l_c - l_u)) / T),

with the conditional and unconditional streams as one ``[2N]`` batch, but:

* the KV cache is preallocated once for prompt + image tokens, ``[layers, 2N, H_kv, S, D]``
  with ``S = L + K`` (``L`` the prompt length rounded up to ``PROMPT_BUCKET``), and reused
  across calls of the same shape;
* each decode step attends over the first ``S_i`` cache columns, ``S_i`` rounded up to
  ``kv_bucket``: a handful of static shapes instead of one per step, and no reading of the
  still-empty end of the cache;
* the step (embed -> layers -> head -> CFG mix -> log-softmax -> pick) takes only device
  tensors: no ``.item()``, no branch on tensor values, tokens and log-probs are written on
  the device; on CUDA it runs under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs),
  on the CPU it runs eagerly.

Sampling primitive. ``torch.multinomial(p, 1, generator=g)`` is, in ATen, exactly
``argmax(p / q)`` with ``q = empty_like(p).exponential_(generator=g)`` (the exponential race,
i.e. Gumbel-max). We draw ``q`` with the same generator, one ``[N, V]`` draw per token in
the same order, so the reference loop stays as it is and the same seed gives the same
tokens; the draw is one kernel outside the compiled step and needs no host sync.

The compiled step reads the model's parameters by address: update weights in place
(``param.copy_``), as the weight-sync path does, not by replacing the modules.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from models.image_tokens import image_prompt_ids, policy_logits, positions

PROMPT_BUCKET = 32
"""Prompt lengths are left-padded up to a multiple of this, so calls share one cache shape."""
KV_BUCKET = 64
"""Default attention-length bucket: step i reads ceil((L + i) / KV_BUCKET) * KV_BUCKET columns."""


def pick(head_logits, q, cfg_weight: float, temperature: float, mode: str = "combined"):
    """CFG-mix ``[2N, V]`` head logits, then choose one token per row.

    ``q [N, V]`` is Exp(1) noise: ``argmax(p / q)`` is a draw from ``p`` (what
    ``torch.multinomial`` computes); ``q=None`` is greedy. Returns ``(tok [N], logp [N])``,
    ``logp`` under the policy ``mode`` names (the draw is always from the combined one).
    """
    logp = F.log_softmax(policy_logits(head_logits, cfg_weight, temperature, "combined"), dim=-1)
    tok = logp.argmax(-1) if q is None else (logp.exp() / q).argmax(-1)  # [N]
    if mode != "combined":
        logp = F.log_softmax(policy_logits(head_logits, cfg_weight, temperature, mode), dim=-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


class _KVWriter:
    """Duck-typed ``Cache`` for one decode step: writes column ``col`` and returns ``[:S]``."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, col: torch.Tensor, S: int):
        self.k, self.v, self.col, self.S = k, v, col, S

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        # key_states [2N, H_kv, 1, D] -> column col of layer layer_idx's cache [2N, H_kv, S_max, D]
        self.k[layer_idx].index_copy_(2, self.col, key_states)
        self.v[layer_idx].index_copy_(2, self.col, value_states)
        return self.k[layer_idx][:, :, : self.S], self.v[layer_idx][:, :, : self.S]


class StaticDecoder(torch.nn.Module):
    """Preallocated KV cache + prompt mask for ``rows = 2N`` streams, and the decode step."""

    def __init__(self, model, rows: int, L: int, K: int):
        super().__init__()
        tc = model.config.text_config
        self.lm = model.model.language_model
        self.head = model.model.generation_head
        self.gen_embed = model.model.generation_embeddings
        self.gen_aligner = model.model.generation_aligner
        self.rows, self.L, self.K, self.S_max = rows, L, K, L + K
        H_kv = tc.num_key_value_heads
        D = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
        kw = dict(device=model.device, dtype=model.dtype)
        # One spare column: every read [:S] (S <= S_max) is then a proper slice, and the step
        # compiles once for all S (dynamo specialises a slice that spans the whole tensor).
        shape = (tc.num_hidden_layers, rows, H_kv, self.S_max + 1, D)
        self.register_buffer("k", torch.zeros(shape, **kw), persistent=False)
        self.register_buffer("v", torch.zeros(shape, **kw), persistent=False)
        self.register_buffer(
            "prompt_valid",
            torch.zeros(rows, self.S_max + 1, dtype=torch.bool, device=model.device),
        )
        self.register_buffer("pos0", torch.zeros(rows, dtype=torch.long, device=model.device))
        self.register_buffer("cols", torch.arange(self.S_max + 1, device=model.device))
        self.additive_mask = attention_kind(model) == "additive"
        self.mask_min = torch.finfo(model.dtype).min
        for t in (self.k, self.v, self.prompt_valid, self.pos0):
            torch._dynamo.mark_static_address(t)  # mutated in place across CUDA-graph replays

    def kv_bytes_per_column(self) -> int:
        """Bytes of K and V held per cache column (all layers, all rows)."""
        return 2 * self.k[:, :, :, 0].numel() * self.k.element_size()

    @torch.no_grad()
    def prefill(self, model, ids, mask):
        """Run the prompt ``ids [2N, L0]`` like the reference loop and load its K/V.

        The prompt lands right-aligned in columns ``[L - L0, L)``; the first ``L - L0``
        columns stay masked. Returns the head logits at ``<begin_of_image>``, ``[2N, V]``.
        """
        L0 = ids.shape[1]
        cache = DynamicCache(config=model.config.text_config)
        out = self.lm(
            inputs_embeds=model.get_input_embeddings()(ids),
            attention_mask=mask,
            position_ids=positions(mask),
            past_key_values=cache,
            use_cache=True,
        )
        for i, layer in enumerate(cache.layers):
            self.k[i, :, :, self.L - L0 : self.L].copy_(layer.keys)  # [2N, H_kv, L0, D]
            self.v[i, :, :, self.L - L0 : self.L].copy_(layer.values)
        self.prompt_valid.zero_()
        self.prompt_valid[:, self.L - L0 : self.L].copy_(mask.bool())
        self.pos0.copy_(mask.long().sum(-1))  # position of the first image token per row
        return self.head(out.last_hidden_state[:, -1])

    def step(self, prev, col, q, S: int, cfg_weight: float, temperature: float, mode: str):
        """Feed image token ``prev [N]`` at cache column ``col [1]``; pick the next token.

        Reads cache columns ``[0, S)``; ``S > col`` is a Python int (a static shape).
        """
        x = self.gen_aligner(self.gen_embed(prev.repeat(2)[:, None]))  # [2N, 1, D]
        pos = (self.pos0 + (col - self.L))[:, None]  # [2N, 1]: skips left padding
        cos_sin = self.lm.rotary_emb(x, pos)
        j = self.cols[:S]
        valid = self.prompt_valid[:, :S] | ((j >= self.L) & (j <= col))  # [2N, S]
        kv = _KVWriter(self.k, self.v, col, S)
        mask = valid[:, None, None, :]  # [2N, 1, 1, S], True = attend
        if self.additive_mask:  # eager attention adds the mask to the scores
            mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(
                ~mask, self.mask_min
            )
        for layer in self.lm.layers:
            x = layer(
                x,
                attention_mask=mask,
                position_embeddings=cos_sin,
                past_key_values=kv,
            )
        return pick(self.head(self.lm.norm(x)[:, -1]), q, cfg_weight, temperature, mode)


# The decode step hands the layers a ready 4D mask, so it must be in the form the attention
# function reads: SDPA takes a boolean "attend" mask; eager attention adds the mask to the
# scores, so a boolean one would add 0/1 and unmask padding. Others get no 4D mask of ours.
ATTENTION_MASKS = {"sdpa": "boolean", "eager": "additive"}


def attention_kind(model) -> str:
    """``boolean`` or ``additive``: the 4D mask form the text model's attention reads."""
    impl = model.config.text_config._attn_implementation or "eager"
    if impl not in ATTENTION_MASKS:
        raise ValueError(
            f"image_implementation='static' supports attention {tuple(ATTENTION_MASKS)}, "
            f"not {impl!r}: load the model with attn_implementation='sdpa' (the default) or "
            "use model.image_implementation='reference'"
        )
    return ATTENTION_MASKS[impl]


def round_up(x: int, b: int) -> int:
    return -(-x // b) * b


# One decoder (cache + compiled step) per model, rebuilt when the batch shape changes.
_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
COMPILE_MODES = ("auto", "none", "aot_eager", "inductor", "reduce-overhead")


def resolve_compile(compile: str, on_cuda: bool) -> str:
    """The compile mode ``compile`` means here: auto = CUDA graphs on CUDA, eager on the CPU."""
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile={compile!r} is not one of {COMPILE_MODES}")
    if compile == "auto":
        return "reduce-overhead" if on_cuda else "none"
    return compile


def _compiled_step(dec: StaticDecoder, compile: str):
    """The decode step, compiled as ``resolve_compile`` says."""
    compile = resolve_compile(compile, dec.k.is_cuda)
    if compile == "none":
        return dec.step
    # One graph per cached decoder shape (batch, prompt bucket): allow more than dynamo's 8.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    # dynamic=True: the attention length S (one value per kv bucket) is symbolic from the
    # first call, so the step compiles once, not once static and again dynamic when S first
    # changes (dynamo's default); CUDA graphs are still recorded once per bucket.
    if compile == "aot_eager":  # tracing check on the CPU: the step must be one graph
        return torch.compile(dec.step, backend="aot_eager", fullgraph=True, dynamic=True)
    mode = "reduce-overhead" if compile != "inductor" else None
    return torch.compile(dec.step, mode=mode, dynamic=True)


def get_decoder(model, rows: int, L: int, K: int, compile: str = "auto"):
    """The cached ``(decoder, step)`` for this model and shape (built on first use)."""
    key = (rows, L, K, compile, model.device, model.dtype, attention_kind(model))
    hit = _DECODERS.get(model)
    if hit is None or hit[0] != key:
        _DECODERS.pop(model, None)  # free the old cache before allocating the new one
        dec = StaticDecoder(model, rows, L, K)
        hit = (key, dec, _compiled_step(dec, compile))
        _DECODERS[model] = hit
    return hit[1], hit[2]


def release(model) -> None:
    """Drop the cached KV cache and compiled step of ``model``."""
    _DECODERS.pop(model, None)


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts,
    n,
    cfg_weight,
    temperature,
    seed,
    greedy=False,
    mode="combined",
    *,
    kv_bucket: int = KV_BUCKET,
    compile: str = "auto",
):
    """CFG sampling with a static KV cache. Returns ``(tokens [N, K], logprobs [N, K])``.

    Same arguments, same draws and same log-probs as ``image_tokens.sample``.
    """
    if kv_bucket < 1:
        raise ValueError(f"kv_bucket={kv_bucket!r} must be >= 1")
    device = model.device
    ids, mask = image_prompt_ids(tokenizer, prompts, n, device)  # [2N, L0]
    N, K = ids.shape[0] // 2, model.config.vision_config.num_image_tokens
    L = round_up(ids.shape[1], PROMPT_BUCKET)
    dec, step = get_decoder(model, 2 * N, L, K, compile)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    V = model.config.vq_config.num_embeddings

    def noise():  # Exp(1) [N, V], drawn as torch.multinomial draws it
        if greedy:
            return None
        return torch.empty(N, V, device=device).exponential_(generator=gen)

    tokens = torch.empty(N, K, dtype=torch.long, device=device)
    logprobs = torch.empty(N, K, dtype=torch.float32, device=device)
    tok, lp = pick(dec.prefill(model, ids, mask), noise(), cfg_weight, temperature, mode)
    tokens[:, 0], logprobs[:, 0] = tok, lp
    graphs = dec.k.is_cuda and resolve_compile(compile, True) == "reduce-overhead"
    for i in range(1, K):
        if graphs:  # each step starts a new CUDA-graph generation (its outputs are copied
            # out below). Without the mark, the previous step's outputs are still referenced
            # when the next step runs, which CUDA-graph trees treat as one growing path: our
            # suspicion for the 0.74 img/s measured on an H200 at 1B / batch 32 before this
            # mark (the plain loop does ~0.8 at batch 8); not yet measured with it.
            torch.compiler.cudagraph_mark_step_begin()
        c = L + i - 1  # cache column of input token i - 1
        S = min(round_up(c + 1, kv_bucket), dec.S_max)
        tok, lp = step(tok, dec.cols[c : c + 1], noise(), S, cfg_weight, temperature, mode)
        tokens[:, i], logprobs[:, i] = tok, lp
        tok = tok.clone()  # a CUDA-graph output is overwritten by the next replay
    return tokens, logprobs
