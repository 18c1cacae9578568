"""`pairuni model tiny | info | sample` as a user runs them (real processes, real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

BIN = os.path.join(os.path.dirname(sys.executable), "pairuni")


def _run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300)


def test_model_commands_end_to_end(tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "sample"
    r = _run("model", "tiny", "--out", str(ckpt), "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert (ckpt / "config.json").is_file() and (ckpt / "tokenizer.json").is_file()

    r = _run("model", "info", "--model", str(ckpt))
    assert r.returncode == 0, r.stderr
    lines = {line.split("  ")[0].strip(): line for line in r.stdout.splitlines()}
    assert lines["VQ model"].rstrip().endswith("no")
    assert lines["language model"].rstrip().endswith("yes")

    r = _run(
        "model",
        "sample",
        "--model",
        str(ckpt),
        "--prompt",
        "a red circle",
        "--question",
        "what colour is it?",
        "--out",
        str(out),
        "--max-new-tokens",
        "5",
    )
    assert r.returncode == 0, r.stderr
    img = np.asarray(Image.open(out / "image.png"))
    assert img.shape == (64, 64, 3)
    record = json.loads((out / "answer.json").read_text())
    assert record["answer_tokens"] >= 1 and record["answer"] in r.stdout


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    r = _run("model", "info", "--model", str(tmp_path / "missing"))
    assert r.returncode == 2
    assert "no model checkpoint at" in r.stderr and "Traceback" not in r.stderr


def test_model_tiny_writes_the_family_asked(tmp_path):
    """`pairuni model tiny --arch showo` writes a Show-o checkpoint in its published layout
    (the worktree's own CLI, run as a module): `model info --arch showo` reads it, its weights
    are the tiny Show-o of that seed, and a Janus loader refuses it."""
    import torch

    from models.registry import family

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def cli(*args):
        cmd = [sys.executable, "-m", "deploy.cli", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)

    ckpt = tmp_path / "showo"
    r = cli("model", "tiny", "--arch", "showo", "--out", str(ckpt), "--seed", "4")
    assert r.returncode == 0, r.stderr
    assert "tiny random showo model" in r.stdout
    config = json.loads((ckpt / "config.json").read_text())
    assert config["_class_name"] == "Showo" and config["llm_model_path"] == "llm"
    r = cli("model", "info", "--arch", "showo", "--model", str(ckpt))
    assert r.returncode == 0, r.stderr
    loaded = family("showo").load(str(ckpt), "float32", "cpu").module.state_dict()
    built = family("showo").tiny(4, train_vision_tower=False).module.state_dict()
    other = family("showo").tiny(5, train_vision_tower=False).module.state_dict()
    assert loaded.keys() == built.keys()
    assert all(torch.equal(loaded[k], built[k]) for k in built)
    assert not all(torch.equal(other[k], built[k]) for k in built)
    r = cli("model", "info", "--model", str(ckpt))  # --arch janus (the default)
    assert r.returncode == 2 and "Traceback" not in r.stderr

    r = cli("model", "tiny", "--arch", "nope", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr
