"""`pairuni serve augment`: a local model as an OpenAI-compatible chat-completions endpoint on
Ray Serve, so quadruple augmentation needs no external API.

Routes (FastAPI ingress, one application at ``/``):

* ``POST /v1/chat/completions``: the OpenAI request subset the augmentation client sends:
  ``model``, ``messages`` (system / user / assistant; user content a string or parts
  ``{"type": "text"}`` / ``{"type": "image_url", "image_url": {"url": "data:image/...;base64,..."}}``),
  ``n``, ``temperature`` (0: greedy), ``max_tokens`` / ``max_completion_tokens``, ``seed``.
  ``response_format`` and ``top_p`` are accepted and not enforced (the HF backend cannot
  constrain decoding; the client validates every reply). Errors are OpenAI-shaped:
  ``{"error": {"message", "type", "param", "code"}}`` with 400 / 404.
* ``GET /v1/models``, ``GET /healthz``.

Backends (``BACKENDS``, chosen by ``AugmentServerConfig.backend``): ``hf`` runs the Janus
adapter of ``models/`` (``UnifiedModel.sample_text``), one request at a time per replica,
on CPU or one GPU. The conversation becomes one Janus understanding prompt: the single
image, then the system text and the turns in order (earlier assistant turns quoted as
"Previous answer"). A vLLM backend plugs in as another entry with the same
``generate(image, prompt, n, temperature, max_tokens, seed)`` method: build a
``vllm.LLM`` in ``__init__`` (replica options ``num_gpus=1`` and a runtime_env whose
``py_executable`` is the vLLM environment's Python, as the rollout workers do), pass the
image as ``multi_modal_data`` and map ``SamplingParams(n, temperature, max_tokens, seed)``;
continuous batching then serves concurrent requests together. It is not built here.
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` type.
import asyncio
import base64
import binascii
import io
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from pairing.config import AugmentServerConfig

logger = logging.getLogger(__name__)


class ChatRequestError(ValueError):
    """A request the endpoint cannot serve; ``param`` names the offending field."""

    def __init__(self, param: str | None, message: str, status: int = 400):
        super().__init__(f"{param}: {message}" if param else message)
        self.param, self.status = param, status


@dataclass
class ChatRequest:
    image: np.ndarray
    """uint8 [H, W, 3]."""
    prompt: str
    n: int
    temperature: float
    max_tokens: int
    seed: int | None


def _decode_data_url(url, param: str) -> np.ndarray:
    from PIL import Image

    if not isinstance(url, str) or not url.startswith("data:image/") or ";base64," not in url:
        raise ChatRequestError(
            param, "only data:image/<fmt>;base64,... URLs are accepted (no downloads)"
        )
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (binascii.Error, ValueError, OSError) as e:
        raise ChatRequestError(param, f"not a decodable image ({type(e).__name__})") from e


def parse_chat_request(body, served_name: str, max_new_tokens: int) -> ChatRequest:
    """Validate an OpenAI chat-completions body; raises ``ChatRequestError`` naming the field."""
    if not isinstance(body, dict):
        raise ChatRequestError(None, "the body must be a JSON object")
    if body.get("model") != served_name:
        raise ChatRequestError(
            "model",
            f"model {body.get('model')!r} is not served here (serving {served_name!r})",
            404,
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ChatRequestError("messages", "must be a non-empty list")
    images, lines = [], []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant"):
            raise ChatRequestError(f"messages[{i}].role", "must be system, user or assistant")
        content = msg.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise ChatRequestError(f"messages[{i}].content", "must be a string or a list of parts")
        texts = []
        for j, part in enumerate(parts):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image_url" and msg["role"] == "user":
                url = (part.get("image_url") or {}).get("url")
                images.append(_decode_data_url(url, f"{where}.image_url.url"))
            else:
                raise ChatRequestError(where, "must be a text part or (in a user turn) image_url")
        text = "\n".join(t for t in texts if t.strip())
        if text:
            lines.append(f"Previous answer: {text}" if msg["role"] == "assistant" else text)
    if len(images) != 1:
        raise ChatRequestError("messages", f"needs exactly one image, got {len(images)}")
    if not lines:
        raise ChatRequestError("messages", "holds no text")
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= 16:
        raise ChatRequestError("n", "must be an integer in [1, 16]")
    temperature = body.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise ChatRequestError("temperature", "must be a number in [0, 2]")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or max_new_tokens
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ChatRequestError("max_tokens", "must be an integer >= 1")
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise ChatRequestError("seed", "must be an integer")
    return ChatRequest(
        images[0], "\n\n".join(lines), n, float(temperature), min(max_tokens, max_new_tokens), seed
    )


class HfChatBackend:
    """Janus through ``models/`` (transformers): CPU, or one GPU with ``device=cuda``."""

    def __init__(self, cfg: AugmentServerConfig):
        from models import load_unified_model

        self.model = load_unified_model(cfg.model_path, dtype=cfg.dtype, device=cfg.device)

    def prompt_tokens(self, image: np.ndarray, prompt: str) -> int:
        """Length of the understanding prompt as the model sees it (image tokens included)."""
        return self.model.prompt_length(image, prompt)

    def generate(
        self, image, prompt, n, temperature, max_tokens, seed
    ) -> list[tuple[str, int, str]]:
        """(text, completion tokens, finish_reason) per sample."""
        s = self.model.sample_text(
            image[None],
            [prompt],
            n=n,
            temperature=temperature if temperature > 0 else 1.0,
            max_new_tokens=max_tokens,
            seed=seed,
            greedy=temperature == 0,
        )
        eos = self.model.tokenizer.eos_token_id
        return [
            (text, len(ids), "stop" if ids and ids[-1] == eos else "length")
            for text, ids in zip(s.texts, s.token_ids)
        ]


BACKENDS = {"hf": HfChatBackend}
"""Backend name -> class with ``generate`` and ``prompt_tokens`` (see the module docstring)."""


def _openai_error(e: ChatRequestError) -> JSONResponse:
    kind = "not_found_error" if e.status == 404 else "invalid_request_error"
    body = {"error": {"message": str(e), "type": kind, "param": e.param, "code": None}}
    return JSONResponse(body, status_code=e.status)


augment_api = FastAPI(title="pairuni augmentation endpoint (OpenAI chat completions)")


@serve.deployment(name="augment")
@serve.ingress(augment_api)
class AugmentDeployment:
    """OpenAI-compatible chat completions over a local model (see the module docstring)."""

    def __init__(self, cfg: AugmentServerConfig):
        if cfg.backend not in BACKENDS:
            raise ValueError(f"unknown augment backend {cfg.backend!r}; valid: {sorted(BACKENDS)}")
        self.cfg = cfg
        self.name = cfg.served_name or Path(cfg.model_path).name
        self.backend = BACKENDS[cfg.backend](cfg)
        self._lock = threading.Lock()
        self.requests = 0

    def _generate(self, req: ChatRequest) -> tuple[list, int]:  # in a worker thread
        with self._lock:
            outs = self.backend.generate(
                req.image, req.prompt, req.n, req.temperature, req.max_tokens, req.seed
            )
            return outs, self.backend.prompt_tokens(req.image, req.prompt)

    @augment_api.post("/v1/chat/completions")
    async def chat(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _openai_error(ChatRequestError(None, "the body is not valid JSON"))
        try:
            req = parse_chat_request(body, self.name, self.cfg.max_new_tokens)
        except ChatRequestError as e:
            return _openai_error(e)
        self.requests += 1
        try:
            outs, prompt_tokens = await asyncio.to_thread(self._generate, req)
        except Exception as e:  # a model failure: 500, the client retries
            logger.exception("augment: generation failed")
            body = {"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}}
            return JSONResponse(body, status_code=500)
        completion = sum(o[1] for o in outs)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.name,
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                    for i, (text, _, finish) in enumerate(outs)
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion,
                },
            }
        )

    @augment_api.get("/v1/models")
    async def models(self) -> dict:
        return {
            "object": "list",
            "data": [{"id": self.name, "object": "model", "owned_by": "pairuni"}],
        }

    @augment_api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "model": self.name, "requests": self.requests}


def build_augment_app(cfg: AugmentServerConfig):
    """The bound Serve application (replicas and resources from ``cfg``)."""
    cfg.validate()
    return AugmentDeployment.options(
        num_replicas=cfg.num_replicas,
        max_ongoing_requests=cfg.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
    ).bind(cfg)


def run_augment_server(cfg: AugmentServerConfig):
    """Start Serve on ``cfg.host:cfg.port`` and run the endpoint at ``/``; returns its handle.
    Ray must be initialised."""
    cfg.validate()
    from models import check_checkpoint_dir

    check_checkpoint_dir(cfg.model_path, key="--model")
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    return serve.run(build_augment_app(cfg), name="augment", route_prefix="/")
