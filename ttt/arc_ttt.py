"""Test-time training on one ARC task, end to end: TTT data → reset → train → batched augmented inference → vote
→ score. The SEAL loop calls this once per self-edit (with the recipe the self-edit asks for); the oracle pipeline
calls it once per task with a fixed recipe.

Plain functions over in-memory objects: no files, no config, no run directory. Timings are split so that the
share of wall time not spent in forward, backward or generation can be measured.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ttt.arc import ArcTask, TTTDataSettings, ViewSettings, build_ttt_data, make_views, score_task, vote
from ttt.examples import count_tokens, encode_messages
from ttt.generate.base import ACTIVE_ADAPTER, GenerationRequest, Generator
from ttt.lora import AdapterSlot
from ttt.train import TrainSettings, train


@dataclass(frozen=True)
class TaskRecipe:
    """How one task is adapted and queried. Defaults: SEAL's oracle recipe (all augmentation groups, output-token
    loss, lr 1e-4, 2 epochs) and SEAL's inference views and hierarchical vote."""

    data: TTTDataSettings = field(default_factory=TTTDataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    loss: str = "output_tokens"
    views: ViewSettings = field(default_factory=ViewSettings)
    vote: str = "hierarchical"
    max_new_tokens: int = 1024
    # Decoding constrained to these characters (e.g. a grid's alphabet and the answer's end mark); None: free.
    allowed_chars: str | None = None


@dataclass
class TaskOutcome:
    record: dict[str, Any]  # the scored task (attempts, votes, correctness, unparseable outputs)
    train: dict[str, Any]  # training metrics
    data_stats: dict[str, int]
    timings: dict[str, float]  # seconds: data, reset, train_compute, train_other, generate, vote, total
    outputs: list[dict[str, Any]] = field(default_factory=list)  # raw texts per view, for export and debugging

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.record,
            "train": self.train,
            "data": self.data_stats,
            "timings": self.timings,
            "outputs": self.outputs,
        }


def run_task(
    subtasks: Sequence[ArcTask],
    slot: AdapterSlot,
    tokenizer: Any,
    generator: Generator,
    recipe: TaskRecipe,
    seed: int,
    save_adapter_to: str | Path | None = None,
    *,
    view_seed: int | None = None,
    train_on: ArcTask | None = None,
    stop_if_capped: bool = False,
) -> TaskOutcome:
    """Adapt `slot` to the task whose test inputs are `subtasks` (all share the demos), then answer every test.

    `seed` drives the TTT data and the training order; `view_seed` (default: `seed`) the inference views. The SEAL
    loop gives every self-edit of a task the same `view_seed`, so their rewards differ because of the self-edit,
    not because they were scored on other views.
    `train_on`: build the training data from this task's demos instead (the wrong-task control).
    `stop_if_capped`: when SEAL's step cap switches training off, return at once without answering (`solved` None,
    no tests): the caller already knows what the unadapted model answers.
    `save_adapter_to`: write the trained adapter to this folder and name it in the generation requests (what a
    generator outside this process, such as vLLM, needs); None generates from the adapter in memory."""
    if not subtasks:
        raise ValueError("run_task: no sub-tasks given")
    view_seed = seed if view_seed is None else view_seed
    parent = subtasks[0].parent_id
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def measure(messages: list[dict[str, str]]) -> int:
        return count_tokens(tokenizer, messages)

    # 1. TTT data from the demos (identical for every test input of the task).
    t = time.perf_counter()
    data = build_ttt_data(train_on or subtasks[0], recipe.data, seed=seed, count_tokens=measure)
    examples = [encode_messages(tokenizer, messages, loss=recipe.loss) for messages in data.messages]  # type: ignore[arg-type]
    timings["data"] = time.perf_counter() - t

    # 2. A fresh adapter, in place: no reload of the base model. Every task starts from the slot's one
    #    initialisation (as SEAL does); the per-task seed drives data and batch order only.
    t = time.perf_counter()
    slot.reset()
    timings["reset"] = time.perf_counter() - t

    # 3. Train.
    trained = train(slot, examples, replace(recipe.train, seed=seed))
    timings["train_compute"] = trained.forward_backward_seconds
    timings["train_other"] = trained.seconds - trained.forward_backward_seconds
    if stop_if_capped and trained.capped:
        timings["total"] = time.perf_counter() - started
        unanswered = {"task_id": parent, "solved": None, "tests": []}
        return TaskOutcome(unanswered, _train_metrics(trained), dict(data.stats), timings, [])

    adapter = ACTIVE_ADAPTER
    if save_adapter_to is not None:
        t = time.perf_counter()
        adapter = str(slot.save(save_adapter_to))
        timings["save"] = time.perf_counter() - t

    # 4. Every view of every test input in one batched generate call.
    t = time.perf_counter()
    views_per_test = [make_views(sub, recipe.views, seed=view_seed, count_tokens=measure) for sub in subtasks]
    requests = [
        GenerationRequest(
            view.messages, adapter=adapter, max_new_tokens=recipe.max_new_tokens, allowed_chars=recipe.allowed_chars
        )
        for views in views_per_test
        for view in views
    ]
    timings["views"] = time.perf_counter() - t
    t = time.perf_counter()
    outputs = generator.generate(requests) if requests else []
    timings["generate"] = time.perf_counter() - t

    # 5. Vote per test input and score the task.
    t = time.perf_counter()
    results, raw, position = [], [], 0
    for sub, views in zip(subtasks, views_per_test):
        texts = [outputs[position + i].text for i in range(len(views))]
        position += len(views)
        results.append((sub, vote(list(zip(views, texts)), grid_format=recipe.views.grid_format, method=recipe.vote)))
        raw.extend({"test": sub.task_id, "view": v.key, "text": text} for v, text in zip(views, texts))
    record = score_task(parent, results).to_dict()
    timings["vote"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started

    return TaskOutcome(record, _train_metrics(trained), dict(data.stats), timings, raw)


def _train_metrics(trained: Any) -> dict[str, Any]:
    return {
        "steps": trained.steps,
        "epochs_run": trained.epochs_run,
        "capped": trained.capped,
        "examples": trained.examples,
        "skipped_too_long": trained.skipped_too_long,
        "tokens": trained.tokens,
        "loss_first": trained.losses[0] if trained.losses else None,
        "loss_last": trained.losses[-1] if trained.losses else None,
        "seconds": trained.seconds,
        "peak_memory_bytes": trained.peak_memory_bytes,
        "peak_memory_kind": trained.peak_memory_kind,
        "precision": trained.precision,
    }
