"""Converting DeepSeek's original Janus layout (``multi_modality``) into transformers' format.

The tiny random Janus is written in the original layout (DeepSeek's config keys, weight
names, fused qkv, timm's batched position embedding, the dropped pooling head and codebook
statistics, tokenizer and VLChatProcessor files), converted, loaded, and compared with the
model it was written from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer

from models import convert as cv
from models import image_tokens, load_unified_model, tiny_unified_model
from models.tiny import EXTRA_SPECIAL_TOKENS, ROLE_TOKENS, SPECIAL_TOKENS, TinyShape

PROMPTS = ["a red circle", "two blue squares on a white background"]
QUESTIONS = ["what colour is it?", "how many shapes are there in the picture?"]

# ---- writing the original layout -------------------------------------------------------

# transformers name prefix -> DeepSeek's (janus/models/modeling_vlm.py module names)
_PREFIXES = [
    (
        "model.vision_model.embeddings.patch_embedding.",
        "vision_model.vision_tower.patch_embed.proj.",
    ),
    (
        "model.vision_model.embeddings.position_embedding.weight",
        "vision_model.vision_tower.pos_embed",
    ),
    ("model.vision_model.post_layernorm.", "vision_model.vision_tower.norm."),
    ("model.vision_model.encoder.layers.", "vision_model.vision_tower.blocks."),
    ("model.aligner.fc1.", "aligner.layers.0."),
    ("model.aligner.hidden_layers.0.", "aligner.layers.2."),
    ("model.generation_aligner.fc1.", "gen_aligner.layers.0."),
    ("model.generation_aligner.hidden_layers.0.", "gen_aligner.layers.2."),
    ("model.generation_embeddings.", "gen_embed."),
    ("model.generation_head.proj_out.", "gen_head.output_mlp_projector."),
    ("model.generation_head.vision_head.", "gen_head.vision_head."),
    ("model.vqmodel.", "gen_vision_model."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
]
_INNER = [  # inside the SigLIP blocks and the VQ encoder/decoder
    (".layer_norm1.", ".norm1."),
    (".layer_norm2.", ".norm2."),
    (".self_attn.projection_layer.", ".attn.proj."),
    (".down.", ".conv_blocks."),
    (".up.", ".conv_blocks."),
    (".block.", ".res."),
    (".mid.block_1.", ".mid.0."),
    (".mid.attn_1.", ".mid.1."),
    (".mid.block_2.", ".mid.2."),
]


def original_state_dict(hf_model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tiny model's weights under DeepSeek's names, as their checkpoints store them."""
    sd = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for key in list(sd):
        if key.startswith("model.vision_model.") and ".self_attn.q_proj." in key:
            # timm's fused qkv: [q; k; v] along dim 0 (the Llama layers keep q/k/v apart)
            parts = [
                sd.pop(key.replace(".q_proj.", f".{p}.")) for p in ("q_proj", "k_proj", "v_proj")
            ]
            sd[key.replace(".q_proj.", ".qkv.")] = torch.cat(parts)
    for key, tensor in sd.items():
        name = next(new + key[len(old) :] for old, new in _PREFIXES if key.startswith(old))
        name = name.replace(".self_attn.qkv.", ".attn.qkv.")
        for old, new in _INNER:
            name = name.replace(old, new)
        if name.endswith("pos_embed"):
            tensor = tensor[None]  # timm: [1, N, D]
        out[name] = tensor
    width = hf_model.config.vision_config.hidden_size
    mlp = int(width * hf_model.config.vision_config.mlp_ratio)
    pool = {  # timm's AttentionPoolLatent (global_pool="map"): stored, unused by Janus
        "latent": (1, 1, width),
        "q.weight": (width, width),
        "q.bias": (width,),
        "kv.weight": (2 * width, width),
        "kv.bias": (2 * width,),
        "proj.weight": (width, width),
        "proj.bias": (width,),
        "norm.weight": (width,),
        "norm.bias": (width,),
        "mlp.fc1.weight": (mlp, width),
        "mlp.fc1.bias": (mlp,),
        "mlp.fc2.weight": (width, mlp),
        "mlp.fc2.bias": (width,),
    }
    for name, shape in pool.items():
        out[f"vision_model.vision_tower.attn_pool.{name}"] = torch.randn(shape)
    out["gen_vision_model.quantize.codebook_used"] = torch.zeros(65536)
    if dtype is not None:
        out = {k: v.to(dtype) for k, v in out.items()}
    return out


