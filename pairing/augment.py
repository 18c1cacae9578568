"""`pairuni augment`: complete single-task items to quadruples (I, C, Q, A) with any
OpenAI-compatible chat-completions endpoint that takes images (PairUni section 2.1.1,
Appendix E; the paper called GPT-o3, this calls whatever ``pairing.augment.base_url`` is).

Understanding items get a ~30-word detail prompt C (template ``caption_v2``, Fig. 11, the
paper's "understanding" prompt); generation items get a question with four options and its
answer (``qa_v2``, Fig. 10, the "generation" prompt, with one hint per image class). As in
the figures, either template asks for the whole quadruple in one JSON reply; only the half
the item lacks completes its pair, the other is kept in quadruples.jsonl. Each reply is
parsed and validated strictly (``pairing/quadruples.py``); an invalid reply is re-asked once
with the validation error, then recorded as rejected with its reason, which names the item.

Transport: images as base64 data URLs, the API key from the environment variable named in
``pairing.augment.api_key_env`` (never logged or written), retries with exponential backoff
and jitter on timeouts, connection errors, HTTP 429 and 5xx (``Retry-After`` honoured),
``max_concurrency`` items in flight, token usage summed from the replies' ``usage``.
Final outcomes go to an append-only answer cache keyed by (item id, template version,
model): a re-run requests nothing already answered, and a killed run resumes.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from models.config import ConfigError
from pairing.config import AugmentConfig, PairingConfig
from pairing.quadruples import (
    TASK_OF_SIDE,
    AnswerCache,
    AugItem,
    ReplyError,
    aug_items,
    cache_key,
    quadruple_line,
    rejection_line,
    select_variant,
    validate_reply,
)
from pairing.templates import Template, load_template

RETRY_STATUS = (429, 500, 502, 503, 504)
FATAL_STATUS = {
    401: "the API key was refused",
    403: "the API key lacks access",
    404: "no such route or model",
}


class AugmentError(RuntimeError):
    """The endpoint cannot serve this run at all (bad URL, key or model): stop, do not reject."""


class TransientError(RuntimeError):
    """Timeouts, connection errors, 429 and 5xx that outlived the retries."""


class RequestRejected(RuntimeError):
    """A 4xx (other than 401/403/404/429) or a reply outside the protocol."""


@dataclass
class Usage:
    """Token and request accounting over the run (from each reply's ``usage``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    """HTTP requests sent, retries included."""
    retries: int = 0

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "requests": self.requests,
            "retries": self.retries,
        }


