"""From answers to rewards in the knowledge domain: deterministic metrics always, verdicts when a judge is used.

One *round* is one TTT update of a self-edit followed by answers to every question of the passage (the unadapted
model's answers are a round too). Per question a round keeps the answer, its EM / F1 / contains, the gold-answer NLL
per token, and (with a judge) the verdict: a rubric label, or None while unscored. An evaluation averages its rounds.

Accuracy counts an answer correct by the judge's verdict or by a deterministic metric (`contains`, `em`). With a
judge, a question whose verdict is missing makes the accuracy of its round — and so the reward — None: an unscored
answer is no reward, never a 0, and it is counted (`unscored`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import fmean
from typing import Any

from grading.metrics import qa_metrics
from grading.rubrics import CORRECT

CORRECTNESS = ("judge", "contains", "em")
REWARDS = ("accuracy", "gain", "nll")


def make_round(
    answers: Sequence[str],
    golds: Sequence[Sequence[str]],
    nll: Sequence[float],
    *,
    judged: bool,
    verdicts: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """One round's per-question record. `judged`: a judge decides correctness (verdicts None = not graded yet)."""
    if not len(answers) == len(golds) == len(nll):
        raise ValueError(f"make_round: {len(answers)} answers, {len(golds)} golds, {len(nll)} NLL values")
    record: dict[str, Any] = {
        "answers": list(answers),
        "nll": [float(x) for x in nll],
        "metrics": [qa_metrics(a, g) for a, g in zip(answers, golds)],
    }
    if judged:
        record["verdicts"] = list(verdicts) if verdicts is not None else [None] * len(answers)
    return record


def round_accuracy(record: Mapping[str, Any], correct: str) -> float | None:
    if correct not in CORRECTNESS:
        raise ValueError(f"correct {correct!r}: expected one of {CORRECTNESS}")
    if not record["answers"]:
        return None
    if correct == "judge":
        verdicts = record.get("verdicts") or [None] * len(record["answers"])
        if any(v is None for v in verdicts):
            return None
        return fmean(1.0 if v == CORRECT else 0.0 for v in verdicts)
    return fmean(m[correct] for m in record["metrics"])


def summarize(rounds: Sequence[Mapping[str, Any]], correct: str) -> dict[str, Any]:
    """The evaluation's scores: means over rounds (and questions) of accuracy, EM, F1, contains and gold NLL."""
    accuracies = [round_accuracy(r, correct) for r in rounds]
    unscored = sum(1 for r in rounds for v in (r.get("verdicts") or []) if v is None)

    def metric(name: str) -> float | None:
        values = [m[name] for r in rounds for m in r["metrics"]]
        return fmean(values) if values else None

    nll = [x for r in rounds for x in r["nll"]]
    return {
        "accuracy": None if not accuracies or any(a is None for a in accuracies) else fmean(accuracies),  # type: ignore[arg-type]
        "correct_by": correct,
        "em": metric("em"),
        "f1": metric("f1"),
        "contains": metric("contains"),
        "nll": fmean(nll) if nll else None,
        "unscored": unscored,
        "rounds": len(rounds),
        "questions": len(rounds[0]["answers"]) if rounds else 0,
    }


def reward_of(scores: Mapping[str, Any], base: Mapping[str, Any] | None, kind: str) -> float | None:
    """accuracy (SEAL), gain over the unadapted model, or the decrease of the gold NLL. None: not scored."""
    if kind not in REWARDS:
        raise ValueError(f"reward {kind!r}: expected one of {REWARDS}")
    if kind == "accuracy":
        return scores.get("accuracy")
    if base is None:
        return None
    if kind == "gain":
        mine, theirs = scores.get("accuracy"), base.get("accuracy")
        return None if mine is None or theirs is None else mine - theirs
    mine, theirs = scores.get("nll"), base.get("nll")
    return None if mine is None or theirs is None else theirs - mine


def item_id(prefix: str, round_index: int, question: int) -> str:
    """A question's grading id under an evaluation's prefix: `it0/p0017.k1/r2/q3`."""
    return f"{prefix}/r{round_index}/q{question}"


def fill_verdicts(rounds: Sequence[Mapping[str, Any]], verdicts: Mapping[str, str | None], prefix: str) -> list[dict]:
    """The rounds with the verdicts of `verdicts` (item id → label or None) written in; ids absent stay None."""
    out = []
    for r, record in enumerate(rounds):
        filled = dict(record)
        filled["verdicts"] = [verdicts.get(item_id(prefix, r, q)) for q in range(len(record["answers"]))]
        out.append(filled)
    return out