def original_config(shape: TinyShape, vocab: int, dtype: str = "float32") -> dict:
    """DeepSeek's config.json for the tiny shape. Janus-Pro's keys, plus the tower and VQ sizes
    (their code fixes them per ``model_name`` / ``cls``) that a tiny model has to state."""
    vq_ch = shape.vq_base_channels
    return {
        "architectures": ["MultiModalityCausalLM"],
        "model_type": "multi_modality",
        "torch_dtype": dtype,
        "transformers_version": "4.33.1",
        "language_config": {
            "hidden_size": shape.hidden,
            "intermediate_size": shape.intermediate,
            "max_position_embeddings": 1024,
            "model_type": "llama",
            "num_attention_heads": shape.heads,
            "num_hidden_layers": shape.layers,
            "num_key_value_heads": shape.heads,
            "torch_dtype": dtype,
            "vocab_size": vocab,
            "_attn_implementation": "flash_attention_2",
        },
        "vision_config": {
            "cls": "CLIPVisionTower",
            "model_type": "vision",
            "params": {
                "image_size": shape.image_size,
                "model_name": "siglip_large_patch16_384",
                "select_feature": "same",
                "select_layer": -1,
                "width": shape.vision_hidden,
                "layers": shape.vision_layers,
                "heads": 2,
                "mlp_ratio": 4,
            },
        },
        "aligner_config": {
            "cls": "MlpProjector",
            "model_type": "aligner",
            "params": {
                "depth": 2,
                "input_dim": shape.vision_hidden,
                "n_embed": shape.hidden,
                "projector_type": "mlp_gelu",
            },
        },
        "gen_vision_config": {
            "cls": "VQ-16",
            "model_type": "gen_vision",
            "params": {
                "image_token_size": shape.vq_codes,
                "n_embed": 8,
                "ch": vq_ch,
                "z_channels": vq_ch,
                "num_res_blocks": 1,
            },
        },
        "gen_aligner_config": {
            "cls": "MlpProjector",
            "model_type": "gen_aligner",
            "params": {
                "depth": 2,
                "input_dim": 8,
                "n_embed": shape.hidden,
                "projector_type": "mlp_gelu",
            },
        },
        "gen_head_config": {
            "cls": "vision_head",
            "model_type": "gen_head",
            "params": {
                "image_token_embed": shape.hidden,
                "image_token_size": shape.vq_codes,
                "n_embed": shape.hidden,
            },
        },
    }


