"""Rewards from answers: metrics always, verdicts when judged; an unscored answer is no reward, never a 0."""

from __future__ import annotations

import pytest

from seal.knowledge import scoring
from seal.restem import Scored, sft_rows


def _round(answers: list[str], verdicts: list[str | None] | None = None, nll: float = 2.0) -> dict:
    golds = [("Ottilie Brand",)] * len(answers)
    return scoring.make_round(answers, golds, [nll] * len(answers), judged=verdicts is not None, verdicts=verdicts)


def test_accuracy_by_a_metric_and_by_verdicts() -> None:
    metric = scoring.summarize([_round(["It was Ottilie Brand.", "Nobody"])], "contains")
    assert metric["accuracy"] == 0.5 and metric["em"] == 0.0 and metric["unscored"] == 0
    judged = scoring.summarize(
        [_round(["a", "b"], ["correct", "correct"]), _round(["a", "b"], ["incorrect", "correct"])], "judge"
    )
    assert judged["accuracy"] == pytest.approx(0.75) and judged["rounds"] == 2


def test_one_unscored_answer_leaves_the_reward_unscored_and_is_counted() -> None:
    scores = scoring.summarize([_round(["a", "b"], ["correct", None])], "judge")
    assert scores["accuracy"] is None and scores["unscored"] == 1
    assert scoring.reward_of(scores, None, "accuracy") is None
    assert scoring.reward_of(scores, {"accuracy": 0.0}, "gain") is None


def test_gain_and_nll_decrease_are_relative_to_the_base() -> None:
    mine = scoring.summarize([_round(["Ottilie Brand"], nll=1.5)], "contains")
    base = scoring.summarize([_round(["x"], nll=2.5)], "contains")
    assert scoring.reward_of(mine, base, "gain") == 1.0
    assert scoring.reward_of(mine, base, "nll") == pytest.approx(1.0)
    assert scoring.reward_of(mine, None, "nll") is None


def test_imported_verdicts_fill_the_rounds_by_item_id() -> None:
    rounds = [_round(["a", "b"], [None, None])]
    filled = scoring.fill_verdicts(rounds, {"it0/p0000.k1/r0/q1": "correct"}, "it0/p0000.k1")
    assert filled[0]["verdicts"] == [None, "correct"] and rounds[0]["verdicts"] == [None, None]


def test_completion_style_self_edits_are_cloned_with_the_loss_on_the_completion_and_an_eos(
    tiny_tokenizer: object,
) -> None:
    prompt = "Passage: Varrow\\nThe tower is tall.\\n\\nImplications:\\n"
    (row,) = sft_rows([Scored("p0000", 0, 1.0, prompt, "The tower is tall.")], tiny_tokenizer)
    kept = [t for t, label in zip(row.input_ids, row.labels) if label != -100]
    assert kept[-1] == tiny_tokenizer.eos_token_id  # type: ignore[attr-defined]
    assert tiny_tokenizer.decode(kept[:-1]).strip() == "The tower is tall."  # type: ignore[attr-defined]


def test_completion_style_self_qa_keeps_the_pair_the_prompt_started() -> None:
    from seal.knowledge.data import QA, Passage
    from seal.knowledge.domain import KnowledgeDomain, KnowledgeSettings

    passage = Passage("p0000", "Varrow", "Built by Ottilie Brand.", (QA("Who?", ("Ottilie Brand",)),), 0)
    domain = KnowledgeDomain([passage], KnowledgeSettings(variant="self-qa", style="completion"), recipe=None)
    assert domain.prompt("p0000").endswith("Question 1: ")  # type: ignore[union-attr]
    edit = domain.parse("Who built it? Answer: Ottilie Brand.\nQuestion 2: When? Answer: 1871.")
    assert edit.segments == ("Question: Who built it?\nAnswer: Ottilie Brand.", "Question: When?\nAnswer: 1871.")
