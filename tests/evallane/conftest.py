"""The evaluation lane: run by `make test-eval`, never by the main suite
(`--ignore=tests/evallane`). lmms-eval's dependencies clash with the main lock (README,
Evaluate), so it has its own environment, ``.venv-eval``.

Two kinds of test files live here, told apart by name:
* ``test_lmms_*.py`` run under ``.venv-eval/bin/python`` (lmms-eval importable): lmms-eval's
  own tasks through the ``pairuni`` model;
* ``test_crossenv_*.py`` run under the main ``.venv``: `pairuni eval` there drives the
  lane's interpreter.
"""

from __future__ import annotations

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVAL_PYTHON = os.path.join(ROOT, ".venv-eval", "bin", "python")
"""The lane's interpreter, as `make .venv-eval` builds it."""

collect_ignore_glob = (
    ["test_crossenv_*.py"] if importlib.util.find_spec("lmms_eval") else ["test_lmms_*.py"]
)
