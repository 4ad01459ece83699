"""The memory plan (ttt/memory_plan.py) against peaks measured on this machine, and the README's table of
predicted fits for 1B, 3B and 7B models at T4 and A100 settings.

    python bench/memory_plan.py [--quick]

Each measured point runs in a fresh process (MALLOC_MMAP_THRESHOLD_=1048576, so glibc returns freed activations and
the peak is stable): the model is loaded, VmHWM is reset through /proc/self/clear_refs, then one LoRA training step
(this project's loop) or one batched generation runs, and VmHWM is the measured peak of the whole process. Points run
in fp32, and the last five in bf16 as a bf16 CPU runs them (bf16 base weights, fp32 LoRA and LoRA sums, autocast).
The prediction for the same shape and sizes comes from ttt/memory_plan.py. Target: every point within ±15 %.
Last line: {"bench": "memory_plan", "max_abs_error": …, "within_15_percent": …, "points": [...], "table": [...]}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

WORKER = r"""
import json, sys
import torch
torch.set_num_threads(1)
spec = json.loads(sys.argv[1])
from ttt.models import load_model

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024

dtype = spec.get("dtype", "fp32")  # bf16: base weights in bf16, as load_worker_model builds them on a bf16 CPU
model, tokenizer = load_model(spec["model"], dtype=torch.bfloat16 if dtype == "bf16" else None)
if spec["kind"] == "train":
    from ttt.examples import EncodedExample
    from ttt.lora import AdapterSlot, LoraSettings
    from ttt.train import TrainSettings, train

    slot = AdapterSlot(model, LoraSettings(rank=spec["rank"], targets=tuple(spec["targets"])))
    n, loss = spec["tokens"], spec["loss_tokens"]
    ids = tuple(int(x) for x in torch.randint(10, 1000, (n,)))
    example = EncodedExample(ids, (-100,) * (n - loss) + ids[n - loss :])
    settings = TrainSettings(epochs=1, batch_size=1, max_len=n + 1, packing="sequential", warmup_steps=0,
                             grad_checkpointing=spec["ckpt"], dtype=dtype)
    open("/proc/self/clear_refs", "w").write("5")
    train(slot, [example], settings)
else:
    from ttt.generate import GenerationRequest
    from ttt.generate.hf import HFGenerator

    if dtype == "bf16":  # as the workers generate: with the task's adapter attached (fp32 LoRA sums)
        from ttt.lora import AdapterSlot, LoraSettings

        model = AdapterSlot(model, LoraSettings(rank=spec["rank"]))
    generator = HFGenerator(model, tokenizer, max_batch_size=spec["rows"])
    ids = [int(x) for x in torch.randint(10, 1000, (spec["prompt"],))]
    text = tokenizer.decode(ids)
    requests = [GenerationRequest(text=f"{i} {text}", max_new_tokens=spec["new"]) for i in range(spec["rows"])]
    open("/proc/self/clear_refs", "w").write("5")
    out = generator.generate(requests)
    spec["prompt"] = out[0].prompt_tokens
