"""vLLM text backend: Janus's language model served by vLLM, image features from ``models/``.

vLLM has no Janus model. The worker bridges it with ``prompt_embeds``: it computes each
understanding prompt's input embeddings with the ``models/`` adapter (token embeddings,
SigLIP tower + aligner scattered into the image placeholders; exactly the learner's
``models.text_tokens.prompt_embeddings``), and a vLLM engine serving Janus's language model
as a plain ``LlamaForCausalLM`` samples the answer from them.

Why prompt embeddings and not an out-of-tree Janus model registered with vLLM (measured
with ``bench/text_rollout.py --threads 1``, tiny model, 32 prompts x n=4, 64 tokens):
the worker-side embedding (vision tower + aligner + token embeddings) takes 1.9-2.1% of a
sampling call, so moving the vision tower into the engine could save at most that;
vLLM's log-probs equal ``models/`` teacher-forced ones to ~5e-7 in fp32, because the image
features come from the very code the learner scores with; and nothing is implemented
twice (an out-of-tree model needs vLLM's multimodal processor, dummy-input builder and a
SigLIP tower of its own, which would then have to agree with transformers' to 1e-3). The
costs: the prompt's embeddings ([L, D] floats per request) are built in the worker, and
the worker keeps the embedding table and the vision tower beside the engine's copy.

Policy and log-probs: the engine runs with ``logprobs_mode="processed_logprobs"``, so the
log-prob vLLM returns for a sampled token is ``log softmax(logits / T)`` (after top-p
masking) — the distribution it sampled from, as ``models.text_tokens.logprobs`` scores it
(equal within 1e-3 in fp32 at top_p = 1; tests/vllm).

Weights: vLLM's engine starts with dummy weights and receives every version, the first
included, through its weight-update path (``collective_rpc("start_weight_update" |
"update_weights" | "finish_weight_update")``) and a weight-transfer engine registered here
(``FlatBufferWeightEngine``) that hands the object store's flat buffer, viewed zero-copy
and renamed from the HF Janus layout, to the model's own ``load_weights`` (which stacks
q/k/v and gate/up). Only language-model weights travel to vLLM; the worker's own copy
keeps the embedding table, the vision tower and the aligner. The engine core runs in the
worker's process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): the Ray actor is already the
process boundary, the buffer is not serialised again, and the registered engine lives in
the process that loads weights.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from actors.config import RolloutConfig
from actors.types import Rollout, RolloutRequest
from actors.weights import UNSYNCED, ManifestError, Wire, load_into, unflatten_views
from models.compat import processor_without_torchvision
from models.config import ModelConfig

log = logging.getLogger(__name__)

SUPPORTED_VLLM = ("0.32", "0.34")
"""vLLM versions this backend is written against: >= the first, < the second."""

WEIGHT_ENGINE = "pairuni_flat_buffer"
"""Name of ``FlatBufferWeightEngine`` in vLLM's ``WeightTransferEngineFactory``."""

MAX_BATCHED_TOKENS = 8192
"""Token budget of one engine step (at least the model's context length)."""


def check_vllm_version(vllm_module=None) -> str:
    """The installed vLLM version; raises ImportError naming the range and the fix if wrong."""
    fix = (
        "build the vLLM environment with `make .venv-vllm` and set "
        "rollout.text_python=.venv-vllm/bin/python (or use rollout.text_backend=hf)"
    )
    lo, hi = SUPPORTED_VLLM
    if vllm_module is None:
        try:
            import vllm as vllm_module
        except ImportError as e:
            raise ImportError(
                f"rollout.text_backend='vllm' needs vllm>={lo},<{hi}, which is not importable "
                f"from {sys.executable} ({e}); {fix}"
            ) from e
    from packaging.version import Version

    if getattr(vllm_module, "__version__", None) is None:  # e.g. a namespace package
        raise ImportError(
            f"rollout.text_backend='vllm' needs vllm>={lo},<{hi}; the 'vllm' importable from "
            f"{sys.executable} is not the vLLM package ({vllm_module!r}); {fix}"
        )
    found = Version(vllm_module.__version__)
    if not Version(lo) <= Version(found.base_version) < Version(hi):
        raise ImportError(
            f"rollout.text_backend='vllm' supports vllm>={lo},<{hi}; found "
            f"{vllm_module.__version__} at {os.path.dirname(vllm_module.__file__)} "
            f"(interpreter {sys.executable}); {fix}"
        )
    return vllm_module.__version__


