"""Shared fixtures: a local Ray cluster per test session, and the GPU marker's skip."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# DeepSpeed and torch.compile JIT-compile C++ ops on first use; keep them between runs.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(_ROOT, ".cache", "torch_extensions"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray cluster for the whole test session (4 logical CPUs on 2 cores).

    Its temp dir is short (Unix socket paths are limited to 107 bytes) and private to the
    session, so parallel sessions on one machine do not share a cluster.
    """
    import ray

    tmp = tempfile.mkdtemp(prefix="ray_", dir="/tmp")
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        _temp_dir=tmp,
        logging_level="WARNING",
        runtime_env={
            "env_vars": {
                "DS_ACCELERATOR": "cpu",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "TORCH_EXTENSIONS_DIR": os.environ["TORCH_EXTENSIONS_DIR"],
            }
        },
    )
    yield ray
    ray.shutdown()
