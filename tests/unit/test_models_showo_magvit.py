"""Show-o's MAGVIT-v2 tokenizer (models/showo_magvit.py): the published parameter names, the
lookup-free code convention by hand, strict loading of a tokenizer directory written in the
published layout, and a tiny Show-o checkpoint that decodes and encodes images with it."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from models.showo import check_checkpoint_dir, load_showo, tiny_showo
from models.showo_magvit import AttnBlock, LFQuantizer, MagvitV2, code_bits, load_magvit
from models.showo_vq import MISSING_VQ, load_vq

# A tiny MAGVIT-v2 a tiny Show-o can use: 5 levels (16 px per code, as published), 32 channels
# (GroupNorm's 32 groups), one block per level, 8 latent bits (256 codes = tiny_showo's).
LEVELS = {"ch": 32, "ch_mult": [1, 1, 1, 1, 1], "num_res_blocks": [1, 1, 1, 1, 1],
          "resolution": 64, "z_channels": 8}  # fmt: skip
TINY = {"encoder": LEVELS, "decoder": LEVELS, "quantize": {"codebook_dim": 8}}


def _tiny_magvit(seed: int = 0) -> MagvitV2:
    torch.manual_seed(seed)
    return MagvitV2(**TINY).eval()


def _write_published(directory, vq: MagvitV2, settings: dict = TINY) -> None:
    """The published tokenizer layout: config.json (the class name, a library version, and
    here the tiny sizes) + pytorch_model.bin, a torch.save'd state dict."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {"_class_name": "MAGVITv2", "_diffusers_version": "0.30.1", **settings}
    (directory / "config.json").write_text(json.dumps(cfg))
    torch.save(vq.state_dict(), directory / "pytorch_model.bin")


# ---- the lookup-free quantizer ------------------------------------------------------------
def test_lfq_code_of_known_signs_by_hand():
    q = LFQuantizer(3)
    # [1, 3, 1, 2]: position (0, 0) signs (+, -, 0) -> bits 1 0 0 -> 4 (channel 0 = MSB, and
    # zero is bit 0); position (0, 1) signs (-, +, +) -> bits 0 1 1 -> 3.
    z = torch.tensor([[[[0.7, -1.0]], [[-0.2, 2.0]], [[0.0, 3.0]]]])
    assert q.indices(z).tolist() == [[4, 3]]
    # row-major over a 2 x 2 grid, 2 bits: code at (r, c) is 2 * [z0 > 0] + [z1 > 0]
    q2 = LFQuantizer(2)
    z2 = torch.tensor([[[[1.0, 1.0], [-1.0, -1.0]], [[1.0, -1.0], [1.0, -1.0]]]])  # [1, 2, 2, 2]
    assert q2.indices(z2).tolist() == [[3, 2, 1, 0]]


