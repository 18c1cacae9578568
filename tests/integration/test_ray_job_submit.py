"""`ray job submit`, exactly as the README writes it, against a head started with `ray start`.

Every other test starts its own cluster without a job server; this is the launch users run.
The head is a separate cluster (its own ports, temp dir and auth token; it runs beside the
suite's own local cluster), started with the machine's own CPU count, so a config that asks for more than a 2-core machine has fails here
with the shortfall message instead of passing on a fixture's extra logical CPUs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the environment's `ray` and `python`


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    """A Ray head with the job server: (env for the CLI, dashboard address)."""
    tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths are limited
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    # Token auth, as a cluster should run it (README): the CLI and the job's driver need
    # RAY_AUTH_MODE=token too, or the job server answers "Missing authentication token".
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env['PATH']}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    dash = _free_port()
    cmd = [
        "ray", "start", "--head", "--block", "--disable-usage-stats",
        f"--port={_free_port()}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
        f"--ray-client-server-port={_free_port()}", f"--temp-dir={tmp}",
        # Ports Ray would otherwise take by default: with another cluster on this machine
        # (the suite's own), a second head's job agent cannot bind and no job ever runs.
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--dashboard-agent-grpc-port={_free_port()}",
        f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: torn down as one
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        # Ready = a job runs: the job server answers before the node's job agent registers,
        # and a submission in between fails with "No available agent to submit job".
        deadline, out = time.monotonic() + 180, ""
        while time.monotonic() < deadline:
            r = _ray(env, "job", "submit", "--address", address, "--", "true", check=False)
            out = r.stdout + r.stderr
            if r.returncode == 0 and "succeeded" in out:
                break
            assert proc.poll() is None, "ray start --head exited"
            time.sleep(2)
        else:
            pytest.fail(f"no job ran on the head within 180 s: {out[-2000:]}")
        yield env, address
    finally:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        shutil.rmtree(tmp, ignore_errors=True)


def _ray(env, *args, check=True, timeout=600) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [str(BIN / "ray"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _submit(env, address, *overrides, wait=True) -> subprocess.CompletedProcess:
    """The README's command: working dir = the checkout, runtime env = deploy/runtime_env.yaml."""
    return _ray(
        env, "job", "submit", "--address", address, "--working-dir", ".",
        "--runtime-env", "deploy/runtime_env.yaml", *([] if wait else ["--no-wait"]),
        "--", "python", "-m", "deploy.train", "--config", "deploy/configs/smoke.yaml",
        *overrides, check=False,
    )  # fmt: skip


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _status(env, address, job_id) -> str:
    return _ray(env, "job", "status", "--address", address, job_id).stdout


@pytest.mark.slow
def test_job_submit_runs_the_smoke_run_and_job_stop_checkpoints(head, tmp_path):
    from pairing.synthetic import colour_square_manifest

    env, address = head
    manifest = colour_square_manifest(tmp_path / "data")
    common = [f"train.manifest={manifest}", f"run.root={tmp_path}"]

    # 1. Submitted and waited for: the job succeeds, its run directory is complete.
    r = _submit(env, address, *common, "run.name=done", f"rewards.port={_free_port()}")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "succeeded" in out, out[-4000:]
    rows = _rows(tmp_path / "done")
    assert [x["step"] for x in rows] == [1, 2, 3]
    versions = [x["weight_version"] for x in rows]
    assert versions == sorted(set(versions)), versions  # one new weight version per step
    assert (tmp_path / "done" / "checkpoints" / "step_000003" / "trainer_state.json").is_file()
    assert "last checkpoint:" in out and "step_000003" in out

    # 2. Stopped mid-run with `ray job stop`: SIGTERM, the run finishes its step, checkpoints,
    # deletes its Serve applications and exits non-zero; Ray reports STOPPED, not success.
    r = _submit(
        env, address, *common, "run.name=stopped", "train.steps=500",
        f"rewards.port={_free_port()}", wait=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = next(w for w in (r.stdout + r.stderr).split() if w.startswith("'raysubmit_"))
    job_id = job_id.strip("'")
    run_dir = tmp_path / "stopped"
    deadline = time.monotonic() + 300
    while len(_rows(run_dir)) < 2:
        assert time.monotonic() < deadline, _status(env, address, job_id)
        time.sleep(2)
    _ray(env, "job", "stop", "--address", address, job_id)
    assert "STOPPED" in _status(env, address, job_id) or "stopped" in _status(env, address, job_id)
    logs = _ray(env, "job", "logs", "--address", address, job_id).stdout
    last = _rows(run_dir)[-1]["step"]
    assert 2 <= last < 500
    assert f"stopped by signal 15 at step {last} of 500" in logs, logs[-3000:]
    state = run_dir / "checkpoints" / f"step_{last:06d}" / "trainer_state.json"
    assert state.is_file() and (run_dir / "checkpoints" / "latest").read_text().strip() == (
        f"step_{last:06d}"
    )
    apps = _ray(env, "serve", "status", "--address", address, check=False).stdout
    assert "pairuni-stopped-" not in apps, apps  # nothing left running on the cluster
