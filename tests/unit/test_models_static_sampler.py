"""The static-cache image sampler against the reference loop (tiny random Janus, fp32, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from models import image_tokens, static_sampler, tiny_unified_model
from models.config import IMAGE_IMPLEMENTATIONS, ConfigError, ModelConfig
from models.unified import IMAGE_SAMPLERS

# Three prompt lengths: the batch is left-padded to the longest one.
PROMPTS = ["a", "a red circle", "two blue squares on a white background in the middle"]


@pytest.fixture(scope="module")
def m():
    return tiny_unified_model(seed=0)


def _both(m, n, cfg_weight, temperature, seed, greedy=False, **kw):
    ref = image_tokens.sample(m.hf, m.tokenizer, PROMPTS, n, cfg_weight, temperature, seed, greedy)
    fast = static_sampler.sample(
        m.hf, m.tokenizer, PROMPTS, n, cfg_weight, temperature, seed, greedy, **kw
    )
    return ref, fast


@pytest.mark.parametrize(
    "n, cfg_weight, temperature, seed, kv_bucket",
    [
        (3, 5.0, 0.7, 1, 4),  # kv_bucket 4: the attention length changes every 4 steps
        (2, 3.0, 1.3, 2, 64),  # one bucket: the whole cache every step
        (1, 5.0, 1.0, 3, 1),  # exact length every step
    ],
)
def test_same_seed_same_tokens_and_logprobs(m, n, cfg_weight, temperature, seed, kv_bucket):
    (t_ref, lp_ref), (t_fast, lp_fast) = _both(
        m, n, cfg_weight, temperature, seed, kv_bucket=kv_bucket
    )
    assert t_fast.shape == (len(PROMPTS) * n, m.num_image_tokens)
    assert torch.equal(t_fast, t_ref)
    # same ops on the same numbers up to the masked cache columns: float rounding only
    torch.testing.assert_close(lp_fast, lp_ref, atol=1e-5, rtol=0)
    # not a degenerate sample: the n draws of one prompt differ
    if n > 1:
        assert not torch.equal(t_fast[0], t_fast[1])


def test_greedy_equal(m):
    (t_ref, lp_ref), (t_fast, lp_fast) = _both(m, 2, 5.0, 1.0, None, greedy=True, kv_bucket=8)
    assert torch.equal(t_fast, t_ref)
    assert torch.equal(t_fast[0], t_fast[1])  # greedy: both samples of a prompt agree
    torch.testing.assert_close(lp_fast, lp_ref, atol=1e-5, rtol=0)


def test_reused_cache_does_not_leak_between_calls(m):
    # Same shape twice (the cache is reused), then a shorter batch (a new prompt length).
    for prompts, seed in [(PROMPTS, 5), (PROMPTS[::-1], 6), (PROMPTS[:1], 7)]:
        ref = image_tokens.sample(m.hf, m.tokenizer, prompts, 2, 5.0, 0.9, seed)
        fast = static_sampler.sample(m.hf, m.tokenizer, prompts, 2, 5.0, 0.9, seed, kv_bucket=4)
        assert torch.equal(fast[0], ref[0])
        torch.testing.assert_close(fast[1], ref[1], atol=1e-5, rtol=0)


def test_static_logprobs_equal_teacher_forced(m):
    s = m.sample_image_tokens(PROMPTS, n=2, temperature=0.8, seed=4, implementation="static")
    with torch.no_grad():
        lp = m.image_logprobs(PROMPTS, s.tokens, temperature=0.8)
    torch.testing.assert_close(lp, s.logprobs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_static_equals_reference_under_each_attention_implementation(attn):
    # Prompts of three lengths: left padding and the empty bucket columns must stay masked.
    # Eager attention adds the mask to the scores: a boolean mask there would add 0/1.
    m = tiny_unified_model(seed=0)
    m.hf.set_attn_implementation(attn)
    (t_ref, lp_ref), (t_fast, lp_fast) = _both(m, 2, 5.0, 0.8, 11, kv_bucket=4)
    assert static_sampler.attention_kind(m.hf) == {"eager": "additive", "sdpa": "boolean"}[attn]
    assert torch.equal(t_fast, t_ref)
    torch.testing.assert_close(lp_fast, lp_ref, atol=1e-5, rtol=0)


def test_unsupported_attention_is_refused_with_the_fix(m):
    hf = tiny_unified_model(seed=0).hf
    hf.config.text_config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="attn_implementation='sdpa'.*'reference'"):
        static_sampler.sample(hf, m.tokenizer, PROMPTS[:1], 1, 5.0, 1.0, 0)


def test_pick_by_hand():
    # One row, V = 3. l_c = [2, 0, 0], l_u = 0, w = 2, T = 1: the mixed logits are
    # l_u + w (l_c - l_u) = [4, 0, 0], so log p_0 = 4 - log(e^4 + 2), log p_1 = -log(e^4 + 2).
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # [2N = 2, V = 3]: cond, uncond
    z = math.log(math.exp(4) + 2)
    tok, lp = static_sampler.pick(logits, None, 2.0, 1.0)  # greedy
    assert tok.tolist() == [0] and lp.item() == pytest.approx(4 - z, abs=1e-6)
    # argmax(p / q): q_0 = 1e6 makes p_0 / q_0 < 1e-6 < p_1 = p_2; ties go to the first index
    tok, lp = static_sampler.pick(logits, torch.tensor([[1e6, 1.0, 1.0]]), 2.0, 1.0)
    assert tok.tolist() == [1] and lp.item() == pytest.approx(-z, abs=1e-6)
    # T = 2 halves the mixed logits: log p_2 = -log(e^2 + 2)
    tok, lp = static_sampler.pick(logits, torch.tensor([[1e6, 1e6, 1.0]]), 2.0, 2.0)
    assert tok.tolist() == [2] and lp.item() == pytest.approx(-math.log(math.exp(2) + 2), abs=1e-6)


def test_multinomial_is_the_exponential_race():
    # The identity the static sampler relies on for equal draws (module docstring).
    p = torch.softmax(torch.randn(6, 50, generator=torch.Generator().manual_seed(0)) * 3, -1)
    g = torch.Generator().manual_seed(11)
    a = torch.stack([torch.multinomial(p, 1, generator=g).squeeze(-1) for _ in range(20)])
    g.manual_seed(11)
    b = torch.stack(
        [(p / torch.empty_like(p).exponential_(generator=g)).argmax(-1) for _ in range(20)]
    )
    assert torch.equal(a, b)


def test_registry_dispatch_and_unknown_name(m):
    assert tuple(IMAGE_SAMPLERS) == IMAGE_IMPLEMENTATIONS
    a = m.sample_image_tokens(PROMPTS, n=1, seed=9)
    b = m.sample_image_tokens(PROMPTS, n=1, seed=9, implementation="static")
    assert torch.equal(a.tokens, b.tokens)
    with pytest.raises(ValueError, match=r"'fast'.*\('reference', 'static'\)"):
        m.sample_image_tokens(PROMPTS, n=1, seed=9, implementation="fast")
    with pytest.raises(ValueError, match="kv_bucket"):
        static_sampler.sample(m.hf, m.tokenizer, PROMPTS, 1, 5.0, 1.0, 0, kv_bucket=0)
    with pytest.raises(ValueError, match="compile='jit'"):
        static_sampler.sample(m.hf, m.tokenizer, ["other shape"], 3, 5.0, 1.0, 0, compile="jit")


def test_config_field():
    ModelConfig(image_implementation="static").validate()
    with pytest.raises(ConfigError, match=r"model.image_implementation='fast'.*Fix"):
        ModelConfig(image_implementation="fast").validate()


@pytest.mark.slow
def test_compiled_step_is_one_graph_and_equal(m):
    # backend aot_eager + fullgraph: tracing fails on any graph break (a host sync included).
    # One graph for every attention length: a recompile per kv bucket (or a second one when
    # S first changes, or at the last bucket) costs minutes of inductor time on a GPU.
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        (t_ref, lp_ref), (t_fast, lp_fast) = _both(
            m, 2, 5.0, 0.7, 3, kv_bucket=8, compile="aot_eager"
        )
    finally:
        static_sampler.release(m.hf)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert torch.equal(t_fast, t_ref)
    torch.testing.assert_close(lp_fast, lp_ref, atol=1e-5, rtol=0)


@pytest.mark.gpu
def test_cuda_graphs_equal_reference_fp32():
    m = tiny_unified_model(seed=0).to("cuda")
    (t_ref, lp_ref), (t_fast, lp_fast) = _both(m, 2, 5.0, 0.7, 3, kv_bucket=8)
    assert torch.equal(t_fast, t_ref)
    torch.testing.assert_close(lp_fast, lp_ref, atol=1e-4, rtol=0)