def vllm_seed(seed: int) -> int:
    """A request's seed for vLLM, which seeds its k-th sample with ``seed + k``.

    Requests with adjacent seeds would share draws (request s, sample 1 == request s+1,
    sample 0); hashing the seed first spreads them over [0, 2^31 - 2^16).
    """
    state = np.random.SeedSequence([int(seed), 0x7A11]).generate_state(1)[0]
    return int(state) % (2**31 - 2**16)


def prompt_embeds(policy, requests: list[RolloutRequest]) -> list[torch.Tensor]:
    """One ``[L_i, D]`` embedding per request: its understanding prompt without padding
    (``policy.prompt_embeds``, the embeddings the learner teacher-forces after)."""
    for r in requests:
        if r.image is None:
            raise ValueError(
                f"request {r.request_id} (pair {r.pair_id}): an understanding request needs "
                "an image (uint8 [H, W, 3])"
            )
    return policy.prompt_embeds([r.image for r in requests], [r.prompt for r in requests])


# ---- the weight-transfer engine vLLM's worker calls -------------------------------------
def _weight_engine_cls():
    """``FlatBufferWeightEngine``, defined on first use (vLLM's base classes import vLLM)."""
    global _ENGINE_CLS
    if _ENGINE_CLS is not None:
        return _ENGINE_CLS
    from vllm.distributed.weight_transfer.base import (
        WeightTransferEngine,
        WeightTransferInitInfo,
        WeightTransferUpdateInfo,
    )
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    @dataclass
    class FlatInitInfo(WeightTransferInitInfo):
        """No rendezvous: the buffer is already in this process (the object store's view)."""

    @dataclass
    class FlatUpdateInfo(WeightTransferUpdateInfo):
        named: dict
        """Llama-layout name -> tensor (views of the flat buffer; read only)."""

    class FlatBufferWeightEngine(WeightTransferEngine[FlatInitInfo, FlatUpdateInfo]):
        """Loads named tensors given in-process through the model's own ``load_weights``."""

        init_info_cls, update_info_cls = FlatInitInfo, FlatUpdateInfo

        def init_transfer_engine(self, init_info) -> None:
            pass

        def start_weight_update(self) -> None:
            # Checkpoint-format tensors: vLLM's layerwise reload restores each layer's
            # loaders, then re-runs its post-load processing (CPU GEMM weight packing).
            from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

            self.expected = {n for n, _ in self.model.named_parameters()}
            initialize_layerwise_reload(self.model)

        def finish_weight_update(self) -> None:
            from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

            finalize_layerwise_reload(self.model, self.model_config)

        def receive_weights(self, update_info) -> None:
            loaded = self.model.load_weights(iter(update_info.named.items()))
            missing = sorted(self.expected - set(loaded or ()))
            if missing:
                raise ManifestError(
                    f"vLLM model parameters not in the published weights: {missing[:5]} "
                    f"({len(missing)} in all); the publisher must send the whole language model"
                )

        def shutdown(self) -> None:
            pass

    if WEIGHT_ENGINE not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(WEIGHT_ENGINE, FlatBufferWeightEngine)
    _ENGINE_CLS = FlatBufferWeightEngine
    return _ENGINE_CLS


_ENGINE_CLS = None


