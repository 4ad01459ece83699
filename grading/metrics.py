"""Deterministic metrics that run on every item, with or without a judge.

QA: SQuAD normalisation (lower-case, drop punctuation and the articles a/an/the, collapse whitespace), exact
match, token F1 and "gold contained in prediction", each the best over the gold answers.

ARC: attempts are parsed into grids (ragged rows, values outside 0-9 and sizes over 30x30 are *unparseable*,
which is counted apart from a wrong grid); an item passes at k when one of its first k attempts equals one of
its gold grids in shape and values; a task is solved iff every one of its test items passes.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

Grid = tuple[tuple[int, ...], ...]

MAX_GRID_SIDE = 30
ARC_PASS_K = 2  # the ARC convention: two attempts per test output

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> bool:
    normalized = normalize_answer(prediction)
    return any(normalized == normalize_answer(gold) for gold in golds)


def _f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    if not prediction_tokens or not gold_tokens:
        # SQuAD's convention: two empty answers agree, one empty answer scores 0.
        return float(prediction_tokens == gold_tokens)
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    return max((_f1(prediction_tokens, normalize_answer(gold).split()) for gold in golds), default=0.0)


def gold_contained(prediction: str, golds: Sequence[str]) -> bool:
    """True when a normalised gold answer occurs in the normalised prediction as whole words."""
    padded = f" {normalize_answer(prediction)} "
    for gold in golds:
        normalized = normalize_answer(gold)
        if normalized and f" {normalized} " in padded:
            return True
    return False


def qa_metrics(prediction: str, golds: Sequence[str]) -> dict[str, float]:
    return {
        "em": float(exact_match(prediction, golds)),
        "f1": token_f1(prediction, golds),
        "contains": float(gold_contained(prediction, golds)),
    }


# ----------------------------------------------------------------------------------------------- ARC grids

_GRID_ROW = re.compile(r"[0-9](?:[ ,]*[0-9])*")


def _grid_from_rows(rows: Sequence[object]) -> tuple[Grid | None, str | None]:
    if not rows:
        return None, "empty grid"
    if len(rows) > MAX_GRID_SIDE:
        return None, f"{len(rows)} rows (more than {MAX_GRID_SIDE})"
    parsed: list[tuple[int, ...]] = []
    for row in rows:
        if not isinstance(row, (list, tuple)) or not row:
            return None, "a row is not a non-empty list"
        values: list[int] = []
        for value in row:
            # bool is an int subclass: reject it explicitly, a grid of true/false is not a grid.
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
                return None, f"value {value!r} outside 0-9"
            values.append(value)
        parsed.append(tuple(values))
    width = len(parsed[0])
    if width > MAX_GRID_SIDE:
        return None, f"{width} columns (more than {MAX_GRID_SIDE})"
    if any(len(row) != width for row in parsed):
        return None, "ragged rows"
    return tuple(parsed), None


def _grid_from_text(text: str) -> tuple[Grid | None, str | None]:
    stripped = text.strip()
    if not stripped:
        return None, "empty text"
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            return None, "text starts with '[' but is not valid JSON"
        if not isinstance(value, list):
            return None, "JSON value is not a list of rows"
        return _grid_from_rows(value)
    rows: list[list[int]] = []
    for line in stripped.splitlines():
        line = line.strip()
        if not line:
            continue
        if not _GRID_ROW.fullmatch(line):
            return None, f"line {line[:40]!r} is not a row of digits"
        rows.append([int(ch) for ch in line if ch.isdigit()])
    return _grid_from_rows(rows)


def parse_grid(value: object) -> tuple[Grid | None, str | None]:
    """Parse an attempt (list of rows, JSON text, or lines of digits) into a grid, or say why not."""
    if isinstance(value, str):
        return _grid_from_text(value)
    if isinstance(value, (list, tuple)):
        return _grid_from_rows(value)
    return None, f"attempt of type {type(value).__name__} is neither a grid nor text"


def arc_metrics(
    attempts: Sequence[object],
    golds: Sequence[Grid],
    k: int = ARC_PASS_K,
    outputs: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Per test item: pass@1, pass@k, how many attempts could not be parsed and, when the exporter counted them,
    how many of the model's outputs behind the attempts could not (they never became attempts)."""
    gold_set = set(golds)
    hits: list[bool] = []
    unparseable = 0
    for attempt in attempts:
        grid, _reason = parse_grid(attempt)
        if grid is None:
            unparseable += 1
        hits.append(grid is not None and grid in gold_set)
    metrics = {
        "pass@1": float(any(hits[:1])),
        f"pass@{k}": float(any(hits[:k])),
        "attempts": float(len(attempts)),
        "unparseable_attempts": float(unparseable),
    }
    if outputs is not None:
        metrics["outputs"] = float(outputs["total"])
        metrics["unparseable_outputs"] = float(outputs["unparseable"])
    return metrics


def tasks_solved(task_passes: Iterable[tuple[str, bool]]) -> dict[str, bool]:
    """A task is solved iff every one of its test items passes."""
    solved: dict[str, bool] = {}
    for task_id, passed in task_passes:
        solved[task_id] = solved.get(task_id, True) and passed
    return solved


def mean(values: Iterable[float]) -> float | None:
    collected = list(values)
    return sum(collected) / len(collected) if collected else None


def summarize_metrics(rows: Iterable[Mapping[str, float]]) -> dict[str, float | None]:
    """Mean of each metric over rows (keys taken from the rows, in first-seen order)."""
    totals: dict[str, list[float]] = {}
    for row in rows:
        for name, value in row.items():
            totals.setdefault(name, []).append(value)
    return {name: mean(values) for name, values in totals.items()}
