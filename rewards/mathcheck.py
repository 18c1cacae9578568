"""Math answers checked by math-verify in worker processes, each under a hard time limit.

math-verify bounds its own work with SIGALRM, which works only in a process's main thread;
the reward endpoints score in worker threads, where those limits had to be switched off,
and a response such as ``\\boxed{9^{9^{9^{9}}}}`` then never returned (sympy evaluates the
power). An alarm could not have stopped it anyway: a long C call (a big-integer power)
does not return to the interpreter to run the handler. So every check runs in a worker
process (``python -m rewards.mathcheck``, one JSON line in, one out) and the caller waits
at most ``timeout_s`` for its answer. Past that the worker is killed and replaced, and the
check is a failed reward: NaN, counted under its reason in ``MathChecker.failures``
(``timeout``, ``worker_died``, ``error``), never 0.0, since the answer may be right.

The workers are a small pool; a thread that wants one waits for an idle one, so one
hanging check holds one worker, not the checker, and other checks go on in the others.

Gold answers are parsed the way math-verify expects a reference: as one LaTeX expression.
``parse("2x")`` with the default extraction reads the first number, ``2`` (and so scored
``\\boxed{2}`` right against ``2x``); ``parse("$2x$")`` reads ``2*x``. A gold answer
already in a math environment (``$...$``, ``\\(...\\)``, ``\\[...\\]``, ``\\boxed{}``) is
parsed as written; a bare one is wrapped in ``$...$`` for the LaTeX extractor, and only if
that finds nothing is it read as a plain expression (``ExprExtractionConfig``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import queue
import select
import subprocess
import sys
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

_ENVIRONMENTS = ("$", "\\(", "\\[", "\\boxed")


def parse_gold(answer: str) -> list:
    """math-verify's parse of a reference answer (module docstring); [] if unreadable."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    if any(m in answer for m in _ENVIRONMENTS):
        return parse(answer, parsing_timeout=None)
    latex = parse(f"${answer}$", [LatexExtractionConfig()], parsing_timeout=None)
    return latex or parse(answer, [ExprExtractionConfig()], parsing_timeout=None)


def check(response: str, answer: str) -> bool:
    """Whether ``response``'s final answer equals ``answer``, in this process, unbounded:
    call it through ``MathChecker`` unless the inputs are trusted."""
    from math_verify import parse, verify

    gold = parse_gold(answer)
    pred = parse(response, parsing_timeout=None)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=None))


class MathChecker:
    """A pool of ``workers`` checker processes; ``score`` answers within ``timeout_s``."""

    def __init__(self, workers: int = 2, timeout_s: float = 5.0, start_timeout_s: float = 120):
        if workers < 1 or timeout_s <= 0:
            raise ValueError(f"workers={workers} >= 1 and timeout_s={timeout_s} > 0 required")
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.failures: collections.Counter[str] = collections.Counter()
        self.checks = 0
        self._count_lock = threading.Lock()
        self._idle: queue.Queue[subprocess.Popen] = queue.Queue()
        self._all: list[subprocess.Popen] = []
        for _ in range(workers):
            self._idle.put(self._start())

    # ---------------------------------------------------------------- workers
    def _start(self) -> subprocess.Popen:
        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "rewards.mathcheck"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        # ready once math-verify (and sympy) imported: the first check must not pay for it
        line = self._read(proc, self.start_timeout_s)
        if line is None or json.loads(line).get("ready") is not True:
            proc.kill()
            raise RuntimeError(f"math checker worker did not start within {self.start_timeout_s}s")
        with self._count_lock:
            self._all.append(proc)
        return proc

    @staticmethod
    def _read(proc: subprocess.Popen, timeout: float) -> bytes | None:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            return None  # nothing within the limit
        return proc.stdout.readline()  # b"" at EOF: the worker died

    def _replace(self, proc: subprocess.Popen) -> subprocess.Popen:
        proc.kill()
        proc.wait()
        with self._count_lock:
            self._all.remove(proc)
        return self._start()

    def _fail(self, reason: str) -> float:
        with self._count_lock:
            self.failures[reason] += 1
        return math.nan

    # ---------------------------------------------------------------- checks
    def score(self, response: str, answer: str) -> float:
        """1.0 / 0.0, or NaN when the check failed (its reason counted in ``failures``)."""
        with self._count_lock:
            self.checks += 1
        request = json.dumps({"response": response, "answer": answer}).encode() + b"\n"
        proc = self._idle.get()
        try:
            try:
                proc.stdin.write(request)
                proc.stdin.flush()
                line = self._read(proc, self.timeout_s)
            except OSError:  # the pipe broke: the worker is gone
                line = b""
            if line is None:  # past the limit: kill, replace; the check failed
                proc = self._replace(proc)
                logger.warning("math check timed out after %ss: %.80r", self.timeout_s, response)
                return self._fail("timeout")
            if not line:
                proc = self._replace(proc)
                return self._fail("worker_died")
        finally:
            self._idle.put(proc)
        out = json.loads(line)
        if "error" in out:
            return self._fail("error")
        return float(out["ok"])

    def close(self) -> None:
        for proc in self._all:
            proc.kill()
            proc.wait()
        self._all.clear()

    def __del__(self):  # a dropped checker leaves no processes behind
        with contextlib.suppress(Exception):
            self.close()


_default: MathChecker | None = None
_default_lock = threading.Lock()


def default_checker() -> MathChecker:
    """The process-wide checker ``accuracy_reward(kind="math")`` uses (started on first use;
    ``configure`` sets its size and limit)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathChecker()
        return _default


def configure(workers: int, timeout_s: float) -> MathChecker:
    """Replace the default checker with one of this size and limit."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = MathChecker(workers, timeout_s)
        return _default


def _serve_stdin() -> None:
    """The worker: one JSON request per line on stdin, one JSON answer per line on stdout."""
    import math_verify  # noqa: F401  (imported before saying ready)

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    out = sys.stdout.buffer
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        try:
            req = json.loads(line)
            answer = {"ok": check(req["response"], req["answer"])}
        except Exception as e:  # reported to the caller, which counts it
            answer = {"error": f"{type(e).__name__}: {e}"[:500]}
        out.write(json.dumps(answer).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    _serve_stdin()
