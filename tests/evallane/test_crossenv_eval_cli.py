"""`pairuni eval` from the main environment: the lmms-eval task runs under ``.venv-eval``,
the generation benchmarks here; results.json / results.md put ours beside the papers'."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVAL_PYTHON = os.path.join(ROOT, ".venv-eval", "bin", "python")

pytestmark = pytest.mark.skipif(
    not os.path.isfile(EVAL_PYTHON), reason="needs the evaluation lane: make .venv-eval"
)


@pytest.mark.slow
def test_pairuni_eval_runs_pope_locally_and_writes_the_generation_layouts(tmp_path):
    from models.config import ModelConfig
    from models.registry import build_policy

    model = tmp_path / "model"
    build_policy(ModelConfig()).save(model)
    pope = tmp_path / "pope.parquet"
    fixture = os.path.join(ROOT, "tests", "evallane", "pope_fixture.py")
    subprocess.run([EVAL_PYTHON, fixture, str(pope)], check=True, cwd=ROOT)
    geneval = tmp_path / "evaluation_metadata.jsonl"
    meta = {"tag": "single_object", "include": [{"class": "cat", "count": 1}]}
    geneval.write_text(json.dumps({**meta, "prompt": "a photo of a cat"}) + "\n")
    t2i = tmp_path / "color_val.txt"
    t2i.write_text("a red apple\na blue car\n")
    out = tmp_path / "eval"
    cmd = [
        sys.executable,
        "-m",
        "deploy.cli",
        "eval",
        "--config",
        "deploy/configs/smoke.yaml",
        f"model.path={model}",
        "eval.benchmarks=[pope]",
        f"eval.data={{pope: {pope}}}",
        "eval.max_new_tokens=4",
        f"eval.geneval=[{geneval}]",
        f"eval.t2i_compbench=[{t2i}]",
        "eval.image_samples=2",
        "eval.gen_scorers=[hps]",
        f"eval.out={out}",
    ]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    metrics = res["tasks"]["pope"]["metrics"]
    assert 0.0 <= metrics["pope_accuracy"] <= 1.0 and "pope_f1_score" in metrics
    (row,) = [r for r in res["table"] if r["benchmark"] == "POPE"]
    assert row["ours"] == pytest.approx(100 * metrics["pope_f1_score"])
    assert row["reported"]["Janus-Pro-1B"]["value"] == 86.2
    md = (out / "results.md").read_text()
    assert "| POPE | pope / pope_f1_score |" in md and "PairUni Table 1" in md
    gen = res["generation"]
    assert gen["geneval"]["prompts"] == 1 and gen["t2i_compbench"]["prompts"] == 2
    assert gen["t2i_compbench"]["scores"]["hps"]["n"] == 4
    assert len(list((out / "geneval" / "00000" / "samples").glob("*.png"))) == 2
    assert "evaluate_images.py" in run.stdout
