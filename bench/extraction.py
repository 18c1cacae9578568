"""Cost of multiple-choice extraction per kB of response, on adversarial and natural text.

    .venv/bin/python -m bench.extraction [--sizes 1000 16000 100000] [--repeats 3]

``extract_choice`` runs on every rollout answer inside the accuracy replica, so its cost
must grow linearly with the response: one slow regex is a denial of service within the
request size limits (a 16,007-character response once took 7.0 s in the answer-phrase
pattern, holding the replica). For each size, it times responses built to hit each rule's
worst case (long whitespace after "answer", many answer phrases on one line, unclosed
``\\boxed{``, runs of newlines, an option text repeated thousands of times) against a
natural reasoning text of the same length, and prints ms per kB and the ratio to the
natural text measured in the same run. A linear extractor keeps every ms/kB flat across
sizes and every ratio small.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHOICES = ["red", "blue", "light blue", "green"]


def _fill(unit: str, n: int) -> str:
    return (unit * (n // len(unit) + 1))[:n]


def cases(n: int) -> dict[str, str]:
    """Responses of ``n`` characters, the natural baseline first."""
    natural = _fill(
        "Looking at the image, the shape in the top left is coloured like the sky; the "
        "other objects are darker. Comparing the options, red does not fit the hue. ",
        n - 10,
    )
    return {
        "natural reasoning": natural + " Answer: B",
        "'answer' + whitespace": "answer" + " " * (n - 7) + "x",
        "answer phrases, one line": _fill("the answer is ", n),
        "unclosed \\boxed{": _fill("\\boxed{", n),
        "newline runs": "B" + "\n" * (n - 2) + "x",
        "option text repeated": _fill("light blue ", n),
        "letters in parentheses": _fill("(A) (B) ", n),
    }


def time_one(text: str, repeats: int) -> float:
    from rewards.accuracy import extract_choice

    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        extract_choice(text, CHOICES)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.extraction", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 16000, 100000])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    print(
        f"{'response':<28}"
        + "".join(f"{n:>12,} ch" for n in args.sizes)
        + "   (ms per kB; x natural)"
    )
    rows: dict[str, list[str]] = {}
    for n in args.sizes:
        base = None
        for name, text in cases(n).items():
            per_kb = 1e3 * time_one(text, args.repeats) / (len(text) / 1e3)
            base = per_kb if base is None else base
            rows.setdefault(name, []).append(f"{per_kb:8.3f} {per_kb / base:5.1f}x")
    for name, cells in rows.items():
        print(f"{name:<28}" + "".join(f"{c:>15}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
