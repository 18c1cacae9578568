"""`pairuni eval`: the papers' benchmarks on a model directory or a training checkpoint.

    pairuni eval --config deploy/configs/<run>.yaml model.path=DIR \\
        eval.benchmarks=[mmmu_val,mmstar,mme,pope] [eval.data.pope=/data/pope.parquet]

1. ``model.path``: a model directory is used as it is; a training checkpoint (a run
   directory, its ``checkpoints/`` or one ``step_XXXXXX``) is exported first
   (``pairuni export``) to ``<out>/model``.
2. The lmms-eval tasks run in the environment that has lmms-eval (``eval.python``; by
   default ``.venv-eval`` beside this checkout, else this interpreter), through
   ``evaluation.lmms_run`` and the ``pairuni`` lmms-eval model.
3. ``<out>/results.json`` and ``<out>/results.md``: every metric, and a table of ours
   beside the numbers the papers report (``evaluation/paper_numbers.yaml``).
4. Generation benchmarks (``eval.geneval``, ``eval.t2i_compbench``, ``eval.wise``): images
   written in each official layout under ``<out>/``, scored here by ``eval.gen_scorers``;
   the official scorer's command is printed.

``<out>`` is ``eval.out``, default ``<run dir>/eval``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from deploy.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def eval_python(configured: str = "") -> str:
    """The interpreter that runs lmms-eval: ``eval.python``, else ``.venv-eval`` here, else
    this one; a clear error when it has no lmms-eval."""
    lane = ROOT / ".venv-eval" / "bin" / "python"
    python = configured or (str(lane) if lane.is_file() else sys.executable)
    probe = subprocess.run(
        [python, "-c", "import importlib.util as u; print(bool(u.find_spec('lmms_eval')))"],
        capture_output=True,
        text=True,
    )
    if probe.stdout.strip() != "True":
        raise ValueError(
            f"eval.python={python!r} has no lmms-eval: build the evaluation environment with "
            "`make .venv-eval` (README, Evaluate), or set eval.python to an interpreter that "
            "has lmms-eval and this project"
        )
    return python


def model_dir(cfg: RunConfig, out: Path) -> Path:
    """``model.path`` as a model directory: itself, or a training checkpoint exported."""
    from models.registry import family

    path = cfg.model.path
    if not path:
        raise ValueError(
            "model.path is empty: give a model directory (pairuni export's output, a run's "
            "final_model/, a converted checkpoint) or a training checkpoint / run directory"
        )
    try:
        family(cfg.model.arch).check_checkpoint(path, "model.path")
        return Path(path)
    except (OSError, ValueError) as not_a_model:
        from deploy import checkpoint

        try:
            ckpt = checkpoint.resolve(path)
        except FileNotFoundError:
            raise not_a_model from None
    from deploy.export import export_checkpoint

    print(f"[eval] exporting the training checkpoint {ckpt} to {out / 'model'}", flush=True)
    return export_checkpoint(ckpt, out / "model")


def run_benchmarks(cfg: RunConfig, model: Path, out: Path) -> dict:
    """The lmms-eval tasks of ``eval.benchmarks`` in the evaluation environment."""
    e = cfg.eval
    spec = {
        "model_path": str(model),
        "arch": cfg.model.arch,
        "dtype": cfg.model.dtype,
        "device": cfg.model.device,
        "tasks": list(e.benchmarks),
        "data": dict(e.data),
        "limit": e.limit,
        "batch_size": e.batch_size,
        "max_new_tokens": e.max_new_tokens,
        "seed": cfg.run.seed,
        "out": str(out),
    }
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "lmms_spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    python = eval_python(e.python)
    print(f"[eval] lmms-eval {list(e.benchmarks)} with {python}", flush=True)
    subprocess.run([python, "-m", "evaluation.lmms_run", str(spec_path)], cwd=ROOT, check=True)
    return json.loads((out / "lmms_results.json").read_text())


def run_eval(cfg: RunConfig) -> dict:
    """Steps 1-4 of the module docstring; returns what results.json holds."""
    from evaluation.report import write_results

    out = Path(cfg.eval.out) if cfg.eval.out else Path(cfg.run.dir) / "eval"
    e = cfg.eval
    if not (e.benchmarks or e.geneval or e.t2i_compbench or e.wise):
        raise ValueError(
            "nothing to evaluate: set eval.benchmarks (lmms-eval tasks) and/or eval.geneval, "
            "eval.t2i_compbench, eval.wise (generation prompt files)"
        )
    model = model_dir(cfg, out)
    tasks = run_benchmarks(cfg, model, out) if e.benchmarks else {}
    generation = run_generation(cfg, model, out)
    data = write_results(out, str(model), tasks, {"generation": generation} if generation else {})
    print((out / "results.md").read_text())
    print(f"results: {out / 'results.json'}, {out / 'results.md'}")
    return data


def run_generation(cfg: RunConfig, model: Path, out: Path) -> dict:
    """Each generation benchmark of ``eval.*``: images in its official layout, scored here."""
    from evaluation.genbench import BENCHMARKS, generate_benchmark

    e = cfg.eval
    todo = {name: getattr(e, name) for name in BENCHMARKS if getattr(e, name)}
    if not todo:
        return {}
    import dataclasses

    from evaluation.scores import build_scorers
    from models.registry import build_policy

    policy = build_policy(dataclasses.replace(cfg.model, path=str(model)))
    scorers = build_scorers(e.gen_scorers, cfg.rewards)
    results = {}
    for name, prompts in todo.items():
        results[name] = generate_benchmark(
            name, policy, prompts, out / name, cfg.model, e, cfg.run.seed, scorers
        )
        print(
            f"[eval] {name}: {results[name]['folder']}\n  official scorer: {results[name]['scorer']}"
        )
    return results


def add_eval_command(subparsers) -> None:
    """Register `eval` on the `pairuni` sub-parsers."""
    p = subparsers.add_parser(
        "eval", help="lmms-eval benchmarks + generation benchmarks on a model or checkpoint"
    )
    p.add_argument("--config", required=True, help="YAML run config")
    p.add_argument("overrides", nargs="*", help="e.g. model.path=DIR eval.benchmarks=[pope]")

    def run(args) -> None:
        run_eval(load_config(RunConfig, args.config, args.overrides))

    p.set_defaults(func=run)
