"""Augmentation client throughput against a loopback OpenAI-protocol server with a fixed
per-request latency: items/s by max_concurrency, and the cost of a cached re-run.

    .venv/bin/python bench/augment.py [--items 200] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pairing.augment import run_augment
from pairing.config import AugmentConfig, GenerationSource, PairingConfig

# The one-reply form the default templates (caption_v2 / qa_v2) ask for: Q + choices + answer + C.
REPLY = {"question": "What colour is the square?", "choices": {"A": "red", "B": "green", "C": "blue", "D": "grey"}, "answer": "A", "detail_prompt": "a single bright red square with sharp edges sits in the centre of a plain light grey background, lit evenly from above, with no other objects, text or shadows anywhere in the frame"}  # fmt: skip


def serve(latency: float):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(latency)
            msg = {"role": "assistant", "content": json.dumps(REPLY)}
            out = {"choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 600, "completion_tokens": 40}}  # fmt: skip
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.05)
    args = ap.parse_args()
    srv = serve(args.latency)
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    tmp = Path(tempfile.mkdtemp(prefix="bench_augment_"))
    with tarfile.open(tmp / "g.tar", "w") as tar:
        for i in range(args.items):
            buf = io.BytesIO()
            Image.new("RGB", (256, 256), (i % 256, 80, 160)).save(buf, format="PNG")
            for name, data in ((f"{i:05d}.png", buf.getvalue()), (f"{i:05d}.txt", f"square {i}".encode())):  # fmt: skip
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    print(f"{args.items} generation items, server latency {args.latency * 1000:.0f} ms")
    for conc in (1, 8, 32):
        cfg = PairingConfig(
            gen=GenerationSource(paths=(str(tmp / "g.tar"),)),
            augment=AugmentConfig(
                base_url=url, model="bench", sides=("gen",), max_concurrency=conc,
                cache_dir=str(tmp / f"cache{conc}"), output_dir=str(tmp / f"out{conc}"),
                progress=False,
            ),
        )  # fmt: skip
        rep = run_augment(cfg)
        t0 = time.perf_counter()
        rep2 = run_augment(cfg)
        cached_s = time.perf_counter() - t0
        print(
            f"max_concurrency={conc:>2}: {rep['items_per_s']:7.1f} items/s "
            f"(ideal {conc / args.latency:7.1f}), {rep['usage']['total_tokens']} tokens; "
            f"cached re-run {cached_s:.2f}s, {rep2['requested']} requests"
        )
    srv.shutdown()


if __name__ == "__main__":
    main()
