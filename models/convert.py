"""Convert DeepSeek's original Janus / Janus-Pro checkpoints into transformers' Janus format.

DeepSeek publishes Janus, Janus-Pro-1B and Janus-Pro-7B in the layout of their own code
(``model_type: multi_modality``): a ``config.json`` with ``language_config``,
``vision_config``, ``aligner_config``, ``gen_vision_config``, ``gen_aligner_config`` and
``gen_head_config``, weights named after their modules (``language_model.model.*``,
``vision_model.vision_tower.*``, ``gen_vision_model.*``, ...), a tokenizer and a
``VLChatProcessor`` config. transformers' ``JanusForConditionalGeneration`` reads none of
that: ``JanusConfig.from_pretrained`` falls back to a default text config and the weight
names do not match. ``convert_checkpoint`` writes the same model in transformers' format
(``config.json`` with ``model_type: janus``, renamed safetensors shards in the stored dtype,
tokenizer and processor), which ``models.load_unified_model`` loads.

Weight names: transformers' own key map (``convert_old_keys_to_new_keys`` in
``transformers/models/janus/convert_janus_weights_to_hf.py``) is used where the installed
transformers ships it. transformers 5.19 (pinned here) does not: the script is only in the
source tree, and it imports ``accelerate`` and downloads from the Hub. Otherwise the key
rules below, written from DeepSeek's module layout (``janus/models/{modeling_vlm,siglip_vit,
vq_model,projector}.py``), rename the weights. The config, tokenizer and processor are built
here either way (the script builds them inline, after a download, and keeps only the vision
image size of the original config). Every converted tensor is checked, by name and shape,
against the model the converted config builds, so a wrong key map or config fails here and
not at load time.

DeepSeek's code fixes the SigLIP tower and VQ sizes per ``vision_config.params.model_name``
and ``gen_vision_config.cls`` (``SIGLIP_TOWERS``, ``VQ_MODELS``); a checkpoint of another
size (the tests' tiny model) states them in those ``params`` under the names of DeepSeek's
code (``width``, ``layers``, ``heads``, ``patch_size``, ``mlp_ratio``; ``ch``,
``z_channels``, ``encoder_ch_mult``, ``decoder_ch_mult``, ``num_res_blocks``).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ORIGINAL_MODEL_TYPE = "multi_modality"

# DeepSeek's SigLIP towers (``SigLIP_MODEL_CONFIG`` in janus/models/siglip_vit.py). A tower
# not named here, or a smaller one (tests), states these keys in ``vision_config.params``.
SIGLIP_TOWERS: dict[str, dict[str, Any]] = {
    "siglip_large_patch16_384": dict(patch_size=16, width=1024, layers=24, heads=16, mlp_ratio=4),
    "siglip_so400m_patch14_384": dict(
        patch_size=14, width=1152, layers=27, heads=16, mlp_ratio=3.7362
    ),
    "siglip_so400m_patch14_224": dict(
        patch_size=14, width=1152, layers=27, heads=16, mlp_ratio=3.7362
    ),
}
TOWER_KEYS = ("patch_size", "width", "layers", "heads", "mlp_ratio")
# DeepSeek's VQ tokenizers (``VQ_models`` in janus/models/vq_model.py; their architecture is
# fixed in code). ``gen_vision_config.params`` may state these keys (ModelArgs / Encoder
# argument names) for another architecture.
VQ_MODELS: dict[str, dict[str, Any]] = {
    "VQ-16": dict(
        ch=128, z_channels=256, encoder_ch_mult=[1, 1, 2, 2, 4], decoder_ch_mult=[1, 1, 2, 2, 4]
    ),
}
VQ_NUM_RES_BLOCKS = 2  # Encoder/Decoder default; VQModel does not pass another
VQ_KEYS = ("ch", "z_channels", "encoder_ch_mult", "decoder_ch_mult", "num_res_blocks")
# VLChatProcessor's defaults (janus/models/processing_vlm.py), used when processor_config.json
# does not state them. The pad tag is what DeepSeek fills the unconditional CFG prompt with.
PROCESSOR_DEFAULTS = {
    "image_tag": "<image_placeholder>",
    "image_start_tag": "<begin_of_image>",
    "image_end_tag": "<end_of_image>",
    "pad_tag": "<｜▁pad▁｜>",
    "num_image_tokens": 576,
}
# language_config keys that are not model hyper-parameters (or that must not be copied:
# DeepSeek's configs ask for flash_attention_2).
_LANGUAGE_SKIP = ("torch_dtype", "dtype", "transformers_version", "architectures", "model_type")

WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


class ConversionError(ValueError):
    """An original-format checkpoint this converter cannot convert; names the file and key."""


# ---- detection -------------------------------------------------------------------------


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or ``ConversionError`` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConversionError(f"{path} is missing") from e
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path} is not readable JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConversionError(f"{path} holds a {type(data).__name__}, not a JSON object")
    return data


def model_type_of(path: str | os.PathLike) -> str | None:
    """``model_type`` of the checkpoint directory ``path`` (None when config.json lacks it)."""
    return read_json(Path(path) / "config.json").get("model_type")


def is_original_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a checkpoint in DeepSeek's original layout."""
    path = Path(path)
    return (path / "config.json").is_file() and model_type_of(path) == ORIGINAL_MODEL_TYPE


