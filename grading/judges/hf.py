"""A local transformers model as judge: ``hf:<hub id or folder>`` or ``hf:<folder>#<file.gguf>``.

torch and transformers are imported inside the functions, only when this back-end is chosen, so the grading
package stays importable without them. There is no grammar here: the rubric asks for JSON and replies that do
not parse are unscored, as with any judge. Generation is greedy and runs in a worker thread, one request at a
time, and stops at ``timeout`` seconds (transformers' ``max_time``): a reply cut by the clock is a transient
failure, retried like a timed-out server request and never scored as a verdict.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grading.judges import FatalJudgeError, JudgeInfo, JudgeReply, JudgeRequest, TransientJudgeError


def _weights_digest(folder: Path) -> str:
    """Names, sizes and the first MiB of each weight file: cheap, and changes when the weights do."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.suffix in (".safetensors", ".bin", ".gguf", ".json") and path.is_file():
            digest.update(f"{path.name}:{path.stat().st_size}:".encode())
            with path.open("rb") as handle:
                digest.update(handle.read(2**20))
    return "sha256:" + digest.hexdigest()


class HFJudge:
    def __init__(self, ref: str, *, timeout: float = 120.0) -> None:
        self.ref, _, self.gguf_file = ref.partition("#")
        self.timeout = timeout
        self.name = f"hf:{ref}"
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        self._model = self._tokenizer = None

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.ref, **extra)
            self._model = AutoModelForCausalLM.from_pretrained(self.ref, dtype=torch.float32, **extra)
        except (OSError, ValueError) as exc:
            raise FatalJudgeError(f"cannot load the transformers model {self.ref!r}: {exc}") from None
        self._model.eval()
        if not getattr(self._tokenizer, "chat_template", None):
            raise FatalJudgeError(f"{self.ref!r} has no chat template; the judge needs an instruct/chat model")

    async def preflight(self, options: Mapping[str, Any]) -> JudgeInfo:
        await asyncio.to_thread(self._load)
        import torch
        import transformers

        folder = Path(self.ref)
        if folder.is_dir():
            digest = _weights_digest(folder)
        else:
            digest = str(getattr(self._model.config, "_commit_hash", None) or f"hub:{self.ref}")
        context = getattr(self._model.config, "max_position_embeddings", None)
        return JudgeInfo(
            self.name,
            "hf",
            self.ref,
            digest,
            f"transformers {transformers.__version__}, torch {torch.__version__}",
            host="local",
            context_length=context,
        )

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        if self._model is None:
            raise FatalJudgeError("the hf judge was used before its preflight loaded the model")
        async with self._lock:
            return await asyncio.to_thread(self._generate, request)

    def _generate(self, request: JudgeRequest) -> JudgeReply:
        import torch

        started = time.perf_counter()
        limit = int(request.options.get("num_predict", 64))
        encoded = self._tokenizer.apply_chat_template(
            request.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        prompt_length = encoded["input_ids"].shape[1]
        torch.manual_seed(int(request.options.get("seed", 0)))
        with torch.inference_mode():
            output = self._model.generate(
                **encoded,
                max_new_tokens=limit,
                do_sample=False,
                max_time=self.timeout,
                pad_token_id=pad if (pad := self._tokenizer.pad_token_id) is not None else self._tokenizer.eos_token_id,
            )
        new_tokens = output[0, prompt_length:]
        eos = self._tokenizer.eos_token_id
        at_eos = len(new_tokens) > 0 and eos is not None and int(new_tokens[-1]) == eos
        stopped = len(new_tokens) < limit or at_eos
        elapsed = time.perf_counter() - started
        if not at_eos and len(new_tokens) < limit and elapsed >= self.timeout:
            raise TransientJudgeError(
                f"generation hit the {self.timeout:g} s timeout after {len(new_tokens)} of {limit} tokens"
            )
        return JudgeReply(
            text=self._tokenizer.decode(new_tokens, skip_special_tokens=True),
            done_reason="stop" if stopped else "length",
            prompt_tokens=prompt_length,
            completion_tokens=len(new_tokens),
            total_ns=int(elapsed * 1e9),
            latency_s=elapsed,
        )
