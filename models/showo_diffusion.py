"""Show-o's image policy: MaskGIT-style parallel unmasking, and the one-step log-prob estimate.

Both work on t2i sequences (``models/showo_layout.py``) through ``logits_fn(seq, mask) ->
[N, L, V]``, the model's forward pass under an additive omni-attention mask. The policy at an
image position is the CFG mix of the conditional and unconditional streams' code logits,

    pi(x_k | canvas, c) = softmax((l_u + w (l_c - l_u)) / T)     (``mode="combined"``)

(Show-o writes it (1 + s) l_c - s l_u with s = w - 1), or softmax(l_c / T)
(``mode="conditional"``); logits are restricted to the ``codebook_size`` code ids.

Sampling (Show-o's ``t2i_generate``, after MaskGIT, Chang et al. 2022): start from a canvas
of K ``[MASK]``; at step s of S every masked position draws a code from the policy; then
``floor(K * gamma((s + 1) / S))`` of the newly drawn positions (at least 1, at most all but
one) are masked again, the least confident first: confidence is log p(drawn code) plus
Gumbel noise scaled by ``remask_temperature * (1 - (s + 1) / S)``; the last step keeps
everything. gamma is the mask schedule (``SCHEDULES``; Show-o uses cosine, gamma(r) =
cos(pi r / 2)). All draws come from one generator seeded per request.

Log-probs for RL (``ESTIMATORS``). ``trajectory`` scores each token where the sampler drew
it: ``sample`` records ``order [N, K]``, the step at which each final token was drawn and
kept (revealed), and the learner rebuilds every canvas from (tokens, order):

    lp_k = log pi(x_k | canvas_s, prompt),  s = order_k,
    canvas_s = x where order < s, [MASK] elsewhere

That is the exact log-probability of the draw that produced x_k, on the very canvas the
sampler saw, so ``logprob_diff`` measures only the weights; what it leaves out is the
re-masking choice (which drawn tokens were kept), a function of the same logits plus Gumbel
noise. It costs one forward pass (two under ``combined``) per distinct step in ``order``,
up to ``steps``, against the one-step estimate's one; the rows travel with their order
(``Rollout.image_order``). A token set without a trajectory (a data set's image: DSR's R_U)
has no order and gets the one-step estimate.

``one_step`` needs no trajectory. The sampler's trajectory depends on the weights, so the
learner cannot replay it without the recorded order; ``one_step`` is diffu-GRPO's
estimate (Zhao et al. 2025, d1; DSR appendix A.3): every token of the image is predicted
in one step from a fully masked canvas, with each of the prompt's text tokens dropped (its
key removed from the attention mask) with probability ``prompt_drop_prob``:

    lp_k = log pi(x_k | all K masked, prompt with random tokens dropped)

The dropped set is a function of (prompt, the row's tokens, ``mask_seed``) alone, drawn
from a generator seeded by a SHA-256 of them (``keep_mask``): the rollout worker computes it
after sampling and returns it as the sampler's log-probs, and the learner recomputes the
very same quantity from the rollout, so ``logprob_diff`` (learner - sampler) measures only
the weights (0 on-policy up to numerics). Differently from d1, which draws a fresh prompt
mask for every gradient iteration, a rollout keeps one mask for its whole life.

Supervised training (``supervised_logprobs``, what ``pairuni sft`` fits) is Show-o's own
objective (its Mask Token Prediction loss, section "Training Objectives"), not the one-step estimate: per example a time t ~ U(0, 1),
``max(1, round(K gamma(t)))`` codes replaced by ``[MASK]``, the prompt replaced by the empty
one with probability ``cond_dropout_prob`` (CFG training), cross-entropy on the masked codes
only. So the model learns to fill partly revealed canvases, the states the sampler visits;
fitting the one-step estimate instead teaches only each code's marginal given the prompt.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from models.showo_layout import ShowoVocab, image_slice, t2i_mask, t2i_sequences

SCHEDULES: dict[str, Callable[[float], float]] = {
    "cosine": lambda r: math.cos(math.pi * r / 2),  # Show-o / MaskGIT
    "linear": lambda r: 1.0 - r,
}
"""Mask schedule gamma(r): the share of the K image tokens still masked after progress r."""
ESTIMATORS = ("one_step", "trajectory")
"""Image-token log-prob estimators (``model.diffusion.logprob_estimator``)."""


def policy_logits(l_c, l_u, cfg_weight: float, temperature: float, mode: str):
    """The policy's code logits from the two streams' (``l_u`` unused when conditional)."""
    if mode == "combined":
        return (l_u + cfg_weight * (l_c - l_u)) / temperature
    if mode == "conditional":
        return l_c / temperature
    raise ValueError(f"image log-prob mode {mode!r} is not one of ('combined', 'conditional')")


def token_logprobs(l_c, l_u, tokens, cfg_weight: float, temperature: float, mode: str):
    """log pi(tokens) ``[N, K]`` under the ``mode`` policy of the streams' code logits."""
    logp = F.log_softmax(policy_logits(l_c, l_u, cfg_weight, temperature, mode), -1)
    return logp.gather(-1, tokens[..., None]).squeeze(-1)


