"""Passages and their questions, in SEAL's SQuAD layout: `[{"title", "context", "questions": [{"question",
"answer"}]}]` (a question may carry `"answers": [...]` instead, SQuAD's several gold answers). Extra keys in a
passage or question are ignored, so the published files load as they are.

A passage's id is `p{index:04d}`, its position in the source file: a shuffled subset keeps every passage's id, and
ids are valid unit names. SEAL's subset rule (shuffle with seed 42, then slice) is `seal_subset`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class KnowledgeDataError(ValueError):
    """A passage file that cannot be used; the message names the file, the passage and the field."""


@dataclass(frozen=True)
class QA:
    question: str
    answers: tuple[str, ...]  # acceptable gold answers, the first one is the reference (SEAL's `answer`)


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    context: str
    questions: tuple[QA, ...]
    index: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "index": self.index,
            "title": self.title,
            "context": self.context,
            "questions": [
                {"question": q.question, "answer": q.answers[0], "answers": list(q.answers)} for q in self.questions
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Passage:
        questions = tuple(QA(q["question"], tuple(q.get("answers") or [q["answer"]])) for q in data["questions"])
        return cls(data["id"], data["title"], data["context"], questions, int(data["index"]))


def passage_id(index: int) -> str:
    return f"p{index:04d}"


def _text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise KnowledgeDataError(f"{where}: field '{name}': expected a non-empty string, got {value!r}"[:300])
    return value


def _passage(record: Any, index: int, where: str) -> Passage:
    here = f"{where}: passage {index}"
    if not isinstance(record, dict):
        raise KnowledgeDataError(
            f"{here}: expected an object with title, context and questions, got {type(record).__name__}"
        )
    title = _text(record.get("title"), here, "title")
    context = _text(record.get("context"), here, "context")
    questions = record.get("questions")
    if not isinstance(questions, list) or not questions:
        raise KnowledgeDataError(f"{here}: field 'questions': expected a non-empty list, got {questions!r}"[:300])
    parsed = []
    for q_index, q in enumerate(questions):
        name = f"questions[{q_index}]"
        if not isinstance(q, dict):
            raise KnowledgeDataError(f"{here}: field '{name}': expected an object with question and answer")
        question = _text(q.get("question"), here, f"{name}.question")
        if "answers" in q and "answer" not in q:
            answers = q["answers"]
            if not isinstance(answers, list) or not answers:
                raise KnowledgeDataError(f"{here}: field '{name}.answers': expected a non-empty list of strings")
            golds = tuple(_text(a, here, f"{name}.answers[{i}]") for i, a in enumerate(answers))
        else:
            golds = (_text(q.get("answer"), here, f"{name}.answer"),)
        parsed.append(QA(question, golds))
    return Passage(passage_id(index), title, context, tuple(parsed), index)


def parse_passages(records: Any, where: str) -> list[Passage]:
    if not isinstance(records, list):
        raise KnowledgeDataError(f"{where}: expected a list of passages (SEAL's layout), got {type(records).__name__}")
    if not records:
        raise KnowledgeDataError(f"{where}: the list of passages is empty")
    return [_passage(record, index, where) for index, record in enumerate(records)]


def load_passages(path: str | Path) -> list[Passage]:
    """Passages of a JSON file in SEAL's layout, or of `passages.json` in a folder."""
    file = Path(path)
    if file.is_dir():
        file = file / "passages.json"
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise KnowledgeDataError(f"{file}: cannot read ({exc.strerror})") from None
    try:
        records = json.loads(text)
    except ValueError as exc:
        raise KnowledgeDataError(f"{file}: not valid JSON ({exc})") from None
    return parse_passages(records, str(file))


def seal_subset(passages: Sequence[Passage], start: int, end: int, seed: int = 42) -> list[Passage]:
    """SEAL's subset: the passages shuffled with `random.seed(seed); random.shuffle(...)`, sliced [start:end]."""
    shuffled = list(passages)
    random.Random(seed).shuffle(shuffled)  # the same Mersenne Twister draws as seeding the global generator
    return shuffled[start:end]


def group_squad_rows(rows: Iterable[Mapping[str, Any]]) -> list[Passage]:
    """SQuAD rows (one per question: title, context, question, answers.text) grouped into passages by (title,
    context) in first-seen order; a question's answers de-duplicated in order."""
    grouped: dict[tuple[str, str], list[QA]] = {}
    for row in rows:
        key = (row["title"], row["context"])
        texts = row["answers"]["text"] if isinstance(row["answers"], Mapping) else row["answers"]
        answers = tuple(dict.fromkeys(t for t in texts if t))
        if answers:
            grouped.setdefault(key, []).append(QA(row["question"], answers))
    return [
        Passage(passage_id(i), title.replace("_", " "), context, tuple(qs), i)
        for i, ((title, context), qs) in enumerate(grouped.items())
    ]


def load_squad_hub(split: str = "validation", name: str = "rajpurkar/squad") -> list[Passage]:
    """SQuAD from the Hugging Face hub through `datasets`, grouped by paragraph."""
    try:
        from datasets import load_dataset

        rows = load_dataset(name, split=split)
    except Exception as exc:  # offline (HF_HUB_OFFLINE), unknown name or split, no network
        raise KnowledgeDataError(
            f"hub:{name}:{split}: could not load it through `datasets` ({type(exc).__name__}: {str(exc)[:200]}); "
            "the hub may be unreachable (HF_HUB_OFFLINE=1?). A local JSON file in SEAL's layout works offline: "
            "--set knowledge.source=PATH/squad_val.json"
        ) from None
    return group_squad_rows(rows)


def passage_stats(passages: Sequence[Passage]) -> dict[str, float]:
    words = [len(p.context.split()) for p in passages]
    return {
        "passages": len(passages),
        "questions": sum(len(p.questions) for p in passages),
        "mean_context_words": sum(words) / len(words) if words else 0.0,
    }
