"""DSR's alternating strategy (DSR section 4.5): two models, each rewarded by the other.

A generation model and an understanding model start from the same checkpoint. Turns
alternate, one epoch each: in a generation turn the generation model trains on the
manifest's prompts, its images scored by R_G under the understanding model (frozen: the
likelihood of the prompt given the image); in an understanding turn the understanding model
trains on the images, its descriptions (or answers) scored by R_U under the generation
model (frozen: the likelihood of the image's tokens given the text). After its turn a model
is exported, and the other's next turn scores with that export.

Each model is an ordinary run, ``<run dir>/gen`` and ``<run dir>/und``, training its task
alone (``train.tasks``) and resumed from its own checkpoint at its next turn (optimiser
state, lr schedule and data cursor continue). ``<run dir>/alternate.json`` records the turns
done and the latest export of each model, so a stopped run continues with
``pairuni train --config ... --resume <run dir>``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from pathlib import Path

from deploy.config import RunConfig, write_resolved
from deploy.train import Trainer

log = logging.getLogger("pairuni.alternate")

OTHER = {"gen": "und", "und": "gen"}


def turn_order(cfg: RunConfig) -> list[str]:
    """The model trained in each turn: alternate_first, then the other, and so on."""
    first = cfg.train.alternate_first
    return [first if i % 2 == 0 else OTHER[first] for i in range(cfg.train.alternate_epochs)]


def epoch_steps(cfg: RunConfig, role: str) -> int:
    """Steps of one epoch of ``role``: the manifest's items with a half for it, in batches of
    train.pairs_per_step (the last batch runs into the next epoch, as the pairing actor's do)."""
    from pairing.manifest import item_tasks, read_manifest

    n = sum(1 for p in read_manifest(cfg.train.manifest) if role in item_tasks(p))
    if n == 0:
        raise ValueError(
            f"train.manifest={cfg.train.manifest}: no item has a {role} half; the alternating "
            "strategy trains both tasks"
        )
    return math.ceil(n / cfg.train.pairs_per_step)


def turn_config(cfg: RunConfig, role: str, turns_done: int, dual_path: str) -> RunConfig:
    """The run of ``role`` for its (turns_done + 1)-th turn, rewarded by the model at
    ``dual_path`` (frozen)."""
    steps = epoch_steps(cfg, role)
    turns = turn_order(cfg).count(role)
    t, lr, rw = cfg.train, cfg.learner, cfg.rewards
    return dataclasses.replace(
        cfg,
        run=dataclasses.replace(cfg.run, root=str(cfg.run.dir), name=role),
        train=dataclasses.replace(
            t, strategy="joint", tasks=(role,), steps=(turns_done + 1) * steps
        ),
        # one lr schedule over all of this model's turns
        learner=dataclasses.replace(
            lr, lr_decay_steps=lr.lr_decay_steps or turns * steps * lr.ppo_epochs
        ),
        rewards=dataclasses.replace(
            rw, dual=dataclasses.replace(rw.dual, model_path=dual_path, follow_policy=False)
        ),
    )


def _model_dir(cfg: RunConfig, role: str) -> Path:
    """Where ``role``'s model is exported after each of its turns."""
    return cfg.run.dir / "models" / role


def _state_path(cfg: RunConfig) -> Path:
    return cfg.run.dir / "alternate.json"


def _write_state(cfg: RunConfig, state: dict) -> None:
    path = _state_path(cfg)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def run_alternating(cfg: RunConfig, resume: bool = False) -> tuple[dict, int | None]:
    """Run the turns not yet done; returns (the state, the signal that stopped a turn or
    None). Without ``resume`` a run directory holding turns refuses to start."""
    base = cfg.model.path  # both models start here ("" : the tiny random model)
    path = _state_path(cfg)
    if path.is_file():
        if not resume:
            raise FileExistsError(
                f"{cfg.run.dir} holds an alternating run ({path}); continue it with --resume "
                f"{cfg.run.dir} or choose another run.name"
            )
        state = json.loads(path.read_text())
    else:
        state = {"turns_done": 0, "models": {}}
    cfg.run.dir.mkdir(parents=True, exist_ok=True)
    write_resolved(cfg, cfg.run.dir)
    order = turn_order(cfg)
    for turn in range(state["turns_done"], len(order)):
        role, done = order[turn], order[:turn]
        other = OTHER[role]
        # the other model as its last turn left it; before its first turn, the start
        dual_path = str(_model_dir(cfg, other)) if other in done else base
        tcfg = turn_config(cfg, role, done.count(role), dual_path)
        run_dir = tcfg.run.dir
        log.info(
            "turn %d/%d: the %s model, rewarded by the %s model at %s, to step %d",
            turn + 1,
            len(order),
            role,
            other,
            dual_path or "(the tiny start)",
            tcfg.train.steps,
        )
        trainer = Trainer(tcfg, resume=str(run_dir) if (run_dir / "checkpoints").is_dir() else None)
        try:
            trainer.fit()
            if trainer.stopped_by is not None:
                return state, trainer.stopped_by
            out = _model_dir(cfg, role)
            tmp = out.with_name(f"{role}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            trainer.learners.export(str(tmp))
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
        finally:
            trainer.close()
        state["turns_done"] = turn + 1
        state["models"][role] = str(out)  # for the reader; the turns are what counts
        _write_state(cfg, state)
    return state, None
