"""The GPU checks of issue 10, as one script of at most ~8 minutes, for a session that is lent a GPU (an H200 here,
capped to stand in for a T4). Random-weight models of real architectures (no hub on the device machine).

    python bench/gpu_check.py                 # on the GPU machine
    python bench/gpu_check.py --device cpu --quick    # plumbing smoke test on a CPU (small shape, no cap, no fp16)

1. memory plan vs measured peak: a Llama-3.2-1B-shaped model, T4 settings (fp16 weights and autocast, fp32 LoRA
   weights, rank 16 on every projection, 4096 tokens, gradient checkpointing), memory capped to 15 GiB; the
   prediction of ttt/memory_plan.py against torch's peak reserved memory plus the CUDA context (target ±15 %);
2. OOM back-off for real: one training unit through the stage runner under a 4.5 GiB cap with a batch of 8 rows
   that does not fit; the journal line must be `ok` with its `oom_backoff` (8 → 4 → 2 → 1 rows expected);
3. fp16 with loss scaling: 50 optimizer steps at 1024 tokens, every loss finite;
4. bf16 on the big GPU (no cap): 20 steps at 4096 tokens, finite, tokens/s against fp16;
5. the same bf16 steps with the LoRA sums kept in fp32 (what ttt/lora.py::keep_lora_sums_fp32 does on a CPU, where
   bf16 outputs rounded small TTT updates away; bf16 rounds the same on a GPU): their cost in tokens/s and peak
   memory, before that is turned on for GPUs too.
Last line: {"bench": "gpu_check", "plan_error": …, "oom": {…}, "fp16_50_steps_finite": …, "bf16": {…}, …}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLAMA_1B = {  # meta-llama/Llama-3.2-1B's config.json (the fields that set memory)
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": True,
    "rope_theta": 500000.0,
}
SMALL = {**LLAMA_1B, "vocab_size": 8192, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip


def _model(shape: dict[str, Any], dtype: Any, device: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**shape, attn_implementation="sdpa")
    return LlamaForCausalLM(config).to(dtype=dtype, device=device)


def _examples(count: int, tokens: int, vocab: int) -> list[Any]:
    import torch

    from ttt.examples import EncodedExample

    out = []
    for i in range(count):
        generator = torch.Generator().manual_seed(i)
        ids = tuple(int(x) for x in torch.randint(10, vocab - 1, (tokens,), generator=generator))
        out.append(EncodedExample(ids, (-100,) * (tokens // 2) + ids[tokens // 2 :]))
    return out


def _settings(**kw: Any) -> Any:
    from ttt.train import TrainSettings

    base = {"epochs": 1, "batch_size": 1, "warmup_steps": 0, "max_steps_cap": None, "packing": "sequential", "lr": 1e-4}
    return TrainSettings(**{**base, **kw})


def _cap(gib: float | None) -> None:
    import torch

    if not torch.cuda.is_available():
        return
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(1.0 if gib is None else min(1.0, gib * 2**30 / total), 0)


def plan_check(device: Any, shape: dict[str, Any], tokens: int) -> dict[str, Any]:
    import torch

    from ttt.lora import AdapterSlot, LoraSettings
    from ttt.memory_plan import ModelShape, training_peak
    from ttt.train import train

    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    if cuda:
        torch.cuda.init()
        free, total = torch.cuda.mem_get_info()
        context = total - free  # the CUDA context and whatever the driver holds before any tensor
    model = _model(shape, dtype, device)
    slot = AdapterSlot(model, LoraSettings(rank=16, targets=ALL))
    examples = _examples(1, tokens, shape["vocab_size"])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train(slot, examples, _settings(dtype="fp16" if cuda else "fp32", grad_checkpointing=True,
                                              max_len=tokens + 1))  # fmt: skip
    predicted = training_peak(
        ModelShape.from_config({**shape, "model_type": "llama"}), tokens=tokens, loss_tokens=tokens // 2, rank=16,
        targets=ALL, dtype="fp16" if cuda else "fp32", grad_checkpointing=True, device=device.type,
    ).total  # fmt: skip
    out: dict[str, Any] = {"tokens": tokens, "predicted_gib": round(predicted / 2**30, 3),
                           "losses_finite": all(math.isfinite(x) for x in result.losses)}  # fmt: skip
    if cuda:
        measured = torch.cuda.max_memory_reserved() + context
        out.update(
            measured_gib=round(measured / 2**30, 3),
            peak_allocated_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3),
            context_gib=round(context / 2**30, 3),
            error=round(predicted / measured - 1, 4),
        )
    del slot, model
    return out


def oom_check(device: Any, shape: dict[str, Any], cap_gib: float, tokens: int, rows: int) -> dict[str, Any]:
    """A unit whose batch does not fit under the cap, through the real stage runner and its back-off."""
    import torch

    from runners.stage import Outcome, StageSpec, run_stage
    from runners.store import RunStore
    from ttt import memory
    from ttt.lora import AdapterSlot, LoraSettings
    from ttt.train import train

    _cap(cap_gib)
    memory.reset_backoff()
    model = _model(shape, torch.float16, device)
    slot = AdapterSlot(model, LoraSettings(rank=16, targets=ALL))
    examples = _examples(rows, tokens, shape["vocab_size"])

    def process(unit: str) -> Outcome:
        settings = _settings(
            dtype="fp16", batch_size=rows, max_len=tokens + 1, packing="packed", grad_checkpointing=True
        )
        result = train(slot, examples, settings)
        return Outcome("ok", {"steps": result.steps, "finite": all(math.isfinite(x) for x in result.losses)})

    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore.open(tmp)
        store.start({"gpu_check": 1}, "h")
        run_stage(store, StageSpec("oom", ["u1"], lambda: process), progress=False, oom_retries=4)
        record = store.records("oom")["u1"]
    _cap(None)
    result = record.result if isinstance(record.result, dict) else {}
    return {"status": record.status, "reason": record.reason, "oom_backoff": result.get("oom_backoff"),
            "finite": result.get("finite"), "cap_gib": cap_gib}  # fmt: skip


def steps_check(
    device: Any, shape: dict[str, Any], dtype: str, steps: int, tokens: int, fp32_sums: bool = False
) -> dict[str, Any]:
    import torch

    from ttt import lora
    from ttt.lora import AdapterSlot, LoraSettings
    from ttt.train import train

    weights = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    model = _model(shape, weights, device)
    slot = AdapterSlot(model, LoraSettings(rank=16, targets=ALL))
    if fp32_sums:  # the product does this on CPUs only (yet)
        lora.keep_lora_sums_fp32(slot.model, any_device=True)
    sums_fp32 = lora.required_autocast(slot.model) is not None  # on a CPU bf16 slot: always (the product's rule)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    examples = _examples(steps, tokens, shape["vocab_size"])
    train(slot, examples[:2], _settings(dtype=dtype, max_len=tokens + 1))  # warm-up (kernels, allocator)
    start = time.perf_counter()
    result = train(slot, examples, _settings(dtype=dtype, max_len=tokens + 1, grad_checkpointing=True))
    seconds = time.perf_counter() - start
    lora_fp32 = all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    peak = round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
    del slot, model
    return {"dtype": dtype, "steps": result.steps, "finite": all(math.isfinite(x) for x in result.losses),
            "first_loss": round(result.losses[0], 4), "last_loss": round(result.losses[-1], 4),
            "lora_weights_fp32": lora_fp32, "tokens_per_s": round(result.tokens / seconds, 1),
            "precision": result.precision, "fp32_sums": sums_fp32, "peak_gib": peak}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small shape and sizes (a CPU smoke test)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    shape = SMALL if args.quick else LLAMA_1B
    tokens = 256 if args.quick else 4096
    out: dict[str, Any] = {"bench": "gpu_check", "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                           "shape": "small" if args.quick else "llama-3.2-1b", "torch": torch.__version__}  # fmt: skip

    def attempt(name: str, fn: Any) -> None:
        started = time.perf_counter()
        try:
            out[name] = fn()
        except Exception as exc:  # one failed part must not hide the others' figures
            out[name] = {"failed": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-1500:]}
        if isinstance(out[name], dict):
            out[name]["seconds"] = round(time.perf_counter() - started, 1)
        if cuda:
            torch.cuda.empty_cache()
        print(name, json.dumps(out[name]), flush=True)

    _cap(15.0)  # a T4's usable memory
    attempt("plan", lambda: plan_check(device, shape, tokens))
    out["plan_error"] = out["plan"].get("error")
    if cuda:
        # 8 rows of 1024 tokens need ~10 GiB (the 128k-vocabulary logits dominate); one row fits in 4.5 GiB.
        attempt("oom", lambda: oom_check(device, shape, 4.5, 1024, 8))
        attempt("fp16", lambda: steps_check(device, shape, "fp16", 50, 1024))
        out["fp16_50_steps_finite"] = out["fp16"].get("finite")
        _cap(None)  # the whole big GPU
        attempt("bf16", lambda: steps_check(device, shape, "bf16", 20, tokens))
        attempt("fp16_big", lambda: steps_check(device, shape, "fp16", 20, tokens))
        attempt("bf16_fp32_sums", lambda: steps_check(device, shape, "bf16", 20, tokens, fp32_sums=True))
        if "tokens_per_s" in out["bf16"] and "tokens_per_s" in out["fp16_big"]:
            out["bf16_vs_fp16"] = round(out["bf16"]["tokens_per_s"] / out["fp16_big"]["tokens_per_s"], 3)
        if "tokens_per_s" in out["bf16"] and "tokens_per_s" in out["bf16_fp32_sums"]:
            out["fp32_sums_speed"] = round(out["bf16_fp32_sums"]["tokens_per_s"] / out["bf16"]["tokens_per_s"], 3)
    else:
        attempt("fp32", lambda: steps_check(device, shape, "fp32", 6, tokens))
        attempt("bf16", lambda: steps_check(device, shape, "bf16", 6, tokens))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
