"""`serve augment` on a real Serve instance on 127.0.0.1 with a tiny random Janus: the
OpenAI-compatible route, its errors, and the augmentation client run against it (a random
model writes no valid JSON, so every item goes through repair into the rejection path)."""

from __future__ import annotations

import base64
import io
import json
import socket
import tarfile

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pairing.augment import run_augment
from pairing.config import (
    AugmentConfig,
    AugmentServerConfig,
    FeatureConfig,
    GenerationSource,
    PairingConfig,
    UnderstandingSource,
)


def _png_bytes(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (40 * i % 256, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def _config(tmp_path, url: str, model: str) -> PairingConfig:
    """One understanding row (parquet) and one generation sample (tar shard)."""
    row = {
        "prompt": [{"role": "user", "content": "<image>What colour is it?"}],
        "images": [{"bytes": _png_bytes(1), "path": None}],
        "reward_model": {"ground_truth": "blue"},
        "ability": "colour",  # the Orsta task column the detection / grounding filter reads
    }
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "u.parquet")
    with tarfile.open(tmp_path / "g.tar", "w") as tar:
        for name, data in (("0.png", _png_bytes(2)), ("0.txt", b"a blue square")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return PairingConfig(
        und=UnderstandingSource(paths=(str(tmp_path / "u.parquet"),)),
        gen=GenerationSource(paths=(str(tmp_path / "g.tar"),)),
        features=FeatureConfig(allow_random_weights=True),
        augment=AugmentConfig(
            base_url=url,
            model=model,
            max_tokens=16,
            timeout_s=60.0,
            cache_dir=str(tmp_path / "cache"),
            output_dir=str(tmp_path / "aug"),
            progress=False,
        ),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(ray_local, tmp_path_factory):
    from ray import serve

    from models import tiny_unified_model
    from pairing.serve_augment import run_augment_server

    ckpt = tmp_path_factory.mktemp("tiny") / "tiny-janus"
    tiny_unified_model(seed=3).save(ckpt)
    cfg = AugmentServerConfig(
        model_path=str(ckpt), port=_free_port(), num_cpus=1.0, max_new_tokens=24
    )
    run_augment_server(cfg)
    yield f"http://127.0.0.1:{cfg.port}", "tiny-janus"
    serve.shutdown()


def _body(**kw) -> dict:
    url = "data:image/png;base64," + base64.b64encode(_png_bytes(1)).decode()
    return {
        "model": "tiny-janus",
        "messages": [
            {"role": "system", "content": "Answer in JSON."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "Describe the image."},
                ],
            },
        ],
        **kw,
    }


def test_chat_completions_protocol(endpoint):
    url, name = endpoint
    assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == name
    r = httpx.post(f"{url}/v1/chat/completions", json=_body(n=2, max_tokens=8, seed=1), timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and len(out["choices"]) == 2
    u = out["usage"]
    # Each sample has at most max_tokens=8 tokens; a sample cut at 8 reports "length".
    assert 2 <= u["completion_tokens"] <= 16
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    # The prompt holds the image's 16 tokens (tiny vision: 64 px / patch 16 -> 4x4) + text.
    assert u["prompt_tokens"] > 16
    for c in out["choices"]:
        assert isinstance(c["message"]["content"], str)
        assert c["finish_reason"] in ("stop", "length")
    # Same seed, same draws.
    again = httpx.post(
        f"{url}/v1/chat/completions", json=_body(n=2, max_tokens=8, seed=1), timeout=60
    ).json()
    assert [c["message"] for c in again["choices"]] == [c["message"] for c in out["choices"]]


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"model": "other"}, 404, "model"),
        ({"messages": []}, 400, "messages"),
        ({"n": 0}, 400, "n"),
        ({"temperature": -1}, 400, "temperature"),
        ({"messages": [{"role": "user", "content": "no image"}]}, 400, "messages"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                    }
                ]
            },
            400,
            "messages[0].content[0].image_url.url",
        ),
    ],
)
def test_bad_requests_get_openai_errors_naming_the_param(endpoint, change, status, param):
    url, _ = endpoint
    r = httpx.post(f"{url}/v1/chat/completions", json={**_body(), **change}, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_client_against_the_tiny_model_takes_the_rejection_path(endpoint, tmp_path):
    url, name = endpoint
    cfg = _config(tmp_path, f"{url}/v1", name)
    rep = run_augment(cfg)
    # A random 1000-token model writes no four-option JSON: both items are asked, repaired
    # once, and recorded as rejected by validation with the reason and the last reply.
    assert (rep["items"], rep["completed"], rep["rejected"]) == (2, 0, 2)
    assert rep["rejected_by_stage"] == {"validate": 2}
    assert rep["usage"]["requests"] == 4  # 2 items x (ask + 1 repair)
    assert rep["usage"]["completion_tokens"] > 0 and rep["usage"]["prompt_tokens"] > 0
    rows = [json.loads(x) for x in (tmp_path / "aug" / "rejected.jsonl").read_text().splitlines()]
    assert {r["side"] for r in rows} == {"und", "gen"}
    for r in rows:
        assert "(after 1 repair round(s))" in r["reason"] and r["model"] == name
    # Rejections are final answers of this model: a re-run asks nothing.
    rep2 = run_augment(cfg)
    assert (rep2["from_cache"], rep2["requested"]) == (2, 0)
