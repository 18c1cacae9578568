"""Converting DeepSeek's original Janus layout (``multi_modality``) into transformers' format.

The tiny random Janus is written in the original layout by ``bench.original_layout``
(DeepSeek's config keys, weight names, fused qkv, timm's batched position embedding, the
dropped pooling head and codebook statistics, tokenizer and VLChatProcessor files),
converted, loaded, and compared with the model it was written from.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bench.original_layout import write_original
from models import convert as cv
from models import image_tokens, load_unified_model, tiny_unified_model
from models.tiny import SPECIAL_TOKENS

PROMPTS = ["a red circle", "two blue squares on a white background"]
QUESTIONS = ["what colour is it?", "how many shapes are there in the picture?"]

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