print(json.dumps({"peak": hwm(), "prompt": spec.get("prompt")}))
"""


def _train(tokens: int, loss: int, rank: int, targets: tuple[str, ...] = ALL, ckpt: bool = False) -> dict:
    return {"kind": "train", "model": "smollm2-135m", "tokens": tokens, "loss_tokens": loss, "rank": rank,
            "targets": targets, "ckpt": ckpt}  # fmt: skip


POINTS = [
    _train(256, 256, 16),
    _train(1024, 1024, 32),
    _train(2048, 256, 16),  # a loss on the last eighth only: logits are computed at loss positions
    _train(2048, 2048, 16, ckpt=True),
    _train(1024, 1024, 32, targets=("q_proj", "v_proj")),
    # held out: sizes the formula's constants were not fitted to
    {**_train(512, 128, 64), "held_out": True},
    {**_train(1536, 1536, 8, targets=("q_proj", "v_proj"), ckpt=True), "held_out": True},
    {"kind": "generate", "model": "smollm2-135m", "rows": 8, "prompt": 512, "new": 32},
    {"kind": "generate", "model": "smollm2-135m", "rows": 2, "prompt": 1536, "new": 64},
    # bf16 as a bf16 CPU runs it (bf16 base weights, fp32 LoRA and LoRA sums, autocast): the plan's CPU-bf16 terms
    {**_train(256, 256, 16), "dtype": "bf16"},
    {**_train(1024, 1024, 32), "dtype": "bf16"},
    {**_train(2048, 256, 16), "dtype": "bf16"},
    {**_train(2048, 2048, 16, ckpt=True), "dtype": "bf16"},
    {"kind": "generate", "model": "smollm2-135m", "rows": 8, "prompt": 512, "new": 32, "rank": 16, "dtype": "bf16"},
]
QUICK = [POINTS[0], POINTS[5], POINTS[9]]


def measure(point: dict) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(point)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"measurement {point} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def predict(point: dict, prompt: int | None) -> int:
    from ttt.memory_plan import generation_peak, shape_of, training_peak
    from ttt.models import resolve_model
    from ttt.settings import SEAL_TARGETS

    shape = shape_of(point["model"], resolve_model(point["model"]))
    dtype = point.get("dtype", "fp32")
    if point["kind"] == "train":
        terms = training_peak(
            shape,
            tokens=point["tokens"],
            loss_tokens=point["loss_tokens"],
            rank=point["rank"],
            targets=tuple(point["targets"]),
            dtype=dtype,
            grad_checkpointing=point["ckpt"],
            device="cpu",
        )
    else:
        rows, new = point["rows"], point["new"]
        lora = shape.lora_parameters(point["rank"], SEAL_TARGETS) if "rank" in point else 0
        terms = generation_peak(
            shape, rows=rows, prompt_tokens=prompt or point["prompt"], new_tokens=new, dtype=dtype, device="cpu",
            lora=lora,
        )  # fmt: skip
    return terms.total


def table() -> list[dict]:
    from runners.config import load_config
    from runners.memory_check import plan
    from ttt.memory_plan import GIB

    rows = []
    models = ("meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct", "Qwen/Qwen2.5-7B")
    for experiment in ("arc_ttt_oracle", "knowledge_seal"):
        for model in models:
            for profile in ("t4", "a100-40", "a100-80"):
                result = plan(load_config(experiment, profile, [f"model.spec={model}"]))
                assert result is not None
                rows.append(
                    {
                        "experiment": experiment,
                        "model": model,
                        "profile": profile,
                        "peak_gib": round(result.worst.total / GIB, 2),
                        "worst_phase": result.worst.phase,
                        "budget_gib": round(result.budget / GIB, 1),
                        "fits": result.fits,
                        "advice": result.advice,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="three points instead of fourteen")
    parser.add_argument("--table-only", action="store_true", help="only the predicted table (no measurement)")
    args = parser.parse_args()
    if args.table_only:
        print(json.dumps({"bench": "memory_plan", "table": table()}))
        return
    points = []
    for point in QUICK if args.quick else POINTS:
        measured = measure(point)
        predicted = predict(point, measured.get("prompt"))
        error = (predicted - measured["peak"]) / measured["peak"]
        points.append(
            {
                **point,
                "measured_mib": round(measured["peak"] / 2**20),
                "predicted_mib": round(predicted / 2**20),
                "error": round(error, 4),
            }
        )
        print(json.dumps(points[-1]), flush=True)
    worst = max(abs(p["error"]) for p in points)
    print(
        json.dumps(
            {
                "bench": "memory_plan",
                "max_abs_error": round(worst, 4),
                "within_15_percent": worst <= 0.15,
                "points": points,
                "table": table(),
            }
        )
    )


if __name__ == "__main__":
    main()