def image_data_url(image: bytes, max_side: int) -> str:
    """``data:image/<fmt>;base64,...``: the bytes as they are when PNG/JPEG/WEBP/GIF and no
    side exceeds ``max_side``, else downscaled and re-encoded as JPEG (quality 90)."""
    from PIL import Image

    with Image.open(io.BytesIO(image)) as im:
        fmt = (im.format or "").upper()
        if fmt in ("PNG", "JPEG", "WEBP", "GIF") and max(im.size) <= max_side:
            data, mime = image, f"image/{fmt.lower()}"
        else:
            im = im.convert("RGB")
            im.thumbnail((max_side, max_side))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=90)
            data, mime = buf.getvalue(), "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _retry_after(r: httpx.Response) -> float | None:
    try:
        return max(0.0, float(r.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


class ChatClient:
    """POST <base_url>/chat/completions with retries; sums token usage."""

    def __init__(self, cfg: AugmentConfig, seed: int = 0):
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.AsyncClient(timeout=cfg.timeout_s, headers=headers)
        self._rng = random.Random(seed)
        self.usage = Usage()

    def __repr__(self) -> str:  # never the key
        return f"ChatClient(url={self.url!r}, model={self.cfg.model!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    def _body(self, messages: list) -> dict:
        body = {
            "model": self.cfg.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        if self.cfg.response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    async def complete(self, messages: list) -> tuple[str | None, str | None, dict]:
        """(content, finish_reason, usage) of one chat completion, retried on transient errors."""
        cfg, body = self.cfg, self._body(messages)
        for attempt in range(cfg.max_retries + 1):
            wait = None
            self.usage.requests += 1
            try:
                r = await self._http.post(self.url, json=body)
            except httpx.TimeoutException:
                err = f"timed out after {cfg.timeout_s}s"
            except httpx.TransportError as e:
                err = f"{type(e).__name__}: {e}"
            else:
                if r.status_code in FATAL_STATUS:
                    raise AugmentError(
                        f"{self.url} answered HTTP {r.status_code} ({FATAL_STATUS[r.status_code]}): "
                        f"{' '.join(r.text.split())[:300]}. Fix: check pairing.augment.base_url, "
                        f"pairing.augment.model={cfg.model!r} and the key in "
                        f"${cfg.api_key_env or '(no key variable)'}"
                    )
                if r.status_code in RETRY_STATUS:
                    err, wait = f"HTTP {r.status_code}: {r.text[:200]}", _retry_after(r)
                elif r.status_code >= 400:
                    raise RequestRejected(f"HTTP {r.status_code}: {r.text[:300]}")
                else:
                    return self._read(r)
            if attempt == cfg.max_retries:
                raise TransientError(f"{err} (gave up after {attempt + 1} attempts to {self.url})")
            self.usage.retries += 1
            if wait is None:
                wait = min(cfg.max_backoff_s, cfg.backoff_s * 2**attempt)
                wait *= 1 + 0.25 * self._rng.random()  # jitter: replicas do not retry in step
            await asyncio.sleep(min(wait, cfg.max_backoff_s))
        raise AssertionError("unreachable")

    def _read(self, r: httpx.Response) -> tuple[str | None, str | None, dict]:
        try:
            data = r.json()
            choice = data["choices"][0]
            content = choice["message"].get("content")
            finish = choice.get("finish_reason")
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise RequestRejected(
                f"reply outside the chat-completions protocol ({type(e).__name__}: {e}): "
                f"{r.text[:200]}"
            ) from e
        usage = data.get("usage") or {}
        u = {
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
        }
        self.usage.prompt_tokens += u["prompt_tokens"]
        self.usage.completion_tokens += u["completion_tokens"]
        return content if isinstance(content, str) else None, finish, u


def first_messages(tpl: Template, item: AugItem, variant: str, max_side: int) -> list:
    """System turn + user turn (the image as a data URL, then the template's text)."""
    return [
        {"role": "system", "content": tpl.system},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_data_url(item.image, max_side)}},
                {"type": "text", "text": tpl.user_text(variant, item.text)},
            ],
        },
    ]


def _record_base(item, tpl, variant: str, cfg) -> dict:
    """The fields every cache/report record of an item carries, whatever its outcome."""
    return {
        "key": cache_key(item.item_id, tpl.id, cfg.model),
        "item_id": item.item_id,
        "side": item.side,
        "image_ref": item.image_ref,
        "template": tpl.id,
        "model": cfg.model,
        "variant": variant,
    }


async def augment_item(
    client: ChatClient, tpl: Template, item: AugItem, variant: str, cfg: AugmentConfig
) -> dict:
    """Ask, validate, repair up to ``repair_rounds`` times. Returns the outcome record
    (status ok with ``result``, or rejected with stage validate and the last error);
    transport problems raise (``TransientError``, ``RequestRejected``, ``AugmentError``)."""
    messages = first_messages(tpl, item, variant, cfg.max_image_side)
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    rec = {
        **_record_base(item, tpl, variant, cfg),
        "usage": usage,
    }
    for round_ in range(cfg.repair_rounds + 1):
        content, finish, u = await client.complete(messages)
        for k in usage:
            usage[k] += u[k]
        try:
            result = validate_reply(
                tpl.task, content, cfg, reply=tpl.reply, item=f"{item.item_id} ({item.image_ref})"
            )
        except ReplyError as e:
            cut = " (the reply was cut off at max_tokens)" if finish == "length" else ""
            error, problem = str(e) + cut, e.problem + cut
        else:
            return {**rec, "status": "ok", "result": result, "attempts": round_ + 1}
        messages = [
            *messages,
            {"role": "assistant", "content": content or ""},
            {"role": "user", "content": tpl.repair_text(problem)},
        ]
    return {
        **rec,
        "status": "rejected",
        "stage": "validate",
        "reason": f"{error} (after {cfg.repair_rounds} repair round(s))",
        "raw": content,
        "attempts": cfg.repair_rounds + 1,
    }


