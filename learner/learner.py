"""The learner: a DeepSpeed engine around the unified model's trainable parameters.

``Learner.update(batch)`` is one optimiser step on a ``TrainBatch``:

1. split the rollouts by task and cut each task into micro-batches by a token budget
   (``learner.micro_batch_tokens``; ``rollout_cost`` says what a token is);
2. recompute each micro-batch's log-probs through ``models/`` with the current weights:
   text log-probs for understanding, CFG-combined (or conditional) image log-probs for
   generation, at the sampler's temperatures (``ModelConfig``);
3. the clipped Pair-GRPO / GRPO / DAPO loss (``learner.losses.policy_loss``) or online SimPO
   (``simpo_loss``, DSR eq. 5), each micro-batch divided by the FULL batch's normaliser
   (``batch_normaliser``) so that accumulating micro-batch gradients gives the full-batch
   gradient; with W data-parallel ranks each rank's loss is multiplied by W because
   DeepSpeed averages gradients over ranks (``learner.losses`` module docstring);
4. one ``engine.step()`` at the accumulation boundary; the weight version goes up by one.

The first recompute of a step runs on the weights the rollouts were sampled with, so
``logprob_diff`` (mean |sampler - learner| log-prob per token) measures the on-policy gap:
it must be ~0, and it is the first thing to look at when training misbehaves.

Every rank runs the same number of backward passes (ZeRO-2 reduces gradients in each one),
and every micro-batch's loss touches every trainable parameter (a zero-weighted term), so
that the gradient hooks fire identically on all ranks whatever tasks their shards hold.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from actors import weights as flat_weights
from actors.types import WeightsRef
from learner.advantages import lookup
from learner.batches import (
    group_size,
    plan_micro_batches,
    rollout_cost,
)
from learner.config import OPTIMIZERS as OPTIMIZER_NAMES
from learner.config import LearnerConfig
from learner.losses import Normaliser
from learner.metrics import Stats, epoch_metrics, reduce_metrics
from learner.objectives import objective_for
from learner.schedule import make_scheduler
from learner.types import TrainBatch
from models.config import ModelConfig, check
from models.interface import UnifiedPolicy
from models.registry import build_policy
from models.tasks import TASKS, Task
from models.text_tokens import Padded

# --- optimisers (one registry) -----------------------------------------------------------------


def _adamw(params: list, cfg: LearnerConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params,
        lr=cfg.lr,
        betas=tuple(cfg.adam_betas),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
    )


def _fused_adam(params: list, cfg: LearnerConfig) -> torch.optim.Optimizer:
    from deepspeed.ops.adam import FusedAdam  # JIT-compiles a C++/CUDA op on first use

    return FusedAdam(
        params,
        lr=cfg.lr,
        betas=tuple(cfg.adam_betas),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        adam_w_mode=True,
    )


OPTIMIZERS = {"adamw": _adamw, "fused_adam": _fused_adam}
"""Optimiser name -> (trainable params, LearnerConfig) -> torch optimiser."""
assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES, "learner.config.OPTIMIZERS must list these names"

# --- log-probs through models/ ---------------------------------------------------------------------


def _pad(rows: list[np.ndarray], device) -> torch.Tensor:
    """Right-pad 1-D float arrays into ``[N, T]`` (zeros off the mask)."""
    T = max(len(r) for r in rows)
    out = torch.zeros(len(rows), T, dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(np.asarray(r, dtype=np.float32))
    return out.to(device)


def score(model: UnifiedPolicy, rollouts: list, task: str, model_cfg: ModelConfig) -> Padded:
    """Teacher-forced log-probs of one task's rollouts under ``model``: ``values [N, T]``,
    ``mask [N, T]``; differentiable. The same policies the samplers use:
    softmax(lm_head / T) for text, softmax((l_u + w (l_c - l_u)) / T) for image tokens
    (``model.image_logprob_mode``)."""
    # Rollouts of one request in consecutive runs of n: each prompt (and image) is encoded
    # once and repeated n times inside models/ (the SigLIP tower runs once per image).
    n = group_size([r.request.request_id for r in rollouts])
    heads = rollouts[::n]
    if task == Task.UND:
        images = [r.request.image for r in heads]
        questions = [r.request.prompt for r in heads]
        ids = [[int(t) for t in r.token_ids] for r in rollouts]
        return model.text_logprobs(images, questions, ids, temperature=model_cfg.text_temperature)
    prompts = [r.request.prompt for r in heads]
    tokens = torch.as_tensor(np.stack([r.token_ids for r in rollouts]), dtype=torch.long)  # [N, K]
    orders = [r.image_order for r in rollouts]
    if any(o is None for o in orders) and any(o is not None for o in orders):
        raise ValueError(
            "generation rollouts mix rows with and without image_order (the sampler's reveal "
            "steps): their workers ran different model.diffusion.logprob_estimator settings"
        )
    order = None if orders[0] is None else torch.as_tensor(np.stack(orders), dtype=torch.long)
    values = model.image_logprobs(
        prompts,
        tokens,
        cfg_weight=model_cfg.cfg_weight,
        mode=model_cfg.image_logprob_mode,
        temperature=model_cfg.image_temperature,
        chunk=model_cfg.image_logprob_chunk,
        order=order,
    )  # [N, K]
    return Padded(values, torch.ones_like(values, dtype=torch.bool))


# --- set-up helpers -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that is free now (for the torch.distributed rendezvous)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def release_distributed() -> None:
    """Free this process's process group, in DeepSpeed's bookkeeping too, so that a later
    in-process learner can make a new one (torch's destroy alone leaves DeepSpeed holding
    the old group: "Group ... is not registered")."""
    import torch.distributed as dist

    if dist.is_initialized():
        import deepspeed.comm

        deepspeed.comm.destroy_process_group()


def init_distributed(
    backend: str, rank: int, world_size: int, master_addr: str, master_port: int
) -> None:
    """Join (or, in-process, create) the torch.distributed group DeepSpeed runs on."""
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise RuntimeError(
                f"this process already belongs to a process group of world size "
                f"{dist.get_world_size()} (rank {dist.get_rank()}); a learner of rank {rank} "
                f"in world size {world_size} needs its own process (use a LearnerGroup)"
            )
        return
    env = {"RANK": rank, "WORLD_SIZE": world_size, "MASTER_ADDR": master_addr}
    env["MASTER_PORT"] = master_port
    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ.setdefault("LOCAL_RANK", "0")  # each learner process sees its own device
    dist.init_process_group(
        backend,
        init_method=f"tcp://{master_addr}:{master_port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(minutes=30),
    )


def _import_deepspeed(device: torch.device):
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read once, at import
    import deepspeed

    return deepspeed


# --- the learner ----------------------------------------------------------------------------------


class Learner:
    """One data-parallel rank: the policy, its DeepSpeed engine, and the optional frozen
    reference model. A plain class; ``learner.group.LearnerGroup`` wraps it as a Ray actor.

    ``master_addr``/``master_port`` are the rendezvous of a multi-rank group; a single
    learner (world size 1) makes its own on 127.0.0.1.
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        cfg: LearnerConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        master_addr: str | None = None,
        master_port: int | None = None,
        device: str | None = None,
    ):
        model_cfg.validate()
        cfg.validate()
        self.model_cfg, self.cfg = model_cfg, cfg
        self.objective = objective_for(cfg)
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device or model_cfg.device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.bf16 = cfg.bf16 and self.device.type == "cuda"
        self.backend = "nccl" if self.device.type == "cuda" else "gloo"
        deepspeed = _import_deepspeed(self.device)
        init_distributed(
            self.backend,
            rank,
            world_size,
            master_addr or "127.0.0.1",
            master_port or free_port(),
        )
        deepspeed.init_distributed(dist_backend=self.backend)

        # float32 master weights; DeepSpeed casts the module to bf16 on a GPU learner.
        self.model = build_policy(model_cfg, dtype="float32", device=self.device)
        if cfg.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.ref_model: UnifiedPolicy | None = None
        if cfg.kl_coef > 0 and cfg.use_ref_model:
            self.ref_model = build_policy(model_cfg, dtype="float32", device=self.device)
            self.ref_model.freeze()
            if self.bf16:
                self.ref_model.to(dtype=torch.bfloat16)

        self._params = self.model.trainable_parameters()
        optimizer = lookup(OPTIMIZERS, cfg.optimizer, "optimizer")(list(self._params.values()), cfg)
        # ZeRO asserts that the buckets are a multiple of its alignment (2); a model with an
        # odd parameter count (the tiny Show-o) would fail: round up to a multiple of 8.
        n_params = sum(p.numel() for p in self._params.values())
        bucket = int(min(5e8, -(-max(n_params, 1) // 8) * 8))
        ds_config = {
            "train_micro_batch_size_per_gpu": 1,  # unused: micro-batches are cut by tokens
            "gradient_accumulation_steps": 1,  # the boundary is set explicitly per update
            "gradient_clipping": cfg.grad_clip,
            "zero_optimization": {
                "stage": cfg.zero_stage,
                "reduce_bucket_size": bucket,
                "allgather_bucket_size": bucket,
            },
            "bf16": {"enabled": self.bf16},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }
        check(
            cfg.lr_schedule == "constant" or cfg.lr_decay_steps > 0,
            "learner.lr_decay_steps",
            cfg.lr_decay_steps,
            f"must be > 0 with lr_schedule={cfg.lr_schedule!r} (the driver sets it from "
            "train.steps; a learner built by hand needs it)",
            "use LearnerConfig.with_horizon(train_steps)",
        )
        self.engine, *_ = deepspeed.initialize(
            model=self.model.module,
            optimizer=optimizer,
            model_parameters=list(self._params.values()),
            # DeepSpeed steps it once per optimiser step (at the accumulation boundary) and
            # saves / restores it with the engine's checkpoint.
            lr_scheduler=lambda opt: make_scheduler(opt, cfg),
            config=ds_config,
        )
        self.model.eval()
        self._version = 0
        self._publisher = flat_weights.Publisher()  # its staging buffer is reused per version

    # ---- state ----------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """Weight version: the number of optimiser steps taken (0 = the initial policy)."""
        return self._version

    def ready(self) -> int:
        """The weight version; a Ray caller waits on this for the actor to be built."""
        return self._version

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable parameters, float32 copies on the CPU."""
        return {n: p.detach().float().cpu().clone() for n, p in self._params.items()}

    def publish_weights(self) -> WeightsRef:
        """The trainable parameters as one flat buffer, cast to the rollout workers' dtype
        (``model.dtype``), put once into the object store when Ray is up."""
        return self._publisher.publish(
            self._params, self._version, getattr(torch, self.model_cfg.dtype)
        )

    # ---- the update -----------------------------------------------------------------------
    def update(self, batch: TrainBatch) -> dict[str, float]:
        """``learner.ppo_epochs`` optimiser steps on ``batch`` (this learner is the whole group)."""
        self.objective.check(batch)
        normaliser = self.objective.normaliser(batch, self.cfg)
        return epoch_metrics(
            [
                reduce_metrics([self.update_shard(batch, normaliser)])
                for _ in range(self.cfg.ppo_epochs)
            ]
        )

    def update_shard(self, batch: TrainBatch, normaliser: Normaliser) -> dict[str, float]:
        """One optimiser step on this rank's shard of a batch; ``normaliser`` is the FULL
        batch's. Returns raw sums for ``reduce_metrics``. All ranks must call it together."""
        self.objective.check(batch, allow_empty=True)
        units = self._plan(batch)
        n_micro = self._agree_on_max(max(1, len(units)))
        stats = Stats()
        stats.set("lr", float(self.engine.get_lr()[0]))  # the lr this step trains with
        self.model.train(self.cfg.gradient_checkpointing)  # checkpointing runs in train mode
        try:
            for i in range(n_micro):
                self.engine.set_gradient_accumulation_boundary(i == n_micro - 1)
                loss = self._touch_all()
                if i < len(units):
                    task, idx = units[i]
                    part = self.objective.loss(self, batch, task, idx, normaliser, stats)
                    if not bool(torch.isfinite(part)):
                        raise FloatingPointError(
                            f"learner rank {self.rank}: loss {float(part)} on micro-batch {i} "
                            f"({task}, rollouts {idx[:8]}...); check logprob_diff and rewards"
                        )
                    loss = loss + part
                    stats.add("sum/loss", float(part.detach()))
                self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
                self.engine.step()
        finally:
            self.model.eval()
        self._version += 1
        gn = self.engine.get_global_grad_norm()
        stats.set("grad_norm", float("nan") if gn is None else float(gn))
        stats.set("version", float(self._version))
        stats.set("max/micro_batches", float(n_micro))
        return stats.raw

    def grad_cosine(self, batch: TrainBatch, normaliser: Normaliser) -> dict[str, float]:
        """How much the two tasks' updates agree on this batch (PairUni Fig. 1): the cosine
        between the gradient of the understanding part of the loss and that of the
        generation part, on the parameters both tasks use (``shared_parameters``: the
        language model), at the current weights. No update, no optimiser state touched:
        the gradients come from ``torch.autograd.grad``, not from the engine. With several
        ranks each rank's gradients (of its shard, under the full batch's normaliser) are
        summed over the group first, so every rank returns the full batch's cosine; all
        ranks must call it together. Memory: two gradient copies of the shared parameters.

        Returns ``grad/cos_und_gen`` (NaN when a task has no rollouts or a zero gradient)
        and each task's gradient norm ``grad/norm_und``, ``grad/norm_gen``.
        """
        self.objective.check(batch, allow_empty=True)
        params = list(self.model.shared_parameters().values())
        grads = {task: [torch.zeros_like(p) for p in params] for task in TASKS}
        scratch = Stats()  # the losses' own statistics are the update's business, not ours
        self.model.train(self.cfg.gradient_checkpointing)
        try:
            for task, idx in self._plan(batch):
                part = self.objective.loss(self, batch, task, idx, normaliser, scratch)
                parts = torch.autograd.grad(part, params, allow_unused=True)
                for acc, g in zip(grads[task], parts):
                    if g is not None:
                        acc += g
        finally:
            self.model.eval()
        if self.world_size > 1:
            import torch.distributed as dist

            for task in TASKS:
                for g in grads[task]:
                    dist.all_reduce(g)
        und, gen = grads[Task.UND], grads[Task.GEN]
        dot = sum(float((a.double() * b.double()).sum()) for a, b in zip(und, gen))
        n_und = sum(float(a.double().square().sum()) for a in und) ** 0.5
        n_gen = sum(float(b.double().square().sum()) for b in gen) ** 0.5
        cos = dot / (n_und * n_gen) if n_und > 0 and n_gen > 0 else float("nan")
        return {"grad/cos_und_gen": cos, "grad/norm_und": n_und, "grad/norm_gen": n_gen}

    def _plan(self, batch: TrainBatch) -> list[tuple[Task, list[int]]]:
        """Micro-batches as (task, item indices): the objective's items (rollouts, or SimPO
        pairs) of one task, packed by their rollouts' token cost."""
        streams = self.model.image_streams(self.model_cfg.image_logprob_mode)
        costs = [rollout_cost(r, streams) for r in batch.rollouts]
        units = []
        for task in TASKS:
            items = self.objective.items(batch, task)
            item_cost = [sum(costs[row] for row in rows) for _, rows in items]
            for group in plan_micro_batches(item_cost, self.cfg.micro_batch_tokens):
                units.append((task, [items[g][0] for g in group]))
        return units

    def _agree_on_max(self, n: int) -> int:
        """The largest ``n`` over the ranks (every rank must run as many backward passes)."""
        if self.world_size == 1:
            return n
        import torch.distributed as dist

        t = torch.tensor([n], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def _touch_all(self) -> torch.Tensor:
        """0 * (one element of every trainable parameter): gives every parameter a (zero)
        gradient in every backward, so ZeRO's reduction hooks fire alike on all ranks."""
        return sum(p.reshape(-1)[:1].sum() for p in self._params.values()) * 0.0

    def _logprobs(self, rollouts: list, task: str) -> tuple[Padded, torch.Tensor, Padded | None]:
        """(learner log-probs, sampler log-probs [N, T], reference log-probs or None)."""
        new = score(self.model, rollouts, task, self.model_cfg)
        old = _pad([r.logprobs for r in rollouts], self.device)  # [N, T]
        if tuple(old.shape) != tuple(new.values.shape):
            raise ValueError(
                f"{task}: sampler log-probs {tuple(old.shape)} vs learner {tuple(new.values.shape)}"
            )
        ref = None
        if self.ref_model is not None:
            with torch.no_grad():
                ref = score(self.ref_model, rollouts, task, self.model_cfg)
        return new, old, ref

    # ---- checkpoints and export -----------------------------------------------------------
    def save_checkpoint(self, path: str) -> str:
        """DeepSpeed engine state (parameters, optimiser, this rank's ZeRO partition) and the
        weight version, under ``path`` (every rank of a group writes into the same dir)."""
        Path(path).mkdir(parents=True, exist_ok=True)
        self.engine.save_checkpoint(
            path, tag=f"version_{self._version}", client_state={"version": self._version}
        )
        return path

    def load_checkpoint(self, path: str, module_only: bool = False) -> int:
        """Restore what ``save_checkpoint`` wrote (its latest tag); returns the weight version.

        ``module_only`` restores the parameters alone (export: any number of ranks may have
        written the checkpoint)."""
        if not (Path(path) / "latest").is_file():
            raise FileNotFoundError(
                f"no learner checkpoint at {path} (expected {Path(path) / 'latest'}, written by "
                "Learner.save_checkpoint); check the --resume directory"
            )
        loaded, client = self.engine.load_checkpoint(
            path,
            load_optimizer_states=not module_only,
            load_lr_scheduler_states=not module_only,
            load_module_only=module_only,
        )
        if loaded is None:
            raise FileNotFoundError(f"DeepSpeed found no loadable checkpoint under {path}")
        self._version = int(client["version"])
        self.model.eval()
        return self._version

    def export(self, path: str) -> str:
        """Write the trained policy as a Hugging Face-format model directory (``model.save``)."""
        self.model.save(path)
        return path
