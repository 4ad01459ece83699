"""Test-time training on one passage, end to end: plain-text sequences → reset → train → answers + gold NLL. The
twin of `ttt.arc_ttt.run_task` for knowledge incorporation (seal-reference §B4), without its defects: no padding
(SEAL pads every sequence to 2048 tokens with the loss on the padding), seeds given, failures raised rather than
turned into empty answers.

The caller renders the questions' prompts (the wording is the domain's) and scores the answers (grading); here the
model answers each question greedily and the gold answer's negative log-likelihood per token is computed by teacher
forcing, with no generation: the most sensitive judge-free signal at small scale. Plain functions over in-memory
objects; timings split into data, reset, train_compute, train_other, generate, nll, total.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ttt.examples import EncodedExample, encode_completion, encode_messages, encode_text
from ttt.generate.base import ACTIVE_ADAPTER, GenerationRequest, Generator
from ttt.settings import TrainSettings
from ttt.train import _autocast, pack_examples, packed_loss_sum, resolve_precision, train


def seal_passage_train() -> TrainSettings:
    """SEAL §B4: 10 epochs, lr 1e-3, batch 1, no accumulation, linear schedule, no warmup, no step cap."""
    return TrainSettings(
        lr=1e-3, epochs=10, batch_size=1, grad_accum=1, warmup_steps=0, lr_schedule="linear", max_steps_cap=None
    )


@dataclass(frozen=True)
class QAItem:
    """One question, its prompt already rendered (completion-style text, or chat messages), and its gold answers;
    the NLL is the first gold answer's."""

    prompt: str | tuple[Mapping[str, str], ...]
    gold: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.gold or not self.gold[0]:
            raise ValueError("QAItem: at least one non-empty gold answer is needed")


@dataclass(frozen=True)
class PassageRecipe:
    """How one passage is learnt and asked. Defaults: SEAL's inner loop."""

    train: TrainSettings = field(default_factory=seal_passage_train)
    loss_start: str | None = None  # None: loss on every token of a sequence; else after this substring
    max_new_tokens: int = 64  # answers are greedy
    # A base model keeps writing after its answer (the next question, say): completion-style answers end at the
    # line's end. Chat-style answers end at the end of the turn; give () then.
    stop: tuple[str, ...] = ("\n",)
    skip_training: bool = False


@dataclass
class PassageBaseline:
    """The unadapted model's answers and gold NLL for a passage: computed once per model, shared by its self-edits."""

    answers: list[str]
    nll: list[float]
    timings: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"answers": self.answers, "nll": self.nll, "timings": self.timings}


@dataclass
class PassageOutcome:
    answers: list[str]
    nll: list[float]
    train: dict[str, Any]
    data_stats: dict[str, int]
    timings: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "answers": self.answers,
            "nll": self.nll,
            "train": self.train,
            "data": self.data_stats,
            "timings": self.timings,
        }


# ------------------------------------------------------------------------------------------------------------------
# Answers and gold NLL


def gold_example(tokenizer: Any, question: QAItem) -> EncodedExample:
    """The question's prompt followed by its first gold answer, the loss on the answer's tokens only.

    Completion style: the prompt ends with "Answer:" and the gold follows after one space, as a model would
    write it. Chat style: the gold is the assistant's reply; its end-of-turn token carries no loss (the NLL is the
    answer's, not the turn's)."""
    gold = question.gold[0]
    if isinstance(question.prompt, str):
        return encode_completion(tokenizer, question.prompt, " " + gold.strip(), add_eos=False)
    messages = [*(dict(m) for m in question.prompt), {"role": "assistant", "content": gold}]
    example = encode_messages(tokenizer, messages, loss="output_tokens")
    return EncodedExample(example.input_ids[:-1], example.labels[:-1])  # drop the end-of-turn token


def _model_of(slot_or_model: Any) -> Any:
    return getattr(slot_or_model, "model", slot_or_model)


@torch.no_grad()
def gold_nll(slot_or_model: Any, examples: Sequence[EncodedExample], *, dtype: str = "auto") -> list[float]:
    """Mean NLL per gold token of each example, with the weights as they are (the caller chooses the adapter)."""
    model = _model_of(slot_or_model)
    device = next(model.parameters()).device
    precision = resolve_precision(dtype, device)
    was_training = model.training
    model.eval()
    out = []
    try:
        for example in examples:
            batch = pack_examples([example], device)
            with _autocast(precision, device):
                total = float(packed_loss_sum(model, batch))
            out.append(total / max(1, batch.num_loss_tokens))
    finally:
        model.train(was_training)
    return out


