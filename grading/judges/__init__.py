"""The judge protocol and the factory that turns a ``--judge`` spec into a judge.

Specs: ``ollama:<model>`` (the default back-end; a bare model name means the same),
``openai-compat:<base_url>#<model>`` (vLLM, llama.cpp or Ollama's ``/v1``), ``hf:<model or path>`` (a local
transformers model; torch is imported only when this back-end is chosen).

A judge does one thing: send a rendered request and return the raw reply with the server's own counters. It
classifies failures as *transient* (retry with back-off: 5xx, 503, timeouts, refused or dropped connections,
malformed responses) or *fatal* (stop using this judge: model missing, bad request). Parsing and retries of
unparseable replies belong to the grading loop, not to the judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"


class JudgeError(Exception):
    """A judge could not answer."""


class TransientJudgeError(JudgeError):
    """Worth retrying after a pause: the server is busy, restarting, slow or flaky."""


class FatalJudgeError(JudgeError):
    """Retrying will not help (model missing, request refused): stop this judge and say what to do."""


@dataclass(frozen=True)
class JudgeRequest:
    messages: list[dict[str, str]]
    schema: Mapping[str, Any] | None
    options: Mapping[str, Any]  # temperature, seed, num_ctx, num_predict


@dataclass(frozen=True)
class JudgeReply:
    text: str
    done_reason: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_ns: int | None = None
    eval_ns: int | None = None
    total_ns: int | None = None
    latency_s: float = 0.0


@dataclass(frozen=True)
class JudgeInfo:
    """What the preflight found out; digest and server version go into every cache key."""

    name: str
    backend: str
    model: str
    digest: str
    server_version: str
    host: str
    context_length: int | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "model": self.model,
            "digest": self.digest,
            "server_version": self.server_version,
            "host": self.host,
            "context_length": self.context_length,
            "notes": list(self.notes),
        }


class Judge(Protocol):
    name: str

    async def preflight(self, options: Mapping[str, Any]) -> JudgeInfo:
        """Check the server answers and the model is there; warm it up. Raises ``JudgeError``."""
        ...

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        """One request, no retries. Raises ``TransientJudgeError`` or ``FatalJudgeError``."""
        ...

    async def aclose(self) -> None: ...


def classify_status(status: int, message: str, model: str, where: str) -> JudgeError:
    """HTTP status -> the error class the grading loop acts on."""
    if status == 404:
        return FatalJudgeError(
            f"model {model!r} not found at {where} ({message}); pull it first, e.g. `ollama pull {model}`"
        )
    if status in (408, 429) or status >= 500 or status < 0:
        return TransientJudgeError(f"server error {status} at {where}: {message}")
    return FatalJudgeError(f"request refused with {status} at {where}: {message}")


def is_name_resolution_failure(exc: BaseException) -> bool:
    """Whether a connection error was a DNS failure (socket.gaierror somewhere in its cause chain)."""
    import socket

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return True
        current = current.__cause__ or current.__context__
    text = str(exc).lower()
    return "name or service not known" in text or "name resolution" in text or "nodename nor servname" in text


JUDGE_SCHEMES = ("ollama", "openai-compat", "hf")
_SCHEME_EXAMPLES = "ollama:llama3.2:3b, openai-compat:http://127.0.0.1:8000/v1#<model>, hf:<model id or folder>"


def check_url(url: str, where: str) -> str:
    """``url`` if it is http(s)://host[:port][/path]; else a ValueError naming ``where`` (an option, a spec)."""
    from urllib.parse import urlsplit

    problem = None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number, e.g. host:1:2)
    except ValueError as exc:
        problem = str(exc)
    else:
        if parts.scheme not in ("http", "https"):
            problem = f"scheme {parts.scheme + '://' if parts.scheme else '(none)'} is not http:// or https://"
        elif not parts.hostname:
            problem = "no host"
    if problem is not None:
        raise ValueError(f"{where}: {url!r} is not a server URL ({problem}); write http(s)://host[:port][/path]")
    return url


def resolve_ollama_host(host: str | None, option: str = "--host") -> tuple[str, str]:
    """(URL, where it came from) of the Ollama server: ``host`` (given as ``option``), else $OLLAMA_HOST, else the
    default; a bare ``host[:port]`` gets http://. Raises ValueError naming the option or OLLAMA_HOST when it is not
    a URL."""
    import os

    where = option if host else "OLLAMA_HOST" if os.environ.get("OLLAMA_HOST") else "the default host"
    raw = host or os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_HOST
    return check_url(raw if "://" in raw else f"http://{raw}", where), where


def parse_judge_spec(spec: str) -> tuple[str, str]:
    """``ollama:m`` / ``openai-compat:url#m`` / ``hf:m`` -> (backend, rest).

    The scheme is required: an Ollama name has a colon of its own (``llama3.2:3b``), so a bare or misspelt scheme
    (``olama:x``) cannot be told from a model name and would send the user to ``ollama pull`` a model that is not one.
    """
    if not spec:
        raise ValueError(f"empty judge spec; write one of {_SCHEME_EXAMPLES}")
    backend, sep, rest = spec.partition(":")
    if not sep or backend not in JUDGE_SCHEMES:
        looks_like_a_model = not sep or "." in backend  # llama3.2:3b, qwen2.5:7b
        hint = f" (an Ollama model? write ollama:{spec})" if looks_like_a_model else ""
        raise ValueError(
            f"judge spec {spec!r}: unknown scheme {backend + ':' if sep else '(none)'}{hint}; "
            f"the schemes are {', '.join(s + ':' for s in JUDGE_SCHEMES)}, e.g. {_SCHEME_EXAMPLES}"
        )
    if not rest:
        raise ValueError(f"judge spec {spec!r} names no model")
    if backend == "openai-compat" and "#" not in rest:
        raise ValueError(
            f"judge spec {spec!r}: write openai-compat:<base_url>#<model>, "
            "e.g. openai-compat:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-7B-Instruct"
        )
    if backend == "openai-compat":
        base_url, _, model = rest.rpartition("#")
        check_url(base_url, f"judge spec {spec!r}: the base URL")
        if not model:
            raise ValueError(f"judge spec {spec!r} names no model after '#'")
    return backend, rest


def make_judge(
    spec: str,
    *,
    host: str | None = None,
    timeout: float = 120.0,
    keep_alive: str = "30m",
    stream: bool = False,
    host_option: str = "--host",
) -> Judge:
    """Build the judge named by ``spec``; ``host`` (named ``host_option`` in errors) applies to Ollama judges."""
    backend, rest = parse_judge_spec(spec)
    if backend == "ollama":
        from grading.judges.ollama import OllamaJudge

        return OllamaJudge(
            rest, host=host, timeout=timeout, keep_alive=keep_alive, stream=stream, host_option=host_option
        )
    if backend == "openai-compat":
        from grading.judges.openai_compat import OpenAICompatJudge

        base_url, _, model = rest.rpartition("#")
        return OpenAICompatJudge(base_url, model, timeout=timeout)
    from grading.judges.hf import HFJudge

    return HFJudge(rest, timeout=timeout)
