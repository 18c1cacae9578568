"""RewardClient: how the driver calls a reward endpoint, by Serve handle or over HTTP.

``client.score(items) -> list[float]`` aligned with ``items`` (the request items of
``rewards/types.py``; images may be uint8 arrays in both modes, the client encodes PNG for
HTTP). ``client.score_with_details(items)`` also returns each item's details (the named
parts an endpoint reports beside its reward, e.g. the toy judge's terms; ``{}`` where the
endpoint reports none or the reward failed). Items are sent in chunks of ``client_chunk_size``, at most ``client_max_concurrency``
requests in flight. Each request has a timeout of ``client_timeout_s`` and is retried up to
``client_max_retries`` times with exponential backoff (``client_backoff_s`` doubled per retry,
capped at ``client_backoff_max_s``) after a 5xx, a timeout or a lost connection; never after
a 4xx (the request itself is wrong, sending it again cannot help).

**A failed reward is never a number**: every rollout whose reward could not be obtained
gets NaN (never 0.0), and the failure is counted in ``failures`` under ``(endpoint,
reason)`` and logged with the endpoint, the URL or handle, and the reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from typing import Any

import numpy as np

from rewards.config import RewardsConfig
from rewards.types import RewardInputError, encode_png

GONE_CHECK_S = 2.0
"""While a handle call is pending, how often the client checks that its application still
exists (a deleted endpoint fails the chunk at once instead of after every retry's timeout)."""

logger = logging.getLogger(__name__)


class _Retryable(Exception):
    """A failure worth another try (5xx, timeout, lost connection)."""


class _Fatal(Exception):
    """A failure a retry cannot fix (4xx, malformed answer)."""


class RewardClient:
    """Scores rollouts on one reward endpoint; failed rollouts come back NaN.

    ``mode="http"`` posts to ``url`` (default ``http://{host}:{port}/{endpoint}``);
    ``mode="handle"`` calls ``handle`` (default ``serve.get_app_handle(app)``); ``app`` is the
    Serve application's name, the endpoint's own name unless a run deployed it under a prefix.
    """

    def __init__(
        self,
        endpoint: str,
        cfg: RewardsConfig | None = None,
        *,
        mode: str | None = None,
        url: str | None = None,
        handle: Any = None,
        app: str | None = None,
    ):
        self.cfg = cfg or RewardsConfig()
        self.cfg.validate()
        self.endpoint = endpoint
        self.app = app or endpoint
        self.mode = mode or self.cfg.client_mode
        if self.mode not in ("handle", "http"):
            raise ValueError(f"unknown client mode {self.mode!r}; valid: ['handle', 'http']")
        self.url = (url or f"http://{self.cfg.host}:{self.cfg.port}/{self.app}").rstrip("/")
        self._handle = handle
        self.failures: Counter[tuple[str, str]] = Counter()
        """(endpoint, reason) -> rollouts that got NaN for that reason."""
        self.requests = 0
        self.retries = 0

    @property
    def target(self) -> str:
        return f"{self.url}/score" if self.mode == "http" else f"handle:{self.endpoint}"

    @property
    def num_failed(self) -> int:
        return sum(self.failures.values())

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "failed": self.num_failed,
            "failures": {f"{e}: {r}": n for (e, r), n in self.failures.items()},
        }

    # ---- public API -----------------------------------------------------------------------
    def score(self, items: list[dict]) -> list[float]:
        """Rewards aligned with ``items``; NaN where a reward could not be obtained."""
        return self.score_with_details(items)[0]

    def score_with_details(self, items: list[dict]) -> tuple[list[float], list[dict]]:
        """(rewards, details) aligned with ``items``: NaN and ``{}`` where a reward failed."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.ascore_with_details(items))
        raise RuntimeError("RewardClient.score called inside an event loop; await ascore()")

    async def ascore(self, items: list[dict]) -> list[float]:
        return (await self.ascore_with_details(items))[0]

    async def ascore_with_details(self, items: list[dict]) -> tuple[list[float], list[dict]]:
        values, details, _ = await self.ascore_versioned(items)
        return values, details

    async def ascore_versioned(self, items: list[dict]) -> tuple[list[float], list[dict], set[int]]:
        """(rewards, details, versions): ``versions`` holds the policy weight version each
        answer said it scored with (the DSR endpoint reports one; others none: empty)."""
        if not items:
            return [], [], set()
        size = self.cfg.client_chunk_size
        chunks = [items[s : s + size] for s in range(0, len(items), size)]
        sem = asyncio.Semaphore(self.cfg.client_max_concurrency)
        http = None
        if self.mode == "http":
            import httpx

            http = httpx.AsyncClient(timeout=self.cfg.client_timeout_s)
        try:
            parts = await asyncio.gather(*[self._chunk(c, sem, http) for c in chunks])
        finally:
            if http is not None:
                await http.aclose()
        versions = {part[2] for part in parts if part[2] is not None}
        return (
            [r for part in parts for r in part[0]],
            [d for part in parts for d in part[1]],
            versions,
        )

    # ---- one chunk: retries, backoff, NaN on failure --------------------------------------
    async def _chunk(
        self, items: list[dict], sem: asyncio.Semaphore, http
    ) -> tuple[list[float], list[dict], int | None]:
        reason = ""
        async with sem:
            for attempt in range(self.cfg.client_max_retries + 1):
                if attempt:
                    self.retries += 1
                    delay = min(
                        self.cfg.client_backoff_s * 2 ** (attempt - 1),
                        self.cfg.client_backoff_max_s,
                    )
                    await asyncio.sleep(delay)
                self.requests += 1
                try:
                    answer = await self._send(items, http)
                    return self._check(answer, len(items))
                except _Retryable as e:
                    reason = str(e)
                except _Fatal as e:
                    reason = str(e)
                    break
        self.failures[(self.endpoint, reason)] += len(items)
        logger.warning(
            "reward endpoint %s (%s): %d rollouts get NaN after %d attempt(s): %s",
            self.endpoint,
            self.target,
            len(items),
            attempt + 1,
            reason,
        )
        return [math.nan] * len(items), [{}] * len(items), None

    def _check(self, answer: Any, n: int) -> tuple[list[float], list[dict], int | None]:
        """An endpoint's answer -> (rewards, details), or ``_Fatal`` when it does not fit."""
        rewards = answer.get("rewards") if isinstance(answer, dict) else None
        if not isinstance(rewards, list) or len(rewards) != n:
            got = len(rewards) if isinstance(rewards, list) else type(rewards).__name__
            raise _Fatal(f"answer has {got} rewards for {n} items")
        details = answer.get("details", [{}] * n)
        if not isinstance(details, list) or len(details) != n:
            raise _Fatal(f"answer's details do not align with its {n} items")
        out = [math.nan if r is None else float(r) for r in rewards]
        bad = sum(math.isnan(r) for r in out)
        if bad:
            self.failures[(self.endpoint, "null reward in answer")] += bad
        try:
            parts = [{str(k): float(v) for k, v in d.items()} for d in details]
        except (AttributeError, TypeError, ValueError):
            raise _Fatal("answer's details are not objects of numbers") from None
        version = answer.get("version")
        version = int(version) if isinstance(version, (int, float)) else None
        return out, [{} if math.isnan(r) else d for r, d in zip(out, parts)], version

    async def _send(self, items: list[dict], http) -> dict:
        if self.mode == "http":
            return await self._send_http(items, http)
        return await self._send_handle(items)

    async def _send_http(self, items: list[dict], http) -> dict:
        import httpx

        try:
            payload = {"items": [_wire_item(it) for it in items]}
        except Exception as e:  # an array PIL cannot write as RGB PNG
            raise _Fatal(f"cannot encode an image as PNG: {e}") from None
        try:
            resp = await http.post(f"{self.url}/score", json=payload)
        except httpx.TimeoutException:
            raise _Retryable(f"timeout after {self.cfg.client_timeout_s}s at {self.url}") from None
        except httpx.TransportError as e:
            raise _Retryable(f"cannot reach {self.url}: {type(e).__name__}") from None
        if resp.status_code >= 500:
            raise _Retryable(f"http {resp.status_code}: {_error_text(resp)}")
        if resp.status_code >= 400:
            raise _Fatal(f"http {resp.status_code}: {_error_text(resp)}")
        try:
            return resp.json()
        except ValueError:
            raise _Fatal(f"http {resp.status_code}: answer is not JSON") from None

    async def _send_handle(self, items: list[dict]) -> dict:
        from ray import serve

        if self._handle is None:
            self._handle = serve.get_app_handle(self.app)
        response = self._handle.score.remote({"items": items})
        task = asyncio.ensure_future(_awaited(response))
        deadline = time.monotonic() + self.cfg.client_timeout_s
        try:
            # wait in slices: an application deleted under us is found in seconds, not at
            # the timeout (a gone endpoint is not a transient failure: no retries)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:  # as wait_for: an answer after the deadline is a timeout
                    response.cancel()
                    task.cancel()
                    raise _Retryable(f"timeout after {self.cfg.client_timeout_s}s")
                done, _ = await asyncio.wait({task}, timeout=min(GONE_CHECK_S, left))
                if done:
                    break
                if deadline > time.monotonic() and (gone := await self._gone()):
                    response.cancel()
                    task.cancel()
                    raise _Fatal(gone)
            answer = task.result()
        except (_Retryable, _Fatal):
            raise
        except RewardInputError as e:  # Ray re-raises it as a subclass of RewardInputError
            raise _Fatal(f"bad request: {e.field}: {e.message}") from None
        except Exception as e:
            if gone := await self._gone():
                raise _Fatal(gone) from None
            raise _Retryable(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        return answer

    async def _gone(self) -> str | None:
        """Why this endpoint's Serve application cannot answer (deleted, failed), or None."""
        from ray import serve

        try:
            apps = (await asyncio.to_thread(serve.status)).applications
        except Exception:  # Serve itself unreachable: let the retries decide
            return None
        app = apps.get(self.app)
        if app is None:
            return f"endpoint {self.endpoint} is gone: no Serve application {self.app!r}"
        status = str(getattr(app.status, "value", app.status))
        if status in ("DELETING", "DEPLOY_FAILED"):
            return f"endpoint {self.endpoint} is gone: its Serve application is {status}"
        return None


async def _awaited(response):
    return await response


def _wire_item(item: dict) -> dict:
    """An item for JSON: uint8 image arrays become base64 PNG strings."""
    img = item.get("image")
    if isinstance(img, np.ndarray):
        return {**item, "image": encode_png(img)}
    return item


def _error_text(resp) -> str:
    try:
        return str(resp.json().get("error", resp.text))[:300]
    except ValueError:
        return resp.text[:300]
