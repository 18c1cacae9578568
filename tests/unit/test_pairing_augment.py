"""Quadruple augmentation against a real HTTP server on 127.0.0.1 that speaks the OpenAI
chat-completions protocol and answers from a script: valid, fenced, invalid-then-valid,
always invalid, 500-then-valid, 429-then-valid, slow (timeout) then valid, always 503, 400.
Plus the pure parts: strict validation, variants, templates, cache, and `pairuni pair`
consuming the quadruples."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from test_pairing_data import png, write_gen_tar, write_und_parquet

from pairing.augment import AugmentError, ChatClient, image_data_url, run_augment
from pairing.cli import run_pair
from pairing.config import (
    AugmentConfig,
    FeatureConfig,
    GenerationSource,
    PairingConfig,
    UnderstandingSource,
)
from pairing.manifest import read_manifest
from pairing.quadruples import (
    AnswerCache,
    AugItem,
    ReplyError,
    item_id,
    load_quadruples,
    parse_json_reply,
    validate_reply,
    variant_keyword,
)
from pairing.templates import load_template

ROOT = Path(__file__).resolve().parents[2]
CFG = AugmentConfig(model="scripted")
CAPTION = {"prompt": " ".join(["a red square"] * 7)}  # 21 words: inside [15, 60]
QA = {
    "question": "What colour is the square?",
    "options": {"A": "red", "B": "green", "C": "blue", "D": "yellow"},
    "answer": "A",
}
QUAD = {  # the one-reply form of caption_v2 / qa_v2: both halves, the same texts as above
    "question": QA["question"],
    "choices": QA["options"],
    "answer": "A",
    "detail_prompt": CAPTION["prompt"],
}


# ----------------------------------------------------------------------------- strict parsing


def test_valid_replies_parse_and_normalise():
    assert validate_reply("caption", json.dumps(CAPTION), CFG) == {"prompt": CAPTION["prompt"]}
    fenced = "```json\n" + json.dumps(QA) + "\n```"
    assert validate_reply("qa", fenced, CFG) == {
        "question": "What colour is the square?",
        "choices": ["red", "green", "blue", "yellow"],
        "answer": "A",
    }


BAD = [
    ("caption", "", "empty"),
    ("caption", "Sure! " + json.dumps(CAPTION), "not one JSON object"),
    ("caption", json.dumps(CAPTION) + json.dumps(CAPTION), "not one JSON object"),
    ("caption", "[1, 2]", "got a JSON list"),
    ("caption", '{"prompt": "a", "prompt": "b"}', "duplicate keys"),
    ("caption", json.dumps({**CAPTION, "style": "x"}), "extra keys ['style']"),
    ("caption", json.dumps({"prompt": "a red square"}), "has 3 words"),
    ("caption", json.dumps({"prompt": 3}), "must be a string"),
    ("qa", json.dumps({**QA, "options": {"A": "r", "B": "g", "C": "b"}}), "missing keys ['D']"),
    ("qa", json.dumps({**QA, "options": ["r", "g", "b", "y"]}), "got list"),
    ("qa", json.dumps({**QA, "answer": "E"}), "one of the letters"),
    ("qa", json.dumps({**QA, "answer": "red"}), "one of the letters"),
    ("qa", json.dumps({**QA, "options": {**QA["options"], "D": "Red"}}), "distinct"),
    ("qa", json.dumps({**QA, "question": "Which? A. red B. green"}), "contains the options"),
    ("qa", json.dumps({**QA, "extra": 1}), "extra keys ['extra']"),
    ("qa", '{"question": NaN}', "NaN is not valid JSON"),
]


@pytest.mark.parametrize(("task", "reply", "why"), BAD, ids=[f"{b[0]}-{b[2]}" for b in BAD])
def test_invalid_replies_are_rejected_with_a_reason(task, reply, why):
    with pytest.raises(ReplyError, match=re.escape(why)):
        validate_reply(task, reply, CFG)


def test_parse_rejects_prose_around_a_fence():
    with pytest.raises(ReplyError):
        parse_json_reply("Here it is:\n```json\n{}\n```")


def _item(text, source="", ref="x.parquet#row=0"):
    return AugItem("und-x", "und", ref, b"", text, source, "")


@pytest.mark.parametrize(
    ("text", "source", "want"),
    [
        ('a shop sign that says "OPEN"', "", "text"),
        ("a castle at dusk, digital art", "", "ai_generated"),
        ("a castle at dusk", "journeydb", "ai_generated"),
        ("a red apple next to a cup", "", "two_objects"),
        ("a dog and a cat", "", "two_objects"),
        ("a red apple", "", "one_object"),
    ],
)
def test_keyword_variant(text, source, want):
    assert variant_keyword(_item(text, source), "one_object") == want


def test_packaged_templates_and_bad_template_files(tmp_path):
    cap, qa = load_template("caption_v1"), load_template("qa_v1")
    assert (cap.task, qa.task) == ("caption", "qa")
    assert re.fullmatch(r"caption@v1\+[0-9a-f]{8}", cap.id)
    text = qa.user_text("text", "a sign saying hi")
    assert "a sign saying hi" in text and qa.variants["text"] in text and '"options"' in text
    src = yaml.safe_load(Path(cap.path).read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**src, "variants": {"one_object": "x"}}))
    with pytest.raises(ValueError, match=r"bad.yaml: template key 'variants'"):
        load_template(str(bad))
    bad.write_text(yaml.safe_dump({**src, "instruction": "no placeholders {oops}"}))
    with pytest.raises(ValueError, match="'instruction': bad placeholder"):
        load_template(str(bad))
    with pytest.raises(FileNotFoundError, match="packaged templates"):
        load_template("caption_v9")
    # Editing a template changes its id (hence the cache key) even at the same version.
    edited = tmp_path / "caption_v1.yaml"
    edited.write_text(Path(cap.path).read_text() + "\n# edited\n")
    assert load_template(str(edited)).id != cap.id


def test_cache_skips_a_torn_last_line_and_appends_after_it(tmp_path):
    c = AnswerCache(str(tmp_path))
    c.put({"key": "k1", "status": "ok"})
    c.close()
    with open(tmp_path / "answers.jsonl", "a") as fh:
        fh.write('{"key": "k2", "sta')  # a write cut by a crash
    c = AnswerCache(str(tmp_path))
    assert c.get("k1") and c.get("k2") is None and c.skipped_lines == 1
    c.put({"key": "k3", "status": "ok"})
    c.close()
    assert AnswerCache(str(tmp_path)).get("k3") == {"key": "k3", "status": "ok"}


def test_image_data_url_keeps_small_png_and_downscales_large():
    small = png((10, 20, 30), size=24)
    assert image_data_url(small, 64) == "data:image/png;base64," + base64.b64encode(small).decode()
    url = image_data_url(png((10, 20, 30), size=100), 64)
    assert url.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        assert im.size == (64, 64)


# ----------------------------------------------------------------------------- scripted server


class Script:
    """Per-case behaviour; the case is the `case=<name>` marker in the item's text."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.auth: set[str | None] = set()
        self.repair_texts: dict[str, str] = {}
        self.in_flight = self.max_in_flight = 0  # requests the client still waits for
        self.handler = threading.local()  # per request: ThreadingHTTPServer runs each on a thread
        self.default = "valid"
        self.healthy: set[str] = set()  # cases that answer validly from now on
        self.bodies: list[dict] = []

    def reply(self, body: dict) -> tuple[int, dict, dict]:
        texts = [
            p["text"]
            for m in body["messages"]
            if m["role"] == "user"
            for p in (m["content"] if isinstance(m["content"], list) else [])
            if p.get("type") == "text"
        ] + [m["content"] for m in body["messages"] if isinstance(m["content"], str)]
        m = re.search(r"case=(\w+)", " ".join(texts))
        case = m.group(1) if m else self.default
        qa = '"options"' in " ".join(texts)
        repaired = any(msg["role"] == "assistant" for msg in body["messages"])
        with self.lock:
            n = self.calls[case] = self.calls.get(case, 0) + 1
            self.bodies.append(body)
            if repaired:
                self.repair_texts[case] = body["messages"][-1]["content"]
        if '"detail_prompt"' in " ".join(texts):  # the one-reply templates (Figs. 10, 11)
            good = json.dumps(QUAD)
        else:
            good = json.dumps(QA if qa else CAPTION)
        if case in self.healthy:
            return 200, {}, self._ok(good)
        if case == "fenced":
            return 200, {}, self._ok(f"```json\n{good}\n```")
        if case == "repair" and not repaired:
            return 200, {}, self._ok(json.dumps({"prompt": "a red square"}) if not qa else "{")
        if case == "badtwice":
            return 200, {}, self._ok(json.dumps({**json.loads(good), "extra": 1}))
        if case == "err500" and n == 1:
            return 500, {}, {"error": {"message": "boom"}}
        if case == "ratelimit" and n == 1:
            return 429, {"Retry-After": "0"}, {"error": {"message": "slow down"}}
        if case == "slow" and n == 1:
            # > timeout_s (1.0): the client gives up and retries, so this request stops being
            # one of its max_concurrency in flight (its retry is counted instead)
            with self.lock:
                self.in_flight -= 1
                self.handler.abandoned = True
            time.sleep(2.5)
        if case == "down":
            return 503, {}, {"error": {"message": "overloaded"}}
        if case == "badreq":
            return 400, {}, {"error": {"message": "image too large"}}
        if case == "crawl":
            time.sleep(0.15)
        return 200, {}, self._ok(good)

    @staticmethod
    def _ok(content: str) -> dict:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        }


