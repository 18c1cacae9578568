"""The supervised image objective (``image_supervised_logprobs``): Show-o's masked-token loss
by hand (mask counts, inputs, a brute-force cross-entropy, the ratio-1 limit) and Janus's
hook as the teacher-forced log-probs it always was."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from models.config import ConfigError, ModelConfig
from models.showo import tiny_showo
from models.showo_diffusion import draw_training_masks, masked_logprobs, supervised_logprobs
from models.showo_layout import additive, image_slice, t2i_prefix

PROMPTS = ["a red circle on a white background", "two blue squares", "a green dot"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_showo(0)


def _settings(m, **kw):
    m.settings = dataclasses.replace(m.settings, **kw)
    return m


def _codes(m, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, m.vocab.codebook_size, (n, m.num_image_tokens), generator=g)


def test_masked_count_follows_the_drawn_ratio():
    K = 16
    ratio, masked = draw_training_masks(4000, K, "cosine", torch.Generator().manual_seed(1))
    assert masked.shape == (4000, K) and masked.dtype == torch.bool
    # per row exactly max(1, round(K * ratio)) codes masked (Show-o rounds and keeps >= 1)
    want = torch.clamp((K * ratio).round(), min=1).long()
    assert torch.equal(masked.sum(-1), want)
    # ratio = cos(pi t / 2), t ~ U(0, 1): E[ratio] = 2 / pi, P(ratio > 1/2) = P(t < 2/3)
    assert abs(ratio.mean().item() - 2 / math.pi) < 0.015
    assert abs((ratio > 0.5).float().mean().item() - 2 / 3) < 0.025
    # which codes: uniform over positions (each one masked E[count] / K of the time)
    per_pos = masked.float().mean(0)  # [K]
    assert (per_pos - masked.float().mean()).abs().max() < 0.035
    # seeded: the same generator seed, the same masks; another seed, others
    r2, m2 = draw_training_masks(4000, K, "cosine", torch.Generator().manual_seed(1))
    assert torch.equal(ratio, r2) and torch.equal(masked, m2)
    _, m3 = draw_training_masks(4000, K, "cosine", torch.Generator().manual_seed(2))
    assert not torch.equal(masked, m3)
    # linear schedule: ratio = 1 - t, mean 1/2
    lin, _ = draw_training_masks(4000, K, "linear", torch.Generator().manual_seed(1))
    assert abs(lin.mean().item() - 0.5) < 0.015


def test_inputs_carry_true_codes_where_unmasked_and_prompts_drop(tiny):
    m = tiny
    v, K, T = m.vocab, m.num_image_tokens, m.max_text_len
    seen = []

    def logits_fn(seq, mask):
        seen.append(seq.clone())
        return m._logits(seq, mask)

    N = 200
    prompts = [PROMPTS[i % 3] for i in range(N)]
    text_ids = m._text_ids(prompts)
    codes = _codes(m, N)
    with torch.no_grad():
        lp, masked = supervised_logprobs(
            logits_fn, v, text_ids, codes, schedule="cosine", cond_dropout_prob=0.3,
            max_text_len=T, generator=torch.Generator().manual_seed(0), dtype=torch.float32,
        )  # fmt: skip
    (seq,) = seen  # one conditional pass, no unconditional stream
    img = seq[:, image_slice(T, K)]  # [N, K]
    assert torch.equal(img[masked], torch.full_like(img[masked], v.mask))
    assert torch.equal(img[~masked], codes[~masked] + v.image_offset)
    # the prompt part: the row's own prompt, or (dropped) the empty one of the CFG stream
    own = torch.tensor([t2i_prefix(t, v, T) for t in text_ids])  # [N, P]
    empty = torch.tensor(t2i_prefix([], v, T))
    prefix = seq[:, : T + 1]
    dropped = (prefix == empty).all(-1)
    assert bool(((prefix == own).all(-1) | dropped).all())
    assert 0.2 < dropped.float().mean().item() < 0.4  # ~cond_dropout_prob of 200 rows
    assert lp.shape == (N, K) and masked.shape == (N, K)


def _brute_force(m, prompt, codes, masked):
    """One row: the sequence as a Python list with [MASK] typed in where ``masked``, the
    omni-attention mask by a double loop, Phi called on it; log-softmax over the codes."""
    v, K, P = m.vocab, m.num_image_tokens, m.max_text_len + 1
    ids = m.tokenizer(prompt, add_special_tokens=False).input_ids if prompt else []
    body = [v.t2i, v.bos, *ids, v.eos]
    img = [v.mask if masked[k] else int(codes[k]) + v.image_offset for k in range(K)]
    seq = [v.pad] * (P - len(body)) + body + [v.soi] + img + [v.eoi]
    L = len(seq)
    allowed = torch.zeros(1, L, L, dtype=torch.bool)
    for i in range(L):
        for j in range(L):
            allowed[0, i, j] = i == j or (seq[j] != v.pad and (j <= i or i >= P))
    logits = m.net.showo(
        input_ids=torch.tensor([seq]),
        attention_mask=additive(allowed, torch.float32),
        position_ids=torch.arange(L)[None],
    ).logits[0, P + 1 : P + 1 + K, v.image_offset : v.image_offset + v.codebook_size]
    return logits.float()  # [K, C]


@pytest.mark.parametrize("p,prompt_of", [(0.0, lambda p: p), (0.99, lambda p: "")])
def test_loss_is_the_cross_entropy_of_the_masked_codes(tiny, p, prompt_of):
    # p = 0: never dropped; p = 0.99: with generator seed 1 all three rows are dropped (their
    # drop draws are 0.26, 0.77, 0.38 < 0.99), so each row sees the empty prompt
    m = _settings(tiny, cond_dropout_prob=p)
    codes = _codes(m, 3, seed=5)
    with torch.no_grad():
        lp, mask = m.image_supervised_logprobs(PROMPTS, codes, torch.Generator().manual_seed(1))
        assert bool(mask.any(-1).all()) and not bool(mask.all())  # partly masked canvases
        ce_fast = -(lp * mask).sum() / mask.sum()
        logits = torch.stack(
            [_brute_force(m, prompt_of(PROMPTS[i]), codes[i], mask[i]) for i in range(3)]
        )  # [3, K, C]
        ce_slow = torch.nn.functional.cross_entropy(logits[mask], codes[mask])
        torch.testing.assert_close(ce_fast, ce_slow, atol=1e-5, rtol=1e-5)
        # every entry, masked or not, is the log-prob on that canvas
        slow = torch.log_softmax(logits, -1).gather(-1, codes[..., None]).squeeze(-1)
        torch.testing.assert_close(lp, slow, atol=1e-5, rtol=1e-5)


def test_ratio_one_is_the_one_step_estimate(tiny):
    # every code masked, no prompt token dropped: the conditional one-step estimate exactly
    m = _settings(tiny, prompt_drop_prob=0.0)
    codes = _codes(m, 3, seed=2)
    with torch.no_grad():
        full = masked_logprobs(
            m._logits, m.vocab, m._text_ids(PROMPTS), codes, torch.ones_like(codes, dtype=bool),
            max_text_len=m.max_text_len, dtype=m.dtype,
        )  # fmt: skip
        one_step = m.image_logprobs(PROMPTS, codes, mode="conditional")
    torch.testing.assert_close(full, one_step, atol=1e-6, rtol=1e-6)


def test_seeded_and_differentiable(tiny):
    m = _settings(tiny, cond_dropout_prob=0.1)
    codes = _codes(m, 3)
    a = m.image_supervised_logprobs(PROMPTS, codes, torch.Generator().manual_seed(3))
    b = m.image_supervised_logprobs(PROMPTS, codes, torch.Generator().manual_seed(3))
    c = m.image_supervised_logprobs(PROMPTS, codes, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    (-(a[0] * a[1]).sum()).backward()
    grads = [p.grad for p in m.trainable_parameters().values()]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    m.net.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match=r"expected \[3, 16\]"):
        m.image_supervised_logprobs(PROMPTS, codes[:2], torch.Generator())


def test_sft_step_generator_is_a_function_of_seed_and_step():
    from deploy.sft import step_generator

    draw = lambda s, t: torch.rand(4, generator=step_generator(s, t))  # noqa: E731
    assert torch.equal(draw(0, 1), draw(0, 1))
    assert not torch.equal(draw(0, 1), draw(0, 2))
    assert not torch.equal(draw(0, 1), draw(1, 1))


def test_cond_dropout_prob_is_validated():
    from models.config import MaskedDiffusionConfig

    with pytest.raises(ConfigError, match=r"model\.diffusion\.cond_dropout_prob=1\.0"):
        MaskedDiffusionConfig(cond_dropout_prob=1.0).validate()
    assert ModelConfig().diffusion.cond_dropout_prob == 0.1  # Show-o's training configs


def test_janus_hook_is_the_teacher_forced_log_probs():
    from models.registry import build_policy

    m = build_policy(ModelConfig())
    codes = torch.randint(
        0, 64, (2, m.num_image_tokens), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        lp, mask = m.image_supervised_logprobs(PROMPTS[:2], codes, torch.Generator())
        want = m.image_logprobs(PROMPTS[:2], codes, mode="conditional")
    assert torch.equal(lp, want)
    assert mask.dtype == torch.bool and mask.shape == want.shape and bool(mask.all())


def test_training_inputs_are_the_samplers_on_every_canvas(tiny):
    # issue 23's first suspect: the masked-token loss trains on (sequence, attention mask)
    # pairs the sampler never feeds. Record what the sampler passes the model at each
    # unmasking step and rebuild the same canvas through the training path: the conditional
    # rows must equal the prompt's training rows, the CFG rows the dropped-prompt rows.
    from models.showo_diffusion import sample

    m, v, K = tiny, tiny.vocab, tiny.num_image_tokens
    text = m._text_ids(PROMPTS)
    seen = []

    def recording(store):
        def fn(seq, mask):
            store.append((seq.clone(), mask.clone()))
            return m._logits(seq, mask)

        return fn

    with torch.no_grad():
        sample(
            recording(seen), v, text, K, cfg_weight=3.0, temperature=1.0, steps=4,
            schedule="cosine", remask_temperature=1.0, max_text_len=m.max_text_len,
            generator=torch.Generator().manual_seed(0), greedy=False, dtype=m.dtype,
            device=m.device,
        )  # fmt: skip
        assert len(seen) == 4
        N, sl = len(PROMPTS), image_slice(m.max_text_len, K)
        for seq, mask in seen:
            canvas = seq[:N, sl]
            masked = canvas == v.mask
            codes = torch.where(masked, 0, canvas - v.image_offset)
            for rows, prompts in ((slice(0, N), text), (slice(N, 2 * N), [[]] * N)):
                got = []
                masked_logprobs(recording(got), v, prompts, codes, masked,
                                max_text_len=m.max_text_len, dtype=m.dtype)  # fmt: skip
                assert torch.equal(got[0][0], seq[rows])
                assert torch.equal(got[0][1], mask[rows])
        # the steps reveal codes: later canvases hold fewer [MASK] than the first (all)
        assert bool((seen[0][0][:N, sl] == v.mask).all())
        assert int((seen[-1][0][:N, sl] == v.mask).sum()) < N * K


def test_image_positions_differ_only_by_position(tiny):
    # a fully masked canvas: the 16 image queries hold the same token and see the same keys,
    # so only the rotary position ids can tell the cells apart (Show-o has no other position
    # signal); with every position id equal the cells' logits are equal, with 0..L-1 not
    m, v, K = tiny, tiny.vocab, tiny.num_image_tokens
    from models.showo_layout import t2i_mask, t2i_sequences

    seq = t2i_sequences(m._text_ids(PROMPTS[:1]), torch.full((1, K), v.mask), v, m.max_text_len)
    mask = t2i_mask(seq, v, None, m.dtype)
    sl = image_slice(m.max_text_len, K)
    with torch.no_grad():
        same = m.net.showo(input_ids=seq, attention_mask=mask,
                           position_ids=torch.zeros_like(seq)).logits[0, sl]  # fmt: skip
        real = m._logits(seq, mask)[0, sl]
    torch.testing.assert_close(same, same[:1].expand_as(same), atol=1e-5, rtol=0)
    assert float((real - real[:1]).abs().amax()) > 1e-4
