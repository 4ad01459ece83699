"""Generation with vLLM: one engine, many LoRA adapters per batch. Exercised only on GPUs.

vLLM is imported only when a VLLMGenerator is created. Everything that turns our requests into vLLM's arguments,
and vLLM's results into our outputs, is a pure function of plain values so it is unit-tested without vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttt.examples import encode_plain, encode_prompt, end_of_turn_ids
from ttt.generate.base import ACTIVE_ADAPTER, GenerationOutput, GenerationRequest

# vLLM accepts only these values for max_lora_rank.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "auto": "auto"}


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds `rank`."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def engine_kwargs(
    model_path: str,
    *,
    dtype: str = "auto",
    max_lora_rank: int = 128,
    max_loras: int = 8,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.9,
    seed: int = 0,
    enforce_eager: bool = False,
) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM(...)`."""
    if dtype not in _VLLM_DTYPES:
        raise ValueError(f"vLLM dtype {dtype!r}: expected one of {sorted(_VLLM_DTYPES)}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": _VLLM_DTYPES[dtype],
        "enable_lora": True,
        "max_lora_rank": vllm_lora_rank(max_lora_rank),
        "max_loras": max_loras,
        "gpu_memory_utilization": gpu_memory_utilization,
        "seed": seed,
        "enforce_eager": enforce_eager,
    }
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    return kwargs


def sampling_kwargs(request: GenerationRequest, stop_token_ids: Sequence[int]) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams(...)` for one request."""
    if request.allowed_chars is not None or request.choices is not None:
        raise ValueError("constrained decoding (allowed_chars, choices) is implemented by the hf backend only")
    return {
        "n": request.n,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_new_tokens,
        "seed": request.seed,
        "stop_token_ids": sorted(stop_token_ids),
        **({"stop": list(request.stop)} if request.stop else {}),  # vLLM cuts the text before a stop string too
        "logprobs": 0 if request.return_logprobs else None,  # 0: only the sampled token's log-probability
        "skip_special_tokens": True,
    }


class LoraRegistry:
    """Stable integer ids for adapter folders, as vLLM's LoRARequest needs one unique id per adapter."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def lora_args(self, adapter: str | None) -> tuple[str, int, str] | None:
        """(name, id, path) for LoRARequest, or None for the base model."""
        if adapter is None:
            return None
        if adapter == ACTIVE_ADAPTER:
            raise ValueError("the vllm backend needs a saved adapter folder, not the in-memory active adapter")
        path = str(Path(adapter).resolve())
        if path not in self._ids:
            self._ids[path] = len(self._ids) + 1  # vLLM reserves 0
        return f"adapter-{self._ids[path]}", self._ids[path], path


def prompt_inputs(tokenizer: Any, request: GenerationRequest) -> dict[str, list[int]]:
    """The prompt as token ids (a vLLM TokensPrompt), rendered by our template code so no BOS is doubled."""
    if request.text is not None:
        return {"prompt_token_ids": encode_plain(tokenizer, request.text + request.prefill)}
    return {"prompt_token_ids": encode_prompt(tokenizer, request.messages, request.prefill)}


def output_from_vllm(result: Any, request: GenerationRequest) -> GenerationOutput:
    """Convert a vLLM RequestOutput (read by attribute only) into a GenerationOutput."""
    completions = sorted(result.outputs, key=lambda completion: completion.index)
    logprobs = None
    if request.return_logprobs:
        logprobs = tuple(
            tuple(float(step[token].logprob) for token, step in zip(completion.token_ids, completion.logprobs or []))
            for completion in completions
        )
    return GenerationOutput(
        texts=tuple(completion.text for completion in completions),
        prompt_tokens=len(result.prompt_token_ids),
        completion_tokens=tuple(len(completion.token_ids) for completion in completions),
        finish_reasons=tuple("stop" if completion.finish_reason == "stop" else "length" for completion in completions),
        logprobs=logprobs,
    )


class VLLMGenerator:
    """Implements `Generator` with one vLLM engine; every request may name its own adapter folder."""

    def __init__(self, model_path: str, tokenizer: Any = None, **engine_options: Any) -> None:
        """`engine_options` are engine_kwargs' options (dtype, max_lora_rank, max_loras, max_model_len, ...)."""
        try:
            from vllm import LLM
        except ImportError as error:
            raise ImportError(
                "the vllm backend needs vLLM on a CUDA machine: pip install -c constraints/gpu.txt '.[vllm]'"
            ) from error
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer = tokenizer
        self.stop_token_ids = end_of_turn_ids(tokenizer)
        self.registry = LoraRegistry()
        self.engine = LLM(**engine_kwargs(model_path, **engine_options))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        if not requests:
            return []
        prompts = [prompt_inputs(self.tokenizer, request) for request in requests]
        params = [SamplingParams(**sampling_kwargs(request, self.stop_token_ids)) for request in requests]
        loras = []
        for request in requests:
            args = self.registry.lora_args(request.adapter)
            loras.append(LoRARequest(*args) if args is not None else None)
        results = self.engine.generate(prompts, params, lora_request=loras, use_tqdm=False)
        return [output_from_vllm(result, request) for result, request in zip(results, requests)]
