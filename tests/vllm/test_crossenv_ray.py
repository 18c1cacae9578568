"""A vLLM text worker under .venv-vllm's interpreter, driven from the main .venv over Ray.

The driver (this process: torch 2.14, no vLLM) starts the text pool with
``rollout.text_python`` = the lane's interpreter (torch 2.13+cpu, vLLM); the actor builds
the engine there. Log-probs are checked against ``models/`` teacher-forced in the driver's
environment, before and after a weight version published through the object store.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.config import RolloutConfig
from actors.group import WorkerGroup
from actors.types import RolloutRequest
from actors.weights import fetch, load_into, publish
from models.config import ModelConfig
from models.unified import tiny_unified_model

MODEL = ModelConfig(max_new_tokens=10)


def requests(k: int, n: int, seed0: int) -> list[RolloutRequest]:
    rng = np.random.default_rng(seed0)
    return [
        RolloutRequest(
            i,
            i,
            "und",
            f"how many shapes in picture {i}?",
            n,
            seed0 + i,
            image=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        )
        for i in range(k)
    ]


def check_against(model, rollouts) -> None:
    rs = [ro.request for ro in rollouts]
    with torch.no_grad():
        lp = model.text_logprobs(
            [r.image for r in rs],
            [r.prompt for r in rs],
            [ro.token_ids.tolist() for ro in rollouts],
            MODEL.text_temperature,
        )
    for ro, tf in zip(rollouts, lp.rows()):
        np.testing.assert_allclose(ro.logprobs, tf.numpy(), atol=1e-3, rtol=0)


@pytest.mark.slow
def test_vllm_worker_under_its_own_interpreter(ray_local, vllm_python):
    ray = ray_local
    cfg = RolloutConfig(
        text_workers=1,
        text_backend="vllm",
        text_python=vllm_python,
        text_vllm_eager=True,
        text_batch_size=4,
        request_timeout_s=300,
    )
    cfg.validate()
    group = WorkerGroup.text(MODEL, cfg)
    try:
        actor = group.workers[0]

        def remote_env():
            import sys

            import torch

            return sys.executable, torch.__version__, __import__("vllm").__version__

        exe, torch_version, vllm_version = ray.get(
            actor.__ray_call__.remote(lambda self: remote_env())
        )
        assert exe == vllm_python and torch_version.startswith("2.13") and vllm_version
        assert torch.__version__ != torch_version  # the driver runs another torch

        policy = tiny_unified_model(MODEL.seed)
        rollouts = group.map(requests(3, n=2, seed0=11))
        assert len(rollouts) == 6 and {ro.weight_version for ro in rollouts} == {-1}
        check_against(policy, rollouts)

        # Version 1: the trainable weights of another tiny model (the frozen SigLIP tower
        # does not travel), into the workers and into the driver's reference copy.
        wref = publish(tiny_unified_model(1).trainable_parameters(), version=1)
        assert group.broadcast_weights(wref)
        assert group.worker_versions() == [1]
        load_into(policy.trainable_parameters(), fetch(wref), wref.manifest)
        after = group.map(requests(3, n=2, seed0=11))
        assert {ro.weight_version for ro in after} == {1}
        check_against(policy, after)
        assert any(not np.array_equal(a.token_ids, b.token_ids) for a, b in zip(rollouts, after))
    finally:
        group.shutdown()