# ---- weight names ----------------------------------------------------------------------

_V = r"vision_model\.vision_tower\."
_VQ = r"gen_vision_model\."
# (original-name pattern, transformers name or None to drop), first full match wins.
# ``{aligner}`` rules are expanded below (MlpProjector's Sequential: Linear, GELU, Linear ...).
KEY_RULES: list[tuple[str, str | None]] = [
    # SigLIP understanding tower (timm VisionTransformer, global_pool="map", ignore_head)
    (_V + r"patch_embed\.proj\.(weight|bias)", r"model.vision_model.embeddings.patch_embedding.\1"),
    (_V + r"pos_embed", "model.vision_model.embeddings.position_embedding.weight"),
    (
        _V + r"blocks\.(\d+)\.norm([12])\.(weight|bias)",
        r"model.vision_model.encoder.layers.\1.layer_norm\2.\3",
    ),
    (
        _V + r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
        r"model.vision_model.encoder.layers.\1.self_attn.qkv.\2",
    ),
    (
        _V + r"blocks\.(\d+)\.attn\.proj\.(weight|bias)",
        r"model.vision_model.encoder.layers.\1.self_attn.projection_layer.\2",
    ),
    (
        _V + r"blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)",
        r"model.vision_model.encoder.layers.\1.mlp.\2.\3",
    ),
    (_V + r"norm\.(weight|bias)", r"model.vision_model.post_layernorm.\1"),
    (_V + r"attn_pool\..+", None),  # the pooling head; Janus uses the patch features
    # VQ tokenizer
    (
        _VQ + r"(encoder|decoder)\.(conv_in|conv_out|norm_out)\.(weight|bias)",
        r"model.vqmodel.\1.\2.\3",
    ),
    (
        _VQ + r"encoder\.conv_blocks\.(\d+)\.res\.(\d+)\.(.+)",
        r"model.vqmodel.encoder.down.\1.block.\2.\3",
    ),
    (
        _VQ + r"encoder\.conv_blocks\.(\d+)\.attn\.(\d+)\.(.+)",
        r"model.vqmodel.encoder.down.\1.attn.\2.\3",
    ),
    (
        _VQ + r"encoder\.conv_blocks\.(\d+)\.downsample\.(.+)",
        r"model.vqmodel.encoder.down.\1.downsample.\2",
    ),
    (
        _VQ + r"decoder\.conv_blocks\.(\d+)\.res\.(\d+)\.(.+)",
        r"model.vqmodel.decoder.up.\1.block.\2.\3",
    ),
    (
        _VQ + r"decoder\.conv_blocks\.(\d+)\.attn\.(\d+)\.(.+)",
        r"model.vqmodel.decoder.up.\1.attn.\2.\3",
    ),
    (
        _VQ + r"decoder\.conv_blocks\.(\d+)\.upsample\.(.+)",
        r"model.vqmodel.decoder.up.\1.upsample.\2",
    ),
    (_VQ + r"(encoder|decoder)\.mid\.0\.(.+)", r"model.vqmodel.\1.mid.block_1.\2"),
    (_VQ + r"(encoder|decoder)\.mid\.1\.(.+)", r"model.vqmodel.\1.mid.attn_1.\2"),
    (_VQ + r"(encoder|decoder)\.mid\.2\.(.+)", r"model.vqmodel.\1.mid.block_2.\2"),
    (_VQ + r"quantize\.embedding\.weight", "model.vqmodel.quantize.embedding.weight"),
    (_VQ + r"quantize\.codebook_used", None),  # a training statistic
    (_VQ + r"(quant_conv|post_quant_conv)\.(weight|bias)", r"model.vqmodel.\1.\2"),
    # aligners, generation embedding and head
    ("{aligner}", "model.aligner"),
    ("{gen_aligner}", "model.generation_aligner"),
    (r"gen_embed\.weight", "model.generation_embeddings.weight"),
    (r"gen_head\.output_mlp_projector\.(weight|bias)", r"model.generation_head.proj_out.\1"),
    (r"gen_head\.vision_head\.(weight|bias)", r"model.generation_head.vision_head.\1"),
    # language model (LlamaForCausalLM)
    (r"language_model\.model\..+\.rotary_emb\.inv_freq", None),  # recomputed, not a weight
    (r"language_model\.model\.(.+)", r"model.language_model.\1"),
    (r"language_model\.lm_head\.weight", "lm_head.weight"),
]