def write_original(
    m,
    path: Path,
    *,
    dtype: torch.dtype | None = None,
    fmt: str = "safetensors",
    shards: int = 2,
    pad_in_tokenizer: bool = True,
    config_edit=None,
    processor_extra: dict | None = None,
) -> Path:
    """Write the tiny UnifiedModel ``m`` in DeepSeek's original checkpoint layout at ``path``."""
    path.mkdir(parents=True)
    shape = TinyShape()
    dname = {None: "float32", torch.bfloat16: "bfloat16"}[dtype]
    cfg = original_config(shape, m.hf.config.text_config.vocab_size, dname)
    if config_edit:
        config_edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    sd = original_state_dict(m.hf, dtype)
    keys = sorted(sd)
    groups = [keys[i::shards] for i in range(shards)]
    ext = "safetensors" if fmt == "safetensors" else "bin"
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    names = (
        [f"{stem}.{ext}"]
        if shards == 1
        else [f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}" for i in range(shards)]
    )
    for name, group in zip(names, groups):
        part = {k: sd[k].contiguous() for k in group}
        if fmt == "safetensors":
            save_file(part, str(path / name), metadata={"format": "pt"})
        else:
            torch.save(part, path / name)
    if shards > 1:
        weight_map = {k: n for n, g in zip(names, groups) for k in g}
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (path / f"{stem}.{ext}.index.json").write_text(json.dumps(index))

    tok = m.tokenizer
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.no_padding()  # calls with padding=True leave it set; DeepSeek's file has none
    backend.save(str(path / "tokenizer.json"))
    pad = SPECIAL_TOKENS["pad_token"]
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": SPECIAL_TOKENS["bos_token"],
                "clean_up_tokenization_spaces": False,
                "eos_token": SPECIAL_TOKENS["eos_token"],
                "model_max_length": 4096,
                "pad_token": None,
                "tokenizer_class": "LlamaTokenizer",
                "unk_token": None,
                "use_default_system_prompt": True,
            }
        )
    )
    stm = {
        "additional_special_tokens": [EXTRA_SPECIAL_TOKENS["image_token"], *ROLE_TOKENS],
        "bos_token": SPECIAL_TOKENS["bos_token"],
        "eos_token": SPECIAL_TOKENS["eos_token"],
    }
    if pad_in_tokenizer:
        stm["pad_token"] = pad
    (path / "special_tokens_map.json").write_text(json.dumps(stm))
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "background_color": [127, 127, 127],
                "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_processor_type": "VLMImageProcessor",
                "image_size": shape.image_size,
                "image_std": [0.5, 0.5, 0.5],
                "min_size": 14,
                "processor_class": "VLChatProcessor",
                "rescale_factor": 1 / 255,
            }
        )
    )
    (path / "processor_config.json").write_text(
        json.dumps(
            {
                "add_special_token": False,
                "ignore_id": -100,
                "image_tag": EXTRA_SPECIAL_TOKENS["image_token"],
                "mask_prompt": True,
                "num_image_tokens": (shape.image_size // shape.patch) ** 2,
                "processor_class": "VLChatProcessor",
                "sft_format": "deepseek",
                **(processor_extra or {}),
            }
        )
    )
    return path


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return tiny_unified_model(seed=0)


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory):
    """(original dir, converted dir, log lines) of the fp32 tiny model in two shards."""
    root = tmp_path_factory.mktemp("convert")
    src = write_original(tiny, root / "orig")
    lines: list[str] = []
    out = cv.convert_checkpoint(src, root / "hf", log=lines.append)
    return src, out, lines


@pytest.fixture(scope="module")
def loaded(converted):
    return load_unified_model(converted[1])


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(2, 48, 64, 3), dtype=np.uint8)


# ---- conversion --------------------------------------------------------------------------


def test_original_layout_is_refused_with_the_convert_command(converted):
    src = converted[0]
    with pytest.raises(ValueError, match=r"multi_modality.*pairuni model convert"):
        load_unified_model(src)


def test_converted_weights_equal_the_tiny_model(tiny, loaded):
    ref, got = tiny.hf.state_dict(), loaded.hf.state_dict()
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert torch.equal(got[k], v), k


def test_converted_model_scores_like_the_tiny_model(tiny, loaded, images):
    assert loaded.hf.config.image_token_id == tiny.hf.config.image_token_id
    assert (loaded.num_image_tokens, loaded.image_size) == (tiny.num_image_tokens, tiny.image_size)
    s = tiny.sample_image_tokens(PROMPTS, n=2, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.image_logprobs(PROMPTS, s.tokens), tiny.image_logprobs(PROMPTS, s.tokens)
        )
        ids = [tiny.tokenizer("a red circle", add_special_tokens=False).input_ids, [5, 6, 7]]
        a = tiny.text_logprobs(images, QUESTIONS, ids)
        b = loaded.text_logprobs(images, QUESTIONS, ids)
    torch.testing.assert_close(b.values, a.values)
    assert torch.equal(b.mask, a.mask)
    assert np.array_equal(loaded.decode_images(s.tokens), tiny.decode_images(s.tokens))
    assert torch.equal(loaded.encode_images(images), tiny.encode_images(images))
    # same sampling draws
    t = loaded.sample_image_tokens(PROMPTS, n=2, seed=3)
    assert torch.equal(t.tokens, s.tokens)


