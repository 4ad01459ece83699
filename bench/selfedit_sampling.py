"""k self-edits of one ARC task in one batched call (n = k) vs k calls of n = 1 (SEAL's driver), on SmolLM2-135M.

    python bench/selfedit_sampling.py [--model smollm2-135m|tiny] [--dtype fp32|bf16] [--k 8] [--repeats 2]

Both sides run through `seal.selfedit.sample_self_edits` with the self-edit prompt, temperature 0.8 and 128 new
tokens. Sampled lengths differ between the sides (other seeds), so generated tokens and tokens/s are reported
beside wall time. The sides alternate (batched first, then sequential first, …) to spread drift over both.

Last line: {"bench": "selfedit_sampling", "speedup": …, "speedup_tokens_per_s": …, …}

Measured (1 thread, AMD EPYC with avx512_bf16 but no AMX, k = 8, 2 repeats, 421-token prompt): fp32 3.12× (33.5 s vs
104.4 s; 3.23× in tokens/s), of which the shared prefill of the n rows in `HFGenerator` is most (1.88× without it);
bf16 weights 2.17× (43.8 s vs 94.9 s): bf16 helps one row a little and slows batch 8 on this CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--task", default="66e6c45b")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from seal.arc.prompt import self_edit_messages
    from seal.arc.schema import parse_self_edit
    from seal.selfedit import SampleSettings, sample_self_edits
    from ttt.arc import load_subset, load_tasks
    from ttt.generate.hf import HFGenerator
    from ttt.models import load_model

    assert args.task in load_subset("seal-eval-1b"), f"{args.task} is not in the seal-eval-1b subset"
    task = load_tasks("arcagi", "evaluation", ids=[args.task])[0]
    messages = self_edit_messages(task)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    generator = HFGenerator(model, tokenizer, max_batch_size=max(16, args.k))
    common = {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens}
    sample_self_edits(generator, messages, parse_self_edit, SampleSettings(k=2, **common), seed=-1)  # warm-up

    def batched(seed: int) -> list:
        settings = SampleSettings(k=args.k, max_attempts=args.k, **common)  # exactly one call with n = k
        return list(sample_self_edits(generator, messages, parse_self_edit, settings, seed=seed).attempts)

    def sequential(seed: int) -> list:
        settings = SampleSettings(k=1, max_attempts=1, **common)  # one sample per call, as SEAL's driver
        return [
            sample_self_edits(generator, messages, parse_self_edit, settings, seed=seed * 1000 + i).attempts[0]
            for i in range(args.k)
        ]

    totals = {name: {"seconds": 0.0, "tokens": 0, "accepted": 0, "samples": 0} for name in ("batched", "sequential")}
    sides = {"batched": batched, "sequential": sequential}
    for repeat in range(args.repeats):
        order = ["batched", "sequential"] if repeat % 2 == 0 else ["sequential", "batched"]
        for name in order:
            start = time.perf_counter()
            attempts = sides[name](args.seed + repeat)
            total = totals[name]
            total["seconds"] += time.perf_counter() - start
            total["tokens"] += sum(a.completion_tokens for a in attempts)
            total["accepted"] += sum(a.accepted for a in attempts)
            total["samples"] += len(attempts)
    b, s = totals["batched"], totals["sequential"]
    tps_b, tps_s = b["tokens"] / b["seconds"], s["tokens"] / s["seconds"]
    print(
        json.dumps(
            {
                "bench": "selfedit_sampling",
                "model": args.model,
                "dtype": args.dtype,
                "task": args.task,
                "k": args.k,
                "repeats": args.repeats,
                "max_new_tokens": args.max_new_tokens,
                "batched_seconds": round(b["seconds"], 2),
                "sequential_seconds": round(s["seconds"], 2),
                "speedup": round(s["seconds"] / b["seconds"], 2),
                "tokens_batched": b["tokens"],
                "tokens_sequential": s["tokens"],
                "tokens_per_s_batched": round(tps_b, 1),
                "tokens_per_s_sequential": round(tps_s, 1),
                "speedup_tokens_per_s": round(tps_b / tps_s, 2),
                "accepted_batched": b["accepted"],
                "accepted_sequential": s["accepted"],
                "samples_per_side": b["samples"],
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