def _streams(logits_fn, vocab, text_ids, canvas_ids, max_text_len, keep, mode, dtype):
    """Code logits ``[N, K, C]`` of the conditional stream and (combined) the unconditional."""
    N, K = canvas_ids.shape
    seq = t2i_sequences(text_ids, canvas_ids, vocab, max_text_len)  # [N, L]
    if keep is not None:
        keep = torch.cat([keep, keep.new_ones(N, K + 2)], dim=1)  # [N, L]: image part kept
    rows = [(seq, t2i_mask(seq, vocab, keep, dtype))]
    if mode == "combined":
        useq = t2i_sequences([[]] * N, canvas_ids, vocab, max_text_len)
        rows.append((useq, t2i_mask(useq, vocab, None, dtype)))
    seq = torch.cat([r[0] for r in rows])
    mask = torch.cat([r[1] for r in rows])
    sl, a = image_slice(max_text_len, K), vocab.image_offset
    codes = logits_fn(seq, mask)[:, sl, a : a + vocab.codebook_size].float()  # [sN, K, C]
    return codes[:N], (codes[N:] if mode == "combined" else None)


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise -log(-log u) from uniforms ``u`` in [0, 1), clamped so that u = 0
    and u -> 1 stay finite (both logs' arguments are kept >= 1e-20)."""
    return -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))


