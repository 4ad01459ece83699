"""Passages in SEAL's layout: validation that names the file, passage and field; SEAL's subset rule."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from grading.metrics import gold_contained
from seal.knowledge.data import (
    KnowledgeDataError,
    Passage,
    group_squad_rows,
    load_passages,
    passage_stats,
    seal_subset,
)

REPO = Path(__file__).resolve().parents[4]
SQUAD = REPO.parent / "shared" / "data" / "squad_val.json"


def _write(tmp_path: Path, records: object) -> Path:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


GOOD = {"title": "T", "context": "Some text.", "questions": [{"question": "Q?", "answer": "A"}]}


def test_the_bundled_passages_validate_and_every_answer_is_in_its_passage() -> None:
    passages = load_passages(REPO / "data" / "knowledge")
    assert len(passages) >= 8 and all(len(p.questions) >= 3 for p in passages)
    assert [p.id for p in passages] == [f"p{i:04d}" for i in range(len(passages))]
    for p in passages:
        for q in p.questions:
            assert gold_contained(p.context, q.answers), (p.id, q.question)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ({"title": "x"}, "expected a list of passages"),
        ([], "is empty"),
        ([GOOD, {**GOOD, "context": ""}], "passage 1: field 'context': expected a non-empty string"),
        ([{**GOOD, "questions": []}], "passage 0: field 'questions': expected a non-empty list"),
        ([{**GOOD, "questions": [{"question": "Q?", "answer": 12}]}], "field 'questions[0].answer'"),
        ([{**GOOD, "questions": [{"answer": "A"}]}], "field 'questions[0].question'"),
        ([{**GOOD, "questions": [{"question": "Q?", "answers": []}]}], "field 'questions[0].answers'"),
        (["text"], "passage 0: expected an object"),
    ],
)
def test_bad_files_name_the_file_the_passage_and_the_field(tmp_path: Path, records: object, message: str) -> None:
    path = _write(tmp_path, records)
    with pytest.raises(KnowledgeDataError) as info:
        load_passages(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_invalid_json_and_a_missing_file_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[{", encoding="utf-8")
    with pytest.raises(KnowledgeDataError, match="bad.json: not valid JSON"):
        load_passages(bad)
    with pytest.raises(KnowledgeDataError, match="cannot read"):
        load_passages(tmp_path / "none.json")


def test_several_gold_answers_and_extra_keys_load(tmp_path: Path) -> None:
    record = {**GOOD, "extra": 1, "questions": [{"question": "Q?", "answers": ["A", "a one"], "id": "x"}]}
    (p,) = load_passages(_write(tmp_path, [record]))
    assert p.questions[0].answers == ("A", "a one")
    assert Passage.from_dict(p.to_dict()) == p


def test_seal_subset_is_the_global_shuffle_with_seed_42_and_keeps_ids() -> None:
    passages = [Passage(f"p{i:04d}", "t", f"c{i}", (), i) for i in range(50)]
    mine = seal_subset(passages, 5, 15)
    theirs = list(passages)
    random.seed(42)
    random.shuffle(theirs)
    assert mine == theirs[5:15]
    assert all(p.id == f"p{p.index:04d}" for p in mine)


def test_squad_rows_group_by_paragraph_in_first_seen_order() -> None:
    datasets = pytest.importorskip("datasets")
    rows = datasets.Dataset.from_list(
        [
            {
                "title": "Super_Bowl",
                "context": "C1",
                "question": "q1",
                "answers": {"text": ["a", "a", "b"], "answer_start": [0, 0, 1]},
            },
            {"title": "Other", "context": "C2", "question": "q2", "answers": {"text": ["x"], "answer_start": [0]}},
            {"title": "Super_Bowl", "context": "C1", "question": "q3", "answers": {"text": ["c"], "answer_start": [0]}},
        ]
    )
    passages = group_squad_rows(rows)
    assert [(p.id, p.title, len(p.questions)) for p in passages] == [("p0000", "Super Bowl", 2), ("p0001", "Other", 1)]
    assert passages[0].questions[0].answers == ("a", "b")


@pytest.mark.skipif(not SQUAD.exists(), reason=f"{SQUAD} is not here (the shared SQuAD file is outside the repo)")
def test_seals_subsets_of_the_squad_dev_file() -> None:
    passages = load_passages(SQUAD)
    assert len(passages) == 2067
    evaluation, training = seal_subset(passages, 0, 200), seal_subset(passages, 200, 250)
    assert not {p.id for p in evaluation} & {p.id for p in training}
    assert passage_stats(evaluation)["questions"] == 974  # SEAL's 974 questions for its first 200 passages
