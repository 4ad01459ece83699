"""OpenAI-compatible chat judge over httpx: vLLM servers, llama.cpp servers, Ollama's ``/v1``.

The schema goes in ``response_format`` (``json_schema``); ``num_predict`` becomes ``max_tokens``. These
servers cannot be told a context length per request, so ``num_ctx`` is not sent (it stays in the cache key). A
model digest is not part of this API: the served model id stands in for it, and the server version is read
from ``/version`` (vLLM), ``/api/version`` (Ollama) or the OpenAPI document (llama-cpp-python's server) when the
server offers one.

llama-cpp-python's server (``python -m llama_cpp.server``) refuses ``response_format: {"type": "json_schema"}``
(its request model allows ``text`` and ``json_object`` only, and the refusal comes back as a 500) but constrains
the reply by ``{"type": "json_object", "schema": ...}``. The preflight recognises that server by its OpenAPI title
and sends that form; any other server that names ``response_format`` in a refusal gets it from then on as well.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any

import httpx

from grading.judges import (
    FatalJudgeError,
    JudgeInfo,
    JudgeReply,
    JudgeRequest,
    TransientJudgeError,
    classify_status,
    is_name_resolution_failure,
)

LLAMA_CPP_PYTHON_TITLE = "llama.cpp Python API"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException)):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "host name not found (DNS)" if is_name_resolution_failure(exc) else "connection refused"
    return f"{type(exc).__name__}: {exc}"


class OpenAICompatJudge:
    def __init__(self, base_url: str, model: str, *, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai-compat:{self.base_url}#{model}"
        self.timeout = timeout
        headers = {}
        # Local servers need no key; a hosted endpoint reads the conventional variable.
        if api_key := os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {api_key}"
        self.schema_format = "json_schema"  # or "json_object" (with "schema"), for llama-cpp-python's server
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(timeout), headers=headers)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, url: str) -> httpx.Response:
        try:
            return await self._client.get(url)
        except httpx.HTTPError as exc:
            raise TransientJudgeError(
                f"{self.base_url} does not answer ({_describe(exc)}); is the server up?"
            ) from None

    async def preflight(self, options: Mapping[str, Any]) -> JudgeInfo:
        response = await self._get("/models")
        if response.status_code != 200:
            raise classify_status(response.status_code, response.text[:200], self.model, self.base_url)
        try:
            served = [str(entry["id"]) for entry in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise TransientJudgeError(f"{self.base_url}/models returned an unexpected body") from None
        if self.model not in served:
            raise FatalJudgeError(
                f"model {self.model!r} is not served at {self.base_url} (it serves: "
                f"{', '.join(served) or 'none'}); start the server with it or pick another"
            )
        return JudgeInfo(
            self.name,
            "openai-compat",
            self.model,
            digest=f"served:{self.model}",
            server_version=await self._server_version(),
            host=self.base_url,
        )

    async def _server_version(self) -> str:
        root = self.base_url.removesuffix("/v1")
        for path in ("/version", "/api/version"):
            try:
                response = await self._client.get(root + path)
                if response.status_code == 200:
                    return str(response.json()["version"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue
        try:
            response = await self._client.get(root + "/openapi.json")
            if response.status_code == 200:
                info = response.json()["info"]
                title, version = str(info.get("title", "")), str(info["version"])
                if LLAMA_CPP_PYTHON_TITLE in title:
                    self.schema_format = "json_object"
                    return f"llama-cpp-python {version}"
                return f"{title.strip() or 'openapi'} {version}"
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
            pass
        return "unknown"

    def _response_format(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        if self.schema_format == "json_object":
            return {"type": "json_object", "schema": dict(schema)}
        return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}

    async def _post(self, body: Mapping[str, Any]) -> httpx.Response:
        try:
            return await asyncio.wait_for(self._client.post("/chat/completions", json=body), self.timeout)
        except (httpx.HTTPError, asyncio.TimeoutError, TimeoutError) as exc:
            raise TransientJudgeError(f"request to {self.base_url} failed: {_describe(exc)}") from None

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        options = request.options
        body: dict[str, Any] = {"model": self.model, "messages": request.messages, "stream": False}
        if "temperature" in options:
            body["temperature"] = options["temperature"]
        if "seed" in options:
            body["seed"] = options["seed"]
        if "num_predict" in options:
            body["max_tokens"] = options["num_predict"]
        if request.schema is not None:
            body["response_format"] = self._response_format(request.schema)
        started = time.perf_counter()
        response = await self._post(body)
        if (
            response.status_code != 200
            and request.schema is not None
            and self.schema_format == "json_schema"
            and "response_format" in response.text
        ):
            # The server does not take json_schema: constrain by {"type": "json_object", "schema": ...} instead.
            self.schema_format = "json_object"
            body["response_format"] = self._response_format(request.schema)
            response = await self._post(body)
        if response.status_code != 200:
            raise classify_status(response.status_code, response.text[:200], self.model, self.base_url)
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
            usage = payload.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            raise TransientJudgeError(f"malformed response from {self.base_url}") from None
        finish = choice.get("finish_reason")
        return JudgeReply(
            text=text,
            done_reason="length" if finish == "length" else finish,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_s=time.perf_counter() - started,
        )