def test_lfq_codes_bits_codes_round_trip_all_codes():
    q = LFQuantizer(4)
    assert q.embedding[6].tolist() == [-1, 1, 1, -1]  # 6 = 0b0110
    assert q.embedding[0].tolist() == [-1] * 4 and q.embedding[15].tolist() == [1] * 4
    assert q.power_vals.tolist() == [8, 4, 2, 1]
    codes = torch.arange(16).view(1, 16)  # every code once, as a 4 x 4 grid
    z = q.vectors(codes, 4, 4)  # [1, 4, 4, 4]
    assert z.shape == (1, 4, 4, 4) and set(z.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(q.indices(z), codes)
    assert torch.equal(code_bits(4)[11], torch.tensor([1, 0, 1, 1]))  # 11 = 0b1011


def test_attention_against_a_brute_force_loop():
    torch.manual_seed(0)
    a = AttnBlock(32)
    x = torch.randn(1, 32, 2, 3)
    h = a.norm(x)
    q, k, v = (m(h).view(32, 6) for m in (a.q, a.k, a.v))  # [C, P]
    out = torch.zeros(32, 6)
    for i in range(6):  # position i attends over all j with softmax(q_i . k_j / sqrt(C))
        w = torch.softmax(torch.stack([q[:, i] @ k[:, j] for j in range(6)]) / math.sqrt(32), 0)
        out[:, i] = sum(w[j] * v[:, j] for j in range(6))
    expect = x + a.proj_out(out.view(1, 32, 2, 3))
    torch.testing.assert_close(a(x), expect, atol=1e-5, rtol=1e-5)


# ---- the published names -------------------------------------------------------------------
def _wb(*modules):
    return [f"{m}.{p}" for m in modules for p in ("weight", "bias")]


def _res(prefix, shortcut=False):
    return _wb(*(f"{prefix}.{n}" for n in ("norm1", "conv1", "norm2", "conv2")),
               *([f"{prefix}.nin_shortcut"] if shortcut else []))  # fmt: skip


def _attn(prefix):
    return _wb(*(f"{prefix}.{n}" for n in ("norm", "q", "k", "v", "proj_out")))


def _mid(prefix):
    return [*_res(f"{prefix}.block_1"), *_attn(f"{prefix}.attn_1"), *_res(f"{prefix}.block_2")]


def test_state_dict_names_follow_the_published_pattern():
    # Derived by hand from Show-o's modeling_magvitv2.py / common_modules.py for two levels:
    # encoder ch 32, ch_mult (1, 2), blocks (1, 2), attention at resolution 8 (level 1 of a
    # 16 px input); decoder the same widths, blocks (1, 1).
    small = {"ch": 32, "ch_mult": [1, 2], "attn_resolutions": [8], "resolution": 16,
             "z_channels": 4}  # fmt: skip
    vq = MagvitV2({**small, "num_res_blocks": [1, 2]}, {**small, "num_res_blocks": [1, 1]},
                  {"codebook_dim": 4})  # fmt: skip
    expect = [
        *_wb("encoder.conv_in"),
        *_res("encoder.down.0.block.0"),  # 32 -> 32 at 16 px: no attention, no shortcut
        *_wb("encoder.down.0.downsample.conv"),
        *_res("encoder.down.1.block.0", shortcut=True),  # 32 -> 64 at 8 px
        *_res("encoder.down.1.block.1"),
        *_attn("encoder.down.1.attn.0"),
        *_attn("encoder.down.1.attn.1"),  # last level: no downsample
        *_mid("encoder.mid"),
        *_wb("encoder.norm_out", "encoder.conv_out", "encoder.quant_conv"),
        *_wb("decoder.conv_in"),
        *_mid("decoder.mid"),
        *_res("decoder.up.0.block.0", shortcut=True),  # 64 -> 32 at 16 px
        *_res("decoder.up.1.block.0"),  # 64 -> 64 at 8 px, attention, then upsampling
        *_attn("decoder.up.1.attn.0"),
        *_wb("decoder.up.1.upsample.conv"),
        *_wb("decoder.norm_out", "decoder.conv_out", "decoder.post_quant_conv"),
        "quantize.embedding",
        "quantize.power_vals",
    ]
    sd = vq.state_dict()
    assert sorted(sd) == sorted(expect)
    assert sd["encoder.conv_out.weight"].shape == (4, 64, 3, 3)
    assert sd["decoder.conv_in.weight"].shape == (64, 4, 3, 3)
    assert sd["decoder.conv_out.weight"].shape == (3, 32, 3, 3)
    assert sd["quantize.embedding"].shape == (16, 4)
    # the forward wiring of differing widths (a level run out of order would not fit)
    assert vq.decode(vq.encode(torch.zeros(1, 3, 16, 16))).shape == (1, 3, 16, 16)


def test_published_size_by_hand():
    with torch.device("meta"):
        vq = MagvitV2()  # the published sizes
    sd = vq.state_dict()
    # per side: 18 residual blocks x 8 tensors, 2 width changes x 2 (a nin_shortcut each),
    # 4 resamplers x 2, mid 2 x 8 + 10, conv_in / norm_out / conv_out / (post_)quant_conv 4 x 2
    assert len(sd) == 2 * (18 * 8 + 2 * 2 + 4 * 2 + 26 + 4 * 2) + 2 == 382
    assert [k for k in sd if "nin_shortcut.weight" in k] == [
        "encoder.down.1.block.0.nin_shortcut.weight",  # 128 -> 256
        "encoder.down.3.block.0.nin_shortcut.weight",  # 256 -> 512
        "decoder.up.1.block.0.nin_shortcut.weight",  # 256 -> 128
        "decoder.up.3.block.0.nin_shortcut.weight",  # 512 -> 256
    ]
    assert not [k for k in sd if ".attn." in k]  # attn_resolutions [5]: never reached
    assert sd["encoder.conv_out.weight"].shape == (13, 512, 3, 3)
    assert sd["decoder.conv_in.weight"].shape == (512, 13, 3, 3)
    assert sd["quantize.embedding"].shape == (8192, 13) and vq.codebook_size == 8192
    assert vq.downsample == 16


# ---- encode / decode ---------------------------------------------------------------------
def test_encode_is_the_sign_code_of_the_encoder_and_decode_has_the_right_shapes():
    vq = _tiny_magvit()
    px = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    codes = vq.encode(px)
    assert codes.shape == (2, 16) and codes.dtype == torch.long
    with torch.no_grad():
        z = vq.encoder(px)  # [2, 8, 4, 4]
    for n in range(2):
        for r in range(4):
            for c in range(4):
                bits = [int(z[n, ch, r, c] > 0) for ch in range(8)]
                assert codes[n, r * 4 + c] == int("".join(map(str, bits)), 2)
    out = vq.decode(codes)
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"outside the codebook \[0, 256\)"):
        vq.decode(torch.full((1, 16), 256))
    with pytest.raises(ValueError, match="not a square grid"):
        vq.decode(torch.zeros(1, 15, dtype=torch.long))