@torch.no_grad()
def sample(
    logits_fn,
    vocab: ShowoVocab,
    text_ids: list[list[int]],
    K: int,
    *,
    cfg_weight: float,
    temperature: float,
    steps: int,
    schedule: str,
    remask_temperature: float,
    max_text_len: int,
    generator: torch.Generator,
    greedy: bool,
    dtype,
    device,
    logprob_mode: str | None = "combined",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(codes, order, logprobs)``, each ``[N, K]``, by iterative parallel unmasking (module
    docstring); one prompt's ``text_ids`` per row. ``order`` is the step that revealed each
    code, ``logprobs`` its log-prob at that step under the ``logprob_mode`` policy (the
    ``trajectory`` estimate, from the forward pass that drew it); None when ``logprob_mode``
    is None."""
    N = len(text_ids)
    gamma = SCHEDULES[schedule]
    codes = torch.full((N, K), -1, dtype=torch.long, device=device)  # -1: masked
    order = torch.full((N, K), steps - 1, dtype=torch.long, device=device)
    scored = None if logprob_mode is None else torch.zeros((N, K), device=device)
    for s in range(steps):
        unknown = codes < 0  # [N, K]
        canvas = torch.where(unknown, vocab.mask, codes + vocab.image_offset)
        l_c, l_u = _streams(logits_fn, vocab, text_ids, canvas, max_text_len, None,
                            "combined", dtype)  # fmt: skip
        logp = F.log_softmax(policy_logits(l_c, l_u, cfg_weight, temperature, "combined"), -1)
        if greedy:
            drawn = logp.argmax(-1)
        else:
            drawn = torch.multinomial(logp.exp().view(N * K, -1), 1, generator=generator)
            drawn = drawn.view(N, K)
        drawn = torch.where(unknown, drawn, codes)
        conf = logp.gather(-1, drawn[..., None]).squeeze(-1)  # [N, K]: log p(drawn), the mix
        if logprob_mode is not None:
            step_lp = conf if logprob_mode == "combined" else token_logprobs(
                l_c, l_u, drawn, cfg_weight, temperature, logprob_mode
            )  # fmt: skip
            scored = torch.where(unknown, step_lp, scored)  # kept where revealed now (below)
        if s == steps - 1:
            return drawn, order, scored
        ratio = (s + 1) / steps
        n_unknown = unknown.sum(-1)  # [N]
        n_mask = torch.clamp(
            torch.minimum(n_unknown - 1, torch.full_like(n_unknown, math.floor(K * gamma(ratio)))),
            min=1,
        )  # [N]
        scale = 0.0 if greedy else remask_temperature * (1.0 - ratio)
        if scale > 0:
            u = torch.rand(conf.shape, generator=generator, device=device)
            conf = conf + scale * gumbel(u)
        conf = conf.masked_fill(~unknown, float("inf"))  # known tokens stay
        rank = conf.argsort(-1).argsort(-1)  # [N, K]: 0 = least confident
        codes = torch.where(rank < n_mask[:, None], -1, drawn)
        order = torch.where(unknown & (codes >= 0), s, order)  # revealed at step s
    return codes, order, scored


def keep_mask(
    prompt: str, tokens: torch.Tensor, prefix: list[int], vocab: ShowoVocab, p: float, seed: int
) -> torch.Tensor:
    """Bool ``[len(prefix)]``: which t2i prefix tokens the one-step estimate keeps.

    Only the prompt's text tokens (between ``<bos>`` and the final ``<eos>``) can drop; each
    does with probability ``p``, from a CPU generator seeded by SHA-256(seed, prompt,
    tokens), so every process computes the same mask for the same rollout."""
    keep = torch.ones(len(prefix), dtype=torch.bool)
    if p <= 0:
        return keep
    h = hashlib.sha256(f"{seed}|{prompt}|".encode())
    h.update(np.ascontiguousarray(tokens.detach().cpu().numpy().astype(np.int64)).tobytes())
    gen = torch.Generator().manual_seed(int.from_bytes(h.digest()[:8], "little") >> 1)
    u = torch.rand(len(prefix), generator=gen)
    start = prefix.index(vocab.t2i) + 2  # after <|t2i|> <bos>
    text = torch.zeros(len(prefix), dtype=torch.bool)
    text[start : len(prefix) - 1] = True  # up to the final <eos>
    return keep & ~(text & (u < p))


def one_step_logprobs(
    logits_fn,
    vocab: ShowoVocab,
    prompts: list[str],
    text_ids: list[list[int]],
    tokens: torch.Tensor,
    *,
    cfg_weight: float,
    temperature: float,
    mode: str,
    max_text_len: int,
    prompt_drop_prob: float,
    mask_seed: int,
    dtype,
) -> torch.Tensor:
    """diffu-GRPO's one-step estimate ``[N, K]`` of ``tokens [N, K]`` (codes), one prompt per
    row (module docstring); differentiable through ``logits_fn``."""
    from models.showo_layout import t2i_prefix

    prefixes = [t2i_prefix(t, vocab, max_text_len) for t in text_ids]
    keep = torch.stack(
        [
            keep_mask(p, tok, pre, vocab, prompt_drop_prob, mask_seed)
            for p, tok, pre in zip(prompts, tokens, prefixes)
        ]
    ).to(tokens.device)  # [N, P]
    canvas = torch.full_like(tokens, vocab.mask)
    l_c, l_u = _streams(logits_fn, vocab, text_ids, canvas, max_text_len, keep, mode, dtype)
    return token_logprobs(l_c, l_u, tokens, cfg_weight, temperature, mode)  # [N, K]


def trajectory_logprobs(
    logits_fn,
    vocab: ShowoVocab,
    text_ids: list[list[int]],
    tokens: torch.Tensor,
    order: torch.Tensor,
    *,
    cfg_weight: float,
    temperature: float,
    mode: str,
    max_text_len: int,
    dtype,
) -> torch.Tensor:
    """The ``trajectory`` estimate ``[N, K]`` of ``tokens [N, K]`` revealed at steps
    ``order [N, K]`` (module docstring): one pass per distinct step, each scoring the codes
    revealed at that step on the canvas of the codes revealed before it; differentiable."""
    if order.shape != tokens.shape:
        raise ValueError(f"order has shape {tuple(order.shape)}; expected {tuple(tokens.shape)}")
    order = order.to(tokens.device)
    out = None
    for s in torch.unique(order).tolist():
        canvas = torch.where(order < s, tokens + vocab.image_offset, vocab.mask)
        l_c, l_u = _streams(logits_fn, vocab, text_ids, canvas, max_text_len, None, mode, dtype)
        lp = token_logprobs(l_c, l_u, tokens, cfg_weight, temperature, mode)  # [N, K]
        out = lp if out is None else torch.where(order == s, lp, out)
    return out


# ---- supervised training objective (SFT) ----------------------------------------------------
def draw_training_masks(
    N: int, K: int, schedule: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Show-o's training corruption (its MTP loss; ``mask_or_random_replace_tokens`` in its
    ``training/utils.py``, with ``min_masking_rate`` 0 as its configs): per row a time
    ``t ~ U(0, 1)``, mask ratio ``gamma(t)`` from the sampler's schedule, and
    ``max(1, round(K gamma(t)))`` positions chosen uniformly without replacement.

    Returns ``ratio [N]`` (float) and ``masked [N, K]`` (bool); all draws come from
    ``generator`` (CPU), so the same seed gives the same masks."""
    gamma = SCHEDULES[schedule]
    t = torch.rand(N, generator=generator)  # [N]
    ratio = torch.tensor([gamma(float(x)) for x in t])  # [N]
    n_mask = (K * ratio).round().clamp(min=1, max=K).long()  # [N]
    score = torch.rand(N, K, generator=generator)  # [N, K]
    rank = score.argsort(-1).argsort(-1)  # [N, K]: a uniform random permutation per row
    return ratio, rank < n_mask[:, None]


def masked_logprobs(
    logits_fn,
    vocab: ShowoVocab,
    text_ids: list[list[int]],
    tokens: torch.Tensor,
    masked: torch.Tensor,
    *,
    max_text_len: int,
    dtype,
) -> torch.Tensor:
    """log pi(x_k | canvas, prompt) ``[N, K]`` under the conditional stream, where the
    canvas holds ``[MASK]`` where ``masked [N, K]`` is True and the true code elsewhere;
    differentiable. Show-o's t2i loss is the cross-entropy of the masked entries (the caller
    masks the rest). A row whose ``text_ids`` is empty is the unconditional prompt."""
    canvas = torch.where(masked, vocab.mask, tokens + vocab.image_offset)  # [N, K]
    l_c, _ = _streams(logits_fn, vocab, text_ids, canvas, max_text_len, None,
                      "conditional", dtype)  # fmt: skip
    logp = F.log_softmax(l_c, -1)  # [N, K, C]
    return logp.gather(-1, tokens[..., None]).squeeze(-1)  # [N, K]


def supervised_logprobs(
    logits_fn,
    vocab: ShowoVocab,
    text_ids: list[list[int]],
    tokens: torch.Tensor,
    *,
    schedule: str,
    cond_dropout_prob: float,
    max_text_len: int,
    generator: torch.Generator,
    dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Show-o's masked-token training objective as ``(log-probs [N, K], masked [N, K])``:
    masks from ``draw_training_masks``; each row's prompt replaced by the empty
    (unconditional) prompt with probability ``cond_dropout_prob`` (classifier-free guidance
    training, Show-o's ``cond_dropout_prob``); the NLL of the masked entries is Show-o's
    cross-entropy on masked image tokens."""
    N, K = tokens.shape
    _, masked = draw_training_masks(N, K, schedule, generator)
    drop = torch.rand(N, generator=generator) < cond_dropout_prob  # [N]
    text_ids = [[] if d else t for t, d in zip(text_ids, drop.tolist())]
    masked = masked.to(tokens.device)
    lp = masked_logprobs(logits_fn, vocab, text_ids, tokens, masked,
                         max_text_len=max_text_len, dtype=dtype)  # fmt: skip
    return lp, masked
