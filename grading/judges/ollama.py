"""Ollama judge over the official ``ollama`` AsyncClient, with an explicit host and an explicit timeout.

The client's default timeout is none (a hung server would block forever) and its module-level functions are
bound to a default host at import time, so this builds its own client. ``/api/version`` has no client call and
is read with httpx directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx
import ollama

from grading.judges import (
    FatalJudgeError,
    JudgeInfo,
    JudgeReply,
    JudgeRequest,
    TransientJudgeError,
    classify_status,
    is_name_resolution_failure,
    resolve_ollama_host,
)

_TRANSPORT_ERRORS = (ConnectionError, httpx.TransportError, asyncio.TimeoutError, TimeoutError, ValueError)


def resolve_host(host: str | None, option: str = "--host") -> str:
    return resolve_ollama_host(host, option)[0]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException)):
        return "timed out"
    if isinstance(exc, (ConnectionError, httpx.ConnectError)):
        return "host name not found (DNS)" if is_name_resolution_failure(exc) else "connection refused"
    if isinstance(exc, ValueError):  # json.JSONDecodeError, pydantic.ValidationError
        return f"malformed response ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


class OllamaJudge:
    def __init__(
        self,
        model: str,
        *,
        host: str | None = None,
        timeout: float = 120.0,
        keep_alive: str = "30m",
        stream: bool = False,
        host_option: str = "--host",
    ) -> None:
        self.model = model
        self.name = f"ollama:{model}"
        self.host = resolve_host(host, host_option)
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.stream = stream
        self._client = ollama.AsyncClient(host=self.host, timeout=httpx.Timeout(timeout))

    async def aclose(self) -> None:
        await self._client.close()

    # ------------------------------------------------------------------------------------------ preflight

    async def preflight(self, options: Mapping[str, Any]) -> JudgeInfo:
        version = await self._server_version()
        digest = await self._model_digest()
        context_length = await self._context_length()
        notes: list[str] = []
        num_ctx = options.get("num_ctx")
        if context_length is not None and isinstance(num_ctx, int) and num_ctx > context_length:
            notes.append(f"num_ctx {num_ctx} exceeds the model's context length {context_length}")
        await self._warm_up(options)
        return JudgeInfo(self.name, "ollama", self.model, digest, version, self.host, context_length, tuple(notes))

    async def _server_version(self) -> str:
        try:
            async with httpx.AsyncClient(base_url=self.host, timeout=self.timeout) as client:
                response = await client.get("/api/version")
                response.raise_for_status()
                return str(response.json()["version"])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise TransientJudgeError(
                f"Ollama at {self.host} does not answer /api/version ({_describe(exc)}); "
                "is `ollama serve` running, and is --host / OLLAMA_HOST right?"
            ) from None

    async def _model_digest(self) -> str:
        try:
            listing = await asyncio.wait_for(self._client.list(), self.timeout)
        except ollama.ResponseError as exc:
            raise classify_status(exc.status_code, exc.error, self.model, self.host) from None
        except _TRANSPORT_ERRORS as exc:
            raise TransientJudgeError(f"listing models at {self.host} failed: {_describe(exc)}") from None
        wanted = {self.model, f"{self.model}:latest"}
        for entry in listing.models:
            if entry.model in wanted:
                return entry.digest or ""
        present = ", ".join(sorted(m.model or "?" for m in listing.models)) or "none"
        raise FatalJudgeError(
            f"model {self.model!r} is not on the Ollama server at {self.host} (it has: {present}); "
            f"run `ollama pull {self.model}`"
        )

    async def _context_length(self) -> int | None:
        try:
            shown = await asyncio.wait_for(self._client.show(self.model), self.timeout)
        except ollama.ResponseError as exc:
            raise classify_status(exc.status_code, exc.error, self.model, self.host) from None
        except _TRANSPORT_ERRORS as exc:
            raise TransientJudgeError(f"/api/show at {self.host} failed: {_describe(exc)}") from None
        for key, value in (shown.modelinfo or {}).items():
            if key.endswith(".context_length") and isinstance(value, int):
                return value
        return None

    async def _warm_up(self, options: Mapping[str, Any]) -> None:
        # An empty chat loads the model with the load-time options (num_ctx) that grading will use, so the
        # first graded item is not charged the load and no later call triggers a reload.
        load_options = {k: v for k, v in options.items() if k == "num_ctx"}
        try:
            await asyncio.wait_for(
                self._client.chat(model=self.model, messages=[], options=load_options, keep_alive=self.keep_alive),
                self.timeout,
            )
        except ollama.ResponseError as exc:
            raise classify_status(exc.status_code, exc.error, self.model, self.host) from None
        except _TRANSPORT_ERRORS as exc:
            raise TransientJudgeError(f"loading {self.model} at {self.host} failed: {_describe(exc)}") from None

    # ------------------------------------------------------------------------------------------- requests

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        started = time.perf_counter()
        try:
            if self.stream:
                text, final = await asyncio.wait_for(self._streamed(request), self.timeout)
            else:
                final = await asyncio.wait_for(
                    self._client.chat(
                        model=self.model,
                        messages=request.messages,
                        format=request.schema,
                        options=request.options,
                        keep_alive=self.keep_alive,
                        stream=False,
                    ),
                    self.timeout,
                )
                text = final.message.content or ""
        except ollama.ResponseError as exc:
            raise classify_status(exc.status_code, exc.error, self.model, self.host) from None
        except _TRANSPORT_ERRORS as exc:
            raise TransientJudgeError(f"request to {self.host} failed: {_describe(exc)}") from None
        return JudgeReply(
            text=text,
            done_reason=final.done_reason,
            prompt_tokens=final.prompt_eval_count,
            completion_tokens=final.eval_count,
            prompt_ns=final.prompt_eval_duration,
            eval_ns=final.eval_duration,
            total_ns=final.total_duration,
            latency_s=time.perf_counter() - started,
        )

    async def _streamed(self, request: JudgeRequest) -> tuple[str, Any]:
        parts: list[str] = []
        final = None
        stream = await self._client.chat(
            model=self.model,
            messages=request.messages,
            format=request.schema,
            options=request.options,
            keep_alive=self.keep_alive,
            stream=True,
        )
        async for part in stream:
            parts.append(part.message.content or "")
            final = part
        if final is None or not final.done:
            raise TransientJudgeError(f"stream from {self.host} ended before its final message")
        return "".join(parts), final