def test_converted_tokenizer_and_processor_match(tiny, loaded):
    a, b = tiny.tokenizer, loaded.tokenizer
    for text in ["<|User|>: a red circle\n\n<|Assistant|>:<begin_of_image>", "two blue squares"]:
        assert b(text).input_ids == a(text).input_ids
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "image_token", "boi_token"):
        assert getattr(b, attr) == getattr(a, attr), attr
    ip_a, ip_b = tiny.processor.image_processor, loaded.processor.image_processor
    assert (ip_b.size, ip_b.image_mean, ip_b.image_std) == (
        ip_a.size,
        ip_a.image_mean,
        ip_a.image_std,
    )
    assert loaded.processor.num_image_tokens == tiny.processor.num_image_tokens


def test_conversion_reports_each_shard_and_writes_transformers_format(converted):
    _, out, lines = converted
    shard_lines = [
        x for x in lines if re.match(r"\[\d/2\] model-0000\d-of-00002\.safetensors: ", x)
    ]
    assert len(shard_lines) == 2, lines
    assert json.loads((out / "config.json").read_text())["model_type"] == "janus"
    assert (out / "model.safetensors.index.json").is_file()
    names = {p.name for p in out.parent.iterdir()}
    assert not [n for n in names if ".converting" in n]  # no temp dir left behind


def test_bf16_original_stays_bf16(tiny, tmp_path):
    src = write_original(tiny, tmp_path / "orig", dtype=torch.bfloat16, fmt="bin", shards=1)
    out = cv.convert_checkpoint(src, tmp_path / "hf", log=None)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert dtypes == {"BF16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    m = load_unified_model(out, dtype="bfloat16")
    ref = tiny.hf.state_dict()
    for k, v in m.hf.state_dict().items():
        assert v.dtype == torch.bfloat16 and torch.equal(v, ref[k].to(torch.bfloat16)), k


# ---- the pad token of the unconditional CFG prompt ---------------------------------------


def _uncond_pad_ids(m) -> set[int]:
    ids, _ = image_tokens.image_prompt_ids(m.tokenizer, PROMPTS, 1, "cpu")
    cond, uncond = ids.chunk(2)
    changed = cond != uncond
    return set(uncond[changed].tolist())


def test_cfg_pad_is_the_tokenizers_pad_of_the_converted_checkpoint(tiny, loaded):
    pad_id = loaded.tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["pad_token"])
    assert loaded.tokenizer.pad_token == SPECIAL_TOKENS["pad_token"]
    assert loaded.hf.config.text_config.pad_token_id == pad_id
    assert _uncond_pad_ids(loaded) == {pad_id} == _uncond_pad_ids(tiny)


def test_pad_from_processor_pad_tag_when_tokenizer_states_none(tiny, tmp_path):
    # DeepSeek fills the unconditional prompt with VLChatProcessor's pad_tag
    src = write_original(
        tiny,
        tmp_path / "orig",
        shards=1,
        pad_in_tokenizer=False,
        processor_extra={"pad_tag": SPECIAL_TOKENS["eos_token"]},
    )
    out = cv.convert_checkpoint(src, tmp_path / "hf", log=None)
    m = load_unified_model(out)
    eos = m.tokenizer.eos_token_id
    assert m.tokenizer.pad_token_id == eos == m.hf.config.text_config.pad_token_id
    assert _uncond_pad_ids(m) == {eos}


def test_pad_id_the_checkpoint_states_is_kept(tiny, tmp_path):
    def state_pad(cfg):
        cfg["language_config"]["pad_token_id"] = 7

    src = write_original(tiny, tmp_path / "orig", shards=1, config_edit=state_pad)
    out = cv.convert_checkpoint(src, tmp_path / "hf", log=None)
    m = load_unified_model(out)
    assert m.hf.config.text_config.pad_token_id == 7  # stated: not overwritten
    assert m.tokenizer.pad_token == SPECIAL_TOKENS["pad_token"]  # the tokenizer's own: kept too