def _aligner_name(prefix: str, new_prefix: str, key: str) -> str | None:
    """``<prefix>.layers.<2k>.<w>`` -> ``fc1`` (k = 0) or ``hidden_layers.<k-1>`` (GELUs between)."""
    m = re.fullmatch(re.escape(prefix) + r"\.layers\.(\d+)\.(weight|bias)", key)
    if not m or int(m.group(1)) % 2:
        return None
    k = int(m.group(1)) // 2
    return f"{new_prefix}.{'fc1' if k == 0 else f'hidden_layers.{k - 1}'}.{m.group(2)}"


def rename_key(key: str) -> str | None:
    """transformers' name of the original weight ``key``; None: dropped.

    An unknown name comes back unchanged, so that the shape check reports it by name."""
    for pattern, repl in KEY_RULES:
        if pattern in ("{aligner}", "{gen_aligner}"):
            new = _aligner_name(pattern.strip("{}"), repl, key)
            if new is not None:
                return new
            continue
        m = re.fullmatch(pattern, key)
        if m:
            return None if repl is None else m.expand(repl)
    return key


def _transformers_key_map() -> Callable[[dict], dict] | None:
    """transformers' ``convert_old_keys_to_new_keys`` when the installed version ships it.

    The 5.x wheels leave ``convert_janus_weights_to_hf.py`` out, and the script imports
    ``accelerate`` and ``huggingface_hub.snapshot_download`` at the top: any ImportError
    means the mapping above is used.
    """
    try:
        mod = importlib.import_module("transformers.models.janus.convert_janus_weights_to_hf")
    except ImportError:
        return None
    fn = getattr(mod, "convert_old_keys_to_new_keys", None)
    return fn if callable(fn) else None


def rename_keys(keys: list[str]) -> tuple[dict[str, str | None], str]:
    """Map original weight names to transformers' (None: dropped) and say whose map it was.

    Unknown names map to themselves, so that the shape check reports them by name.
    """
    external = _transformers_key_map()
    if external is not None:
        mapped = external(dict.fromkeys(keys))
        return {k: (mapped.get(k) or None) for k in keys}, "transformers' key map"
    return {k: rename_key(k) for k in keys}, "pairuni's key map"