class VLLMTextBackend:
    """Understanding rollouts sampled by a vLLM engine from worker-computed prompt embeddings."""

    def __init__(self, model_cfg: ModelConfig, cfg: RolloutConfig):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine core in this process
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.text_vllm_kv_cache_gib))
        self.vllm_version = check_vllm_version()
        processor_without_torchvision()
        from vllm import LLM
        from vllm.config import WeightTransferConfig

        from models.interface import DecoderBackbone
        from models.registry import build_policy

        self.cfg, self.model_cfg = cfg, model_cfg
        self.version = UNSYNCED
        policy = build_policy(model_cfg)
        if not isinstance(policy, DecoderBackbone):
            raise ValueError(
                f"rollout.text_backend='vllm' serves a plain decoder; model.arch="
                f"{model_cfg.arch!r} does not expose one (use rollout.text_backend=hf)"
            )
        self.policy, self.tokenizer = policy, policy.tokenizer
        self.eos = self.tokenizer.eos_token_id
        _weight_engine_cls()
        self._dir = tempfile.TemporaryDirectory(prefix="pairuni_vllm_")
        cfg_json = policy.backbone_config(model_cfg.dtype)
        max_len = cfg_json["max_position_embeddings"]
        Path(self._dir.name, "config.json").write_text(json.dumps(cfg_json, indent=1))
        self.llm = LLM(
            model=self._dir.name,
            skip_tokenizer_init=True,
            load_format="dummy",
            dtype=model_cfg.dtype,
            enable_prompt_embeds=True,
            logprobs_mode="processed_logprobs",
            weight_transfer_config=WeightTransferConfig(backend=WEIGHT_ENGINE),
            enforce_eager=cfg.text_vllm_eager,
            seed=model_cfg.seed,
            # Whole prompts per step: vLLM 0.32 on CPU crashes on a seeded request whose
            # prompt is split across steps (``CPU Generator does not use offset``).
            enable_chunked_prefill=False,
            max_num_batched_tokens=max(MAX_BATCHED_TOKENS, max_len),
        )
        # The engine's dummy weights are replaced by the policy's own before anything samples.
        trainable, rename = policy.trainable_parameters(), policy.backbone_name
        self._push({rename(n): p.detach() for n, p in trainable.items() if rename(n)})
        policy.release_backbone()  # vLLM holds the decoder now
        self.frontend = {n: p for n, p in trainable.items() if rename(n) is None}
        embed_name, embed = policy.input_embeddings()
        self.frontend[embed_name] = embed

    def _push(self, named: dict[str, torch.Tensor]) -> None:
        """Load Llama-named tensors into the engine through vLLM's weight-update RPCs."""
        self.llm.collective_rpc("start_weight_update")
        self.llm.collective_rpc("update_weights", args=({"named": named},))
        self.llm.collective_rpc("finish_weight_update")
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights

    def sampling_params(self, r: RolloutRequest):
        from vllm import SamplingParams

        return SamplingParams(
            n=r.n,
            temperature=self.model_cfg.text_temperature,
            top_p=self.cfg.text_top_p,
            max_tokens=self.model_cfg.max_new_tokens,
            seed=vllm_seed(r.seed),
            logprobs=0,  # the sampled token's log-prob only
            stop_token_ids=[self.eos],
            detokenize=False,
        )

    def generate(self, requests: list[RolloutRequest]) -> list[Rollout]:
        embeds = prompt_embeds(self.policy, requests)
        outs = self.llm.generate(
            [{"prompt_embeds": e} for e in embeds],
            [self.sampling_params(r) for r in requests],
            use_tqdm=False,
        )
        rollouts = []
        for r, out in zip(requests, outs):
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                lp = [step[t].logprob for step, t in zip(c.logprobs, ids)]
                rollouts.append(
                    Rollout(
                        request=r,
                        sample_index=c.index,
                        token_ids=np.asarray(ids, dtype=np.int64),
                        logprobs=np.asarray(lp, dtype=np.float32),
                        weight_version=self.version,
                        text=self.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                    )
                )
        return rollouts

    def load_weights(self, buffer: Wire, manifest: tuple, version: int) -> None:
        """The worker's embedding/vision/aligner copy from ``buffer``, the LM into vLLM."""
        front = tuple(e for e in manifest if e[0] in self.frontend)
        load_into(self.frontend, buffer, front)
        views = unflatten_views(buffer, manifest)
        rename = self.policy.backbone_name
        named = {rename(n): t for n, t in views.items() if rename(n)}
        if not named:
            raise ManifestError(
                "the published weights hold no language-model tensors (none of "
                f"{len(views)} names, e.g. {list(views)[:3]}, is part of the decoder); the "
                "vLLM backend needs them"
            )
        self._push(named)
        self.llm.llm_engine.set_weight_version(str(version))
        self.version = version

    def engine_weight_version(self) -> str:
        """The weight version vLLM's engine records (set on every load)."""
        return self.llm.llm_engine.get_weight_version()