def _serve(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def do_POST(self):
            if self.path != "/v1/chat/completions":
                self.send_error(404)
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.handler.abandoned = False  # a kept-alive connection reuses the thread
            with script.lock:
                script.auth.add(self.headers.get("Authorization"))
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            try:
                status, headers, out = script.reply(body)
                data = json.dumps(out).encode()
                self.send_response(status)
                for k, v in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left
            finally:
                with script.lock:
                    if not getattr(script.handler, "abandoned", False):
                        script.in_flight -= 1

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # a killed client: not our test
            pass

    srv = Server(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def server():
    script = Script()
    srv = _serve(script)
    yield script, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def _png_bytes(i: int) -> bytes:
    return png((20 * i % 256, 40, 200), stripe=(i * 30 % 256, 0, 0))


def _write_und(path: Path, cases: list[str]) -> None:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"<image>case={c} What is shown?"}],
            "images": [{"bytes": _png_bytes(i), "path": None}],
            "reward_model": {"ground_truth": "A", "verifier": "mc"},
            "data_source": "test",
            "ability": "perception",
        }
        for i, c in enumerate(cases)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)


def _write_gen(path: Path, cases: list[str]) -> None:
    with tarfile.open(path, "w") as tar:
        for i, c in enumerate(cases):
            for name, data in (
                (f"{i:03d}.png", _png_bytes(50 + i)),
                (f"{i:03d}.txt", f"case={c} a square".encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _config(tmp_path, url, und_cases, gen_cases, **aug) -> PairingConfig:
    _write_und(tmp_path / "u.parquet", und_cases)
    _write_gen(tmp_path / "g.tar", gen_cases)
    kw = dict(
        base_url=url,
        model="scripted",
        api_key_env="PAIRUNI_TEST_KEY",
        timeout_s=1.0,
        max_retries=2,
        backoff_s=0.01,
        max_backoff_s=0.05,
        max_concurrency=2,
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path / "aug"),
        progress=False,
    )
    return PairingConfig(
        und=UnderstandingSource(paths=(str(tmp_path / "u.parquet"),)),
        gen=GenerationSource(paths=(str(tmp_path / "g.tar"),)),
        features=FeatureConfig(allow_random_weights=True),  # unused by augment
        augment=AugmentConfig(**{**kw, **aug}),
    )


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


UND = ["valid", "repair", "err500", "slow"]
GEN = ["fenced", "repair", "badtwice", "ratelimit", "down", "badreq"]


def test_scripted_server_parsing_repair_retry_timeout_and_resume(
    server, tmp_path, monkeypatch, capsys
):
    script, url = server
    monkeypatch.setenv("PAIRUNI_TEST_KEY", "sk-secret-123")
    cfg = _config(tmp_path, url, UND, GEN)
    rep = run_augment(cfg)
    out = tmp_path / "aug"
    # Completed: und valid, repair, err500, slow; gen fenced, repair, ratelimit (7).
    # Rejected: badtwice (validate: invalid twice), down (transport), badreq (http 400).
    assert (rep["items"], rep["completed"], rep["rejected"]) == (10, 7, 3)
    assert rep["rejected_by_stage"] == {"validate": 1, "transport": 1, "http": 1}
    assert len(_lines(out / "rejected.jsonl")) == 3
    reasons = " | ".join(r["reason"] for r in _lines(out / "rejected.jsonl"))
    assert "extra keys ['extra'] (after 1 repair round(s))" in reasons
    assert "HTTP 503" in reasons and "gave up after 3 attempts" in reasons  # 1 + max_retries
    assert "HTTP 400: " in reasons and "image too large" in reasons
    # Server-side calls per case (the marker counts und and gen items of a case together):
    # valid 1; repair 2 + 2 (each side re-asked once); err500 2; slow 2 (the first timed
    # out); fenced 1; badtwice 2; ratelimit 2; down 3 (1 + 2 retries); badreq 1 (no retry).
    assert script.calls == {
        "valid": 1, "repair": 4, "err500": 2, "slow": 2, "fenced": 1,
        "badtwice": 2, "ratelimit": 2, "down": 3, "badreq": 1,
    }  # fmt: skip
    # The repair turn quotes the validation error.
    assert "Your reply was rejected:" in script.repair_texts["repair"]
    # Usage: every 200 the client read carries 100 + 10 tokens. 200s read: valid 1, repair 4,
    # err500 1, slow 1 (the timed-out one was never read), fenced 1, badtwice 2,
    # ratelimit 1 = 11 -> 1100 prompt + 110 completion tokens. Requests = sum of calls = 18;
    # retries = err500 1 + slow 1 + ratelimit 1 + down 2 = 5.
    assert rep["usage"] == {
        "prompt_tokens": 1100, "completion_tokens": 110, "total_tokens": 1210,
        "requests": 18, "retries": 5,
    }  # fmt: skip
    assert script.max_in_flight <= 2  # max_concurrency
    quads = _lines(out / "quadruples.jsonl")
    assert len(quads) == 7
    by_side = {q["side"] for q in quads}
    assert by_side == {"und", "gen"}
    for q in quads:
        if q["side"] == "und":
            assert q["prompt"] == CAPTION["prompt"]
        else:
            assert (q["choices"], q["answer"]) == (["red", "green", "blue", "yellow"], "A")
    # The key went out as a bearer token and is written nowhere.
    assert script.auth == {"Bearer sk-secret-123"}
    printed = capsys.readouterr()
    for text in [printed.out, printed.err, *(p.read_text() for p in tmp_path.rglob("*.json*"))]:
        assert "sk-secret-123" not in text
    assert "sk-secret" not in repr(ChatClient(cfg.augment))

    # Re-run: the 8 final outcomes (7 completed + 1 rejected by validation) come from the
    # cache; only the transport (down) and http (badreq) failures are asked again.
    script.healthy.add("down")
    before = dict(script.calls)
    rep2 = run_augment(cfg)
    assert (rep2["from_cache"], rep2["requested"]) == (8, 2)
    new = {k: v - before.get(k, 0) for k, v in script.calls.items() if v != before.get(k, 0)}
    assert new == {"down": 1, "badreq": 1}
    assert (rep2["completed"], rep2["rejected"]) == (8, 2)
    assert rep2["usage"]["total_tokens"] == 110  # one new 200 (down, now healthy)
    # A third run with the same template and model costs nothing but the 400.
    rep3 = run_augment(cfg)
    assert (rep3["from_cache"], rep3["requested"], rep3["usage"]["prompt_tokens"]) == (9, 1, 0)


def test_fatal_status_stops_the_run_naming_the_fix(server, tmp_path):
    _, url = server
    cfg = _config(tmp_path, url.replace("/v1", "/nope"), ["valid"], ["valid"])
    with pytest.raises(AugmentError, match=r"HTTP 404 .*Fix: check pairing.augment.base_url"):
        run_augment(cfg)


def test_killed_run_resumes_where_it_stopped(server, tmp_path):
    script, url = server
    cfg = _config(tmp_path, url, ["crawl"] * 6, ["crawl"] * 2, max_concurrency=1)
    conf = tmp_path / "aug.yaml"
    from deploy.config import to_dict

    conf.write_text(yaml.safe_dump({"pairing": to_dict(cfg)}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "augment", "--config", str(conf)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    answers = tmp_path / "cache" / "answers.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if answers.is_file() and len(answers.read_text().splitlines()) >= 3:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(answers.read_text().splitlines())
    assert 3 <= done_before < 8
    # A request the killed process had already sent may still reach the server: wait until
    # the server is idle and its count is stable before taking the baseline.
    calls_before, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 0.5:
        with script.lock:
            now = (script.calls["crawl"], script.in_flight)
        if now != (calls_before, 0):
            calls_before, stable_since = now[0] if now[1] == 0 else -1, time.monotonic()
        time.sleep(0.02)
    rep = run_augment(cfg)
    # Every item whose answer reached the cache is not asked again; the rest are.
    assert (rep["from_cache"], rep["requested"], rep["completed"]) == (
        done_before, 8 - done_before, 8,
    )  # fmt: skip
    assert script.calls["crawl"] - calls_before == 8 - done_before


# ----------------------------------------------------------------------------- augment -> pair


def test_pair_consumes_quadruples(server, tmp_path):
    script, url = server
    write_und_parquet(tmp_path / "u.parquet", n=6)
    write_gen_tar(tmp_path / "g-000.tar", n=6)
    script.default = "valid"
    pcfg = PairingConfig(
        und=UnderstandingSource(paths=(str(tmp_path / "u.parquet"),)),
        gen=GenerationSource(paths=(str(tmp_path / "g-000.tar"),)),
        features=FeatureConfig(
            allow_random_weights=True, image_size=32, batch_size=8, cache_dir=str(tmp_path / "fc")
        ),
        num_clusters=4,
        threshold=0.5,
        output_dir=str(tmp_path / "pairs"),
        augment=AugmentConfig(
            base_url=url,
            model="scripted",
            cache_dir="",
            output_dir=str(tmp_path / "aug"),
            progress=False,
            limit=5,  # und item 5 and gen item 5 stay without quadruples
        ),
    )
    rep = run_augment(pcfg)
    assert rep["completed"] == 10
    qfile = str(tmp_path / "aug" / "quadruples.jsonl")
    quads = load_quadruples([qfile])
    import dataclasses

    report = run_pair(dataclasses.replace(pcfg, quadruples=(qfile,)), strict=False)
    pairs = read_manifest(str(tmp_path / "pairs" / "manifest.parquet"))
    aligned = [p for p in pairs if p.kind == "aligned"]
    assert len(aligned) == 4
    done_refs = {q["image_ref"] for q in quads.values()}
    still = 0
    for p in aligned:
        if p.und_source == "augmented":  # from a gen item: Q, options, A filled
            assert (p.question, p.choices, p.answer) == (
                QA["question"], ("red", "green", "blue", "yellow"), "A",
            )  # fmt: skip
            assert p.needs_augmentation is None and p.prompt.startswith("a picture number")
        elif p.needs_augmentation is None:  # from an und item: C filled
            assert p.prompt == CAPTION["prompt"] and p.question.startswith("Which colour")
        else:  # its item was beyond augment.limit: nothing invented, the flag stays
            still += 1
            assert p.und_image not in done_refs and p.gen_image not in done_refs
    aug = report["augmentation"]
    assert aug["completed"] + aug["still_needs_augmentation"] == 4 and aug["completed"] >= 1
    assert aug["still_needs_augmentation"] == still
    assert sum(report["pairs"]["needs_augmentation"].values()) == still


def test_item_id_depends_on_side_image_and_text():
    # Hash of length-prefixed parts: changing any one part changes the id.
    a = item_id("und", b"img", "q")
    assert a.startswith("und-") and len(a) == 4 + 24
    assert (
        len(
            {
                a,
                item_id("gen", b"img", "q"),
                item_id("und", b"im", "gq"),
                item_id("und", b"img", "q2"),
            }
        )
        == 4
    )
    assert item_id("und", b"img", "q") == a


def test_client_and_data_modules_import_no_ray():
    code = (
        "import sys, pairing.augment, pairing.quadruples, pairing.templates; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'deepspeed', 'vllm')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
