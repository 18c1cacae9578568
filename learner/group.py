"""LearnerGroup: N data-parallel ``Learner`` ranks as Ray actors, or one in-process.

The ranks live in one placement group (one bundle per rank: ``learner_num_cpus`` CPUs and
``learner_num_gpus`` GPUs, packed), join one torch.distributed group (gloo on CPU, nccl on
GPU; the rendezvous address is rank 0's node and a free port found there) and run
DeepSpeed data parallel (ZeRO stage from config).

An update splits the batch across ranks (each task's rollouts, or SimPO's pairs, in
contiguous near-equal chunks) but computes the loss normaliser on the FULL batch, and each
rank multiplies its loss by the world size W (DeepSpeed averages gradients over ranks), so
1 and W learners take the same optimiser step (``learner.losses`` module docstring).

``num_learners=0`` runs one ``Learner`` in this process (no Ray), for tests and laptops.
"""

from __future__ import annotations

from actors.types import WeightsRef
from learner.config import LearnerConfig
from learner.learner import Learner
from learner.metrics import epoch_metrics, reduce_metrics
from learner.objectives import objective_for
from learner.types import TrainBatch
from models.config import ModelConfig


def learner_resources(cfg: LearnerConfig) -> dict:
    """Ray resources of one learner actor (``ray.remote(**resources)``)."""
    return {"num_cpus": cfg.learner_num_cpus, "num_gpus": cfg.learner_num_gpus}


def _rendezvous() -> tuple[str, int]:
    """Rank 0's node address and a free port there (run as a task in rank 0's bundle)."""
    import ray

    from learner.learner import free_port

    return ray.util.get_node_ip_address(), free_port()


