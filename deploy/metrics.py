"""Run-directory metrics: one JSON line per step + TensorBoard scalars + curves as PNG."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


class MetricsWriter:
    """Appends ``{"step": s, **metrics}`` to ``metrics.jsonl`` and writes TensorBoard scalars.

    Non-finite values are kept in the JSONL as null (with the key present), so a person sees
    that a metric was missing rather than a silent gap.
    """

    def __init__(
        self, run_dir: str | Path, tensorboard: bool = True, keep_until: int | None = None
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        if keep_until is not None and self.path.exists():
            self._truncate(keep_until)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def _truncate(self, keep_until: int) -> None:
        """Drop the rows past step ``keep_until`` (a resumed run writes them again), by an
        atomic rewrite; a row that does not parse is kept (it is not ours to judge)."""
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                step = json.loads(line).get("step")
            except (json.JSONDecodeError, AttributeError):
                step = None
            if not isinstance(step, int) or step <= keep_until:
                kept.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step}
        for k, v in metrics.items():
            v = float(v)
            row[k] = v if math.isfinite(v) else None
            if self._tb is not None and math.isfinite(v):
                self._tb.add_scalar(k, v, step)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a ``metrics.jsonl``; a step written twice (after a resume) keeps its last row."""
    rows: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def plot_curves(path: str | Path, out: str | Path, keys: list[str], title: str = "") -> Path:
    """One panel per metric key against the step; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(path)
    keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
    fig, axes = plt.subplots(
        1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3), squeeze=False
    )
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