def _templates(cfg: AugmentConfig) -> dict[str, Template]:
    out = {}
    for task, key, name in (
        ("caption", "caption_template", cfg.caption_template),
        ("qa", "qa_template", cfg.qa_template),
    ):
        t = load_template(name)
        if t.task != task:
            raise ConfigError(
                f"pairing.augment.{key}", name, f"is a {t.task!r} template, not {task!r}",
                f"use a {task} template, e.g. {task}_v1",
            )  # fmt: skip
        out[task] = t
    return out


async def _run_items(
    todo: list[tuple[AugItem, Template, str]], cfg: AugmentConfig, cache: AnswerCache, bar
) -> tuple[list[dict], Usage]:
    """Work the items with ``max_concurrency`` workers; returns the outcome records."""
    client = ChatClient(cfg)
    queue: asyncio.Queue = asyncio.Queue()
    for job in todo:
        queue.put_nowait(job)
    outcomes: list[dict] = []

    async def worker() -> None:
        while not queue.empty():
            item, tpl, variant = queue.get_nowait()
            try:
                rec = await augment_item(client, tpl, item, variant, cfg)
                cache.put(rec)  # final: completed, or rejected by validation
            except (TransientError, RequestRejected) as e:
                rec = {
                    **_record_base(item, tpl, variant, cfg),
                    "status": "rejected",
                    "stage": "transport" if isinstance(e, TransientError) else "http",
                    "reason": str(e),
                    "raw": None,
                }
            except (OSError, ValueError) as e:  # the image cannot be encoded (PIL)
                rec = {
                    **_record_base(item, tpl, variant, cfg),
                    "key": "",  # not cached (no cache.put): the next run asks again
                    "status": "rejected",
                    "stage": "image",
                    "reason": f"{type(e).__name__}: {e}",
                    "raw": None,
                }
            outcomes.append(rec)
            bar.update(1, rec["status"] != "ok")

    workers = [asyncio.create_task(worker()) for _ in range(cfg.max_concurrency)]
    try:
        await asyncio.gather(*workers)
    except BaseException:  # AugmentError (bad URL/key/model) or Ctrl-C: stop every worker
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    finally:
        await client.aclose()
    return outcomes, client.usage


