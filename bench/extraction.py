"""Multiple-choice extraction: agreement with hand labels, and cost per kB of response.

    .venv/bin/python -m bench.extraction [--sizes 1000 16000 100000] [--repeats 3]

**Agreement.** On the labelled corpus of ``bench/choice_corpus.py`` (every family of answer
models write, filled for every answer position and three option sets), the share of cases
where an extractor returns the label (the letter, or no answer). Printed per family for
``extract_choice`` and, when ``lmms_eval`` is importable, for lmms-eval's own parsers called
as installed: MMStar's ``extract_mcq_answer`` and MMMU's ``parse_multi_choice_response``
(which picks a random option when nothing matches; seeded here). lmms-eval is not a
dependency (it pins its own stack): install it in another environment and put it on
``PYTHONPATH`` to compare. VLMEvalKit is not on the package index these machines use, so
it is not compared.

**Cost.**
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


def timing_cases(n: int) -> dict[str, str]:
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


def extractors() -> dict:
    """name -> f(response, options) -> letter | None; lmms-eval's only when installed."""
    from rewards.accuracy import extract_choice

    out = {"pairuni": extract_choice}
    try:
        from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer
        from lmms_eval.tasks.mmmu.utils import parse_multi_choice_response
    except ImportError:
        return out

    def mmmu(response: str, options: list[str]) -> str | None:
        import random

        random.seed(0)  # it answers a random option when nothing matches
        letters = [chr(65 + i) for i in range(len(options))]
        return parse_multi_choice_response(response, letters, dict(zip(letters, options)))

    out["lmms-eval MMStar"] = lambda r, o: extract_mcq_answer(r, choices=list("ABCD"))
    out["lmms-eval MMMU"] = mmmu
    return out


def agreement() -> dict[str, dict[str, float]]:
    """extractor -> family -> share of cases that agree with the label (and "all")."""
    from bench.choice_corpus import cases

    corpus = cases()
    table: dict[str, dict[str, float]] = {}
    for name, fn in extractors().items():
        hits: dict[str, list[bool]] = {}
        for c in corpus:
            got = fn(c.response, c.choices)
            got = got.strip().upper() if isinstance(got, str) and got.strip() else None
            hits.setdefault(c.family, []).append(got == c.label)
        row = {f: sum(v) / len(v) for f, v in hits.items()}
        row["all"] = sum(sum(v) for v in hits.values()) / len(corpus)
        table[name] = row
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.extraction", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 16000, 100000])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    from bench.choice_corpus import cases

    table = agreement()
    families = list(next(iter(table.values())))
    print(f"agreement with hand labels, {len(cases())} cases (bench/choice_corpus.py)")
    print(f"{'family':<14}" + "".join(f"{n:>18}" for n in table))
    for f in families:
        print(f"{f:<14}" + "".join(f"{table[n][f]:>18.3f}" for n in table))
    print()
    print(
        f"{'response':<28}"
        + "".join(f"{n:>12,} ch" for n in args.sizes)
        + "   (ms per kB; x natural)"
    )
    rows: dict[str, list[str]] = {}
    for n in args.sizes:
        base = None
        for name, text in timing_cases(n).items():
            per_kb = 1e3 * time_one(text, args.repeats) / (len(text) / 1e3)
            base = per_kb if base is None else base
            rows.setdefault(name, []).append(f"{per_kb:8.3f} {per_kb / base:5.1f}x")
    for name, cells in rows.items():
        print(f"{name:<28}" + "".join(f"{c:>15}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
