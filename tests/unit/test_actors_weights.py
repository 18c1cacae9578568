"""The flat weights buffer: layout, round trips, zero-copy receive, errors, versions."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from actors.types import WeightsRef
from actors.weights import (
    ALIGN,
    UNSYNCED,
    ManifestError,
    StaleWeightsError,
    VersionedWeights,
    fetch,
    flatten,
    load_into,
    publish,
    unflatten_views,
)


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(3, 5, generator=g),  # fp32: 60 bytes
        "b": torch.randn(7, generator=g).to(torch.bfloat16),  # bf16: 14 bytes
        "c": torch.arange(4, dtype=torch.int64),  # 32 bytes
        "d": torch.randn(2, 2, 2, generator=g).to(torch.float16),  # 16 bytes
    }


def test_layout_offsets_are_aligned_and_hand_derived():
    buf, man = flatten(_tensors())
    # a: 3*5*4 = 60 B at 0; b: 7*2 = 14 B at 64 (60 rounded up to 64);
    # c: 4*8 = 32 B at 128 (64+14=78 -> 128); d: 8*2 = 16 B at 192 (160 -> 192); end 208 -> 256.
    assert man == (
        ("a", "float32", (3, 5), 0, 60),
        ("b", "bfloat16", (7,), 64, 14),
        ("c", "int64", (4,), 128, 32),
        ("d", "float16", (2, 2, 2), 192, 16),
    )
    assert buf.dtype == np.uint8 and buf.shape == (256,)
    assert all(off % ALIGN == 0 for _, _, _, off, _ in man)
    # padding bytes are zero (no stale memory travels)
    assert not buf[60:64].any() and not buf[78:128].any() and not buf[208:].any()


def test_round_trip_bit_exact_fp32_bf16_fp16_int():
    src = _tensors()
    buf, man = flatten(src)
    views = unflatten_views(buf, man)
    assert list(views) == list(src)
    for name, t in src.items():
        assert views[name].dtype == t.dtype and views[name].shape == t.shape
        # compare raw bits: bf16 must not pass through a float conversion
        assert torch.equal(views[name].view(torch.uint8), t.view(torch.uint8)), name


def test_bf16_bits_are_the_int16_view():
    # bf16 1.0 = 0x3F80 = 16256 and -2.0 = 0xC000 = -16384 as int16.
    buf, _ = flatten({"w": torch.tensor([1.0, -2.0], dtype=torch.bfloat16)})
    assert buf[:4].view(np.int16).tolist() == [16256, -16384]


def test_receive_is_zero_copy_even_read_only():
    buf, man = flatten(_tensors())
    buf.setflags(write=False)  # like an object-store buffer from ray.get
    views = unflatten_views(buf, man)
    for name, t in views.items():
        arr = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()
        assert np.shares_memory(arr, buf), name
    off = man[0][3]
    assert views["a"].data_ptr() == buf.ctypes.data + off


def test_flatten_casts_floats_only():
    buf, man = flatten({"w": torch.ones(3), "i": torch.ones(2, dtype=torch.int64)}, torch.bfloat16)
    assert [e[1] for e in man] == ["bfloat16", "int64"]
    assert unflatten_views(buf, man)["w"].tolist() == [1.0, 1.0, 1.0]


def test_load_into_copies_and_checks():
    src = {"x": torch.randn(4, 3), "y": torch.randn(2).to(torch.bfloat16)}
    params = {
        "x": torch.nn.Parameter(torch.zeros(4, 3)),
        "y": torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16)),
    }
    buf, man = flatten(src)
    assert load_into(params, buf, man) == 4 * 3 * 4 + 2 * 2
    assert torch.equal(params["x"].data, src["x"]) and torch.equal(params["y"].data, src["y"])
    assert params["x"].requires_grad  # still a trainable parameter
    buf[:] = 0  # the parameters own their memory: changing the buffer leaves them alone
    assert torch.equal(params["x"].data, src["x"])

    with pytest.raises(ManifestError, match=r"1 missing from the manifest \['z'\]"):
        load_into({**params, "z": torch.nn.Parameter(torch.zeros(1))}, buf, man)
    with pytest.raises(ManifestError, match=r"1 unknown to the receiver \['y'\]"):
        load_into({"x": params["x"]}, buf, man)
    with pytest.raises(
        ManifestError, match=r"x: manifest shape \(4, 3\) != parameter shape \(3, 4\)"
    ):
        load_into({"x": torch.nn.Parameter(torch.zeros(3, 4)), "y": params["y"]}, buf, man)
    with pytest.raises(ManifestError, match="y: manifest dtype torch.bfloat16 != parameter dtype"):
        load_into({"x": params["x"], "y": torch.nn.Parameter(torch.zeros(2))}, buf, man)


@pytest.mark.parametrize(
    "entry, message",
    [
        (("a", "float32", (3, 5), 0), r"expected \(name, dtype, shape, offset, nbytes\)"),
        (("a", "float8", (3, 5), 0, 60), r"dtype 'float8' is not one of"),
        (("a", "float32", (3, 5), 0, 64), r"nbytes=64 but shape \(3, 5\) of float32 needs 60"),
        (("a", "float32", (3, 5), 8, 60), r"offset 8 is not a multiple of 64"),
        (("a", "float32", (16, 5), 0, 320), r"bytes \[0, 320\) fall outside the 256-byte buffer"),
    ],
)
def test_bad_manifest_names_entry(entry, message):
    buf, man = flatten(_tensors())
    with pytest.raises(ManifestError, match=message):
        unflatten_views(buf, (entry, *man[1:]))


def test_bad_buffer_and_duplicate_names():
    buf, man = flatten(_tensors())
    with pytest.raises(ManifestError, match="1-D uint8 numpy array"):
        unflatten_views(buf.view(np.int16), man)
    with pytest.raises(ManifestError, match="name 'a' appears twice"):
        unflatten_views(buf, (man[0], man[0]))
    with pytest.raises(ManifestError, match="no tensors"):
        flatten({})
    with pytest.raises(ManifestError, match="cannot travel"):
        flatten({"z": torch.zeros(2, dtype=torch.complex64)})


def test_publish_local_keeps_the_buffer():
    ref = publish(_tensors(), 3, use_ray=False)
    assert ref.version == 3 and isinstance(ref.ref, np.ndarray)
    assert fetch(ref) is ref.ref
    with pytest.raises(StaleWeightsError, match="integers >= 0"):
        publish(_tensors(), -1, use_ray=False)


def test_versions_only_go_forward(caplog):
    v = VersionedWeights("text worker 0")
    assert v.version == UNSYNCED
    assert v.offer(WeightsRef(0, None, ()))
    assert v.offer(WeightsRef(2, None, ()))
    with caplog.at_level(logging.WARNING):
        assert not v.offer(WeightsRef(2, None, ()))  # equal: ignored
        assert not v.offer(WeightsRef(1, None, ()))  # older: ignored
    assert v.version == 2
    assert "text worker 0: refusing weights version 1: already at version 2" in caplog.text
    with pytest.raises(StaleWeightsError, match="refusing weights version 2"):
        v.require_newer(2)
    v.require_newer(3)


def test_flatten_into_writes_each_tensor_once_in_place_cast_or_not():
    from actors.weights import Publisher, flatten_into, layout

    src = {**_tensors(), "e": torch.randn(4, 3).t()}  # a non-contiguous fp32 view
    manifest, size = layout(src, torch.bfloat16)
    buffer = np.full(size, 7, dtype=np.uint8)  # stale bytes from an earlier version
    flatten_into(buffer, src, manifest)
    got = unflatten_views(buffer, manifest)
    for name, t in src.items():
        want = t.to(torch.bfloat16) if t.is_floating_point() else t
        assert got[name].dtype == want.dtype and torch.equal(got[name], want), name
    # local mode (no object store): every version keeps a buffer of its own
    pub = Publisher()
    one, two = pub.publish(src, 1, use_ray=False), pub.publish(src, 2, use_ray=False)
    assert one.ref is not two.ref and np.array_equal(one.ref, two.ref)


def test_the_dict_of_bytes_reads_like_the_flat_buffer_and_names_a_bad_part():
    src = _tensors()
    buf, man = flatten(src)
    # what Publisher puts: each tensor's bytes under its name (offsets unused)
    parts = {name: buf[off : off + nbytes] for name, _, _, off, nbytes in man}
    views = unflatten_views(parts, man)
    for name, t in src.items():
        assert torch.equal(views[name].view(torch.uint8), t.view(torch.uint8)), name
        assert np.shares_memory(views[name].view(torch.uint8).numpy(), parts[name])
    params = {
        n: torch.nn.Parameter(torch.zeros_like(t), requires_grad=False) for n, t in src.items()
    }
    assert load_into(params, parts, man) == 60 + 14 + 32 + 16
    assert all(torch.equal(params[n].data, t) for n, t in src.items())
    with pytest.raises(
        ManifestError, match=r"manifest\[1\] \('b'\): needs 14 uint8 bytes.*missing"
    ):
        unflatten_views({k: v for k, v in parts.items() if k != "b"}, man)
    with pytest.raises(ManifestError, match=r"\('c'\): needs 32 uint8 bytes.*ndarray \(16,\)"):
        unflatten_views({**parts, "c": parts["c"][:16]}, man)
