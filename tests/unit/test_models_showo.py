"""The Show-o family: layout and omni-attention mask by hand, the one-step estimator against a
brute-force loop, the MaskGIT schedule, the published checkpoint layout, the interface."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from models.config import ConfigError, MaskedDiffusionConfig, ModelConfig
from models.interface import UnifiedPolicy
from models.registry import build_policy
from models.showo import check_checkpoint_dir, load_showo, tiny_showo
from models.showo_diffusion import keep_mask, sample
from models.showo_layout import additive, t2i_mask, t2i_prefix

PROMPTS = ["a red circle on a white background", "two blue squares"]


@pytest.fixture(scope="module")
def tiny():
    m = tiny_showo(0)
    m.settings = dataclasses.replace(m.settings, steps=4)
    return m


@contextlib.contextmanager
def settings(m, **changes):
    """``m.settings`` (model.diffusion) changed for a block, restored even if it fails."""
    old = m.settings
    m.settings = dataclasses.replace(old, **changes)
    try:
        yield m
    finally:
        m.settings = old


def _palette_images(n, seed=0):
    from models.palette_vq import palette_rgb

    rng = np.random.default_rng(seed)
    corners = ((palette_rgb().numpy() + 1) * 127.5).astype(np.uint8)  # [6, 3]
    cells = rng.integers(0, 6, (n, 4, 4))
    img = corners[cells]  # [n, 4, 4, 3]
    return img.repeat(16, 1).repeat(16, 2), cells.reshape(n, -1)


def test_omni_mask_by_hand(tiny):
    # one row: [PAD] <t2i> <bos> w <eos> <soi> img img <eoi>, the word w dropped
    v = tiny.vocab
    seq = torch.tensor([[v.pad, v.t2i, v.bos, 5, v.eos, v.soi, v.mask, v.mask, v.eoi]])
    keep = torch.ones(1, 9, dtype=torch.bool)
    keep[0, 3] = False
    allowed = t2i_mask(seq, v, keep, torch.float32)[0, 0] == 0  # [9, 9]
    expect = torch.zeros(9, 9, dtype=torch.bool)
    real = [1, 2, 4, 5, 6, 7, 8]  # neither the pad nor the dropped word
    for i in range(9):
        for j in real:
            # text: causal; the image segment <soi>..<eoi> (positions 5..8) sees everything
            expect[i, j] = j <= i or i >= 5
        expect[i, i] = True  # every row keeps itself (finite softmax)
    assert torch.equal(allowed, expect)


def test_t2i_prefix_pads_left_and_cuts_keeping_eos(tiny):
    v = tiny.vocab
    assert t2i_prefix([7, 8], v, 5) == [v.pad, v.pad, v.t2i, v.bos, 7, 8, v.eos][-6:]
    cut = t2i_prefix(list(range(10, 20)), v, 5)
    assert len(cut) == 6 and cut[:3] == [v.t2i, v.bos, 10] and cut[-1] == v.eos


def test_keep_mask_is_a_seeded_function_of_prompt_and_tokens(tiny):
    v = tiny.vocab
    prefix = t2i_prefix(list(range(40, 60)), v, 32)
    tok = torch.arange(16)
    a = keep_mask("p", tok, prefix, v, 0.3, seed=0)
    assert torch.equal(a, keep_mask("p", tok.clone(), prefix, v, 0.3, seed=0))
    others = [keep_mask("p", tok, prefix, v, 0.3, seed=s) for s in range(1, 200)]
    assert any(not torch.equal(a, o) for o in others)
    assert any(not torch.equal(a, keep_mask("p", tok + i, prefix, v, 0.3, 0)) for i in range(1, 50))
    # only the 20 text tokens drop (never the pads, <t2i>, <bos>, <eos>), ~30% of them
    text = torch.zeros(len(prefix), dtype=torch.bool)
    text[prefix.index(v.t2i) + 2 : -1] = True
    dropped = torch.stack([~o for o in others]).float()  # [199, P]
    assert dropped[:, ~text].sum() == 0
    assert abs(dropped[:, text].mean().item() - 0.3) < 0.03
    assert bool(keep_mask("p", tok, prefix, v, 0.0, seed=0).all())


def _brute_force(m, prompt, tokens, cfg_weight, mode, p, seed, canvas=None):
    """One row at a time: the sequence as a Python list, the mask by a double loop; the image
    part is ``canvas`` (ids, one list per row) or all ``[MASK]``."""
    v, K, P = m.vocab, m.num_image_tokens, m.max_text_len + 1
    out = []
    for r in range(tokens.shape[0]):
        streams = []
        image = [v.mask] * K if canvas is None else list(canvas[r])
        for text in (prompt, "") if mode == "combined" else (prompt,):
            ids = m.tokenizer(text, add_special_tokens=False).input_ids if text else []
            body = [v.t2i, v.bos, *ids, v.eos]
            seq = [v.pad] * (P - len(body)) + body + [v.soi] + image + [v.eoi]
            keep = [True] * len(seq)
            if text:
                keep[:P] = keep_mask(text, tokens[r], seq[:P], v, p, seed).tolist()
            L = len(seq)
            allowed = torch.zeros(1, L, L, dtype=torch.bool)
            for i in range(L):
                for j in range(L):
                    ok_key = seq[j] != v.pad and keep[j]
                    allowed[0, i, j] = i == j or (ok_key and (j <= i or i >= P))
            logits = m.net.showo(
                input_ids=torch.tensor([seq]),
                attention_mask=additive(allowed, torch.float32),
                position_ids=torch.arange(L)[None],
            ).logits[0, P + 1 : P + 1 + K, v.image_offset : v.image_offset + v.codebook_size]
            streams.append(logits.float())
        pol = (
            streams[1] + cfg_weight * (streams[0] - streams[1]) if len(streams) == 2 else streams[0]
        )
        lp = torch.log_softmax(pol, -1)
        out.append(torch.stack([lp[k, tokens[r, k]] for k in range(K)]))
    return torch.stack(out)


@pytest.mark.parametrize("mode,p", [("combined", 0.3), ("conditional", 0.5), ("combined", 0.0)])
def test_one_step_estimator_matches_brute_force(tiny, mode, p):
    m = tiny
    m.settings = dataclasses.replace(m.settings, prompt_drop_prob=p, mask_seed=3)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, m.vocab.codebook_size, (3, m.num_image_tokens), generator=g)
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0]]
    with torch.no_grad():
        fast = m.image_logprobs(prompts, tokens, cfg_weight=3.0, mode=mode)
        for i in range(3):
            slow = _brute_force(m, prompts[i], tokens[i : i + 1], 3.0, mode, p, 3)
            torch.testing.assert_close(fast[i : i + 1], slow, atol=1e-5, rtol=1e-5)


def test_sampler_returns_the_learners_estimate_and_is_seeded(tiny):
    s = tiny.sample_image_tokens(PROMPTS, n=2, cfg_weight=3.0, seed=7)
    assert s.tokens.shape == (4, 16) and s.logprobs.shape == (4, 16)
    again = tiny.sample_image_tokens(PROMPTS, n=2, cfg_weight=3.0, seed=7)
    assert torch.equal(s.tokens, again.tokens)
    lp = tiny.image_logprobs(PROMPTS, s.tokens, cfg_weight=3.0)  # one prompt per group of 2
    assert lp.requires_grad
    torch.testing.assert_close(lp.detach(), s.logprobs, atol=1e-6, rtol=0)  # ratio 1 on-policy
    cond = tiny.sample_image_tokens(PROMPTS, 1, 3.0, seed=7, logprob_mode="conditional")
    torch.testing.assert_close(
        cond.logprobs, tiny.image_logprobs(PROMPTS, cond.tokens, mode="conditional").detach()
    )


@pytest.mark.parametrize("mode", ["combined", "conditional"])
def test_trajectory_estimator_matches_brute_force_on_the_samplers_canvases(tiny, mode):
    # the sampler records the step that revealed each code; the canvas it fed the model at
    # step s must hold exactly the codes with order < s, and each code's log-prob, from the
    # sampler and from the learner's image_logprobs(order=...), must equal a one-row
    # brute-force forward pass on that canvas
    m, v, K = tiny, tiny.vocab, tiny.num_image_tokens
    seen = []

    def recording(seq, mask):
        seen.append(seq.clone())
        return m._logits(seq, mask)

    text = m._text_ids(PROMPTS)
    with torch.no_grad():
        codes, order, step_lp = sample(
            recording, v, text, K, cfg_weight=3.0, temperature=1.0, steps=6,
            schedule="cosine", remask_temperature=1.0, max_text_len=m.max_text_len,
            generator=torch.Generator().manual_seed(1), greedy=False, dtype=m.dtype,
            device=m.device, logprob_mode=mode,
        )  # fmt: skip
    assert len(seen) == 6 and order.min() == 0 and order.max() == 5
    sl = slice(m.max_text_len + 2, m.max_text_len + 2 + K)  # <soi> at max_text_len + 1
    for s, seq in enumerate(seen):
        want = torch.where(order < s, codes + v.image_offset, v.mask)
        assert torch.equal(seq[: len(PROMPTS), sl], want)
    with settings(m, logprob_estimator="trajectory"):
        learner = m.image_logprobs(PROMPTS, codes, cfg_weight=3.0, mode=mode, order=order)
    assert learner.requires_grad
    with torch.no_grad():
        for r, prompt in enumerate(PROMPTS):
            for k in range(K):
                canvas = torch.where(order[r] < order[r, k], codes[r] + v.image_offset, v.mask)
                slow = _brute_force(m, prompt, codes[r : r + 1], 3.0, mode, 0.0, 0,
                                    canvas=[canvas.tolist()])  # fmt: skip
                torch.testing.assert_close(step_lp[r, k], slow[0, k], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(learner[r, k].detach(), slow[0, k], atol=1e-5, rtol=1e-5)
    # through the interface: the samples carry the order, and a re-score is exact
    with settings(m, logprob_estimator="trajectory", steps=6):
        out = m.sample_image_tokens(PROMPTS, n=2, cfg_weight=3.0, seed=3, logprob_mode=mode)
        assert out.order is not None and out.order.shape == out.tokens.shape
        again = m.image_logprobs(PROMPTS, out.tokens, 3.0, mode=mode, order=out.order).detach()
        torch.testing.assert_close(again, out.logprobs, atol=1e-5, rtol=0)
        # without an order the same tokens get the one-step estimate (DSR's R_U of data images)
        one = m.image_logprobs(PROMPTS, out.tokens, 3.0, mode=mode).detach()
        assert not torch.allclose(one, again)
        assert m.image_streams(mode) == (2 if mode == "combined" else 1) * 6
    assert m.image_streams(mode) == (2 if mode == "combined" else 1)  # one_step: one canvas


def test_each_code_gets_the_gradient_of_its_own_step_only(tiny):
    # d lp_k / d theta must be that of code k's own canvas: the trajectory estimate's
    # gradient equals a loop that scores each step's codes on that step's canvas alone
    from models.showo_diffusion import trajectory_logprobs

    m, v, K = tiny, tiny.vocab, tiny.num_image_tokens
    text = m._text_ids(PROMPTS)
    with torch.no_grad():
        codes, order, _ = sample(
            m._logits, v, text, K, cfg_weight=3.0, temperature=1.0, steps=5,
            schedule="cosine", remask_temperature=1.0, max_text_len=m.max_text_len,
            generator=torch.Generator().manual_seed(4), greedy=False, dtype=m.dtype,
            device=m.device, logprob_mode=None,
        )  # fmt: skip
    weights = torch.randn(codes.shape, generator=torch.Generator().manual_seed(0))
    params = [p for p in m.module.parameters() if p.requires_grad]

    def grads(total):
        return torch.autograd.grad(total, params, allow_unused=True)

    lp = trajectory_logprobs(m._logits, v, text, codes, order, cfg_weight=3.0,
                             temperature=1.0, mode="combined", max_text_len=m.max_text_len,
                             dtype=m.dtype)  # fmt: skip
    fast = grads((lp * weights).sum())
    total = 0.0
    for s in range(5):
        canvas = torch.where(order < s, codes, -1)
        known = canvas >= 0
        one = trajectory_logprobs(m._logits, v, text, codes, torch.where(known, 0, 1),
                                  cfg_weight=3.0, temperature=1.0, mode="combined",
                                  max_text_len=m.max_text_len, dtype=m.dtype)  # fmt: skip
        total = total + (one * weights * (order == s)).sum()  # step s's canvas, its codes
    slow = grads(total)
    for a, b in zip(fast, slow):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_learner_scores_rollouts_by_their_reveal_order(tiny):
    # the learner's score(): rollouts as the image worker builds them, order in int32; mixed
    # rows (one worker with, one without an order) are an error naming the setting
    from actors.types import Rollout, RolloutRequest
    from learner.learner import score
    from models.config import ModelConfig

    m = tiny
    with settings(m, logprob_estimator="trajectory"):
        s = m.sample_image_tokens(PROMPTS, n=2, cfg_weight=3.0, seed=5, logprob_mode="conditional")
    rollouts = [
        Rollout(RolloutRequest(i // 2, 0, "gen", PROMPTS[i // 2], 2, 5), i % 2,
                s.tokens[i].numpy(), s.logprobs[i].numpy(), 0,
                image_order=s.order[i].numpy().astype(np.int32))
        for i in range(4)
    ]  # fmt: skip
    cfg = ModelConfig(arch="showo", cfg_weight=3.0, image_logprob_mode="conditional")
    got = score(m, rollouts, "gen", cfg)
    torch.testing.assert_close(got.values.detach(), s.logprobs, atol=1e-5, rtol=0)
    rollouts[3] = dataclasses.replace(rollouts[3], image_order=None)
    with pytest.raises(ValueError, match="logprob_estimator"):
        score(m, rollouts, "gen", cfg)


def test_janus_refuses_a_reveal_order():
    from models.unified import tiny_unified_model

    m = tiny_unified_model(0)
    tokens = torch.zeros(1, m.num_image_tokens, dtype=torch.long)
    with pytest.raises(ValueError, match="raster order"):
        m.image_logprobs(["p"], tokens, order=torch.zeros_like(tokens))


def test_unmasking_follows_the_cosine_schedule(tiny):
    # K = 16, S = 4: still masked after step s = floor(16 cos(pi/2 (s+1)/4)), at most all but
    # one of those masked before: 14.78 -> 14, 11.31 -> 11, 6.12 -> 6, then all revealed.
    seen = []

    def logits_fn(seq, mask):
        seen.append(int((seq[0] == tiny.vocab.mask).sum()))
        return tiny._logits(seq, mask)

    ids = [tiny.tokenizer(PROMPTS[0], add_special_tokens=False).input_ids]
    codes, _, _ = sample(
        logits_fn, tiny.vocab, ids, 16, cfg_weight=3.0, temperature=1.0, steps=4,
        schedule="cosine", remask_temperature=1.0, max_text_len=tiny.max_text_len,
        generator=torch.Generator().manual_seed(0), greedy=False, dtype=torch.float32,
        device="cpu",
    )  # fmt: skip
    assert seen == [16, 14, 11, 6]  # row 0 (conditional) of each step's one forward pass
    assert codes.shape == (1, 16) and int(codes.min()) >= 0
    assert math.floor(16 * math.cos(math.pi / 8)) == 14


def test_gumbel_noise_by_hand():
    from models.showo_diffusion import gumbel

    u = torch.tensor([0.5, 0.1, 0.0, 1.0])
    want = [-math.log(-math.log(0.5)), -math.log(-math.log(0.1))]
    torch.testing.assert_close(gumbel(u)[:2], torch.tensor(want))
    assert bool(torch.isfinite(gumbel(u)).all())


@pytest.mark.parametrize("remask_temperature", [0.0, 1e-3])
def test_the_least_confident_are_masked_again_and_revealed_codes_stay(tiny, remask_temperature):
    # a model whose position k draws uniformly among k + 1 codes: confidence log p = -log(k+1)
    # whatever is drawn, so step 0 of 2 keeps the 5 most confident positions 0..4 (16 - 11
    # still masked) and step 1 fills the rest around them. Re-mask noise of scale 1e-3 moves
    # no confidence past its neighbour's (gaps >= log(16/15) = 0.065); a NaN in the noise
    # (it was -log(-(log u clamped >= 1e-20))) ranked by position instead and re-masked codes
    # already revealed.
    v, K, C = tiny.vocab, tiny.num_image_tokens, tiny.vocab.codebook_size
    sl, seen = slice(tiny.max_text_len + 2, tiny.max_text_len + 2 + K), []

    def logits_fn(seq, mask):
        seen.append(seq[0, sl].clone())
        out = torch.full((seq.shape[0], seq.shape[1], v.image_offset + C), -1e4)
        for k in range(K):
            out[:, sl.start + k, v.image_offset : v.image_offset + k + 1] = 0.0
        return out

    ids = [tiny.tokenizer(PROMPTS[0], add_special_tokens=False).input_ids]
    codes, order, lp = sample(
        logits_fn, v, ids, K, cfg_weight=3.0, temperature=1.0, steps=2, schedule="cosine",
        remask_temperature=remask_temperature, max_text_len=tiny.max_text_len,
        generator=torch.Generator().manual_seed(0), greedy=False, dtype=torch.float32,
        device="cpu",
    )  # fmt: skip
    assert math.floor(16 * math.cos(math.pi / 4)) == 11
    assert order[0].tolist() == [0] * 5 + [1] * 11
    assert torch.equal(seen[1][:5], codes[0, :5] + v.image_offset)
    assert bool((seen[1][5:] == v.mask).all())
    assert all(int(codes[0, k]) <= k for k in range(K))
    torch.testing.assert_close(lp[0], -torch.log(torch.arange(1, K + 1).float()))


def test_text_sampling_and_teacher_forcing_agree(tiny):
    images, _ = _palette_images(2)
    questions = ["what colour is the top left cell?", "how many?"]
    t = tiny.sample_text(images, questions, n=2, max_new_tokens=5, seed=0)
    tf = tiny.text_logprobs(images, questions, t.token_ids)
    for a, b in zip(tf.rows(), t.logprobs):
        torch.testing.assert_close(a.detach(), b, atol=1e-5, rtol=0)
    assert tiny.prompt_length(images[0], "hi") > tiny.num_image_tokens


def test_palette_tokenizer_round_trip(tiny):
    images, cells = _palette_images(3, seed=1)
    codes = tiny.encode_images(images)
    assert torch.equal(codes, torch.as_tensor(cells))
    assert np.array_equal(tiny.decode_images(codes), images)


def test_dual_likelihoods_are_mean_log_probs(tiny):
    images, _ = _palette_images(2)
    r_u = tiny.dual_likelihood_understanding(images, PROMPTS)
    r_g = tiny.dual_likelihood_generation(images, PROMPTS)
    codes = tiny.encode_images(images)
    expect = tiny.image_logprobs(PROMPTS, codes, mode="conditional").mean(-1)
    assert r_u == pytest.approx(expect.tolist(), abs=1e-6)
    assert all(-12 < x < 0 for x in r_u + r_g)


def test_builder_configures_and_names_agree():
    cfg = ModelConfig(arch="showo", diffusion=MaskedDiffusionConfig(steps=3, mask_seed=5))
    worker, learner = build_policy(cfg), build_policy(cfg, dtype="float32")
    assert isinstance(worker, UnifiedPolicy)
    assert worker.settings.steps == 3 and worker.settings.mask_seed == 5
    assert list(worker.trainable_parameters()) == list(learner.trainable_parameters())
    names = [n for _, g in worker.components() for n in g]
    assert len(names) == len(set(names)) == len(list(worker.module.named_parameters()))
    assert "showo.lm_head.weight" in names
    with pytest.raises(ConfigError, match="model.image_implementation"):
        ModelConfig(arch="showo", image_implementation="static").validate()
    with pytest.raises(ConfigError, match="model.diffusion.schedule"):
        MaskedDiffusionConfig(schedule="exp").validate()


def test_published_layout_loads(tiny, tmp_path):
    # Show-o's own layout: config.json with its keys, pytorch_model.bin named showo.*, and the
    # Phi config + tokenizer in a separate directory that llm_model_path names (absolute).
    ckpt, llm = tmp_path / "show-o", tmp_path / "phi"
    tiny.net.showo.config.save_pretrained(llm)
    tok = tiny.tokenizer
    tok.save_pretrained(llm)
    ckpt.mkdir()
    cfg = {k: v for k, v in tiny.config.items() if k != "max_seq_length"}
    cfg["llm_model_path"] = str(llm)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    torch.save(tiny.net.state_dict(), ckpt / "pytorch_model.bin")
    assert "showo.model.layers.0.self_attn.q_proj.weight" in tiny.net.state_dict()
    m = load_showo(ckpt)
    assert m.max_text_len == 128 and m.vq is None  # Show-o's default; no MAGVIT-v2 here
    for n, p in tiny.trainable_parameters().items():
        assert torch.equal(p, m.trainable_parameters()[n]), n
    with pytest.raises(RuntimeError, match="MAGVIT-v2"):
        m.decode_images(torch.zeros(1, 16, dtype=torch.long))
    # ShowoModel.save: the same layout, self-contained, read back equal
    tiny.save(tmp_path / "saved")
    back = load_showo(tmp_path / "saved")
    back.settings = tiny.settings  # model.diffusion is run config, not checkpoint
    codes = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            back.image_logprobs(PROMPTS, codes, 3.0), tiny.image_logprobs(PROMPTS, codes, 3.0)
        )


def test_checkpoint_errors_name_the_key_and_the_fix(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.path.*tiny random Show-o"):
        check_checkpoint_dir(tmp_path / "none")
    d = tmp_path / "janus"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "janus"}))
    with pytest.raises(ValueError, match="lacks Show-o's keys"):
        check_checkpoint_dir(d)
    tiny.save(tmp_path / "ok")
    cfg = json.loads((tmp_path / "ok" / "config.json").read_text())
    (tmp_path / "ok" / "config.json").write_text(json.dumps({**cfg, "llm_model_path": "x/y"}))
    with pytest.raises(FileNotFoundError, match="llm_model_path='x/y'.*phi-1_5"):
        check_checkpoint_dir(tmp_path / "ok")
    (tmp_path / "ok" / "config.json").write_text(json.dumps({**cfg, "w_clip_vit": True}))
    with pytest.raises(ValueError, match="w_clip_vit"):
        check_checkpoint_dir(tmp_path / "ok")