def answer_and_score(
    slot: Any,
    tokenizer: Any,
    generator: Generator,
    questions: Sequence[QAItem],
    *,
    adapter: str | None,
    max_new_tokens: int = 64,
    stop: tuple[str, ...] = ("\n",),
    dtype: str = "auto",
    timings: dict[str, float] | None = None,
) -> tuple[list[str], list[float]]:
    """Greedy answers (one batched generate call) and the gold NLL of every question. `adapter`: None = the base
    model (the slot's adapter bypassed), ACTIVE_ADAPTER = the slot's current weights, or a saved adapter folder
    (loaded into the slot, which keeps it)."""
    if not questions:
        return [], []
    t = time.perf_counter()
    requests = [
        GenerationRequest(text=q.prompt, adapter=adapter, max_new_tokens=max_new_tokens, stop=stop)
        if isinstance(q.prompt, str)
        else GenerationRequest(q.prompt, adapter=adapter, max_new_tokens=max_new_tokens, stop=stop)
        for q in questions
    ]
    answers = [output.text.strip() for output in generator.generate(requests)]
    generated = time.perf_counter()
    examples = [gold_example(tokenizer, q) for q in questions]
    bypass = slot.disabled() if adapter is None and hasattr(slot, "disabled") else nullcontext()
    with bypass:
        nll = gold_nll(slot, examples, dtype=dtype)
    if timings is not None:
        timings["generate"] = timings.get("generate", 0.0) + generated - t
        timings["nll"] = timings.get("nll", 0.0) + time.perf_counter() - generated
    return answers, nll


def passage_baseline(
    slot: Any, tokenizer: Any, generator: Generator, questions: Sequence[QAItem], recipe: PassageRecipe
) -> PassageBaseline:
    """The no-adapter answers and gold NLL (the adapter is bypassed, not reset: the slot is left as it was)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    answers, nll = answer_and_score(
        slot,
        tokenizer,
        generator,
        questions,
        adapter=None,
        max_new_tokens=recipe.max_new_tokens,
        stop=recipe.stop,
        dtype=recipe.train.dtype,
        timings=timings,
    )
    timings["total"] = time.perf_counter() - started
    return PassageBaseline(answers, nll, timings)


# ------------------------------------------------------------------------------------------------------------------
# The inner loop


def encode_sequences(tokenizer: Any, sequences: Sequence[str], loss_start: str | None) -> list[EncodedExample]:
    """Training sequences as plain text; with `loss_start`, a sequence without that substring keeps a full loss."""
    out = []
    for text in sequences:
        start: int | str = loss_start if loss_start is not None and loss_start in text else 0
        out.append(encode_text(tokenizer, text, loss_start=start))
    return out


def run_passage(
    slot: Any,
    tokenizer: Any,
    generator: Generator,
    sequences: Sequence[str],
    questions: Sequence[QAItem],
    recipe: PassageRecipe,
    seed: int,
) -> PassageOutcome:
    """Reset the adapter in place, train it on `sequences` (padding-free), answer `questions` with it and compute
    their gold NLL. `seed` drives the training order (and dropout); every run starts from the slot's one
    initialisation, so equal seeds give equal results."""
    if not sequences and not recipe.skip_training:
        raise ValueError("run_passage: no training sequences given")
    started = time.perf_counter()
    timings: dict[str, float] = {}

    t = time.perf_counter()
    examples = encode_sequences(tokenizer, sequences, recipe.loss_start)
    timings["data"] = time.perf_counter() - t

    t = time.perf_counter()
    slot.reset()
    timings["reset"] = time.perf_counter() - t

    settings = replace(recipe.train, seed=seed, epochs=0 if recipe.skip_training else recipe.train.epochs)
    trained = train(slot, examples, settings)
    timings["train_compute"] = trained.forward_backward_seconds
    timings["train_other"] = trained.seconds - trained.forward_backward_seconds

    answers, nll = answer_and_score(
        slot,
        tokenizer,
        generator,
        questions,
        adapter=ACTIVE_ADAPTER,
        max_new_tokens=recipe.max_new_tokens,
        stop=recipe.stop,
        dtype=recipe.train.dtype,
        timings=timings,
    )
    timings["total"] = time.perf_counter() - started
    metrics = {
        "steps": trained.steps,
        "epochs_run": trained.epochs_run,
        "examples": trained.examples,
        "skipped_too_long": trained.skipped_too_long,
        "tokens": trained.tokens,
        "loss_tokens": trained.loss_tokens,
        "loss_first": trained.losses[0] if trained.losses else None,
        "loss_last": trained.losses[-1] if trained.losses else None,
        "seconds": trained.seconds,
        "peak_memory_bytes": trained.peak_memory_bytes,
        "peak_memory_kind": trained.peak_memory_kind,
        "precision": trained.precision,
    }
    stats = {"sequences": len(examples), "tokens": sum(e.num_tokens for e in examples)}
    return PassageOutcome(answers, nll, metrics, stats, timings)
