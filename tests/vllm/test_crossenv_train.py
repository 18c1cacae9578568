"""The training driver with vLLM text workers (under .venv-vllm) and the learner here.

`deploy/configs/smoke.yaml` for 2 steps with ``rollout.text_backend=vllm``: every step's
understanding rollouts come from the vLLM engine, the DeepSpeed learner in this
environment recomputes their log-probs, and the driver's ``logprob_diff`` (sampler vs
learner, same weights) stays ~0 while the published versions advance.
"""

from __future__ import annotations

import json

import pytest

from deploy.config import RunConfig, load_config
from pairing.synthetic import colour_square_manifest


@pytest.mark.slow
def test_train_steps_with_vllm_text_workers(ray_local, tmp_path, vllm_python):
    from deploy.train import Trainer

    cfg = load_config(
        RunConfig,
        "deploy/configs/smoke.yaml",
        [
            f"run.root={tmp_path}",
            "run.name=vllm",
            f"train.manifest={colour_square_manifest(tmp_path / 'data')}",
            "rewards.port=18323",
            "train.steps=2",
            "train.checkpoint_every=0",
            "rollout.text_workers=1",
            "rollout.text_backend=vllm",
            f"rollout.text_python={vllm_python}",
            "rollout.text_vllm_eager=true",
        ],
    )
    trainer = Trainer(cfg)
    first = trainer.version
    try:
        trainer.fit()
    finally:
        trainer.close()
    rows = [json.loads(x) for x in (tmp_path / "vllm" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    versions = [first] + [r["weight_version"] for r in rows]
    assert [r["rollout/weight_version_min"] for r in rows] == versions[:-1]
    for r in rows:
        # mean |sampler - learner| per understanding token: vLLM's log-probs vs DeepSpeed's
        assert r["tokens/und"] > 0 and r["logprob_diff/und"] < 1e-3, r["logprob_diff/und"]
        assert r["logprob_diff"] < 1e-3 and r["reward/nan_count"] == 0
