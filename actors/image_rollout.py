"""Image (generation) rollout worker: prompt -> n images' tokens, decoded, with log-probs.

Sampling is batched over requests and uses classifier-free guidance; the log-probs are the
sampler's own, under the policy the learner recomputes (``model.image_logprob_mode``): the
CFG-combined softmax((l_u + w (l_c - l_u)) / T) the tokens are drawn from (default), or the
conditional softmax(l_c / T) (T2I-R1).
Tokens are VQ-decoded into uint8 images for the rewards. Seeds and batching as in
``actors.text_rollout``.
"""

from __future__ import annotations

import numpy as np

from actors.config import RolloutConfig
from actors.text_rollout import by_n, check_requests
from actors.types import Rollout, RolloutRequest, WeightsRef
from actors.weights import UNSYNCED, Wire, load_into
from actors.worker import WeightsGate
from models.config import ModelConfig
from models.registry import build_policy
from models.tasks import Task


class ImageRolloutWorker:
    """Samples generation rollouts; loads published weights between batches."""

    def __init__(self, model_cfg: ModelConfig, cfg: RolloutConfig, worker_index: int = 0):
        self.worker_index = worker_index
        self.cfg, self.model_cfg = cfg, model_cfg
        self.model = build_policy(model_cfg)
        self.params = self.model.trainable_parameters()
        self.gate = WeightsGate(f"image worker {worker_index}")
        self._version = UNSYNCED

    def generate(self, requests: list[RolloutRequest]) -> list[Rollout]:
        """``n`` rollouts per request, in request order; all from one weight version."""
        requests = check_requests(requests, Task.GEN, f"image worker {self.worker_index}")
        if not requests:
            return []
        out: list[Rollout] = []
        with self.gate.lock:
            for group in by_n(requests):
                n = group[0].n
                s = self.model.sample_image_tokens(
                    [r.prompt for r in group],
                    n=n,
                    cfg_weight=self.model_cfg.cfg_weight,
                    temperature=self.model_cfg.image_temperature,
                    implementation=self.model_cfg.image_implementation,
                    seed=group[0].seed,
                    logprob_mode=self.model_cfg.image_logprob_mode,  # what the learner scores
                )  # tokens, logprobs: [len(group) * n, K], grouped by prompt
                images = self.model.decode_images(s.tokens)  # uint8 [len(group) * n, H, W, 3]
                tokens = s.tokens.cpu().numpy().astype(np.int64)
                logprobs = s.logprobs.float().cpu().numpy()
                reveal = None if s.order is None else s.order.cpu().numpy().astype(np.int32)
                for j, r in enumerate(group):
                    for k in range(n):
                        row = j * n + k
                        out.append(
                            Rollout(
                                request=r,
                                sample_index=k,
                                token_ids=tokens[row].copy(),
                                logprobs=logprobs[row].copy(),
                                weight_version=self._version,
                                image=images[row].copy(),
                                image_order=None if reveal is None else reveal[row].copy(),
                            )
                        )
        order = {r.request_id: i for i, r in enumerate(requests)}
        out.sort(key=lambda ro: (order[ro.request.request_id], ro.sample_index))
        return out

    def _copy_in(self, buffer: Wire, manifest: tuple, version: int) -> None:
        load_into(self.params, buffer, manifest)
        self._version = version

    def load_weights(self, ref: WeightsRef) -> int:
        """Load ``ref`` unless it is not newer than the held version; returns the version held."""
        return self.gate.load(ref, self._copy_in)

    def version(self) -> int:
        return self._version

    def ready(self) -> int:
        """Returns the worker index once constructed (lets a caller wait for the model build)."""
        return self.worker_index
