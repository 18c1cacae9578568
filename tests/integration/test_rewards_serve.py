"""Reward endpoints on a real Serve instance on 127.0.0.1: HTTP and handle APIs, bad input,
dynamic batching, DSR weight versions, and the RewardClient in both modes.

One Serve start-up for the whole module (each costs tens of seconds on a shared 2-core box).
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import socket

import httpx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rewards.accuracy import AccuracySettings, accuracy_reward
from rewards.client import RewardClient
from rewards.clip_score import ClipScorer, ClipScoreSettings
from rewards.config import RewardsConfig
from rewards.dual import DualSettings
from rewards.hps import HpsScorer, HpsSettings
from rewards.types import encode_png

MAX_ITEMS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(ray_local):
    from ray import serve

    from rewards.serve import run_endpoints

    cfg = RewardsConfig(
        endpoints=("accuracy", "hps", "dual", "toy_judge", "clip_score"),
        port=_free_port(),
        hps=HpsSettings(arch="tiny", seed=5, max_batch_size=8, batch_wait_s=0.05, num_cpus=1.0),
        accuracy=AccuracySettings(num_cpus=0.5, math_timeout_s=3.0),
        dual=DualSettings(num_cpus=1.0),
        clip_score=ClipScoreSettings(arch="tiny", seed=7, num_cpus=0.25),
        max_items_per_request=MAX_ITEMS,
        max_image_side=512,
        client_chunk_size=4,
        client_timeout_s=30.0,
        client_max_retries=1,
        client_backoff_s=0.05,
    )
    handles = run_endpoints(cfg)
    yield cfg, handles, f"http://127.0.0.1:{cfg.port}"
    serve.shutdown()


def _images(n: int, seed: int = 0, side: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]


ACC_ITEMS = [
    {"response": r"Adding the halves gives $\frac{1}{2}$.", "answer": "0.5", "kind": "math"},
    {"response": "The answer is 4.", "answer": "3", "kind": "math"},
    {
        "response": "Looking at the sky, it is blue. Answer: B",
        "answer": "B",
        "choices": ["red", "blue"],
    },
    {"response": "<answer>paris</answer>", "answer": "Paris", "kind": "text"},
]


def test_http_scores_match_the_callables(served):
    cfg, _, url = served
    r = httpx.post(f"{url}/accuracy/score", json={"items": ACC_ITEMS}, timeout=30)
    assert r.status_code == 200, r.text
    want = [
        accuracy_reward(
            it["response"], it["answer"], choices=it.get("choices"), kind=it.get("kind", "choice")
        )
        for it in ACC_ITEMS
    ]
    assert r.json()["rewards"] == want == [1.0, 0.0, 1.0, 1.0]

    imgs, prompts = _images(3), ["a red ball", "a cat", "snowy mountains"]
    body = {"items": [{"image": encode_png(i), "prompt": p} for i, p in zip(imgs, prompts)]}
    r = httpx.post(f"{url}/hps/score", json=body, timeout=30)
    assert r.status_code == 200, r.text
    # The replica's weights are the tiny model seeded with hps.seed: same scores here.
    local = HpsScorer("tiny", seed=cfg.hps.seed).score(imgs, prompts)
    assert np.allclose(r.json()["rewards"], local, atol=1e-5)

    assert httpx.get(f"{url}/hps/healthz").json()["status"] == "ok"

    # the CLIP-score endpoint (declared in one module) serves what its scorer computes
    r = httpx.post(f"{url}/clip_score/score", json=body, timeout=30)
    assert r.status_code == 200, r.text
    local = ClipScorer("tiny", seed=7).score(imgs, prompts)
    assert np.allclose(r.json()["rewards"], local, atol=1e-5)


def _toy_image(cells: dict, bg=(255, 255, 255)) -> np.ndarray:
    img = np.empty((4, 4, 3), np.uint8)
    img[:] = bg
    for rc, rgb in cells.items():
        img[rc] = rgb
    return img.repeat(16, 0).repeat(16, 1)  # [64, 64, 3]


def test_toy_judge_reports_its_terms_beside_the_reward(served):
    from rewards.toy import judge_details, toy_judge_reward

    red = (255, 0, 0)
    square = {(0, 0): red, (0, 1): red, (1, 0): red, (1, 1): red}
    prompt = "a red square in the top left on a white background"
    imgs = [_toy_image(square), _toy_image({(3, 3): red, (3, 2): red})]
    items = [{"image": im, "prompt": prompt} for im in imgs] + [
        {"image": imgs[0], "prompt": "a photo of a cat"}  # outside the toy grammar
    ]
    _, handles, url = served
    body = {"items": [{**it, "image": encode_png(it["image"])} for it in items]}
    r = httpx.post(f"{url}/toy_judge/score", json=body, timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["rewards"][:2] == [toy_judge_reward(im, prompt) for im in imgs] == [1.0, 0.0]
    assert got["rewards"][2] is None  # a failed reward is JSON null (NaN is not JSON)
    assert got["details"][:2] == [judge_details(im, prompt) for im in imgs]
    assert got["details"][0]["strict"] == 1.0 and got["details"][1]["position"] == 0.0
    assert got["details"][2] == {}
    h = handles["toy_judge"].score.remote({"items": items[:2]}).result(timeout_s=60)
    assert h["rewards"] == got["rewards"][:2] and h["details"] == got["details"][:2]
    # the client hands the details to the driver, aligned with the items (NaN reward: {})
    client = RewardClient("toy_judge", served[0], mode="http")
    rewards, details = client.score_with_details(items)
    assert rewards[:2] == [1.0, 0.0] and math.isnan(rewards[2])
    assert details == got["details"]
    # an endpoint without parts answers no details; the client gives empty dicts
    acc = RewardClient("accuracy", served[0], mode="http").score_with_details(ACC_ITEMS)
    assert acc[1] == [{}] * len(ACC_ITEMS)


def test_handle_api_takes_uint8_arrays(served):
    cfg, handles, _ = served
    imgs = _images(2, seed=1)
    got = (
        handles["hps"]
        .score.remote({"items": [{"image": im, "prompt": "a dog"} for im in imgs]})
        .result(timeout_s=60)
    )
    local = HpsScorer("tiny", seed=cfg.hps.seed).score(imgs, ["a dog"] * 2)
    assert np.allclose(got["rewards"], local, atol=1e-5)


def _png(mode: str, size=(32, 32)) -> str:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


GOOD = {"items": [{"image": _png("RGB"), "prompt": "a red ball"}]}
BAD_HPS = [
    ("malformed JSON", b'{"items": [', 400, "body"),
    ("not an object", b"[1, 2]", 400, "body"),
    ("missing items", b"{}", 422, "items"),
    ("missing field", {"items": [{"image": _png("RGB")}]}, 422, "items[0].prompt"),
    ("empty text", {"items": [{"image": _png("RGB"), "prompt": " "}]}, 422, "items[0].prompt"),
    (
        "non-image payload",
        {"items": [{"image": base64.b64encode(b"<html>").decode(), "prompt": "x"}]},
        415,
        "items[0].image",
    ),
    ("not base64", {"items": [{"image": "@@@", "prompt": "x"}]}, 422, "items[0].image"),
    ("wrong mode", {"items": [{"image": _png("RGBA"), "prompt": "x"}]}, 422, "items[0].image"),
    ("grey image", {"items": [{"image": _png("L"), "prompt": "x"}]}, 422, "items[0].image"),
    (
        "too small",
        {"items": [{"image": _png("RGB", (4, 4)), "prompt": "x"}]},
        422,
        "items[0].image",
    ),
    (
        "too large",
        {"items": [{"image": _png("RGB", (600, 32)), "prompt": "x"}]},
        422,
        "items[0].image",
    ),
    ("oversized batch", {"items": GOOD["items"] * (MAX_ITEMS + 1)}, 413, "items"),
]


@pytest.mark.parametrize(("case", "body", "status", "field"), BAD_HPS, ids=[c[0] for c in BAD_HPS])
def test_bad_input_gets_a_4xx_naming_the_field_and_the_replica_keeps_serving(
    served, case, body, status, field
):
    _, _, url = served
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(f"{url}/hps/score", timeout=30, **kw)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert r.json()["error"].startswith(f"{field}: ")
    ok = httpx.post(f"{url}/hps/score", json=GOOD, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["rewards"]) == 1


def test_bad_accuracy_and_dual_fields_are_named(served):
    _, _, url = served
    r = httpx.post(
        f"{url}/accuracy/score",
        timeout=30,
        json={"items": [{"response": "B", "answer": "B", "kind": "regex"}]},
    )
    assert (r.status_code, r.json()["field"]) == (422, "items[0].kind")
    r = httpx.post(
        f"{url}/dual/score",
        timeout=30,
        json={"items": [{"task": "understanding", "image": _png("RGB"), "text": ""}]},
    )
    assert (r.status_code, r.json()["field"]) == (422, "items[0].text")
    r = httpx.post(f"{url}/accuracy/score", json={"items": ACC_ITEMS[:1]}, timeout=30)
    assert r.json()["rewards"] == [1.0]


def test_dynamic_batching_fills_batches_across_requests(served):
    _, _, url = served
    before = httpx.get(f"{url}/hps/healthz").json()

    async def fire():
        async with httpx.AsyncClient(timeout=60) as c:
            rs = await asyncio.gather(*[c.post(f"{url}/hps/score", json=GOOD) for _ in range(8)])
        return [r.status_code for r in rs]

    assert asyncio.run(fire()) == [200] * 8
    after = httpx.get(f"{url}/hps/healthz").json()
    items, batches = after["items"] - before["items"], after["batches"] - before["batches"]
    # 8 one-item requests inside one 50 ms batch window: fewer batches than items.
    assert items == 8
    assert batches < items


def test_dual_loads_weight_versions_from_the_object_store(served):
    import ray

    from models import tiny_unified_model
    from rewards.dual import DualScorer

    _, handles, url = served
    imgs = _images(2, seed=3)
    items = [
        {"task": "understanding", "image": imgs[0], "text": "a red ball"},
        {"task": "generation", "image": imgs[1], "text": "a cat on a mat"},
    ]
    policy = tiny_unified_model(seed=0)  # dual.seed=0: the replica's version 0
    v0 = handles["dual"].score.remote({"items": items}).result(timeout_s=60)
    assert v0["version"] == 0
    ref_scores = DualScorer(policy).score(
        [i["task"] for i in items], imgs, [i["text"] for i in items]
    )
    assert np.allclose(v0["rewards"], ref_scores, atol=1e-5)

    # Version 1: the learner moved the trainable weights; published as name -> array.
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for p in policy.trainable_parameters().values():
            p.add_(torch.from_numpy(rng.normal(0, 0.05, tuple(p.shape)).astype(np.float32)))
    named = {n: p.detach().numpy().copy() for n, p in policy.trainable_parameters().items()}
    n = handles["dual"].load_weights.remote(ray.put(named), 1).result(timeout_s=60)
    assert n == len(named)
    assert httpx.get(f"{url}/dual/version").json() == {"version": 1}
    assert httpx.get(f"{url}/hps/version").status_code == 404  # follows no policy
    want = DualScorer(policy).score([i["task"] for i in items], imgs, [i["text"] for i in items])
    v1 = handles["dual"].score.remote({"items": items}).result(timeout_s=60)
    assert v1["version"] == 1
    assert np.allclose(v1["rewards"], want, atol=1e-5)
    assert not np.allclose(v1["rewards"], v0["rewards"], atol=1e-4)

    # Version 2, same weights as one flat uint8 buffer + manifest (the WeightsRef layout).
    manifest, off = [], 0
    for name, a in named.items():
        manifest.append((name, str(a.dtype), tuple(a.shape), off, a.nbytes))
        off += a.nbytes
    flat = np.concatenate([a.reshape(-1).view(np.uint8) for a in named.values()])
    handles["dual"].load_weights.remote(ray.put(flat), 2, tuple(manifest)).result(timeout_s=60)
    v2 = httpx.post(
        f"{url}/dual/score",
        timeout=60,
        json={"items": [{**it, "image": encode_png(it["image"])} for it in items]},
    ).json()
    assert v2["version"] == 2
    assert np.allclose(v2["rewards"], want, atol=1e-5)


@pytest.mark.parametrize("mode", ["http", "handle"])
def test_client_gives_nan_only_to_rollouts_it_could_not_score(served, mode):
    cfg, handles, url = served
    good = [{"image": im, "prompt": f"prompt {i}"} for i, im in enumerate(_images(6, seed=4))]
    items = [*good[:4], {"image": _images(1)[0], "prompt": ""}, *good[4:]]  # chunk 2 is bad
    client = RewardClient("hps", cfg, mode=mode, url=f"{url}/hps", handle=handles["hps"])
    got = client.score(items)
    local = HpsScorer("tiny", seed=cfg.hps.seed).score(
        [it["image"] for it in good], [it["prompt"] for it in good]
    )
    # Chunks of 4: [0..3] scored, [4..6] (the empty prompt's chunk) NaN, never 0.0.
    assert np.allclose(got[:4], local[:4], atol=1e-5)
    assert all(math.isnan(r) for r in got[4:])
    assert client.num_failed == 3 and client.retries == 0  # a 4xx is never retried
    ((endpoint, reason),) = client.failures
    assert endpoint == "hps" and "items[0].prompt" in reason


def test_client_times_out_retries_and_returns_nan(served):
    cfg, handles, _ = served
    import dataclasses

    tight = dataclasses.replace(
        cfg, client_timeout_s=0.001, client_max_retries=2, client_backoff_s=0.01
    )
    client = RewardClient("dual", tight, mode="handle", handle=handles["dual"])
    got = client.score([{"task": "understanding", "image": _images(1)[0], "text": "a ball"}])
    assert math.isnan(got[0])
    assert client.requests == 3 and client.retries == 2
    assert "timeout" in next(iter(client.failures))[1]


def test_a_hanging_math_answer_fails_alone_and_the_replica_serves_on(served):
    import threading
    import time

    _, _, url = served
    tower = {"items": [{"response": r"\boxed{9^{9^{9^{9}}}}", "answer": "1", "kind": "math"}]}
    valid = {"items": [{"response": r"\boxed{3x+2}", "answer": "2+3x", "kind": "math"}]}
    assert httpx.post(f"{url}/accuracy/score", json=valid, timeout=30).json()["rewards"] == [1.0]
    t0 = time.perf_counter()
    httpx.post(f"{url}/accuracy/score", json=valid, timeout=30)
    normal = time.perf_counter() - t0
    hung: list = []
    th = threading.Thread(
        target=lambda: hung.append(httpx.post(f"{url}/accuracy/score", json=tower, timeout=60))
    )
    th.start()
    time.sleep(0.5)  # the tower is being evaluated in one checker process
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/accuracy/score", json=valid, timeout=30)
    assert r.json()["rewards"] == [1.0]
    assert time.perf_counter() - t0 < normal + 1.0, "a valid request waited for the hanging one"
    health = httpx.get(f"{url}/accuracy/healthz", timeout=5)  # healthz answers meanwhile
    assert health.status_code == 200
    th.join()
    # past the 3 s limit: a failed reward (JSON null), counted by its reason
    assert hung[0].status_code == 200 and hung[0].json()["rewards"] == [None]
    assert httpx.get(f"{url}/accuracy/healthz").json()["math_failures"] == {"timeout": 1}


def test_deep_json_and_docs_routes_get_4xx(served):
    _, _, url = served
    deep = "[" * 100_000 + "]" * 100_000  # json.loads recursed into a 500
    r = httpx.post(f"{url}/accuracy/score", content=deep, timeout=30)
    assert r.status_code == 400 and r.json()["field"] == "body", r.text
    for path in ("docs", "openapi.json", "redoc"):  # off unless PAIRUNI_REWARD_API_DOCS=1
        assert httpx.get(f"{url}/accuracy/{path}", timeout=10).status_code == 404


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
_acc_item = st.fixed_dictionaries(
    {},
    optional={
        "response": st.text(max_size=60) | _json,
        "answer": st.sampled_from(["A", "B", "2x", "red", ""]) | _json,
        "kind": st.sampled_from(["choice", "math", "text"]) | _json,
        "choices": st.lists(st.text(max_size=4), max_size=30)
        | st.dictionaries(st.text(max_size=3), st.text(max_size=4), max_size=4)
        | _json,
    },
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(body=st.fixed_dictionaries({"items": st.lists(_acc_item | _json, max_size=3)}) | _json)
def test_fuzzed_requests_never_get_a_5xx(served, body):
    _, _, url = served
    r = httpx.post(f"{url}/accuracy/score", json=body, timeout=30)
    assert r.status_code < 500, (body, r.text)
    if r.status_code >= 400:
        assert "field" in r.json(), r.text


def test_the_replica_still_answers_after_the_fuzz(served):
    _, _, url = served
    r = httpx.post(f"{url}/accuracy/score", json={"items": ACC_ITEMS}, timeout=30)
    assert r.status_code == 200 and len(r.json()["rewards"]) == len(ACC_ITEMS)


def test_a_deleted_endpoint_fails_in_seconds_without_retries(served):
    # last in this module: it deletes the toy judge
    import time

    from ray import serve

    cfg, handles, _ = served
    import dataclasses

    patient = dataclasses.replace(cfg, client_timeout_s=60.0, client_max_retries=3)
    client = RewardClient("toy_judge", patient, mode="handle", handle=handles["toy_judge"])
    item = {"image": _toy_image({}), "prompt": "a red dot in the top left on a white background"}
    assert not math.isnan(client.score([item])[0])
    serve.delete("toy_judge")
    t0 = time.perf_counter()
    got = client.score([item])
    assert math.isnan(got[0])
    assert time.perf_counter() - t0 < 15, "a vanished endpoint waited for its timeouts"
    assert client.retries == 0, "a gone endpoint is not retried"
    assert "is gone" in next(iter(client.failures))[1]


def test_a_dead_runs_applications_are_found_and_deleted_by_name(served):
    # A killed driver leaves pairuni-<run>-<endpoint> applications; cleanup removes exactly
    # that run's, leaving other runs' and standalone endpoints running.
    from ray import serve

    from rewards.serve import cleanup_run_apps, run_endpoints

    cfg = served[0]
    run_endpoints(cfg, ("accuracy",), app_prefix="pairuni-dead-")
    run_endpoints(cfg, ("accuracy",), app_prefix="pairuni-alive-")
    assert cleanup_run_apps("dead", dry_run=True) == (["pairuni-dead-accuracy"], [])
    assert cleanup_run_apps("dead") == (["pairuni-dead-accuracy"], [])
    apps = set(serve.status().applications)
    assert "pairuni-dead-accuracy" not in apps
    assert {"pairuni-alive-accuracy", "accuracy", "hps"} <= apps
    assert cleanup_run_apps(None) == (["pairuni-alive-accuracy"], [])
    assert cleanup_run_apps("dead") == ([], [])
