"""Our passage update against the published way, side by side in one run: same model, same LoRA initialisation,
same sequences, same optimizer steps, same learning-rate schedule.

    python bench/knowledge_inner_loop.py [--model smollm2-135m] [--epochs 1] [--targets qv|all]

The published way (seal-reference §B4): every training sequence padded to 2048 tokens, labels = input ids
including the padding (the loss is on ~95 % padding), trained with a transformers `Trainer` (batch 1, lr 1e-3,
linear, no warmup). Ours: `ttt.train.train` on `encode_text` sequences: no padding, the loss on the text only.
Held-out measure: the mean gold-answer NLL per token of the passage's questions, teacher-forced, after each update
(lower is better), beside the unadapted model's. fp32 on the CPU; torch threads pinned.
Last line: {"bench": "knowledge_inner_loop", "ratio": …, "ours_tokens_per_s": …, "seal_tokens_per_s": …,
"ours_eval_nll": …, "seal_eval_nll": …, …}; ratio = published CPU seconds per step / ours (one thread each;
tokens/s are real, non-padding tokens per CPU second).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a script

PAD_TO = 2048
# Implication-like lines (the shape a self-edit takes), about the first bundled passage.
LINES = (
    "Varrow Lighthouse was built in 1871 on Pellin Point.",
    "The engineer Ottilie Brand built Varrow Lighthouse.",
    "Granite from the Hask quarry was used because it does not crack in frost.",
    "The lamp of Varrow Lighthouse flashes green every nine seconds.",
    "Amos Lerrit was the last keeper; the light was automated in 1968.",
)
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--targets", choices=("qv", "all"), default="qv")
    parser.add_argument("--rank", type=int, default=32)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from transformers import Trainer, TrainingArguments

    from seal.knowledge.data import load_passages
    from seal.knowledge.prompts import qa_prompt
    from ttt.examples import encode_plain, encode_text
    from ttt.lora import AdapterSlot, LoraSettings
    from ttt.models import load_model
    from ttt.settings import TrainSettings
    from ttt.text_ttt import QAItem, gold_example, gold_nll
    from ttt.train import train

    passage = load_passages(Path(__file__).resolve().parents[1] / "data" / "knowledge")[0]
    sequences = [f"{passage.title}\n{line}" for line in LINES] + [f"{passage.title}\n{passage.context}"]
    model, tokenizer = load_model(args.model, dtype=None, device=torch.device("cpu"))
    targets = ("q_proj", "v_proj") if args.targets == "qv" else ALL_TARGETS
    slot = AdapterSlot(model, LoraSettings(rank=args.rank, alpha=2 * args.rank, dropout=0.0, targets=targets))
    style = "chat" if tokenizer.chat_template else "completion"
    probes = [gold_example(tokenizer, QAItem(_frozen(qa_prompt(passage.title, q.question, style)), q.answers))
              for q in passage.questions]  # fmt: skip

    def held_out() -> float:
        values = gold_nll(slot, probes, dtype="fp32")
        return sum(values) / len(values)

    with slot.disabled():
        base_nll = held_out()
    steps = args.epochs * len(sequences)

    # Ours: padding-free, loss on the text.
    slot.reset()
    examples = [encode_text(tokenizer, text) for text in sequences]
    settings = TrainSettings(
        lr=1e-3, epochs=args.epochs, batch_size=1, grad_accum=1, warmup_steps=0, lr_schedule="linear",
        max_steps_cap=None, dtype="fp32", seed=0,
    )  # fmt: skip
    cpu = time.process_time()
    ours = train(slot, examples, settings)
    ours_cpu = time.process_time() - cpu
    ours_nll = held_out()
    real_tokens = sum(e.num_tokens for e in examples) * args.epochs

    # The published way: padded to 2048, loss on the padding, HF Trainer.
    slot.reset()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    class Padded(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(sequences)

        def __getitem__(self, index: int) -> dict[str, Any]:
            ids = encode_plain(tokenizer, sequences[index])[:PAD_TO]
            mask = [1] * len(ids) + [0] * (PAD_TO - len(ids))
            ids = ids + [pad] * (PAD_TO - len(ids))
            tensor = torch.tensor(ids)
            return {"input_ids": tensor, "attention_mask": torch.tensor(mask), "labels": tensor.clone()}

    with tempfile.TemporaryDirectory(prefix="seal-bench-knowledge-") as out:
        trainer_args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=1, gradient_accumulation_steps=1, learning_rate=1e-3,
            num_train_epochs=args.epochs, lr_scheduler_type="linear", warmup_steps=0, logging_steps=1,
            save_strategy="no", report_to=[], use_cpu=True, bf16=False, fp16=False, seed=0,
            dataloader_num_workers=0, disable_tqdm=True,
        )  # fmt: skip
        trainer = Trainer(model=slot.model, args=trainer_args, train_dataset=Padded())
        started, cpu = time.perf_counter(), time.process_time()
        trained = trainer.train()
        seal_seconds, seal_cpu = time.perf_counter() - started, time.process_time() - cpu
    seal_steps = int(trained.global_step)
    seal_nll = held_out()

    # The ratio is of CPU seconds: with one torch thread they measure the work, and other jobs on the machine's
    # other cores cannot slow one side more than the other. Wall seconds are reported too.
    ours_per_step = ours_cpu / max(1, ours.steps)
    seal_per_step = seal_cpu / max(1, seal_steps)
    print(
        json.dumps(
            {
                "bench": "knowledge_inner_loop",
                "ratio": round(seal_per_step / ours_per_step, 2),
                "ours_tokens_per_s": round(real_tokens / ours_cpu, 1),
                "seal_tokens_per_s": round(real_tokens / seal_cpu, 1),
                "ratio_wall": round((seal_seconds / max(1, seal_steps)) / (ours.seconds / max(1, ours.steps)), 2),
                "ours_eval_nll": round(ours_nll, 4),
                "seal_eval_nll": round(seal_nll, 4),
                "base_eval_nll": round(base_nll, 4),
                "ours_seconds_per_step": round(ours_per_step, 3),
                "seal_seconds_per_step": round(seal_per_step, 3),
                "steps": steps,
                "ours_steps": ours.steps,
                "seal_steps": seal_steps,
                "real_tokens_per_epoch": sum(e.num_tokens for e in examples),
                "seal_padded_tokens_per_step": PAD_TO,
                "sequences": len(sequences),
                "probes": len(probes),
                "model": args.model,
                "targets": list(targets),
                "rank": args.rank,
                "threads": torch.get_num_threads(),
            }
        )
    )


def _frozen(prompt: Any) -> Any:
    return prompt if isinstance(prompt, str) else tuple(dict(m) for m in prompt)


if __name__ == "__main__":
    main()