# ---- loading a published-layout directory -----------------------------------------------
def test_published_layout_loads_strictly(tmp_path):
    vq = _tiny_magvit(1)
    _write_published(tmp_path / "magvitv2", vq)
    cfg = json.loads((tmp_path / "magvitv2" / "config.json").read_text())
    back = load_magvit(tmp_path / "magvitv2", cfg)
    assert not back.training and not any(p.requires_grad for p in back.parameters())
    for k, v in vq.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    px = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.equal(back.encode(px), vq.encode(px))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda sd: sd.pop("decoder.up.0.block.0.conv2.bias"),
         r"pytorch_model.bin.*missing \['decoder.up.0.block.0.conv2.bias'\]"),
        (lambda sd: sd.__setitem__("encoder.down.0.block.0.temb_proj.weight", torch.zeros(1)),
         r"unexpected \['encoder.down.0.block.0.temb_proj.weight'\]"),
        (lambda sd: sd.__setitem__("encoder.conv_in.bias", torch.zeros(7)),
         r"encoder.conv_in.bias \(7,\) != \(32,\)"),
        (lambda sd: sd.__setitem__("quantize.embedding", sd["quantize.embedding"].flip(1)),
         "quantize.embedding differs from the lookup-free code table"),
    ],
)  # fmt: skip
def test_a_malformed_weight_file_names_the_file_and_the_key(tmp_path, edit, match):
    sd = _tiny_magvit().state_dict()
    edit(sd)
    d = tmp_path / "vq"
    _write_published(d, _tiny_magvit())
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(ValueError, match=match):
        load_magvit(d, json.loads((d / "config.json").read_text()))


# ---- inside a Show-o checkpoint ---------------------------------------------------------
@pytest.fixture(scope="module")
def showo():
    m = tiny_showo(0)
    m.settings = dataclasses.replace(m.settings, steps=2)
    m.vq = _tiny_magvit(2)
    return m


def test_showo_checkpoint_decodes_sampled_codes_with_magvit(showo, tmp_path):
    showo.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "vq" / "model.safetensors").is_file()
    m = load_showo(tmp_path / "ckpt")
    m.settings = showo.settings
    assert type(m.vq) is MagvitV2
    for k, v in showo.vq.state_dict().items():
        assert torch.equal(v, m.vq.state_dict()[k]), k
    codes = m.sample_image_tokens(["a red circle"], 2, cfg_weight=2.0, seed=0).tokens
    assert codes.shape == (2, 16)
    images = m.decode_images(codes)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    again = m.encode_images(list(images))
    assert again.shape == (2, 16) and int(again.max()) < 256
    assert torch.equal(again, showo.encode_images(list(images)))


