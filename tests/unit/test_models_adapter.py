"""The unified-model adapter on a tiny random Janus (fp32, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from models import image_tokens as it
from models import load_unified_model, tiny_unified_model

PROMPTS = ["a red circle", "two blue squares on a white background"]  # different lengths: padding
QUESTIONS = ["what colour is it?", "how many shapes are there in the picture?"]


@pytest.fixture(scope="module")
def m():
    return tiny_unified_model(seed=0)


@pytest.fixture(scope="module")
def images(m):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(2, 48, 64, 3), dtype=np.uint8)  # not square: pad path


def test_image_sampler_logprobs_equal_teacher_forced(m):
    s = m.sample_image_tokens(PROMPTS, n=2, cfg_weight=5.0, temperature=0.8, seed=1)
    assert s.tokens.shape == (4, m.num_image_tokens) and s.logprobs.shape == s.tokens.shape
    lp = m.image_logprobs(PROMPTS, s.tokens, cfg_weight=5.0, temperature=0.8)
    torch.testing.assert_close(lp, s.logprobs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("implementation", ["reference", "static"])
def test_sampler_returns_the_logprobs_of_the_mode_the_learner_scores(m, implementation):
    # T2I-R1's conditional policy: the tokens are still drawn from the CFG mix (same draws
    # as the combined mode), but the log-probs that come back are log softmax(l_c / T), the
    # learner's side of the ratio, so the ratio is 1 on-policy in either mode.
    kw = dict(n=2, cfg_weight=5.0, temperature=0.8, seed=3, implementation=implementation)
    comb = m.sample_image_tokens(PROMPTS, **kw)
    cond = m.sample_image_tokens(PROMPTS, logprob_mode="conditional", **kw)
    assert torch.equal(cond.tokens, comb.tokens)
    with torch.no_grad():
        lp = m.image_logprobs(PROMPTS, cond.tokens, 5.0, mode="conditional", temperature=0.8)
    torch.testing.assert_close(lp, cond.logprobs, atol=1e-4, rtol=0)
    assert (cond.logprobs - comb.logprobs).abs().max() > 1e-2  # the two policies differ
    with pytest.raises(ValueError, match="logprob_mode"):
        m.sample_image_tokens(PROMPTS, n=1, logprob_mode="uncond")


def test_image_samples_grouped_by_prompt_and_seeded(m):
    a = m.sample_image_tokens(PROMPTS, n=3, seed=7)
    b = m.sample_image_tokens(PROMPTS, n=3, seed=7)
    assert torch.equal(a.tokens, b.tokens)
    # rows 0..2 belong to prompt 0: their log-probs are those of prompt 0, not prompt 1
    lp0 = m.image_logprobs([PROMPTS[0]] * 3, a.tokens[:3])
    torch.testing.assert_close(lp0, a.logprobs[:3], atol=1e-4, rtol=0)


def test_greedy_image_tokens_match_transformers_generate(m):
    ours = m.sample_image_tokens([PROMPTS[1]], n=1, cfg_weight=5.0, greedy=True)
    text = f"<|User|>: {PROMPTS[1]}\n\n<|Assistant|>:"
    inputs = m.processor(text=[text], generation_mode="image", return_tensors="pt")
    ref = m.hf.generate(**inputs, generation_mode="image", guidance_scale=5.0, do_sample=False)
    assert torch.equal(ours.tokens, ref)


def _first_token_logits(m, prompt):
    """Generation-head logits at <begin_of_image> for the conditional and unconditional prompt,
    each run alone through the plain HF model (no batching, no padding)."""
    tok = m.tokenizer
    cond = tok(
        [f"<|User|>: {prompt}\n\n<|Assistant|>:{tok.boi_token}"], return_tensors="pt"
    ).input_ids
    boi = tok.convert_tokens_to_ids(tok.boi_token)
    keep = (cond == tok.bos_token_id) | (cond == boi)
    uncond = cond.masked_fill(~keep, tok.pad_token_id)
    out = []
    for ids in (cond, uncond):
        h = m.hf.model.language_model(input_ids=ids).last_hidden_state[:, -1]
        out.append(m.hf.model.generation_head(h)[0])
    return out


def test_combined_and_conditional_modes_by_hand(m):
    s = m.sample_image_tokens([PROMPTS[0]], n=2, seed=3)
    l_c, l_u = _first_token_logits(m, PROMPTS[0])
    w, T = 5.0, 0.7
    # combined: softmax((l_u + w (l_c - l_u)) / T); conditional: softmax(l_c / T)
    want_comb = F.log_softmax((l_u + w * (l_c - l_u)) / T, -1)[s.tokens[:, 0]]
    want_cond = F.log_softmax(l_c / T, -1)[s.tokens[:, 0]]
    with torch.no_grad():
        comb = m.image_logprobs([PROMPTS[0]], s.tokens, cfg_weight=w, temperature=T)
        cond = m.image_logprobs([PROMPTS[0]], s.tokens, mode="conditional", temperature=T)
        # w = 1 reduces the CFG mix to the conditional branch: l_u + (l_c - l_u) = l_c
        w1 = it.logprobs(m.hf, m.tokenizer, [PROMPTS[0]], s.tokens, 1.0, T, "combined")
    torch.testing.assert_close(comb[:, 0], want_comb, atol=1e-5, rtol=0)
    torch.testing.assert_close(cond[:, 0], want_cond, atol=1e-5, rtol=0)
    torch.testing.assert_close(w1, cond, atol=1e-5, rtol=0)
    assert not torch.allclose(comb, cond)


def test_image_logprobs_batch_invariant(m):
    s = m.sample_image_tokens(PROMPTS, n=1, seed=5)
    with torch.no_grad():
        both = m.image_logprobs(PROMPTS, s.tokens)
        alone = torch.cat(
            [m.image_logprobs([p], s.tokens[i : i + 1]) for i, p in enumerate(PROMPTS)]
        )
    torch.testing.assert_close(both, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["combined", "conditional"])
@pytest.mark.parametrize("chunk", [1, 5, 16])
def test_chunked_image_logprobs_equal_one_pass_values_and_gradients(m, mode, chunk):
    # Chunks of 1, of 5 (K = 16 is no multiple of 5: a short last chunk) and of K: the same
    # log-probs and the same parameter gradients as the one-pass computation.
    s = m.sample_image_tokens(PROMPTS, n=2, seed=3)
    adv = torch.linspace(-1.0, 1.0, s.tokens.shape[0])[:, None]
    out = {}
    for c in (0, chunk):
        lp = m.image_logprobs(PROMPTS, s.tokens, mode=mode, chunk=c)
        (adv * lp).sum().backward()
        grads = {
            k: p.grad.clone() for k, p in m.trainable_parameters().items() if p.grad is not None
        }
        m.hf.zero_grad(set_to_none=True)
        out[c] = (lp.detach(), grads)
    torch.testing.assert_close(out[chunk][0], out[0][0], atol=1e-6, rtol=0)
    assert out[chunk][1].keys() == out[0][1].keys() and out[0][1]
    for k, g in out[0][1].items():
        err = (out[chunk][1][k] - g).abs().max().item()
        assert err <= 1e-5 * (1 + g.abs().max().item()), (k, err)


def test_image_logprob_chunk_must_not_be_negative(m):
    s = m.sample_image_tokens(PROMPTS[:1], n=1, seed=3)
    with pytest.raises(ValueError, match="chunk=-1"):
        m.image_logprobs(PROMPTS[:1], s.tokens, chunk=-1)


def test_text_sampler_logprobs_equal_teacher_forced(m, images):
    t = m.sample_text(images, QUESTIONS, n=2, temperature=0.9, max_new_tokens=12, seed=2)
    assert len(t.token_ids) == len(t.logprobs) == len(t.texts) == 4
    lp = m.text_logprobs(images, QUESTIONS, t.token_ids, temperature=0.9)
    for got, want in zip(lp.rows(), t.logprobs):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_text_logprobs_batch_invariant_and_eos_stops(m, images):
    t = m.sample_text(images, QUESTIONS, n=1, max_new_tokens=8, seed=4)
    with torch.no_grad():
        both = m.text_logprobs(images, QUESTIONS, t.token_ids).rows()
        alone = [
            m.text_logprobs(images[i : i + 1], [q], [t.token_ids[i]]).rows()[0]
            for i, q in enumerate(QUESTIONS)
        ]
    for a, b in zip(both, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    eos = m.tokenizer.eos_token_id
    for ids in t.token_ids:
        assert eos not in ids[:-1]  # nothing is kept after an end of sentence


def test_decode_encode_shapes(m):
    s = m.sample_image_tokens(PROMPTS, n=1, seed=0)
    imgs = m.decode_images(s.tokens)
    assert imgs.shape == (2, m.image_size, m.image_size, 3) and imgs.dtype == np.uint8
    codes = m.encode_images(imgs)
    assert codes.shape == (2, m.num_image_tokens) and codes.dtype == torch.long
    assert int(codes.max()) < m.hf.config.vq_config.num_embeddings
    pil = [Image.fromarray(i) for i in imgs]
    assert torch.equal(m.encode_images(pil), codes)


def test_decode_images_decodes_each_distinct_row_once(m):
    # rows 0, 2 and 3 are equal: the result is what decoding every row on its own gives (up
    # to one uint8 level: the convolutions' float sums depend on the batch size), and equal
    # rows get identical images
    tok = torch.randint(0, m.hf.config.vq_config.num_embeddings, (2, m.num_image_tokens))
    rows = tok[[0, 1, 0, 0]]  # [4, K]
    got = m.decode_images(rows)
    alone = np.stack([m.decode_images(r[None])[0] for r in rows])
    assert np.abs(got.astype(int) - alone.astype(int)).max() <= 1
    assert np.array_equal(got[0], got[2]) and np.array_equal(got[0], got[3])
    assert np.array_equal(got[[0, 1]], m.decode_images(tok))  # the same as without repeats


def test_dual_likelihoods_are_batch_invariant_mean_logprobs(m, images):
    texts = ["a red circle", "a very large blue square in the middle"]
    r_u = m.dual_likelihood_understanding(images, texts)
    r_g = m.dual_likelihood_generation(images, texts)
    assert len(r_u) == len(r_g) == 2 and all(r < 0 for r in r_u + r_g)
    for i in range(2):
        assert r_u[i] == pytest.approx(
            m.dual_likelihood_understanding(images[i : i + 1], [texts[i]])[0], abs=1e-5
        )
        assert r_g[i] == pytest.approx(
            m.dual_likelihood_generation(images[i : i + 1], [texts[i]])[0], abs=1e-5
        )
    # a uniform policy over V codes would give -log V; a random tiny model is near it
    V = m.hf.config.vq_config.num_embeddings
    assert abs(r_u[0] + np.log(V)) < 1.0


def test_save_load_round_trip(m, images, tmp_path):
    m.save(tmp_path / "ckpt")
    m2 = load_unified_model(tmp_path / "ckpt")
    a, b = (x.sample_image_tokens(PROMPTS, n=2, seed=11) for x in (m, m2))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    ta, tb = (x.sample_text(images, QUESTIONS, n=1, max_new_tokens=6, seed=1) for x in (m, m2))
    assert ta.token_ids == tb.token_ids and ta.texts == tb.texts


def test_frozen_parameters_get_no_gradient(m, images):
    s = m.sample_image_tokens(PROMPTS, n=1, seed=0)
    t = m.sample_text(images, QUESTIONS, n=1, max_new_tokens=4, seed=0)
    m.hf.zero_grad(set_to_none=True)
    loss = (
        m.image_logprobs(PROMPTS, s.tokens).sum()
        + m.text_logprobs(images, QUESTIONS, t.token_ids).values.sum()
    )
    loss.backward()
    trainable = m.trainable_parameters()
    for name, p in m.hf.named_parameters():
        if name.startswith(("model.vision_model.", "model.vqmodel.")):
            assert name not in trainable and p.grad is None, name
    for key in (
        "model.generation_head.vision_head.weight",
        "lm_head.weight",
        "model.aligner.fc1.weight",
        "model.language_model.layers.0.mlp.up_proj.weight",
    ):
        assert trainable[key].grad is not None and trainable[key].grad.abs().sum() > 0, key
    m.hf.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, im: m.sample_image_tokens(["a cat"], n=1, cfg_weight=1.0), "cfg_weight"),
        (lambda m, im: m.sample_image_tokens(["a cat", "  "], n=1), r"prompts\[1\]"),
        (lambda m, im: m.sample_image_tokens([], n=1), "prompts is empty"),
        (lambda m, im: m.sample_image_tokens(["a cat"], n=0), "n=0"),
        (lambda m, im: m.sample_image_tokens("a cat", n=1), "list of strings"),
        (
            lambda m, im: m.sample_text(np.zeros((1, 8, 8, 4), np.uint8), ["q"], n=1),
            r"images\[0\].*channels",
        ),
        (lambda m, im: m.sample_text([Image.new("L", (8, 8))], ["q"], n=1), "mode 'L'"),
        (lambda m, im: m.sample_text(im.astype(np.float32), QUESTIONS, n=1), "uint8"),
        (lambda m, im: m.sample_text(im, QUESTIONS[:1], n=1), "2 images for 1 questions"),
        (
            lambda m, im: m.image_logprobs(["a"], torch.zeros(1, 3, dtype=torch.long)),
            r"expected \[N, 16\]",
        ),
    ],
)
def test_bad_input_gets_clear_errors(m, images, call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(m, images)


def test_missing_checkpoint_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.path"):
        load_unified_model(tmp_path / "nope")
