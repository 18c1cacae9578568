"""``results.json`` and ``results.md`` of `pairuni eval`: our numbers beside the papers'.

The papers' numbers live in one data file, ``evaluation/paper_numbers.yaml``, each with its
source (paper and table). Reading it imports no model library.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")


def paper_numbers(path: str | Path = PAPER_NUMBERS) -> dict:
    """``benchmarks`` of the data file: name -> {task?, metric?, scale?, note?, reported}."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    out = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(out, dict):
        raise ValueError(f"{path}: no 'benchmarks' mapping")
    for name, b in out.items():
        for model, r in (b.get("reported") or {}).items():
            if not isinstance(r, dict) or "value" not in r or not r.get("source"):
                raise ValueError(f"{path}: benchmarks.{name}.reported.{model} needs value + source")
    return out


def rows(tasks: dict, numbers: dict | None = None) -> list[dict]:
    """One row per benchmark run: task, the papers' metric of it (or each metric when the
    papers do not report the task), our value in the papers' unit, and what they report."""
    numbers = paper_numbers() if numbers is None else numbers
    by_task = {b["task"]: (name, b) for name, b in numbers.items() if b.get("task")}
    out = []
    for task, res in tasks.items():
        metrics = res.get("metrics", {})
        if task in by_task:
            name, b = by_task[task]
            v = metrics.get(b["metric"])
            scale = float(b.get("scale", 1))
            out.append(
                {
                    "benchmark": name,
                    "task": task,
                    "metric": b["metric"],
                    "ours": None if v is None else v * scale,
                    "reported": b.get("reported", {}),
                    "note": b.get("note", ""),
                }
            )
        else:
            for m, v in metrics.items():
                if not m.endswith("_stderr"):
                    out.append({"benchmark": task, "task": task, "metric": m, "ours": v})
    return out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}" if abs(v) < 10 else f"{v:.1f}"


def markdown(model: str, table: list[dict]) -> str:
    """The results table: ours, then each model the papers report, with sources below."""
    models = list(dict.fromkeys(m for r in table for m in r.get("reported", {})))
    head = ["benchmark", "lmms-eval task / metric", f"ours ({model})", *models]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    sources, notes = set(), []
    for r in table:
        rep = r.get("reported", {})
        cells = [r["benchmark"], f"{r['task']} / {r['metric']}", _fmt(r["ours"])]
        cells += [_fmt(rep[m]["value"]) if m in rep else "" for m in models]
        lines.append("| " + " | ".join(cells) + " |")
        sources |= {f"{m}: {rep[m]['source']}" for m in rep}
        if r.get("note"):
            notes.append(f"* {r['benchmark']}: {r['note']}")
    if sources:
        lines += ["", "Reported numbers (evaluation/paper_numbers.yaml):", ""]
        lines += [f"* {s}" for s in sorted(sources)]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def write_results(out: str | Path, model: str, tasks: dict, extra: dict | None = None) -> dict:
    """``out/results.json`` (every metric of every task, the table rows, ``extra``) and
    ``out/results.md``; returns what results.json holds."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = rows(tasks)
    data = {
        "model": model,
        "tasks": {t: {k: v for k, v in r.items() if k != "samples"} for t, r in tasks.items()},
        "table": table,
        **(extra or {}),
    }
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str))
    (out / "results.md").write_text(markdown(model, table))
    return data
