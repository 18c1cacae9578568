"""Text policy of a Janus model: answers to (image, question), sampled and teacher-forced.

The text policy is ``softmax(lm_head(h) / T)``. Image features (SigLIP tower + aligner) are
computed once per image and scattered into the placeholder positions; n samples of one
prompt share them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from models.image_tokens import positions
from models.prompts import understanding_prompt


@dataclass
class Padded:
    """Right-padded per-token values ``values [N, T]`` with a bool ``mask [N, T]``."""

    values: torch.Tensor
    mask: torch.Tensor

    def rows(self) -> list[torch.Tensor]:
        """One 1-D tensor per row, without padding."""
        return [v[m] for v, m in zip(self.values, self.mask)]


def prompt_embeddings(model, processor, images, questions: list[str], n: int):
    """Embedded understanding prompts, each repeated n times: (embeds [N, L, D], mask [N, L])."""
    texts = [understanding_prompt(q, processor.image_token) for q in questions]
    enc = processor(text=texts, images=images, padding=True, return_tensors="pt")
    ids = enc.input_ids.to(model.device)
    pixel_values = enc.pixel_values.to(model.device, model.dtype)
    emb = model.get_input_embeddings()(ids)  # [B, L, D]
    feats = model.model.get_image_features(pixel_values).pooler_output  # [B, P, D]
    slots = (ids == model.config.image_token_id)[..., None]  # [B, L, 1]
    emb = emb.masked_scatter(slots, feats.to(emb.dtype))
    return emb.repeat_interleave(n, 0), enc.attention_mask.to(model.device).repeat_interleave(n, 0)


@torch.no_grad()
def sample(model, processor, images, questions, n, temperature, max_new_tokens, seed, greedy=False):
    """Sample ``n`` answers per question. Returns (token_ids list, logprobs list), grouped by question."""
    device = model.device
    emb, mask = prompt_embeddings(model, processor, images, questions, n)
    N = emb.shape[0]
    eos, pad = processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id
    lm = model.model.language_model
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    cache = DynamicCache(config=model.config.text_config)
    pos = positions(mask)
    out = lm(
        inputs_embeds=emb,
        attention_mask=mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
    )
    done = torch.zeros(N, dtype=torch.bool, device=device)
    toks, lps = [], []
    for _ in range(max_new_tokens):
        logp = F.log_softmax(model.lm_head(out.last_hidden_state[:, -1]).float() / temperature, -1)
        if greedy:
            tok = logp.argmax(-1)
        else:
            tok = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(-1)
        tok = tok.masked_fill(done, pad)
        toks.append(tok)
        lps.append(logp.gather(-1, tok[:, None]).squeeze(-1))
        done = done | (tok == eos)
        if bool(done.all()):
            break
        mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
        pos = pos[:, -1:] + 1
        out = lm(
            inputs_embeds=model.get_input_embeddings()(tok[:, None]),
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
        )
    tokens, logprobs = torch.stack(toks, 1), torch.stack(lps, 1)  # [N, T]
    return trim_at_eos(tokens, logprobs, eos)


def logprobs(model, processor, images, questions, token_ids: list[list[int]], temperature: float):
    """Teacher-forced log-probs of answers ``token_ids`` (N rows; questions N or N/n); differentiable."""
    N = len(token_ids)
    n = N // len(questions)
    emb, mask = prompt_embeddings(model, processor, images, questions, n)  # [N, L, D]
    L = emb.shape[1]
    T = max(len(t) for t in token_ids)
    pad = processor.tokenizer.pad_token_id
    resp = torch.full((N, T), pad, dtype=torch.long, device=model.device)
    resp_mask = torch.zeros(N, T, dtype=torch.bool, device=model.device)
    for i, t in enumerate(token_ids):
        resp[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        resp_mask[i, : len(t)] = True
    emb = torch.cat([emb, model.get_input_embeddings()(resp)], dim=1)  # [N, L+T, D]
    full_mask = torch.cat([mask, resp_mask.long()], dim=1)
    out = model.model.language_model(
        inputs_embeds=emb,
        attention_mask=full_mask,
        position_ids=positions(full_mask),
        use_cache=False,
    )
    logits = model.lm_head(out.last_hidden_state[:, L - 1 : L + T - 1]).float()  # [N, T, V]
    logp = F.log_softmax(logits / temperature, -1).gather(-1, resp[..., None]).squeeze(-1)
    return Padded(logp.masked_fill(~resp_mask, 0.0), resp_mask)


def trim_at_eos(
    tokens: torch.Tensor, logprobs: torch.Tensor, eos: int
) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Per row of ``[N, T]`` sampled tokens and their log-probs: the tokens up to and
    including the first EOS (all of them when none), and their log-probs on the CPU."""
    ids, lp = [], []
    for row, row_lp in zip(tokens.tolist(), logprobs):
        length = row.index(eos) + 1 if eos in row else len(row)
        ids.append(row[:length])
        lp.append(row_lp[:length].cpu())
    return ids, lp
