"""The evaluation lane: run by `make test-eval` under ``.venv-eval/bin/python`` (lmms-eval
installed there), never by the main suite (`--ignore=tests/evallane`). lmms-eval's
dependencies clash with the main lock (README "Evaluate"), so it has its own environment."""

from __future__ import annotations

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("lmms_eval") else ["test_*.py"]
