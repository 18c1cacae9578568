"""`pairuni train` as the README runs it: its own local Ray cluster, on this machine's cores.

The process starts its own cluster (no RAY_ADDRESS), sized from the config: the smoke
config asked 3 CPUs (now 2), and on a 2-core machine `ray.init()` registered 2 and the run waited
forever. A SIGTERM mid-run checkpoints and exits 143, not 0, so a scheduler sees the stop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy import checkpoint
from pairing.synthetic import colour_square_manifest

BIN = str(Path(sys.executable).parent / "pairuni")


@pytest.mark.slow
def test_train_command_runs_here_and_a_sigterm_exits_143(tmp_path):
    manifest = colour_square_manifest(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [
            BIN,
            "train",
            "--config",
            "deploy/configs/smoke.yaml",
            f"train.manifest={manifest}",
            f"run.root={tmp_path}",
            "train.steps=50",
            "train.checkpoint_every=0",
            "rewards.port=18841",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    metrics = tmp_path / "smoke" / "metrics.jsonl"
    deadline = time.time() + 480
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().strip():
            break
        time.sleep(2)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    assert metrics.exists(), "no step within 480 s"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "stopped by signal 15" in out
    _, state, _ = checkpoint.load(tmp_path / "smoke")
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert 1 <= state.step < 50 and [r["step"] for r in rows] == list(range(1, state.step + 1))
