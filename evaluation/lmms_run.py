"""lmms-eval tasks on a pairuni model directory, in the environment that has lmms-eval.

    python -m evaluation.lmms_run SPEC.json      # what `pairuni eval` runs in .venv-eval

``SPEC.json``: ``{"model_path", "arch", "dtype", "device", "tasks": [...], "data": {task:
path}, "limit", "batch_size", "max_new_tokens", "seed", "out"}``. Writes
``<out>/lmms_results.json``: per task its metrics (lmms-eval's names, filter suffix
dropped) and each item's logged answer.

A task whose dataset is given locally (``data``) runs as a task of its own,
``<task>_local``, written to ``<out>/tasks/``: it ``include``s lmms-eval's own YAML for the
task (its prompts, answer parsing, metrics and aggregation unchanged) and overrides only
where the data come from, the two ways lmms-eval loads local data: parquet files
(``dataset_path: parquet`` with ``data_files`` for the task's split) or a
``datasets.save_to_disk`` folder (``load_from_disk``).
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

LOCAL_SUFFIX = "_local"


def local_task_yaml(task: str, data: str, tasks_dir: Path, task_manager) -> str:
    """Write the local variant of ``task`` reading ``data``; returns its task name."""
    import yaml
    from lmms_eval import utils

    if task not in task_manager.task_index:
        raise ValueError(f"eval.benchmarks: {task!r} is not an lmms-eval task")
    src = task_manager.task_index[task]["yaml_path"]
    if src == -1:
        raise ValueError(f"eval.data.{task}: {task} is a group; give data for its tasks")
    base = utils.load_yaml_config(src, mode="simple")
    split = base.get("test_split") or base.get("validation_split") or "test"
    p = Path(data).resolve()
    if p.is_dir() and (p / "dataset_dict.json").is_file():
        source = {"dataset_path": str(p), "dataset_kwargs": {"load_from_disk": True}}
    else:
        files = sorted(glob.glob(str(p / "*.parquet"))) if p.is_dir() else [str(p)]
        if not files or not all(Path(f).is_file() and f.endswith(".parquet") for f in files):
            raise ValueError(
                f"eval.data.{task}={data!r}: not a parquet file, a folder of parquet files or "
                "a datasets.save_to_disk folder of a DatasetDict (dataset_dict.json)"
            )
        source = {"dataset_path": "parquet", "dataset_kwargs": {"data_files": {split: files}}}
    name = task + LOCAL_SUFFIX
    cfg = {"include": str(src), "task": name, "output_type": base.get("output_type"), **source}
    tasks_dir.mkdir(parents=True, exist_ok=True)
    (tasks_dir / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return name


def metrics_of(task_result: dict) -> dict[str, float]:
    """lmms-eval's ``results[task]`` as ``{metric: value}`` (numbers only; ``,none`` and
    other filter suffixes dropped; stderr entries kept as ``<metric>_stderr``)."""
    out = {}
    for key, v in task_result.items():
        if key == "alias" or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[key.split(",")[0]] = float(v)
    return out


def run_lmms(
    policy,
    tasks: list[str],
    out: str | Path,
    data: dict[str, str] | None = None,
    limit: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 0,
    seed: int = 0,
) -> dict:
    """Run ``tasks`` with lmms-eval's evaluator on ``policy`` (a ``UnifiedPolicy``); returns
    ``{task: {"metrics": {...}, "samples": [{doc_id, target, answer}], "local": bool}}``."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from evaluation.lmms_model import PairUniLMM

    out = Path(out)
    data = dict(data or {})
    unknown = [t for t in data if t not in tasks]
    if unknown:
        raise ValueError(f"eval.data names {unknown}, which eval.benchmarks {tasks} does not run")
    tasks_dir = out / "tasks"
    names = dict.fromkeys(tasks, "")
    if data:
        tm = TaskManager(verbosity="WARNING")
        for task, path in data.items():
            names[task] = local_task_yaml(task, path, tasks_dir, tm)
    tm = TaskManager(verbosity="WARNING", include_path=str(tasks_dir) if data else None)
    run_names = [names[t] or t for t in tasks]
    model = PairUniLMM(
        policy=policy, batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed
    )
    res = simple_evaluate(
        model=model,
        tasks=run_names,
        task_manager=tm,
        limit=limit or None,
        log_samples=True,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        bootstrap_iters=0,
    )
    report = {}
    for task, name in zip(tasks, run_names):
        samples = (res.get("samples") or {}).get(name, [])
        report[task] = {
            "task": name,
            "local": name != task,
            "metrics": metrics_of(res["results"].get(name, {})),
            "samples": [
                {
                    "doc_id": s.get("doc_id"),
                    "target": s.get("target"),
                    "answer": _first(s.get("filtered_resps") or s.get("resps")),
                }
                for s in samples
            ],
        }
    return report


def _first(x):
    while isinstance(x, (list, tuple)) and x:
        x = x[0]
    return x if isinstance(x, str) else None


def main(argv: list[str] | None = None) -> int:
    from evaluation.lmms_model import load_policy

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m evaluation.lmms_run SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    policy = load_policy(
        spec["model_path"],
        spec.get("arch", "janus"),
        spec.get("dtype", "float32"),
        spec.get("device", "cpu"),
    )
    report = run_lmms(
        policy,
        list(spec["tasks"]),
        spec["out"],
        data=spec.get("data"),
        limit=int(spec.get("limit", 0)),
        batch_size=int(spec.get("batch_size", 8)),
        max_new_tokens=int(spec.get("max_new_tokens", 0)),
        seed=int(spec.get("seed", 0)),
    )
    path = Path(spec["out"]) / "lmms_results.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"lmms-eval results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
