"""bf16 against fp32 on this CPU, side by side in one process, on SmolLM2-135M: what `dtype: auto` should be here.

    python bench/cpu_precision.py [--threads 2] [--reps 5] [--quick]

bf16 is what the workers run for `resolve_precision`'s bf16 on a CPU: base weights stored in bf16, LoRA weights in
fp32, the LoRA sums kept in fp32 (ttt/lora.py::keep_lora_sums_fp32), bf16 autocast in training, evaluation and
generation, as `load_worker_model` builds it. fp32 is everything in fp32. Both models are loaded once;
each measurement runs as fp32/bf16 pairs back to back (who goes first swaps each pair), and a speedup is the median
of the pairs' ratios, because other processes (and other machines' guests) share the cores.

- matmul: a 1024x576x1536 matmul (the issue's micro-benchmark), GFLOP/s in each dtype.
- train: LoRA (rank 16, alpha 16, SEAL's five projections: the cpu profile) training steps on one 512-token ARC
  sequence, loss on every token, tokens/s of forward+backward+optimizer; one warm-up step per rep is not counted.
- generate: 8 plain-text prompts decoded greedily as one batch (the cpu profile's `infer.batch_size`), new tokens/s.
- decode_linears: one decode step's matmuls alone (batch 8, every layer's real weights), by weight shape and summed:
  the most bf16 can give generation on this CPU if nothing else in a step cost time.
- train_step_parts: training steps of each precision under torch.profiler (medians of alternating steps), their
  self CPU time summed by kind (matmuls, scaled-dot-product attention forward+backward, dtype casts, everything
  else): where the training speed-up comes from and where it does not on this CPU.
- eval: the same short LoRA training on one ARC task's TTT data (8 examples, 2 epochs, batch 2, lr 1e-4: SEAL ARC's
  inner loop, shortened) from the same initial adapter in both precisions, for seeds 0 and 1, then the held-out loss
  (the task's test example and its D8 transforms, never trained on). `eval_loss_ratio` = mean bf16 / mean fp32, each
  evaluated in its own precision (as a run does); seed 0's adapters are also evaluated in the other precision, and
  the two fp32 seeds' spread is the noise to read the ratio against.

Targets (issue 10 §3, set on an AMX CPU): train_speedup >= 1.6, generate_speedup >= 1.8, eval loss within 2 %.
Last line: {"bench": "cpu_precision", "cpu": {...}, "train_speedup": …, "generate_speedup": …, "eval_loss_ratio": …,
"targets": {...}, "met": {...}, …}
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ttt import cpu_features
from ttt.arc import Augmentation, TTTDataSettings, build_ttt_data, load_tasks, task_to_messages
from ttt.examples import EncodedExample, count_tokens, encode_messages
from ttt.generate.base import GenerationRequest
from ttt.generate.hf import HFGenerator
from ttt.lora import AdapterSlot, LoraSettings
from ttt.models import SMOLLM2, load_model
from ttt.train import TrainSettings, mean_loss, resolve_precision, train

TARGETS = {"train_speedup": 1.6, "generate_speedup": 1.8, "eval_loss_within": 0.02}
DTYPES = ("fp32", "bf16")
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
HELD_OUT_TRANSFORMS = ("rot90", "rot180", "rot270", "flip0", "flip1", "transpose")
PROMPTS = (
    "The history of the printing press begins",
    "In a small village at the edge of the forest,",
    "Photosynthesis is the process by which plants",
    "The first rule of writing good software is",
    "When the train finally arrived at the station,",
    "Mathematics teaches us that numbers",
    "The recipe for a simple bread needs flour, water,",
    "On the night of the storm, the lighthouse keeper",
)


def cpu_name() -> str:
    for line in cpu_features.read_cpuinfo().splitlines():
        if line.lower().startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def matmul_gflops(dtype: torch.dtype, reps: int) -> float:
    m, k, n = 1024, 576, 1536
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * m * k * n / statistics.median(times) / 1e9


def decode_linears(models: dict[str, Any], batch: int, reps: int) -> dict[str, Any]:
    """One decode step's base linears (every layer's real weights, the LoRA-wrapped ones too, and the LM head), timed
    as `batch`-row F.linear calls in each dtype, fp32/bf16 pairs: by weight shape, and summed over the step with
    each shape counted as often as the model has it. The sum is the ceiling of the generation speed-up on this CPU
    if nothing but these matmuls cost time; cycling through all layers' weights reads them from memory, as decoding
    does, not from a warm cache."""
    weights: dict[str, dict[tuple[int, int], list[torch.Tensor]]] = {}
    names: dict[tuple[int, int], set[str]] = {}
    for dtype, model in models.items():
        by_shape = weights.setdefault(dtype, {})
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and "lora_" not in name:
                shape = (module.in_features, module.out_features)
                by_shape.setdefault(shape, []).append(module.weight.detach())
                role = [part for part in name.split(".") if part != "base_layer"][-1]  # q_proj, lm_head, ...
                names.setdefault(shape, set()).add(role)

    def step_seconds(dtype: str, shape: tuple[int, int]) -> float:
        x = torch.randn(batch, shape[0], dtype=TORCH_DTYPES[dtype])
        layers = weights[dtype][shape]
        with torch.inference_mode():
            for weight in layers[:2]:  # warm-up
                torch.nn.functional.linear(x, weight)
            started = time.perf_counter()
            for _ in range(3):
                for weight in layers:
                    torch.nn.functional.linear(x, weight)
        return (time.perf_counter() - started) / 3  # all layers of this shape, once

    seconds: dict[tuple[int, int], dict[str, float]] = {}
    ratios: dict[str, float] = {}
    for shape in sorted(weights["fp32"]):
        rates, pair_ratios = paired(lambda name, shape=shape: 1 / step_seconds(name, shape), reps)
        seconds[shape] = {name: 1 / statistics.median(rates[name]) for name in DTYPES}
        label = f"{shape[0]}x{shape[1]} ({', '.join(sorted(names[shape]))}; {len(weights['fp32'][shape])})"
        ratios[label] = round(statistics.median(pair_ratios), 3)
    total = {name: sum(s[name] for s in seconds.values()) for name in DTYPES}
    return {
        "speedup_by_shape": ratios,
        "step_speedup": round(total["fp32"] / total["bf16"], 3),
        "step_ms": {name: round(1000 * v, 2) for name, v in total.items()},
    }


STEP_PART_OPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product",),  # the fused CPU kernels, forward and backward
    "casts": ("aten::copy_", "aten::_to_copy"),
}


def train_step_parts(slots: dict[str, AdapterSlot], example: EncodedExample, reps: int) -> dict[str, Any]:
    """Self CPU milliseconds of a profiled training step per precision, by kind of op (the median of `reps` steps,
    fp32/bf16 alternating), and each kind's fp32/bf16 ratio: the matmuls gain what `matmul_speedup` allows, the
    rest of the step decides the whole."""
    from torch.profiler import ProfilerActivity, profile

    def step_parts(name: str) -> dict[str, float]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_rate(slots[name], example, name)
        sums = dict.fromkeys([*STEP_PART_OPS, "other"], 0.0)
        for event in prof.key_averages():
            kind = next((k for k, ops in STEP_PART_OPS.items() if event.key.startswith(ops)), "other")
            sums[kind] += event.self_cpu_time_total / 1000
        return sums

    runs: dict[str, list[dict[str, float]]] = {name: [] for name in DTYPES}
    for rep in range(reps):
        for name in DTYPES if rep % 2 == 0 else DTYPES[::-1]:
            runs[name].append(step_parts(name))
    parts = {name: {kind: statistics.median(r[kind] for r in rs) for kind in rs[0]} for name, rs in runs.items()}
    return {
        "ms": {name: {kind: round(ms, 1) for kind, ms in sums.items()} for name, sums in parts.items()},
        "speedup": {kind: round(parts["fp32"][kind] / max(parts["bf16"][kind], 1e-9), 3) for kind in parts["fp32"]},
        "bf16_share": {kind: round(ms / sum(parts["bf16"].values()), 3) for kind, ms in parts["bf16"].items()},
    }


def sequence_512(tokenizer: Any, task: Any) -> EncodedExample:
    """512 tokens of real ARC text (the task's chat rendering, repeated as needed), loss on every token."""
    ids: list[int] = []
    while len(ids) < 512:
        ids.extend(encode_messages(tokenizer, task_to_messages(task)).input_ids)
    return EncodedExample(tuple(ids[:512]), tuple(ids[:512]))


def train_rate(slot: AdapterSlot, example: EncodedExample, dtype: str) -> float:
    """Tokens/s of one 512-token step (forward, backward, optimizer; the loop's set-up is not counted)."""
    settings = TrainSettings(lr=1e-4, epochs=1, batch_size=1, warmup_steps=0, dtype=dtype, max_len=1024)
    result = train(slot, [example], settings)
    return result.tokens / (result.forward_backward_seconds + result.optimizer_seconds)


def generate_rate(generator: HFGenerator, new_tokens: int) -> tuple[float, int]:
    """New tokens/s of one greedy batch of the 8 prompts (prefill included)."""
    requests = [GenerationRequest(text=prompt, max_new_tokens=new_tokens) for prompt in PROMPTS]
    started = time.perf_counter()
    outputs = generator.generate(requests)
    seconds = time.perf_counter() - started
    tokens = sum(sum(output.completion_tokens) for output in outputs)
    return tokens / seconds, tokens


def paired(measure: Any, reps: int) -> tuple[dict[str, list[float]], list[float]]:
    """`measure(name)` for fp32 and bf16 back to back, `reps` times, who goes first swapping each time: the rates,
    and the bf16/fp32 ratio of each pair (a slow spell on shared cores then spoils one pair, not a whole side)."""
    rates: dict[str, list[float]] = {name: [] for name in DTYPES}
    for rep in range(reps):
        for name in DTYPES if rep % 2 == 0 else DTYPES[::-1]:
            rates[name].append(measure(name))
    return rates, [bf16 / fp32 for fp32, bf16 in zip(rates["fp32"], rates["bf16"])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2, help="torch threads (pinned)")
    parser.add_argument("--reps", type=int, default=5, help="fp32/bf16 generation pairs (medians)")
    parser.add_argument("--steps", type=int, default=2, help="fp32/bf16 training-step pairs per generation pair")
    parser.add_argument("--new-tokens", type=int, default=48, help="greedy new tokens per row")
    parser.add_argument("--task", default="66e6c45b", help="ARC-AGI-1 evaluation task for the eval-loss check")
    parser.add_argument("--examples", type=int, default=8, help="TTT examples of the eval-loss training")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="of the eval-loss training")
    parser.add_argument("--lr", type=float, default=1e-4, help="of the eval-loss training (SEAL ARC's 1e-4)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 rep, 1 step, 8 tokens, 2 examples")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.steps, args.new_tokens, args.examples, args.epochs, args.seeds = 1, 1, 8, 2, 1, [0]
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    matmul, matmul_ratios = paired(lambda name: matmul_gflops(TORCH_DTYPES[name], 5), 10 * args.reps)

    cpu = torch.device("cpu")
    lora = LoraSettings(rank=16, alpha=16)
    slots: dict[str, AdapterSlot] = {}
    generators: dict[str, HFGenerator] = {}
    tokenizer: Any = None
    for name in DTYPES:
        precision = resolve_precision(name, cpu)
        model, tokenizer = load_model(SMOLLM2, dtype=precision.autocast_dtype)  # bf16: base weights in bf16
        slots[name] = AdapterSlot(model, lora)
        generators[name] = HFGenerator(slots[name], tokenizer, max_batch_size=8)  # as the workers build it
    lora_dtypes = sorted({str(p.dtype) for slot in slots.values() for p in slot.trainable_parameters()})
    base_dtypes = {
        name: sorted({str(p.dtype) for n, p in slot.model.named_parameters() if "lora_" not in n})
        for name, slot in slots.items()
    }

    (task,) = load_tasks("arcagi", "evaluation", ids=[args.task])[:1]
    example = sequence_512(tokenizer, task)
    for name in DTYPES:  # warm-up: allocator, oneDNN kernels for these shapes
        train_rate(slots[name], example, name)
        generate_rate(generators[name], 4)
    train_tps, train_ratios = paired(lambda name: train_rate(slots[name], example, name), args.reps * args.steps)
    step_parts = train_step_parts(slots, example, min(args.reps, 3))
    generated: dict[str, int] = {}

    def generate(name: str) -> float:
        rate, generated[name] = generate_rate(generators[name], args.new_tokens)
        return rate

    for slot in slots.values():
        slot.reset(0)
    generate_tps, generate_ratios = paired(generate, args.reps)
    linears = decode_linears({name: slot.model for name, slot in slots.items()}, 8, 2 * args.reps)

    data = build_ttt_data(task, TTTDataSettings(), seed=0, count_tokens=lambda m: count_tokens(tokenizer, m))
    chosen = random.Random(0).sample(data.messages, min(args.examples, len(data.messages)))
    train_data = [encode_messages(tokenizer, messages) for messages in chosen]
    held_out = [
        encode_messages(tokenizer, task_to_messages(t))
        for t in [task] + [Augmentation.parse(key).apply_task(task) for key in HELD_OUT_TRANSFORMS]
    ]
    # eval[(trained in, evaluated in, seed)]: every seed trains both precisions from the same initial adapter and
    # data order; the cross terms (seed 0) tell a difference made by training from one made by evaluating in bf16,
    # and the fp32 seeds' spread is the run-to-run noise the bf16 difference is to be read against.
    evals: dict[tuple[str, str, int], float] = {}
    initial: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="seal-bench-precision-") as tmp:
        saved: dict[str, Path] = {}
        for seed in args.seeds:
            for name in DTYPES:
                slots[name].reset(seed)
                initial.setdefault(name, mean_loss(slots[name], held_out, dtype=name))
                settings = TrainSettings(
                    lr=args.lr, epochs=args.epochs, batch_size=2, warmup_steps=2, dtype=name, seed=seed
                )
                train(slots[name], train_data, settings)
                evals[(name, name, seed)] = mean_loss(slots[name], held_out, dtype=name)
                if seed == args.seeds[0]:
                    saved[name] = slots[name].save(Path(tmp) / f"{name}-adapter")  # LoRA weights: fp32 in both
        for trained, evaluated in (("bf16", "fp32"), ("fp32", "bf16")):
            slots[evaluated].load(saved[trained])
            evals[(trained, evaluated, args.seeds[0])] = mean_loss(slots[evaluated], held_out, dtype=evaluated)
    own = {name: statistics.mean(evals[(name, name, seed)] for seed in args.seeds) for name in DTYPES}
    fp32_seeds = [evals[("fp32", "fp32", seed)] for seed in args.seeds]

    med = {key: {name: statistics.median(values[name]) for name in DTYPES} for key, values in
           (("matmul", matmul), ("train", train_tps), ("generate", generate_tps))}  # fmt: skip
    train_speedup = statistics.median(train_ratios)
    generate_speedup = statistics.median(generate_ratios)
    eval_ratio = own["bf16"] / own["fp32"]
    first = args.seeds[0]
    print(
        json.dumps(
            {
                "bench": "cpu_precision",
                "cpu": {
                    "name": cpu_name(),
                    **cpu_features.describe(),
                    "torch_capability": torch.backends.cpu.get_cpu_capability(),
                },
                "train_speedup": round(train_speedup, 3),
                "generate_speedup": round(generate_speedup, 3),
                "eval_loss_ratio": round(eval_ratio, 4),
                # the seed-0 adapters, trained in one precision and evaluated in the other, against fp32/fp32
                "eval_loss_ratio_bf16_trained_fp32_eval": round(
                    evals[("bf16", "fp32", first)] / evals[("fp32", "fp32", first)], 4
                ),
                "eval_loss_ratio_fp32_trained_bf16_eval": round(
                    evals[("fp32", "bf16", first)] / evals[("fp32", "fp32", first)], 4
                ),
                "eval_loss_fp32_seed_spread": round(
                    (max(fp32_seeds) - min(fp32_seeds)) / statistics.mean(fp32_seeds), 4
                ),
                "matmul_speedup": round(statistics.median(matmul_ratios), 3),
                # why generate_speedup is what it is: the decode step's matmuls alone (batch 8, real weights)
                "decode_linears": linears,
                # why train_speedup is what it is: one profiled step of each, by kind of op
                "train_step_parts": step_parts,
                "targets": TARGETS,
                "met": {
                    "train_speedup": train_speedup >= TARGETS["train_speedup"],
                    "generate_speedup": generate_speedup >= TARGETS["generate_speedup"],
                    "eval_loss": abs(eval_ratio - 1) <= TARGETS["eval_loss_within"],
                },
                "matmul_gflops": {name: round(v, 1) for name, v in med["matmul"].items()},
                "train_tokens_per_s": {name: round(v, 1) for name, v in med["train"].items()},
                "generate_tokens_per_s": {name: round(v, 1) for name, v in med["generate"].items()},
                "train_tokens_per_s_reps": {name: [round(v, 1) for v in vs] for name, vs in train_tps.items()},
                "generate_tokens_per_s_reps": {name: [round(v, 1) for v in vs] for name, vs in generate_tps.items()},
                "generated_tokens": generated,
                "eval_loss_mean": {name: round(v, 4) for name, v in own.items()},
                "eval_loss_by_trained_evaluated_seed": {"/".join(map(str, k)): round(v, 4) for k, v in evals.items()},
                "initial_eval_loss": {name: round(v, 4) for name, v in initial.items()},
                "base_weight_dtypes": base_dtypes,
                "lora_weight_dtypes": lora_dtypes,
                "model": SMOLLM2,
                "task": task.task_id,
                "train_examples": len(train_data),
                "eval_training": {
                    "lr": args.lr,
                    "epochs": args.epochs,
                    "batch_size": 2,
                    "warmup_steps": 2,
                    "seeds": args.seeds,
                },
                "held_out_examples": len(held_out),
                "threads": args.threads,
                "pairs": {"matmul": 10 * args.reps, "train": args.reps * args.steps, "generate": args.reps},
                "new_tokens_per_row": args.new_tokens,
                "quick": args.quick,
                "seconds": round(time.perf_counter() - started, 1),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