class LearnerGroup:
    """The learner ranks behind one interface; rank 0 speaks for the group.

    Methods mirror ``Learner``: ``update(batch) -> metrics`` (reduced over ranks),
    ``publish_weights() -> WeightsRef``, ``save_checkpoint(dir)``, ``load_checkpoint(dir)``,
    ``state_dict()``, ``export(dir)``, ``version``; ``shutdown()`` frees the actors.
    """

    def __init__(self, model_cfg: ModelConfig, cfg: LearnerConfig, *, ready_timeout_s: float = 600):
        cfg.validate()
        model_cfg.validate()
        self.cfg, self.model_cfg = cfg, model_cfg
        self.num_learners = cfg.num_learners
        self.objective = objective_for(cfg)
        self._local: Learner | None = None
        self._actors: list = []
        self._pg = None
        if self.num_learners == 0:
            self._local = Learner(model_cfg, cfg)
            self._version = self._local.version
            return
        self._start_actors(ready_timeout_s)

    def _start_actors(self, ready_timeout_s: float) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from actors.group import as_actor

        cfg, N = self.cfg, self.num_learners
        bundle = {"CPU": cfg.learner_num_cpus}
        if cfg.learner_num_gpus:
            bundle["GPU"] = cfg.learner_num_gpus
        self._pg = placement_group([dict(bundle) for _ in range(N)], strategy="PACK")
        ready, _ = ray.wait([self._pg.ready()], timeout=ready_timeout_s)
        if not ready:
            ray.util.remove_placement_group(self._pg)
            raise TimeoutError(
                f"the cluster could not reserve {N} x {bundle} for the learners within "
                f"{ready_timeout_s:.0f} s (available: {ray.available_resources()}); lower "
                "learner.num_learners / learner.learner_num_cpus / learner.learner_num_gpus "
                "or add nodes"
            )

        def on(rank: int):
            return PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=rank)

        addr, port = ray.get(
            ray.remote(num_cpus=0)(_rendezvous).options(scheduling_strategy=on(0)).remote()
        )
        actor_cls = as_actor(Learner, learner_resources(cfg))
        device = "cuda" if cfg.learner_num_gpus else "cpu"
        self._actors = [
            actor_cls.options(scheduling_strategy=on(rank)).remote(
                self.model_cfg,
                cfg,
                rank=rank,
                world_size=N,
                master_addr=addr,
                master_port=port,
                device=device,
            )
            for rank in range(N)
        ]
        self._version = self._gather([a.ready.remote() for a in self._actors])[0]

    # ---- calls on every rank --------------------------------------------------------------
    @staticmethod
    def _gather(refs: list) -> list:
        """``ray.get`` in rank order, failing fast: the first rank to raise ends the wait (the
        others may be blocked in a collective waiting for it; the group is then unusable)."""
        import ray

        pending, position = list(refs), {r: i for i, r in enumerate(refs)}
        results: list = [None] * len(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                results[position[done[0]]] = ray.get(done[0])
            except Exception as e:
                raise RuntimeError(
                    f"learner rank {position[done[0]]} failed; the learner group must be "
                    f"restarted (the other ranks may be blocked in a collective): {e}"
                ) from e
        return results

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """``learner.ppo_epochs`` optimiser steps on ``batch`` across the group; metrics
        reduced over ranks (``learner.metrics.epoch_metrics``)."""
        if self._local is not None:
            metrics = self._local.update(batch)
        else:
            import ray

            # checked here, not in one rank that would leave the others waiting
            self.objective.check(batch)
            normaliser = self.objective.normaliser(batch, self.cfg)
            shards = [ray.put(s) for s in self.objective.shard(batch, self.num_learners)]
            epochs = []
            for _ in range(self.cfg.ppo_epochs):
                refs = [a.update_shard.remote(s, normaliser) for a, s in zip(self._actors, shards)]
                epochs.append(reduce_metrics(self._gather(refs)))
            metrics = epoch_metrics(epochs)
        self._version = int(metrics["version"])
        return metrics

    def grad_cosine(self, batch: TrainBatch) -> dict[str, float]:
        """``Learner.grad_cosine`` over the group (each rank scores its shard; the gradients
        are summed over ranks before the cosine): the full batch's value, no update."""
        normaliser = self.objective.normaliser(batch, self.cfg)
        if self._local is not None:
            return self._local.grad_cosine(batch, normaliser)
        import ray

        self.objective.check(batch)
        shards = [ray.put(s) for s in self.objective.shard(batch, self.num_learners)]
        refs = [a.grad_cosine.remote(s, normaliser) for a, s in zip(self._actors, shards)]
        return self._gather(refs)[0]

    def save_checkpoint(self, path: str) -> str:
        """Every rank writes its DeepSpeed state under ``path`` (a directory all ranks can
        reach: one node, or a shared filesystem)."""
        if self._local is not None:
            return self._local.save_checkpoint(path)
        self._gather([a.save_checkpoint.remote(path) for a in self._actors])
        return path

    def load_checkpoint(self, path: str) -> int:
        """Every rank restores from ``path``; returns the weight version."""
        if self._local is not None:
            self._version = self._local.load_checkpoint(path)
        else:
            self._version = self._gather([a.load_checkpoint.remote(path) for a in self._actors])[0]
        return self._version

    # ---- rank 0 ---------------------------------------------------------------------------
    def _rank0(self, method: str, *args):
        if self._local is not None:
            return getattr(self._local, method)(*args)
        return self._gather([getattr(self._actors[0], method).remote(*args)])[0]

    def publish_weights(self) -> WeightsRef:
        """Rank 0's trainable parameters as one flat buffer in the object store (one put)."""
        return self._rank0("publish_weights")

    def state_dict(self) -> dict:
        """Rank 0's trainable parameters (float32 CPU tensors); all ranks hold the same."""
        return self._rank0("state_dict")

    def export(self, path: str) -> str:
        """Rank 0 writes the policy as a Hugging Face-format model directory."""
        return self._rank0("export", path)

    @property
    def version(self) -> int:
        """Weight version after the last update or load (0 = the initial policy)."""
        return self._version

    def shutdown(self) -> None:
        """Kill the learner actors and free their placement group (no-op in-process)."""
        if self._local is not None:
            return
        import ray

        for a in self._actors:
            ray.kill(a)
        self._actors = []
        if self._pg is not None:
            ray.util.remove_placement_group(self._pg)
            self._pg = None
