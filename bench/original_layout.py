"""Write a transformers Janus model in DeepSeek's original checkpoint layout (``multi_modality``).

``models/convert.py`` converts that layout into transformers' format. To test it without a
download, this module writes any ``UnifiedModel`` (the tiny test model, or a random model
of a published shape from ``bench.shapes``) the way DeepSeek's Janus / Janus-Pro
checkpoints store it: their ``config.json`` keys (``language_config``, ``vision_config``,
``aligner_config``, ``gen_vision_config``, ``gen_aligner_config``, ``gen_head_config``),
their module names (``language_model.model.*``, ``vision_model.vision_tower.*``,
``gen_vision_model.*``, ...), timm's fused ``qkv`` and batched ``pos_embed [1, N, D]``, the
SigLIP pooling head (``attn_pool.*``) and the VQ's ``codebook_used`` statistic, which Janus
does not use, and DeepSeek's tokenizer and ``VLChatProcessor`` files.

Every size comes from the model's own config. DeepSeek's code fixes the SigLIP tower and
VQ sizes per ``vision_config.params.model_name`` / ``gen_vision_config.cls``; as in their
published configs, the tower is named ``siglip_large_patch16_384`` and the VQ ``VQ-16``, and
``params`` states only the sizes where the model differs from those (a tiny model states
them all, Janus-Pro's shape none). The two tables below are written from DeepSeek's code
(``janus/models/siglip_vit.py``, ``vq_model.py``), not taken from the converter, so that a
wrong table there fails the round trip.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# DeepSeek's siglip_large_patch16_384 (SigLIP_MODEL_CONFIG) and VQ-16 (Encoder/Decoder defaults).
TOWER_NAME = "siglip_large_patch16_384"
TOWER_SIZES: dict[str, Any] = dict(patch_size=16, width=1024, layers=24, heads=16, mlp_ratio=4)
VQ_NAME = "VQ-16"
VQ_SIZES: dict[str, Any] = dict(
    ch=128,
    z_channels=256,
    encoder_ch_mult=[1, 1, 2, 2, 4],
    decoder_ch_mult=[1, 1, 2, 2, 4],
    num_res_blocks=2,
)
CODEBOOK_USED = 65536  # VectorQuantizer's codebook_used buffer has this fixed length

# transformers name prefix -> DeepSeek's (janus/models/modeling_vlm.py module names); the
# aligners' hidden layers are mapped by ``_aligner_name``.
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
    ("model.generation_embeddings.", "gen_embed."),
    ("model.generation_head.proj_out.", "gen_head.output_mlp_projector."),
    ("model.generation_head.vision_head.", "gen_head.vision_head."),
    ("model.vqmodel.", "gen_vision_model."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
]
_INNER = [  # inside the SigLIP blocks and the VQ encoder/decoder
    (".self_attn.qkv.", ".attn.qkv."),
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
_ALIGNERS = {
    "model.aligner.": "aligner.layers.",
    "model.generation_aligner.": "gen_aligner.layers.",
}

# LlamaConfig keys that are bookkeeping, not architecture, or that the converter takes from
# the tokenizer (DeepSeek's language_config states no token ids)
_TEXT_IGNORE = {
    "_name_or_path",
    "architectures",
    "dtype",
    "torch_dtype",
    "transformers_version",
    "model_type",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "tie_word_embeddings",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "use_cache",
    "id2label",
    "label2id",
    "problem_type",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
}


def _aligner_name(key: str) -> str | None:
    """``<aligner>.fc1.*`` -> ``layers.0.*``; ``hidden_layers.k.*`` -> ``layers.<2k+2>.*``.

    DeepSeek's ``MlpProjector`` is one ``nn.Sequential``: Linear, then GELU + Linear per
    extra depth, so the Linears sit at the even indices."""
    for old, new in _ALIGNERS.items():
        if not key.startswith(old):
            continue
        rest = key[len(old) :]
        if rest.startswith("fc1."):
            return new + "0." + rest[len("fc1.") :]
        layer, _, tail = rest.removeprefix("hidden_layers.").partition(".")
        return f"{new}{2 * int(layer) + 2}.{tail}"
    return None


def original_name(key: str) -> str:
    """DeepSeek's name of transformers' weight ``key`` (q/k/v of the tower already fused)."""
    name = _aligner_name(key)
    if name is not None:
        return name
    name = next((new + key[len(old) :] for old, new in _PREFIXES if key.startswith(old)), None)
    if name is None:
        raise KeyError(f"{key!r} has no place in DeepSeek's Janus layout")
    if name.startswith(("vision_model.", "gen_vision_model.")):
        for old, new in _INNER:
            name = name.replace(old, new)
    return name


def _pool_shapes(width: int, mlp: int) -> dict[str, tuple[int, ...]]:
    """timm's ``AttentionPoolLatent`` (global_pool="map"): stored by DeepSeek, unused by Janus."""
    return {
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


def original_state_dict(hf_model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's weights under DeepSeek's names, as their checkpoints store them.

    Tensors keep ``hf_model``'s storage where no change is needed (no copy of a large
    model; do not modify them). ``dtype`` None keeps each tensor's dtype; the extras are
    made in the model's dtype.
    """
    sd = dict(hf_model.state_dict())
    out_dtype = dtype or hf_model.dtype
    out: dict[str, torch.Tensor] = {}
    for key in list(sd):
        if key.startswith("model.vision_model.") and ".self_attn.q_proj." in key:
            # timm's fused qkv: [q; k; v] along dim 0 (the Llama layers keep q/k/v apart)
            parts = [
                sd.pop(key.replace(".q_proj.", f".{p}.")) for p in ("q_proj", "k_proj", "v_proj")
            ]
            sd[key.replace(".q_proj.", ".qkv.")] = torch.cat(parts)
    for key, tensor in sd.items():
        name = original_name(key)
        if name.endswith("pos_embed"):
            tensor = tensor[None]  # timm: [1, N, D]
        out[name] = tensor
    vision = hf_model.config.vision_config
    width = vision.hidden_size
    for name, shape in _pool_shapes(width, int(width * vision.mlp_ratio)).items():
        out[f"vision_model.vision_tower.attn_pool.{name}"] = torch.randn(shape, dtype=out_dtype)
    out["gen_vision_model.quantize.codebook_used"] = torch.zeros(CODEBOOK_USED, dtype=out_dtype)
    if dtype is not None:
        out = {k: v.to(dtype) for k, v in out.items()}
    return out


def _side(size: Any, what: str) -> int:
    """A square image / patch side from a config value (int, or [h, w] with h == w)."""
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"{what}={size}: DeepSeek's layout has square images and patches")
        size = size[0]
    return int(size)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _check_expressible(config) -> None:
    """Raise when ``config`` sets something DeepSeek's layout cannot state (fixed in their code)."""
    from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

    fixed = [
        (config.vision_config, JanusVisionConfig(), "vision_config"),
        (config.vq_config, JanusVQVAEConfig(), "vq_config"),
    ]
    keys = {
        "vision_config": (
            "num_channels",
            "hidden_act",
            "layer_norm_eps",
            "attention_bias",
            "use_qk_norm",
        ),
        "vq_config": ("double_latent", "in_channels", "out_channels", "hidden_act"),
    }
    for got, default, section in fixed:
        for key in keys[section]:
            if getattr(got, key) != getattr(default, key):
                raise ValueError(
                    f"{section}.{key}={getattr(got, key)!r}: DeepSeek's Janus fixes it at "
                    f"{getattr(default, key)!r} and its config cannot state another"
                )
    v = config.vision_config
    tokens = (_side(v.image_size, "image_size") // _side(v.patch_size, "patch_size")) ** 2
    if v.num_image_tokens != tokens:
        raise ValueError(
            f"vision_config.num_image_tokens={v.num_image_tokens} but a {v.image_size} px image "
            f"in {v.patch_size} px patches gives {tokens}; DeepSeek's layout derives it"
        )
    if config.tie_word_embeddings or config.text_config.tie_word_embeddings:
        raise ValueError("tied word embeddings: Janus / Janus-Pro keep lm_head apart")


def _text_section(text, dtype: str) -> dict:
    """``language_config``: Janus-Pro's keys, plus any Llama setting they leave at a default
    the model does not have (so that the converter's LlamaConfig comes out the same)."""
    from transformers import LlamaConfig

    keys = (
        "hidden_size",
        "intermediate_size",
        "max_position_embeddings",
        "num_attention_heads",
        "num_hidden_layers",
        "num_key_value_heads",
        "vocab_size",
    )
    section: dict[str, Any] = {k: getattr(text, k) for k in keys}
    got, ref = text.to_dict(), LlamaConfig(**section).to_dict()
    extra = {
        k: v for k, v in got.items() if k not in _TEXT_IGNORE and (k not in ref or ref[k] != v)
    }
    return {
        **section,
        **extra,
        "model_type": "llama",
        "torch_dtype": dtype,
        "_attn_implementation": "flash_attention_2",  # as DeepSeek's configs ask
    }


def original_config(config, dtype: str = "float32") -> dict:
    """DeepSeek's config.json for the transformers ``JanusConfig`` ``config``.

    Sizes DeepSeek's code fixes per tower / VQ name are stated in ``params`` only where
    ``config`` differs from ``siglip_large_patch16_384`` / ``VQ-16``.
    """
    _check_expressible(config)
    v, vq = config.vision_config, config.vq_config
    tower = {
        "patch_size": _side(v.patch_size, "patch_size"),
        "width": v.hidden_size,
        "layers": v.num_hidden_layers,
        "heads": v.num_attention_heads,
        "mlp_ratio": v.mlp_ratio,
    }
    arch = {
        "ch": vq.base_channels,
        "z_channels": vq.latent_channels,
        "encoder_ch_mult": list(vq.channel_multiplier),
        "decoder_ch_mult": list(vq.channel_multiplier),
        "num_res_blocks": vq.num_res_blocks,
    }

    def mlp(section: str, input_dim: int, n_embed: int, depth: int) -> dict:
        return {
            "cls": "MlpProjector",
            "model_type": section,
            "params": {
                "depth": depth,
                "input_dim": input_dim,
                "n_embed": n_embed,
                "projector_type": "mlp_gelu",
            },
        }

    return {
        "architectures": ["MultiModalityCausalLM"],
        "model_type": "multi_modality",
        "torch_dtype": dtype,
        "transformers_version": "4.33.1",
        "language_config": _text_section(config.text_config, dtype),
        "vision_config": {
            "cls": "CLIPVisionTower",
            "model_type": "vision",
            "params": {
                "image_size": _side(v.image_size, "image_size"),
                "model_name": TOWER_NAME,
                "select_feature": "same",
                "select_layer": -1,
                **{k: x for k, x in tower.items() if not _same(x, TOWER_SIZES[k])},
            },
        },
        "aligner_config": mlp("aligner", v.hidden_size, v.projection_dim, v.depth),
        "gen_vision_config": {
            "cls": VQ_NAME,
            "model_type": "gen_vision",
            "params": {
                "image_token_size": vq.num_embeddings,
                "n_embed": vq.embed_dim,
                **{k: x for k, x in arch.items() if not _same(x, VQ_SIZES[k])},
            },
        },
        "gen_aligner_config": mlp(
            "gen_aligner", vq.embed_dim, vq.projection_dim, vq.num_hidden_layers
        ),
        "gen_head_config": {
            "cls": "vision_head",
            "model_type": "gen_head",
            "params": {
                "image_token_embed": vq.projection_dim,
                "image_token_size": vq.num_embeddings,
                "n_embed": vq.image_token_embed_dim,
            },
        },
    }


def balanced_groups(sizes: dict[str, int], n: int) -> list[list[str]]:
    """``n`` groups of names with near-equal total size (largest first onto the lightest)."""
    groups: list[list[str]] = [[] for _ in range(n)]
    totals = [0] * n
    for name in sorted(sizes, key=lambda k: (-sizes[k], k)):
        i = totals.index(min(totals))
        groups[i].append(name)
        totals[i] += sizes[name]
    return [sorted(g) for g in groups]


def _write_weights(sd: dict[str, torch.Tensor], path: Path, fmt: str, shards: int) -> list[Path]:
    """Weight files (safetensors or PyTorch, single or sharded with an index)."""
    from safetensors.torch import save_file

    ext = "safetensors" if fmt == "safetensors" else "bin"
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    groups = balanced_groups({k: v.numel() * v.element_size() for k, v in sd.items()}, shards)
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
        del part
    if shards > 1:
        total = sum(v.numel() * v.element_size() for v in sd.values())
        weight_map = {k: n for n, g in zip(names, groups) for k in g}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / f"{stem}.{ext}.index.json").write_text(json.dumps(index))
    return [path / n for n in names]


def _special_tokens(tok) -> tuple[list[str], list[str]]:
    """(Janus's named extra tokens, the other added special tokens such as role tags)."""
    named = [tok.image_token, tok.boi_token, tok.eoi_token]
    own = {tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token, *named}
    added = [t.content for _, t in sorted(tok.added_tokens_decoder.items()) if t.special]
    return named, [t for t in added if t not in own]


def _write_tokenizer(tok, path: Path, pad_in_tokenizer: bool) -> None:
    """DeepSeek's tokenizer files: tokenizer.json, a LlamaTokenizer(Fast) config, special tokens."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.no_padding()  # calls with padding=True leave it set; DeepSeek's file has none
    backend.save(str(path / "tokenizer.json"))
    config: dict[str, Any] = {
        "bos_token": tok.bos_token,
        "clean_up_tokenization_spaces": False,
        "eos_token": tok.eos_token,
        "pad_token": None,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": None,
        "use_default_system_prompt": True,
    }
    if isinstance(tok.model_max_length, int) and tok.model_max_length < 2**31:
        config["model_max_length"] = tok.model_max_length
    (path / "tokenizer_config.json").write_text(json.dumps(config, sort_keys=True))
    _, others = _special_tokens(tok)
    stm = {
        "additional_special_tokens": [tok.image_token, *others],
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
    }
    if pad_in_tokenizer:
        stm["pad_token"] = tok.pad_token
    (path / "special_tokens_map.json").write_text(json.dumps(stm))


def _write_processor(m, path: Path, processor_extra: dict | None) -> None:
    """DeepSeek's VLMImageProcessor and VLChatProcessor configs for the model's processor."""
    ip = m.processor.image_processor
    v = m.module.config.vision_config
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "background_color": [127, 127, 127],
                "do_normalize": bool(ip.do_normalize),
                "image_mean": list(ip.image_mean),
                "image_processor_type": "VLMImageProcessor",
                "image_size": _side(v.image_size, "image_size"),
                "image_std": list(ip.image_std),
                "min_size": 14,
                "processor_class": "VLChatProcessor",
                "rescale_factor": ip.rescale_factor,
            }
        )
    )
    (path / "processor_config.json").write_text(
        json.dumps(
            {
                "add_special_token": False,
                "ignore_id": -100,
                "image_tag": m.tokenizer.image_token,
                "mask_prompt": True,
                "num_image_tokens": v.num_image_tokens,
                "processor_class": "VLChatProcessor",
                "sft_format": "deepseek",
                **(processor_extra or {}),
            }
        )
    )


def write_original(
    m,
    path: Path,
    *,
    dtype: torch.dtype | None = None,
    fmt: str = "safetensors",
    shards: int = 2,
    pad_in_tokenizer: bool = True,
    config_edit: Callable[[dict], None] | None = None,
    processor_extra: dict | None = None,
) -> Path:
    """Write the UnifiedModel ``m`` in DeepSeek's original checkpoint layout at ``path`` (new).

    ``dtype`` None keeps the model's dtype. ``fmt``: "safetensors" or "bin"; ``shards``
    weight files of near-equal size. ``pad_in_tokenizer`` False leaves the pad token out of
    the tokenizer files; ``config_edit`` edits the config.json dict in place before it is
    written; ``processor_extra`` adds processor_config.json keys (e.g. ``pad_tag``).
    """
    if fmt not in ("safetensors", "bin"):
        raise ValueError(f"fmt={fmt!r} is not 'safetensors' or 'bin'")
    path = Path(path)
    path.mkdir(parents=True)
    dname = str(dtype or m.module.dtype).removeprefix("torch.")
    cfg = original_config(m.module.config, dname)
    if config_edit:
        config_edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    sd = original_state_dict(m.module, dtype)
    _write_weights(sd, path, fmt, max(1, min(shards, len(sd))))
    del sd
    _write_tokenizer(m.tokenizer, path, pad_in_tokenizer)
    _write_processor(m, path, processor_extra)
    return path
