"""Image-token policy of a Janus model: CFG sampling and teacher-forced log-probs.

The image-token policy is the CFG-combined distribution:

    pi(x_t | c) = softmax((l_u + w * (l_c - l_u)) / T)

where ``l_c`` are the generation head's logits on the prompt, ``l_u`` on the unconditional
prompt (every token but BOS and ``<begin_of_image>`` replaced by PAD, as transformers'
``generate(generation_mode="image")`` builds it), ``w`` the guidance weight and ``T`` the
temperature. ``mode="conditional"`` scores with ``softmax(l_c / T)`` instead (T2I-R1).
Both streams run as one batch: rows ``[0, N)`` conditional, ``[N, 2N)`` unconditional.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache

from models.prompts import generation_prompt


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def image_prompt_ids(
    tokenizer, prompts: list[str], n: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional + unconditional prompt ids, each prompt repeated ``n`` times.

    Returns ``ids [2N, L]`` (conditional rows first) and ``mask [2N, L]``, N = len(prompts) * n.
    """
    boi = tokenizer.convert_tokens_to_ids(tokenizer.boi_token)
    texts = [generation_prompt(p, tokenizer.boi_token) for p in prompts]
    enc = tokenizer(texts, padding=True, return_tensors="pt", padding_side="left")
    cond = enc.input_ids.repeat_interleave(n, dim=0)  # [N, L]
    mask = enc.attention_mask.repeat_interleave(n, dim=0)  # [N, L]
    keep = (cond == tokenizer.bos_token_id) | (cond == boi)
    uncond = cond.masked_fill(~keep, tokenizer.pad_token_id)
    ids = torch.cat([cond, uncond]).to(device)  # [2N, L]
    return ids, torch.cat([mask, mask]).to(device)


def policy_logits(
    logits: torch.Tensor, cfg_weight: float, temperature: float, mode: str
) -> torch.Tensor:
    """Split ``[2N, ..., V]`` head logits into streams and mix them into the policy's logits."""
    l_c, l_u = logits.float().chunk(2, dim=0)
    if mode == "combined":
        return (l_u + cfg_weight * (l_c - l_u)) / temperature
    if mode == "conditional":
        return l_c / temperature
    raise ValueError(f"image log-prob mode {mode!r} is not one of ('combined', 'conditional')")


@torch.no_grad()
def sample(
    model, tokenizer, prompts, n, cfg_weight, temperature, seed, greedy=False, mode="combined"
):
    """Autoregressive CFG sampling with a KV cache. Returns (tokens [N, K], logprobs [N, K]).

    Tokens are drawn from the CFG-combined policy; ``logprobs`` are their log-probs under the
    policy ``mode`` names (``policy_logits``): the learner's side of the PPO ratio, so that
    it is 1 on-policy whichever policy the learner scores."""
    device = model.device
    ids, mask = image_prompt_ids(tokenizer, prompts, n, device)  # [2N, L]
    N, K = ids.shape[0] // 2, model.config.vision_config.num_image_tokens
    lm, head = model.model.language_model, model.model.generation_head
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    cache = DynamicCache(config=model.config.text_config)
    pos = positions(mask)
    out = lm(
        inputs_embeds=model.get_input_embeddings()(ids),
        attention_mask=mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
    )
    tokens = torch.empty(N, K, dtype=torch.long, device=device)
    logprobs = torch.empty(N, K, dtype=torch.float32, device=device)
    for i in range(K):
        h = head(out.last_hidden_state[:, -1])  # [2N, V]
        logp = F.log_softmax(policy_logits(h, cfg_weight, temperature, "combined"), dim=-1)
        if greedy:
            tok = logp.argmax(-1)
        else:
            tok = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(-1)
        tokens[:, i] = tok
        if mode != "combined":
            logp = F.log_softmax(policy_logits(h, cfg_weight, temperature, mode), dim=-1)
        logprobs[:, i] = logp.gather(-1, tok[:, None]).squeeze(-1)
        if i == K - 1:
            break
        emb = model.prepare_embeddings_for_image_generation(tok.repeat(2)[:, None])  # [2N, 1, D]
        mask = torch.cat([mask, mask.new_ones(2 * N, 1)], dim=1)
        pos = pos[:, -1:] + 1
        out = lm(
            inputs_embeds=emb,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
        )
    return tokens, logprobs


LOGPROB_CHUNK = 64
"""Image positions per chunk of ``logprobs``' head -> log-softmax (``model.image_logprob_chunk``)."""


def _chunk_logprobs(head, hidden, tokens, cfg_weight, temperature, mode):
    """Log-probs ``[N, c]`` of ``tokens [N, c]`` from the text model's ``hidden [sN, c, D]``."""
    head_logits = head(hidden)  # [sN, c, V]
    if mode == "conditional":
        head_logits = torch.cat([head_logits, head_logits])  # the u-stream is unused
    logp = F.log_softmax(policy_logits(head_logits, cfg_weight, temperature, mode), dim=-1)
    return logp.gather(-1, tokens[..., None]).squeeze(-1)


def logprobs(model, tokenizer, prompts, tokens, cfg_weight, temperature, mode, chunk=LOGPROB_CHUNK):
    """Teacher-forced log-probs of ``tokens [N, K]`` under the image policy; differentiable.

    ``prompts`` has N entries, or N / n entries whose rows are repeated n times each.

    Memory: the policy's logits are ``[2N, K, V]`` (V = 16384 codes, K = 576 for Janus-Pro),
    1.2 GB in fp32 per 16 rows, with as much again for the log-softmax and its gradient. The
    head -> log-softmax -> gather runs over ``chunk`` image positions at a time; under
    autograd each chunk is recomputed in the backward pass (activation checkpointing), so
    only the ``[N, chunk]`` results stay alive and the peak is bounded by ``chunk``, not K.
    The values are the same per position as the one-pass computation. ``chunk=0`` is one pass.
    """
    N, K = tokens.shape
    n = N // len(prompts)
    ids, mask = image_prompt_ids(tokenizer, prompts, n, model.device)  # [2N, L]
    L = ids.shape[1]
    streams = 2 if mode == "combined" else 1
    if mode not in ("combined", "conditional"):
        raise ValueError(f"image log-prob mode {mode!r} is not one of ('combined', 'conditional')")
    if chunk < 0:
        raise ValueError(f"chunk={chunk!r} must be >= 0 (0: no chunking)")
    ids, mask = ids[: streams * N], mask[: streams * N]
    tokens = tokens.to(model.device)
    prev = model.prepare_embeddings_for_image_generation(tokens[:, :-1])  # [N, K-1, D]
    emb = torch.cat([model.get_input_embeddings()(ids), prev.repeat(streams, 1, 1)], dim=1)
    mask = torch.cat([mask, mask.new_ones(streams * N, K - 1)], dim=1)  # [sN, L+K-1]
    out = model.model.language_model(
        inputs_embeds=emb, attention_mask=mask, position_ids=positions(mask), use_cache=False
    )
    hidden = out.last_hidden_state[:, L - 1 :]  # [sN, K, D]: the states that predict token k
    head, args = model.model.generation_head, (cfg_weight, temperature, mode)
    if chunk == 0 or chunk >= K:
        return _chunk_logprobs(head, hidden, tokens, *args)  # [N, K]
    parts = []
    for a in range(0, K, chunk):
        h, t = hidden[:, a : a + chunk], tokens[:, a : a + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_chunk_logprobs, head, h, t, *args, use_reentrant=False))
        else:
            parts.append(_chunk_logprobs(head, h, t, *args))
    return torch.cat(parts, dim=1)  # [N, K]