class _Progress:
    """tqdm bar (items/s from tqdm) with the rejection rate and cache hits as postfix."""

    def __init__(self, total: int, cached: int, cached_rejected: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, initial=cached, unit="item", desc="augment", disable=not enabled
        )
        self.done, self.rejected, self.cached = cached, cached_rejected, cached
        self._post()

    def _post(self) -> None:
        rate = self.rejected / self.done if self.done else 0.0
        self.bar.set_postfix(rejected=f"{rate:.1%}", cached=self.cached, refresh=False)

    def update(self, n: int, rejected: bool) -> None:
        self.done += n
        self.rejected += int(rejected)
        self._post()
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def run_augment(cfg: PairingConfig, *, strict: bool = False) -> dict:
    """Read U and G as ``pairuni pair`` does, complete the items of ``augment.sides`` and
    write quadruples.jsonl, rejected.jsonl and report.json to ``augment.output_dir``."""
    from pairing.datasets import read_generation, read_understanding

    acfg = cfg.augment
    acfg.validate()
    if not acfg.model:
        raise ConfigError(
            "pairing.augment.model", acfg.model, "must name the model the endpoint serves",
            "set pairing.augment.model=<a name from GET <base_url>/models>",
        )  # fmt: skip
    t0 = time.perf_counter()
    templates = _templates(acfg)
    items: list[AugItem] = []
    read_errors = {}
    readers = {"und": (read_understanding, cfg.und), "gen": (read_generation, cfg.gen)}
    for side in acfg.sides:
        read, src = readers[side]
        res = read(src, strict=strict)
        read_errors[side] = len(res.issues)
        items += aug_items(side, res.items[: acfg.limit or None])

    cache = AnswerCache(acfg.cache_dir or None)
    by_key: dict[str, dict] = {}
    todo, seen = [], set()
    for it in items:
        tpl = templates[TASK_OF_SIDE[it.side]]
        key = cache_key(it.item_id, tpl.id, acfg.model)
        if key in seen:
            continue  # the same instance twice in the input: asked once
        seen.add(key)
        hit = cache.get(key)
        if hit is not None:
            by_key[key] = hit
        else:
            todo.append((it, tpl, select_variant(it, acfg)))
    cached = len(by_key)
    bar = _Progress(
        len(seen), cached, sum(r["status"] != "ok" for r in by_key.values()), acfg.progress
    )
    try:
        outcomes, usage = asyncio.run(_run_items(todo, acfg, cache, bar))
    finally:
        bar.close()
        cache.close()
    for rec in outcomes:
        by_key[rec["key"] or rec["item_id"]] = rec
    t_run = time.perf_counter() - t0

    out = Path(acfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ordered = [by_key[k] for k in _input_order(items, templates, acfg.model) if k in by_key]
    done = [r for r in ordered if r["status"] == "ok"]
    rejected = [r for r in ordered if r["status"] != "ok"]
    _write_jsonl(out / "quadruples.jsonl", [quadruple_line(r) for r in done])
    _write_jsonl(out / "rejected.jsonl", [rejection_line(r) for r in rejected])
    stages: dict[str, int] = {}
    for r in rejected:
        stages[r["stage"]] = stages.get(r["stage"], 0) + 1
    variants: dict[str, int] = {}
    for r in ordered:
        variants[r["variant"]] = variants.get(r["variant"], 0) + 1
    requested = len(todo)
    report = {
        "model": acfg.model,
        "base_url": acfg.base_url,
        "templates": {k: t.id for k, t in templates.items()},
        "items": len(ordered),
        "read_errors": read_errors,
        "from_cache": cached,
        "requested": requested,
        "completed": len(done),
        "rejected": len(rejected),
        "rejected_by_stage": stages,
        "rejection_rate": len(rejected) / len(ordered) if ordered else 0.0,
        "by_variant": variants,
        "usage": usage.as_dict(),
        "usage_with_cached": _usage_total(ordered),
        "wall_s": t_run,
        "items_per_s": requested / t_run if t_run > 0 else 0.0,
        "quadruples": str(out / "quadruples.jsonl"),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(
        f"augment: {len(done)} completed, {len(rejected)} rejected {stages or ''} of "
        f"{len(ordered)} items ({cached} from cache, {requested} requested, "
        f"{usage.prompt_tokens + usage.completion_tokens} tokens) -> {out / 'quadruples.jsonl'}\n"
        f"  use it: pairuni pair ... pairing.quadruples=[{out / 'quadruples.jsonl'}]"
    )
    return report


def _input_order(items: list[AugItem], templates: dict, model: str) -> list[str]:
    keys, seen = [], set()
    for it in items:
        k = cache_key(it.item_id, templates[TASK_OF_SIDE[it.side]].id, model)
        for key in (k, it.item_id):  # image failures are keyed by item id (not cached)
            if key not in seen:
                seen.add(key)
                keys.append(key)
    return keys


def _usage_total(records: list[dict]) -> dict:
    p = sum((r.get("usage") or {}).get("prompt_tokens", 0) for r in records)
    c = sum((r.get("usage") or {}).get("completion_tokens", 0) for r in records)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