def test_load_takes_pad_from_config_only_when_the_tokenizer_has_none(tiny, tmp_path):
    path = tmp_path / "hf"
    tiny.save(path)
    tc_file = path / "tokenizer_config.json"
    tc = json.loads(tc_file.read_text())
    cfg = json.loads((path / "config.json").read_text())
    cfg["text_config"]["pad_token_id"] = tiny.tokenizer.eos_token_id
    (path / "config.json").write_text(json.dumps(cfg))
    m = load_unified_model(path)  # tokenizer states <|pad|>: kept, config's id not forced on it
    assert m.tokenizer.pad_token == SPECIAL_TOKENS["pad_token"]
    tc.pop("pad_token")
    tc_file.write_text(json.dumps(tc))
    tj = json.loads((path / "tokenizer.json").read_text())
    tj["padding"] = None  # tokenizer.json's padding section states a pad token too
    (path / "tokenizer.json").write_text(json.dumps(tj))
    m = load_unified_model(path)
    assert m.tokenizer.pad_token_id == tiny.tokenizer.eos_token_id
    cfg["text_config"]["pad_token_id"] = None
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="pad"):
        load_unified_model(path)


# ---- errors ------------------------------------------------------------------------------


def test_unknown_weight_name_names_the_file_and_key(tiny, tmp_path):
    src = write_original(tiny, tmp_path / "orig", shards=1)
    sd = {}
    with safe_open(str(src / "model.safetensors"), "pt") as f:
        for k in f.keys():  # noqa: SIM118
            sd[k] = f.get_tensor(k)
    sd["vision_model.vision_tower.cls_token"] = torch.zeros(1, 1, 64)
    save_file(sd, str(src / "model.safetensors"))
    with pytest.raises(
        cv.ConversionError, match=r"model\.safetensors.*'vision_model\.vision_tower\.cls_token'"
    ):
        cv.convert_checkpoint(src, tmp_path / "hf", log=None)
    assert not (tmp_path / "hf").exists()
    assert not [p for p in tmp_path.iterdir() if ".converting" in p.name]


def test_wrong_sizes_name_the_config_key_or_the_weight(tiny, tmp_path):
    def table_width(cfg):  # siglip_large_patch16_384's own width, 1024
        cfg["vision_config"]["params"].pop("width")

    def half_mlp(cfg):
        cfg["vision_config"]["params"]["mlp_ratio"] = 2

    src = write_original(tiny, tmp_path / "a", shards=1, config_edit=table_width)
    with pytest.raises(cv.ConversionError, match=r"aligner_config\.params\.input_dim=64.*1024"):
        cv.convert_checkpoint(src, tmp_path / "hf", log=None)
    src = write_original(tiny, tmp_path / "b", shards=1, config_edit=half_mlp)
    with pytest.raises(
        cv.ConversionError,
        match=r"'vision_model\.vision_tower\.blocks\.\d\.mlp\.fc\d\.\w+' has shape",
    ):
        cv.convert_checkpoint(src, tmp_path / "hf", log=None)
    assert not (tmp_path / "hf").exists()


def test_transformers_key_map_is_used_when_shipped(tiny, tmp_path, monkeypatch):
    import sys
    import types

    calls = []

    def convert_old_keys_to_new_keys(state_dict):
        calls.append(len(state_dict))
        return {k: (cv.rename_key(k) or "") for k in state_dict}

    fake = types.ModuleType("transformers.models.janus.convert_janus_weights_to_hf")
    fake.convert_old_keys_to_new_keys = convert_old_keys_to_new_keys
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    src = write_original(tiny, tmp_path / "orig", shards=1)
    lines: list[str] = []
    cv.convert_checkpoint(src, tmp_path / "hf", log=lines.append)
    assert calls and "by transformers' key map" in lines[-1]


def test_installed_transformers_ships_no_janus_converter():
    # transformers 5.19's wheel leaves the script out: pairuni's own map does the renaming
    assert cv._transformers_key_map() is None


# ---- the command line ----------------------------------------------------------------------


def test_cli_convert_and_its_errors(converted, tmp_path, capsys):
    from deploy.cli import main

    src = converted[0]
    out = tmp_path / "hf"
    assert main(["model", "convert", "--src", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "[1/2]" in text and "[2/2]" in text and str(out) in text
    assert load_unified_model(out).num_image_tokens == 16

    def err(*argv: str) -> str:
        assert main(["model", "convert", *argv]) == 2
        return capsys.readouterr().err

    assert "not a directory" in err("--src", str(tmp_path / "nope"), "--out", str(tmp_path / "x"))
    assert "already in transformers' format" in err("--src", str(out), "--out", str(tmp_path / "y"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert "not an empty directory" in err("--src", str(src), "--out", str(tmp_path / "busy"))
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