def convert_tensors(old: str, new: str, tensor: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """transformers' tensors for one renamed original tensor (fused qkv split in three)."""
    if re.search(r"\.self_attn\.qkv\.(weight|bias)$", new):
        if tensor.shape[0] % 3:
            raise ConversionError(f"{old}: fused qkv of shape {tuple(tensor.shape)} is not 3 x dim")
        for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
            yield new.replace(".qkv.", f".{name}."), part.clone()
    elif new == "model.vision_model.embeddings.position_embedding.weight" and tensor.ndim == 3:
        yield new, tensor.squeeze(0).contiguous()  # timm keeps a batch dim: [1, N, D]
    else:
        yield new, tensor


# ---- config ----------------------------------------------------------------------------


def _params(cfg: dict, section: str, file: Path) -> dict:
    sub = cfg.get(section)
    if not isinstance(sub, dict):
        raise ConversionError(f"{file}: {section} is missing; an original Janus config has it")
    params = sub.get("params", {})
    if not isinstance(params, dict):
        raise ConversionError(f"{file}: {section}.params is not an object")
    return params


def _need(params: dict, key: str, where: str, file: Path) -> Any:
    if params.get(key) is None:
        raise ConversionError(f"{file}: {where}.{key} is missing")
    return params[key]


def _mlp_projector(cfg: dict, section: str, file: Path) -> tuple[int, int, int]:
    """(input_dim, n_embed, depth) of an ``MlpProjector`` section (``mlp_gelu`` only)."""
    sub = cfg.get(section) or {}
    if sub.get("cls", "MlpProjector") != "MlpProjector":
        raise ConversionError(f"{file}: {section}.cls={sub.get('cls')!r}; expected 'MlpProjector'")
    p = _params(cfg, section, file)
    kind = p.get("projector_type")
    if kind != "mlp_gelu":
        raise ConversionError(
            f"{file}: {section}.params.projector_type={kind!r}; transformers' Janus aligners "
            "are 'mlp_gelu' (Linear, then GELU + Linear per extra depth)"
        )
    where = f"{section}.params"
    return _need(p, "input_dim", where, file), _need(p, "n_embed", where, file), p.get("depth", 1)


def janus_config(original: dict, tokenizer, file: Path, processor_config: dict | None = None):
    """transformers' ``JanusConfig`` for DeepSeek's ``config.json`` contents ``original``.

    Token ids (image placeholder; bos/eos/pad of the text config) come from ``tokenizer``
    where ``language_config`` does not state them: a value the checkpoint states is kept.
    """
    from transformers import JanusConfig, LlamaConfig
    from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

    pc = {**PROCESSOR_DEFAULTS, **(processor_config or {})}
    lang = original.get("language_config")
    if not isinstance(lang, dict):
        raise ConversionError(f"{file}: language_config is missing")
    if lang.get("model_type", "llama") != "llama":
        raise ConversionError(
            f"{file}: language_config.model_type={lang['model_type']!r}; DeepSeek's Janus "
            "builds a LlamaForCausalLM"
        )
    text = {k: v for k, v in lang.items() if k not in _LANGUAGE_SKIP and not k.startswith("_")}
    for key, value in (
        ("bos_token_id", tokenizer.bos_token_id),
        ("eos_token_id", tokenizer.eos_token_id),
        ("pad_token_id", tokenizer.pad_token_id),
    ):
        if text.get(key) is None:  # a value the checkpoint states is kept
            text[key] = value
    text_config = LlamaConfig(**text)

    # understanding tower
    vis = original.get("vision_config") or {}
    if vis.get("cls", "CLIPVisionTower") != "CLIPVisionTower":
        raise ConversionError(
            f"{file}: vision_config.cls={vis.get('cls')!r}; expected 'CLIPVisionTower'"
        )
    vp = _params(original, "vision_config", file)
    name = _need(vp, "model_name", "vision_config.params", file)
    if not str(name).startswith("siglip"):
        raise ConversionError(
            f"{file}: vision_config.params.model_name={name!r}; transformers' Janus has a SigLIP tower"
        )
    for key in ("pixel_mean", "pixel_std"):
        if vp.get(key) is not None:
            raise ConversionError(
                f"{file}: vision_config.params.{key} is set: the tower normalises inside itself, "
                "which transformers' Janus cannot express"
            )
    tower = {**SIGLIP_TOWERS.get(name, {}), **{k: vp[k] for k in TOWER_KEYS if k in vp}}
    missing = [k for k in TOWER_KEYS if k not in tower]
    if missing:
        raise ConversionError(
            f"{file}: vision_config.params.model_name={name!r} is not one of {tuple(SIGLIP_TOWERS)}; "
            f"state {', '.join(missing)} in vision_config.params"
        )
    image_size = vp.get("image_size", 384)  # create_siglip_vit's default
    select = vp.get("select_layer", -1)
    layers = tower["layers"]
    # create_siglip_vit builds only the blocks up to select_layer
    depth = min(layers, layers + select + 1) if select <= 0 else min(layers, select)
    if depth < 1:
        raise ConversionError(f"{file}: vision_config.params.select_layer={select} leaves no block")
    in_dim, n_embed, aligner_depth = _mlp_projector(original, "aligner_config", file)
    if in_dim != tower["width"]:
        raise ConversionError(
            f"{file}: aligner_config.params.input_dim={in_dim} but the vision tower width is "
            f"{tower['width']}"
        )
    vision_config = JanusVisionConfig(
        hidden_size=tower["width"],
        num_hidden_layers=depth,
        num_attention_heads=tower["heads"],
        image_size=image_size,
        patch_size=tower["patch_size"],
        mlp_ratio=float(tower["mlp_ratio"]),
        projection_dim=n_embed,
        depth=aligner_depth,
        num_image_tokens=(image_size // tower["patch_size"]) ** 2,
    )

    # generation: VQ tokenizer, its aligner, embedding and head
    gv = original.get("gen_vision_config") or {}
    gvp = _params(original, "gen_vision_config", file)
    cls = gv.get("cls", "")
    arch = {**VQ_MODELS.get(cls, {}), **{k: gvp[k] for k in VQ_KEYS if k in gvp}}
    arch.setdefault("num_res_blocks", VQ_NUM_RES_BLOCKS)
    missing = [k for k in VQ_KEYS if k not in arch]
    if missing:
        raise ConversionError(
            f"{file}: gen_vision_config.cls={cls!r} is not one of {tuple(VQ_MODELS)}; "
            f"state {', '.join(missing)} in gen_vision_config.params"
        )
    if list(arch["encoder_ch_mult"]) != list(arch["decoder_ch_mult"]):
        raise ConversionError(
            f"{file}: gen_vision_config encoder_ch_mult {arch['encoder_ch_mult']} != "
            f"decoder_ch_mult {arch['decoder_ch_mult']}; transformers' Janus VQ has one multiplier"
        )
    if gvp.get("codebook_l2_norm", True) is not True:
        raise ConversionError(
            f"{file}: gen_vision_config.params.codebook_l2_norm is false; transformers' Janus "
            "VQ decodes with an l2-normalised codebook"
        )
    codes = _need(gvp, "image_token_size", "gen_vision_config.params", file)
    code_dim = _need(gvp, "n_embed", "gen_vision_config.params", file)
    g_in, g_embed, g_depth = _mlp_projector(original, "gen_aligner_config", file)
    gh = original.get("gen_head_config") or {}
    if gh.get("cls", "vision_head") != "vision_head":
        raise ConversionError(
            f"{file}: gen_head_config.cls={gh.get('cls')!r}; expected 'vision_head'"
        )
    ghp = _params(original, "gen_head_config", file)
    head_in = _need(ghp, "n_embed", "gen_head_config.params", file)
    head_mid = _need(ghp, "image_token_embed", "gen_head_config.params", file)
    head_out = _need(ghp, "image_token_size", "gen_head_config.params", file)
    # transformers ties these sizes together (JanusVQVAEConfig has one of each)
    for ok, what in (
        (
            g_in == code_dim,
            f"gen_aligner_config.params.input_dim={g_in} != gen_vision n_embed={code_dim}",
        ),
        (head_out == codes, f"gen_head_config.params.image_token_size={head_out} != {codes}"),
        (
            head_mid == g_embed,
            f"gen_head_config.params.image_token_embed={head_mid} != gen_aligner n_embed={g_embed}",
        ),
    ):
        if not ok:
            raise ConversionError(f"{file}: {what}; transformers' Janus needs them equal")
    vq_config = JanusVQVAEConfig(
        embed_dim=code_dim,
        num_embeddings=codes,
        latent_channels=arch["z_channels"],
        base_channels=arch["ch"],
        channel_multiplier=list(arch["encoder_ch_mult"]),
        num_res_blocks=arch["num_res_blocks"],
        projection_dim=g_embed,
        num_hidden_layers=g_depth,
        image_token_embed_dim=head_in,
    )

    image_token_id = tokenizer.convert_tokens_to_ids(pc["image_tag"])
    return JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=image_token_id,
        tie_word_embeddings=bool(lang.get("tie_word_embeddings", False)),
    )


# ---- tokenizer and processor -----------------------------------------------------------


def _token(value: Any) -> str | None:
    """A special token as a string (tokenizer files store either a string or an AddedToken dict)."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _llama_post_processor(backend, bos: str, eos: str | None, add_bos: bool, add_eos: bool):
    """The post-processor transformers 4's ``LlamaTokenizerFast`` installs over tokenizer.json's
    (DeepSeek's tokenizer_config.json names that class; BOS on, EOS off by default)."""
    from tokenizers import processors

    single = " ".join(
        [*([f"{bos}:0"] if add_bos else []), "$A:0", *([f"{eos}:0"] if add_eos else [])]
    )
    pair = " ".join(
        [single, *([f"{bos}:1"] if add_bos else []), "$B:1", *([f"{eos}:1"] if add_eos else [])]
    )
    used = [t for t, on in ((bos, add_bos), (eos, add_eos)) if on and t]
    specials = [(t, backend.token_to_id(t)) for t in dict.fromkeys(used)]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def build_tokenizer(src: Path, processor_config: dict):
    """The original tokenizer with Janus's special-token attributes, pipeline kept as stored.

    tokenizer.json is loaded as is (transformers 5 would rebuild a ``LlamaTokenizer`` from
    its vocab with its own pre-tokenizer). Special tokens: special_tokens_map.json over
    tokenizer_config.json, then tokenizer.json's padding, as transformers reads them; when
    none states a pad token, the processor's ``pad_tag`` (DeepSeek's CFG pad).
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    file = src / "tokenizer.json"
    if not file.is_file():
        raise ConversionError(
            f"{file} is missing; DeepSeek's Janus checkpoints ship tokenizer.json (a "
            "sentencepiece-only tokenizer is not supported)"
        )
    backend = Tokenizer.from_file(str(file))
    tc = (
        read_json(src / "tokenizer_config.json")
        if (src / "tokenizer_config.json").is_file()
        else {}
    )
    stm_file = src / "special_tokens_map.json"
    stm = read_json(stm_file) if stm_file.is_file() else {}
    pc = {**PROCESSOR_DEFAULTS, **processor_config}

    special: dict[str, str] = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = _token(stm.get(key)) or _token(tc.get(key))
        if value is not None:
            special[key] = value
    if "pad_token" not in special:  # tokenizer.json's padding section, then DeepSeek's CFG pad
        padding = backend.padding
        special["pad_token"] = (padding or {}).get("pad_token") or pc["pad_tag"]
    for key in ("bos_token", "eos_token"):
        if key not in special:
            raise ConversionError(
                f"neither {stm_file} nor {src / 'tokenizer_config.json'} states {key}"
            )
    extra = {
        "image_token": pc["image_tag"],
        "boi_token": pc["image_start_tag"],
        "eoi_token": pc["image_end_tag"],
    }
    for key, token in [*special.items(), *extra.items()]:
        if backend.token_to_id(token) is None:
            raise ConversionError(f"{file}: the {key} {token!r} is not in the vocabulary")

    if str(tc.get("tokenizer_class", "")).startswith("Llama"):
        backend.post_processor = _llama_post_processor(
            backend,
            special["bos_token"],
            special.get("eos_token"),
            bool(tc.get("add_bos_token", True)),
            bool(tc.get("add_eos_token", False)),
        )
    additional = [_token(t) for t in stm.get("additional_special_tokens") or []]
    kwargs: dict[str, Any] = {}
    for key in ("model_max_length", "padding_side", "clean_up_tokenization_spaces"):
        if tc.get(key) is not None:
            kwargs[key] = tc[key]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **special,
        extra_special_tokens=extra,
        additional_special_tokens=[t for t in additional if t and t not in extra.values()],
        **kwargs,
    )


def build_processor(src: Path, tokenizer, vision_config, processor_config: dict):
    """``JanusProcessor`` from DeepSeek's preprocessor_config.json (``VLMImageProcessor``)."""
    from transformers import JanusProcessor
    from transformers.models.janus.image_processing_janus import JanusImageProcessor

    file = src / "preprocessor_config.json"
    pre = read_json(file)
    size = pre.get("image_size", vision_config.image_size)
    if size != vision_config.image_size:
        raise ConversionError(
            f"{file}: image_size={size} but config.json's vision tower takes "
            f"{vision_config.image_size} px images"
        )
    kwargs = {
        k: pre[k]
        for k in ("image_mean", "image_std", "min_size", "rescale_factor", "do_normalize")
        if k in pre
    }
    image_processor = JanusImageProcessor(size={"height": size, "width": size}, **kwargs)
    n = processor_config.get("num_image_tokens", vision_config.num_image_tokens)
    if n != vision_config.num_image_tokens:
        raise ConversionError(
            f"{src / 'processor_config.json'}: num_image_tokens={n} but the vision tower yields "
            f"{vision_config.num_image_tokens} tokens per image"
        )
    return JanusProcessor(image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=n)


# ---- weights ---------------------------------------------------------------------------


def weight_shards(src: Path) -> list[Path]:
    """The original weight files, in order (safetensors or PyTorch, single or sharded)."""
    for name in WEIGHT_FILES:
        file = src / name
        if not file.is_file():
            continue
        if name.endswith(".index.json"):
            weight_map = read_json(file).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConversionError(f"{file}: weight_map is missing or empty")
            shards = [src / s for s in sorted(set(weight_map.values()))]
            for s in shards:
                if not s.is_file():
                    raise ConversionError(f"{file} lists {s.name}, which is missing")
            return shards
        return [file]
    raise ConversionError(f"{src} has no weights (looked for {', '.join(WEIGHT_FILES)})")


def load_shard(file: Path) -> dict[str, torch.Tensor]:
    """All tensors of one weight file, in their stored dtype."""
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # an old (non-zip) pickle cannot be memory-mapped
        return torch.load(file, map_location="cpu", weights_only=True)


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every saved tensor of the model ``config`` builds (no memory used)."""
    from transformers import JanusForConditionalGeneration

    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ---- the conversion --------------------------------------------------------------------


def check_original(src: Path) -> None:
    """Raise unless ``src`` is a directory with an original-format (multi_modality) config."""
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src} is not a directory")
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {src} (expected {src / 'config.json'})")
    model_type = model_type_of(src)
    if model_type != ORIGINAL_MODEL_TYPE:
        if model_type == "janus":
            raise ConversionError(
                f"{src / 'config.json'} has model_type 'janus': it is already in transformers' "
                "format; load it as it is"
            )
        raise ConversionError(
            f"{src / 'config.json'} has model_type {model_type!r}, not {ORIGINAL_MODEL_TYPE!r}: "
            "not an original-format Janus / Janus-Pro checkpoint"
        )


def convert_checkpoint(
    src: str | os.PathLike, out: str | os.PathLike, log: Callable[[str], None] | None = print
) -> Path:
    """Convert the original-format checkpoint ``src`` into transformers' format at ``out``.

    Everything is written to a temporary directory beside ``out`` and renamed at the end, so
    a failed conversion leaves nothing behind. ``out`` must not exist, or be empty. Weights
    keep their stored dtype (bf16 stays bf16); one output shard per input shard.
    """
    from safetensors.torch import save_file

    src, out = Path(src), Path(out)
    say = log or (lambda _msg: None)
    check_original(src)
    if out.resolve() == src.resolve():
        raise ConversionError(f"--out {out} is --src; write the conversion to another directory")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"--out {out} exists and is not an empty directory; pick a new one")

    config_file = src / "config.json"
    original = read_json(config_file)
    pc_file = src / "processor_config.json"
    processor_config = read_json(pc_file) if pc_file.is_file() else {}
    tokenizer = build_tokenizer(src, processor_config)
    config = janus_config(original, tokenizer, config_file, processor_config)
    processor = build_processor(src, tokenizer, config.vision_config, processor_config)
    pad_stated = processor_config.get("pad_tag")
    if pad_stated and pad_stated != tokenizer.pad_token:
        say(
            f"note: the tokenizer's pad token {tokenizer.pad_token!r} (used for the "
            f"unconditional CFG prompt) differs from {pc_file.name}'s pad_tag {pad_stated!r}"
        )
    expected = expected_shapes(config)
    shards = weight_shards(src)
    say(f"converting {src} ({len(shards)} weight file(s)) -> {out}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.converting-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        seen, dtypes, weight_map, total, who = set(), Counter(), {}, 0, ""
        for i, shard in enumerate(shards, 1):
            state = load_shard(shard)
            names, who = rename_keys(list(state))
            converted: dict[str, torch.Tensor] = {}
            for old, new in names.items():
                if new is None:
                    continue
                for key, tensor in convert_tensors(old, new, state[old]):
                    if key not in expected:
                        raise ConversionError(
                            f"{shard}: weight {old!r} (-> {key!r}) has no place in transformers' "
                            "Janus; the checkpoint is not a Janus / Janus-Pro model this "
                            "converter knows"
                        )
                    if tuple(tensor.shape) != expected[key]:
                        raise ConversionError(
                            f"{shard}: weight {old!r} has shape {tuple(tensor.shape)} but "
                            f"{config_file}'s sizes give {expected[key]} for {key!r}"
                        )
                    if key in seen or key in converted:
                        raise ConversionError(f"{shard}: weight {key!r} appears twice")
                    converted[key] = tensor
                    dtypes[tensor.dtype] += tensor.numel()
            name = (
                "model.safetensors"
                if len(shards) == 1
                else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            )
            save_file(converted, str(tmp / name), metadata={"format": "pt"})
            size = sum(t.numel() * t.element_size() for t in converted.values())
            total += size
            weight_map.update(dict.fromkeys(converted, name))
            seen.update(converted)
            say(
                f"[{i}/{len(shards)}] {shard.name}: {len(converted)} tensors, "
                f"{size / 2**30:.2f} GiB -> {name}"
            )
            del state, converted
        missing = sorted(set(expected) - seen)
        if config.tie_word_embeddings:
            missing = [k for k in missing if k != "lm_head.weight"]
        if missing:
            raise ConversionError(
                f"{src}: {len(missing)} weights of transformers' Janus are not in the checkpoint, "
                f"e.g. {missing[:5]}"
            )
        if len(shards) > 1:
            index = {
                "metadata": {"total_size": total},
                "weight_map": dict(sorted(weight_map.items())),
            }
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        if dtypes:
            dtype = dtypes.most_common(1)[0][0]
            config.dtype = config.text_config.dtype = dtype
        config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(
        f"converted {src} -> {out} (weight names by {who}; dtype {str(config.dtype).removeprefix('torch.')})"
    )
    return out
