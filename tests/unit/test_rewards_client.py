"""RewardClient over HTTP against a real loopback server that misbehaves on purpose:
5xx then success, 4xx, slow answers, a closed port, concurrency."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from rewards.client import RewardClient
from rewards.config import RewardsConfig


class _Server:
    """A scripted reward server: ``script`` is a list of (status, delay_s[, details]) per
    request, then 200s; a 200 scores item i as float(len(item['response'])) and answers
    ``details(items)`` as its details when given."""

    def __init__(self, script=()):
        self.script = list(script)
        self.lock = threading.Lock()
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.times: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.calls += 1
                    outer.times.append(time.monotonic())
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    status, delay, *extra = outer.script.pop(0) if outer.script else (200, 0.02)
                time.sleep(delay)
                if status == 200:
                    out = {"rewards": [float(len(it["response"])) for it in body["items"]]}
                    if extra:  # details for the answer: a callable of the items
                        out["details"] = extra[0](body["items"])
                else:
                    out = {"error": f"items[0].answer: scripted {status}", "field": "x"}
                data = json.dumps(out).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/accuracy"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request):
    srv = _Server(getattr(request, "param", ()))
    yield srv
    srv.close()


def _cfg(**kw) -> RewardsConfig:
    base = dict(
        client_mode="http",
        client_timeout_s=2.0,
        client_max_retries=2,
        client_backoff_s=0.05,
        client_backoff_max_s=1.0,
        client_chunk_size=2,
        client_max_concurrency=2,
    )
    return RewardsConfig(**{**base, **kw})


ITEMS = [{"response": "x" * n, "answer": "B"} for n in (1, 2, 3)]


@pytest.mark.parametrize("server", [[(503, 0), (500, 0)]], indirect=True)
def test_retries_5xx_with_exponential_backoff(server):
    client = RewardClient("accuracy", _cfg(client_chunk_size=8), url=server.url)
    assert client.score(ITEMS) == [1.0, 2.0, 3.0]
    # 503, 500, then 200: three calls, delays 0.05 then 0.10 s between them.
    assert server.calls == 3 and client.retries == 2 and client.num_failed == 0
    gaps = np.diff(server.times)
    assert gaps[0] >= 0.05 and gaps[1] >= 0.10


@pytest.mark.parametrize("server", [[(503, 0)] * 10], indirect=True)
def test_persistent_5xx_gives_nan_never_zero(server):
    client = RewardClient("accuracy", _cfg(client_chunk_size=8), url=server.url)
    got = client.score(ITEMS)
    assert all(math.isnan(r) for r in got)
    assert server.calls == 3  # 1 + client_max_retries
    assert client.failures == {("accuracy", "http 503: items[0].answer: scripted 503"): 3}


@pytest.mark.parametrize("server", [[(422, 0)]], indirect=True)
def test_4xx_is_never_retried(server):
    # one chunk at a time, so the scripted 422 meets chunk [0, 1] whatever the scheduling
    client = RewardClient("accuracy", _cfg(client_max_concurrency=1), url=server.url)
    got = client.score(ITEMS)  # chunks [0, 1] -> 422, [2] -> 200
    assert math.isnan(got[0]) and math.isnan(got[1]) and got[2] == 3.0
    assert server.calls == 2 and client.retries == 0
    assert client.num_failed == 2


@pytest.mark.parametrize("server", [[(200, 1.0), (200, 1.0)]], indirect=True)
def test_timeout_is_retried_then_succeeds(server):
    client = RewardClient(
        "accuracy", _cfg(client_timeout_s=0.3, client_chunk_size=8), url=server.url
    )
    assert client.score(ITEMS) == [1.0, 2.0, 3.0]  # two slow answers time out, the third is ok
    assert client.retries == 2 and client.num_failed == 0


def test_unreachable_server_names_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens
    url = f"http://127.0.0.1:{port}/accuracy"
    client = RewardClient("accuracy", _cfg(client_max_retries=1), url=url)
    got = client.score(ITEMS[:1])
    assert math.isnan(got[0])
    ((endpoint, reason),) = client.failures
    assert endpoint == "accuracy" and f"cannot reach {url}" in reason
    assert client.requests == 2


def test_concurrency_limit_holds(server):
    items = [{"response": "x" * (i + 1), "answer": "B"} for i in range(12)]
    client = RewardClient(
        "accuracy", _cfg(client_chunk_size=1, client_max_concurrency=3), url=server.url
    )
    assert client.score(items) == [float(i + 1) for i in range(12)]  # order kept
    assert server.calls == 12
    assert 1 <= server.max_in_flight <= 3


def test_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"\['handle', 'http'\]"):
        RewardClient("accuracy", _cfg(), mode="grpc")


def _length_parts(items):
    return [
        {"length": float(len(it["response"])), "even": float(len(it["response"]) % 2 == 0)}
        for it in items
    ]


@pytest.mark.parametrize("server", [[(200, 0, _length_parts)] * 2], indirect=True)
def test_details_come_back_aligned_with_the_items(server):
    client = RewardClient("accuracy", _cfg(), url=server.url)  # chunks [0, 1] and [2]
    rewards, details = client.score_with_details(ITEMS)
    assert rewards == [1.0, 2.0, 3.0]
    assert details == [
        {"length": 1.0, "even": 0.0},
        {"length": 2.0, "even": 1.0},
        {"length": 3.0, "even": 0.0},
    ]


@pytest.mark.parametrize("server", [[(200, 0, lambda items: [{}])] * 3], indirect=True)
def test_misaligned_details_fail_the_chunk(server):
    # two items, one details entry: the answer does not fit its request -> NaN, not retried
    client = RewardClient("accuracy", _cfg(), url=server.url)
    rewards, details = client.score_with_details(ITEMS[:2])
    assert all(math.isnan(r) for r in rewards) and details == [{}, {}]
    assert client.failures == {("accuracy", "answer's details do not align with its 2 items"): 2}
    assert server.calls == 1
