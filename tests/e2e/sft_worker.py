"""Run `train_sft` in its own process, so a test can SIGKILL it mid-run: `python -m tests.e2e.sft_worker SPEC.json`.

SPEC: {"model_path", "rows": [[input_ids, labels], ...], "settings": {SftSettings fields}, "work_dir",
"progress": a JSON-lines file that hears of every step and save, "result": where the SftResult goes as JSON}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ttt.examples import EncodedExample
from ttt.sft import SftSettings, train_sft


def main(spec_path: str) -> None:
    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"])
    rows = [EncodedExample(tuple(ids), tuple(labels)) for ids, labels in spec["rows"]]
    settings = SftSettings(**{k: tuple(v) if k == "targets" else v for k, v in spec["settings"].items()})
    with open(spec["progress"], "a", buffering=1) as progress:

        def report(event: str, step: int) -> None:
            progress.write(json.dumps({"event": event, "step": step}) + "\n")
            progress.flush()

        result = train_sft(spec["model_path"], tokenizer, rows, settings, Path(spec["work_dir"]), progress=report)
    Path(spec["result"]).write_text(
        json.dumps(
            {
                "losses": result.losses,
                "learning_rates": result.learning_rates,
                "steps": result.steps,
                "resumed_from_step": result.resumed_from_step,
                "checkpoint_steps": result.checkpoint_steps,
                "checkpoint_interval_steps": result.checkpoint_interval_steps,
                "save_share": result.save_share,
                "adapter_dir": str(result.adapter_dir),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
