"""ReST-EM behaviour cloning killed with SIGKILL and resumed: what a kill costs, and whether it changes anything.

    python bench/sft_resume.py [--model tiny|smollm2-135m] [--rows 16] [--epochs 8] [--save-every N] [--kill-at 0.5]

Runs `ttt.sft.train_sft` three times in subprocesses, each in its own temporary folder: once uninterrupted, once
SIGKILLed when `--kill-at` of its steps are done (and at least one checkpoint exists), and once more in the killed
run's folder, which resumes from the newest complete checkpoint. Checkpoints are spaced by the adaptive rule (saving
costs at most `save_overhead` = 10 % of training time) unless `--save-every` forces a fixed interval.

steps_redone: steps the killed run had finished minus the step the resumed run started from (target: at most one
checkpoint interval). checkpoint_interval: the spacing of the killed run's saves up to the kill (the widest gap,
counting from step 0). identical_losses / identical_adapters: the resumed run's per-step losses, learning rates and
final adapter equal the uninterrupted run's exactly. save_share: the uninterrupted run's checkpoint time over its
training time.

Last line: {"bench": "sft_resume", "steps_redone": …, "checkpoint_interval": …, "identical_losses": …, …}
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import itertools
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

THREADS = 1
REPO = Path(__file__).resolve().parents[1]


def _rows(tokenizer: Any, count: int) -> list[list[list[int]]]:
    """Small ARC-like chat rows with real completion masks, as [input_ids, labels] lists."""
    from ttt.examples import encode_messages

    rows = []
    for index in range(count):
        grid = [[(index + r * 3 + c) % 10 for c in range(3)] for r in range(2)]
        flipped = [row[::-1] for row in grid]
        messages = [
            {"role": "system", "content": "Figure out the underlying transformation and apply it to the test case."},
            {"role": "user", "content": f"{grid} -> "},
            {"role": "assistant", "content": f"{flipped}#"},
        ]
        encoded = encode_messages(tokenizer, messages)
        rows.append([list(encoded.input_ids), list(encoded.labels)])
    return rows


# ------------------------------------------------------------------------------------------------------------------
# The worker: one train_sft call in this process


def worker(spec_path: str) -> None:
    from transformers import AutoTokenizer

    from ttt.examples import EncodedExample
    from ttt.sft import SftSettings, train_sft

    torch.set_num_threads(THREADS)
    spec = json.loads(Path(spec_path).read_text())
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"])
    rows = [EncodedExample(tuple(ids), tuple(labels)) for ids, labels in spec["rows"]]
    with open(spec["progress"], "a", buffering=1) as progress:

        def report(event: str, step: int) -> None:
            progress.write(json.dumps({"event": event, "step": step, "t": time.monotonic()}) + "\n")
            progress.flush()

        settings = SftSettings(**spec["settings"])
        result = train_sft(spec["model_path"], tokenizer, rows, settings, Path(spec["work_dir"]), progress=report)
    from safetensors.torch import load_file

    adapter = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    digest = {key: adapter[key].double().sum().item() for key in sorted(adapter)}
    Path(spec["result"]).write_text(
        json.dumps(
            {
                "losses": result.losses,
                "learning_rates": result.learning_rates,
                "steps": result.steps,
                "resumed_from_step": result.resumed_from_step,
                "checkpoint_steps": result.checkpoint_steps,
                "save_share": result.save_share,
                "save_seconds": result.save_seconds,
                "train_seconds": result.train_seconds,
                "adapter_dir": str(result.adapter_dir),
                "adapter_sums": digest,
                "precision": result.precision,
            }
        )
    )


# ------------------------------------------------------------------------------------------------------------------
# The driver


def _spawn(spec: dict[str, Any], folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(folder / "stderr.txt", "ab") as stderr:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(folder / "spec.json")],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _events(path: Path) -> list[dict[str, Any]]:
    events = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # torn by the kill
    return events


def _finish(proc: subprocess.Popen[bytes], folder: Path, spec: dict[str, Any]) -> dict[str, Any]:
    if proc.wait(timeout=3600) != 0:
        raise SystemExit(f"worker failed:\n{(folder / 'stderr.txt').read_text()[-4000:]}")
    return json.loads(Path(spec["result"]).read_text())


def _kill_when(proc: subprocess.Popen[bytes], progress: Path, kill_step: int) -> list[dict[str, Any]]:
    """SIGKILL the worker once it has done `kill_step` steps and saved at least one checkpoint."""
    while proc.poll() is None:
        events = _events(progress)
        steps = [e["step"] for e in events if e["event"] == "step"]
        saves = [e["step"] for e in events if e["event"] == "save"]
        if saves and steps and steps[-1] >= kill_step:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise SystemExit("the run finished before it could be killed: raise --epochs or lower --kill-at")
    return _events(progress)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from ttt.models import resolve_model

    model_path = resolve_model(args.model)  # builds or converts once into the cache; not timed
    rows = _rows(AutoTokenizer.from_pretrained(model_path), args.rows)
    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "save_every_steps": args.save_every,
        "max_len": 8192,
    }
    total_steps = args.epochs * -(-args.rows // args.batch_size)
    with tempfile.TemporaryDirectory(prefix="seal-bench-sft-") as tmp:
        root = Path(tmp)

        def spec(name: str) -> dict[str, Any]:
            return {
                "model_path": model_path,
                "rows": rows,
                "settings": settings,
                "work_dir": str(root / name / "work"),
                "progress": str(root / name / "progress.jsonl"),
                "result": str(root / name / "result.json"),
            }

        reference_spec, killed_spec = spec("reference"), spec("killed")
        reference = _finish(_spawn(reference_spec, root / "reference"), root / "reference", reference_spec)
        events = _kill_when(
            _spawn(killed_spec, root / "killed"),
            Path(killed_spec["progress"]),
            max(1, round(args.kill_at * total_steps)),
        )
        done_when_killed = max(e["step"] for e in events if e["event"] == "step")
        saves_before_kill = [e["step"] for e in events if e["event"] == "save"]
        killed_spec["result"] = str(root / "killed" / "resumed.json")
        resumed = _finish(_spawn(killed_spec, root / "killed"), root / "killed", killed_spec)

    marks = [0, *saves_before_kill]
    resumed_from = resumed["resumed_from_step"]
    return {
        "bench": "sft_resume",
        "steps_redone": done_when_killed - resumed_from if resumed_from is not None else done_when_killed,
        "checkpoint_interval": max(b - a for a, b in itertools.pairwise(marks)),
        "identical_losses": resumed["losses"] == reference["losses"]
        and resumed["learning_rates"] == reference["learning_rates"],
        "identical_adapters": resumed["adapter_sums"] == reference["adapter_sums"],
        "save_share": round(reference["save_share"], 4),
        "steps": reference["steps"],
        "model": args.model,
        "killed_at_step": done_when_killed,
        "resumed_from_step": resumed_from,
        "saves_before_kill": saves_before_kill,
        "reference_checkpoint_steps": reference["checkpoint_steps"],
        "interval_rule": f"fixed {args.save_every}" if args.save_every else "adaptive (save_overhead 0.10)",
        "reference_train_seconds": round(reference["train_seconds"], 3),
        "reference_save_seconds": round(reference["save_seconds"], 4),
        "rows": args.rows,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "precision": reference["precision"],
        "threads": THREADS,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny", help="tiny (default) or smollm2-135m (the embedded real model)")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--save-every", type=int, default=None, help="force a fixed checkpoint interval (steps)")
    parser.add_argument("--kill-at", type=float, default=0.5, help="kill once this share of the steps is done")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.worker:
        worker(args.worker)
        return
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