def test_vq_model_name_points_to_a_published_tokenizer_directory(showo, tmp_path):
    # Show-o's checkpoint without vq/, config.json's vq_model_name naming the downloaded
    # tokenizer (relative to the checkpoint); ShowoModel.save then links it into vq/.
    showo.save(tmp_path / "ckpt")
    ckpt = tmp_path / "ckpt"
    for f in (ckpt / "vq").iterdir():
        f.unlink()
    (ckpt / "vq").rmdir()
    _write_published(tmp_path / "magvitv2", showo.vq)
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, "vq_model_name": "../magvitv2"}))
    check_checkpoint_dir(ckpt)
    m = load_showo(ckpt)
    assert m.vq.source == ckpt / "../magvitv2"
    m.save(tmp_path / "saved")
    saved = tmp_path / "saved"
    assert "vq_model_name" not in json.loads((saved / "config.json").read_text())
    assert (saved / "vq" / "pytorch_model.bin").read_bytes() == (
        tmp_path / "magvitv2" / "pytorch_model.bin"
    ).read_bytes()
    back = load_showo(saved)
    codes = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(3))
    assert np.array_equal(back.decode_images(codes), showo.decode_images(codes))


def _ckpt_cfg(showo):
    return {**showo.config, "llm_model_path": "llm"}


def test_tokenizer_directory_errors_name_the_file_and_the_key(showo, tmp_path):
    cfg = _ckpt_cfg(showo)
    assert load_vq(tmp_path, cfg) is None  # no vq/, no key: decode raises MISSING_VQ
    assert "vq_model_name" in MISSING_VQ
    with pytest.raises(FileNotFoundError, match="config.json: vq_model_name='nowhere'"):
        load_vq(tmp_path, {**cfg, "vq_model_name": "nowhere"})
    vq = tmp_path / "vq"
    vq.mkdir()
    (vq / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"vq/config.json: not a readable tokenizer config"):
        load_vq(tmp_path, cfg)
    (vq / "config.json").write_text(json.dumps({"_class_name": "VQModel"}))
    with pytest.raises(ValueError, match="_class_name 'VQModel' is no image tokenizer"):
        load_vq(tmp_path, cfg)
    (vq / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2", **TINY}))
    with pytest.raises(FileNotFoundError, match=r"vq: MAGVIT-v2 tokenizer without weights"):
        load_vq(tmp_path, cfg)
    bad = {**TINY, "encoder": {**LEVELS, "channels": 8}}
    (vq / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2", **bad}))
    with pytest.raises(ValueError, match=r"config.json: 'encoder' has \['channels'\]"):
        load_vq(tmp_path, cfg)
    _write_published(vq, _tiny_magvit())
    with pytest.raises(ValueError, match="256 codes but .*codebook_size is 8192"):
        load_vq(tmp_path, {**cfg, "codebook_size": 8192})
    two = {"ch": 32, "ch_mult": [1, 1], "num_res_blocks": [1, 1], "z_channels": 8}
    small = {"encoder": two, "decoder": two, "quantize": {"codebook_dim": 8}}
    _write_published(vq, MagvitV2(**small), small)
    with pytest.raises(ValueError, match="encoder.ch_mult has 2 levels"):
        load_vq(tmp_path, cfg)


def test_resampling_and_residual_blocks_by_hand():
    from models.showo_magvit import Downsample, ResnetBlock, Upsample

    # Downsample: pad one zero row / column at the right and bottom (not the left / top),
    # then a stride-2 3x3 conv. All-ones kernel on x = 0..15 (4 x 4): out[0, 0] sums x[0:3,
    # 0:3] = 0+1+2+4+5+6+8+9+10 = 45; out[1, 1] sums x[2:4, 2:4] + padding = 10+11+14+15 = 50.
    down = Downsample(1)
    with torch.no_grad():
        down.conv.weight.fill_(1.0)
        down.conv.bias.zero_()
        out = down(torch.arange(16.0).view(1, 1, 4, 4))
    assert out.shape == (1, 1, 2, 2) and out[0, 0, 0, 0] == 45 and out[0, 0, 1, 1] == 50
    # Upsample: nearest x2, then a 3x3 conv (here the centre tap: identity)
    up = Upsample(1)
    with torch.no_grad():
        up.conv.weight.zero_()
        up.conv.weight[0, 0, 1, 1] = 1.0
        up.conv.bias.zero_()
        y = up(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
    assert y[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    # Residual block: with conv2 zero it is its skip path (x, or the 1x1 nin_shortcut of x)
    x = torch.randn(1, 32, 3, 3)
    for c_out in (32, 64):
        block = ResnetBlock(32, c_out, 0.0)
        with torch.no_grad():
            block.conv2.weight.zero_()
            block.conv2.bias.zero_()
            skip = block.nin_shortcut(x) if c_out != 32 else x
            torch.testing.assert_close(block(x), skip)
    assert block.norm1.num_groups == 32 and block.norm1.eps == 1e-6
