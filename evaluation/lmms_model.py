"""The ``pairuni`` model for lmms-eval: any pairuni policy under lmms-eval's tasks.

    lmms_eval --model pairuni --model_args path=DIR[,arch=janus,dtype=float32,device=cpu,
              batch_size=8,max_new_tokens=0] --tasks pope,mme --output_path OUT

Registered through lmms-eval's documented plugin mechanism, the ``lmms_eval.models``
entry-point group (``pyproject.toml``; ``manifest`` below is its payload), so installing
this project beside lmms-eval is all it takes. ``DIR`` is a model directory: one
``pairuni export`` wrote from a training checkpoint, ``final_model/`` of a run, or a
converted published checkpoint. The policy is built by ``models.registry.build_policy``
and used only through ``models.interface.UnifiedPolicy``, so any registered family works.

What each lmms-eval request becomes:

* ``generate_until``: requests with the same generation settings go together,
  ``batch_size`` at a time, to ``sample_text`` (greedy when the task's temperature is 0 or
  it asks for no sampling; else sampled at its temperature, seeded by ``seed``); the
  answer is cut at the first of the task's ``until`` strings. ``max_new_tokens`` caps the
  task's own limit (0: the task's).
* ``loglikelihood``: the continuation's summed teacher-forced log-prob
  (``text_logprobs``) and whether greedy decoding would produce exactly it.
* A request with several images sees them side by side in one image (the Janus family
  reads one image per question); one without an image sees a white image.
* Multi-round generation is not supported (an error says so).
"""

from __future__ import annotations

import numpy as np
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image

MODEL_ID = "pairuni"


def manifest():
    """The entry point's payload: lmms-eval's ``ModelManifest`` for ``--model pairuni``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.PairUniLMM")


def one_image(visuals, size: int) -> np.ndarray:
    """A request's images as the one uint8 RGB ``[H, W, 3]`` image the policy reads: several
    side by side at the first one's height; none: white ``size x size``."""
    ims = [v if isinstance(v, Image.Image) else Image.fromarray(np.asarray(v)) for v in visuals]
    ims = [im.convert("RGB") for im in ims]
    if not ims:
        return np.full((size, size, 3), 255, np.uint8)
    if len(ims) == 1:
        return np.asarray(ims[0])
    h = ims[0].height
    ims = [im.resize((max(1, round(im.width * h / im.height)), h)) for im in ims]
    canvas = Image.new("RGB", (sum(im.width for im in ims), h), "white")
    x = 0
    for im in ims:
        canvas.paste(im, (x, 0))
        x += im.width
    return np.asarray(canvas)


def cut_at_stops(text: str, until) -> str:
    """``text`` up to the first of the stop strings ``until`` (none found: all of it)."""
    cut = len(text)
    for stop in until or ():
        if stop and (i := text.find(stop)) >= 0:
            cut = min(cut, i)
    return text[:cut]


class PairUniLMM(lmms):
    """lmms-eval's simple-model API over a ``UnifiedPolicy`` (module docstring)."""

    is_simple = True

    def __init__(
        self,
        path: str = "",
        arch: str = "janus",
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int | str = 8,
        max_new_tokens: int | str = 0,
        seed: int | str = 0,
        policy=None,
        **kwargs,
    ) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(
                f"--model_args: unknown {sorted(kwargs)}; the pairuni model takes path, "
                "arch, dtype, device, batch_size, max_new_tokens, seed"
            )
        if policy is None:
            policy = load_policy(path, arch, dtype, device)
        self.policy = policy
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.seed = int(seed)
        if self.batch_size_per_gpu < 1:
            raise ValueError(f"--model_args batch_size={batch_size}: must be >= 1")

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def _doc(self, task, split, doc_id):
        return self.task_dict[task][split][doc_id]

    def _image(self, doc_to_visual, task, split, doc_id) -> np.ndarray:
        visuals = doc_to_visual(self._doc(task, split, doc_id)) if doc_to_visual else []
        if visuals is None:
            visuals = []
        elif not isinstance(visuals, (list, tuple)):
            visuals = [visuals]
        return one_image(visuals, self.policy.image_size)

    # ---- generate_until -----------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        from tqdm import tqdm

        args = [r.args for r in requests]
        out: list[str | None] = [None] * len(args)
        groups: dict[str, list[int]] = {}
        for i, a in enumerate(args):
            groups.setdefault(repr(sorted(a[1].items())), []).append(i)
        bar = tqdm(total=len(args), desc="pairuni answering", disable=self.rank != 0)
        for idx in groups.values():
            kw = dict(args[idx[0]][1])
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s : s + self.batch_size]
                for i, text in zip(chunk, self._generate([args[i] for i in chunk], kw)):
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", (args[i][0], args[i][1]), text)
                bar.update(len(chunk))
        bar.close()
        return out

    def _generate(self, chunk: list[tuple], kw: dict) -> list[str]:
        import torch

        contexts = [a[0].replace("<image>", "").strip() for a in chunk]
        images = [self._image(a[2], a[4], a[5], a[3]) for a in chunk]
        until = kw.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        limit = int(kw.get("max_new_tokens") or 128)
        if self.max_new_tokens:
            limit = min(limit, self.max_new_tokens)
        temperature = float(kw.get("temperature") or 0.0)
        greedy = temperature <= 0 or not kw.get("do_sample", temperature > 0)
        with torch.no_grad():
            samples = self.policy.sample_text(
                images,
                contexts,
                n=1,
                max_new_tokens=limit,
                greedy=greedy,
                temperature=1.0 if greedy else temperature,
                seed=None if greedy else self.seed,
            )
        return [cut_at_stops(t, until).strip() for t in samples.texts]

    # ---- loglikelihood ------------------------------------------------------------------
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        import torch

        out = []
        tok = self.policy.tokenizer
        for context, target, doc_to_visual, doc_id, task, split in [r.args for r in requests]:
            cont = target if isinstance(target, str) else target(self._doc(task, split, doc_id))
            image = self._image(doc_to_visual, task, split, doc_id)
            question = context.replace("<image>", "").strip()
            ids = tok(str(cont), add_special_tokens=False)["input_ids"]
            if not ids:
                out.append((0.0, True))
                continue
            with torch.no_grad():
                lp = self.policy.text_logprobs([image], [question], [ids])
                greedy = self.policy.sample_text(
                    [image], [question], n=1, max_new_tokens=len(ids), greedy=True
                )
            total = float((lp.values * lp.mask).sum())
            out.append((total, list(greedy.token_ids[0][: len(ids)]) == list(ids)))
        return out

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(
            "the pairuni model answers single-turn tasks only (generate_until, loglikelihood)"
        )


def load_policy(path: str, arch: str = "janus", dtype: str = "float32", device: str = "cpu"):
    """The policy of model directory ``path`` (``models.registry.build_policy``), with an
    error naming the argument and the fix when ``path`` is not one."""
    import dataclasses

    from models.config import ModelConfig
    from models.registry import build_policy, family

    if not path:
        raise ValueError("--model_args path=DIR is required: a model directory to evaluate")
    try:
        family(arch).check_checkpoint(path, "--model_args path")
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{e}\n(a training checkpoint is exported first: pairuni export --checkpoint "
            f"RUN_DIR --out DIR; `pairuni eval` does that itself)"
        ) from e
    cfg = dataclasses.replace(ModelConfig(), path=path, arch=arch, dtype=dtype, device=device)
    return build_policy(cfg)
