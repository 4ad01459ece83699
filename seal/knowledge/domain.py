"""Knowledge incorporation as a SEAL domain (seal-reference §B): a group is one passage; a self-edit is the model's
own list of implications (or rewrites, or question–answer pairs) of it; applying it is a LoRA update on those
sequences (`ttt.text_ttt.run_passage`), after which the model answers the passage's questions without seeing it.

The reward is the post-update accuracy (SEAL), the gain over the unadapted model, or the decrease of the gold
answer's NLL, averaged over `rounds` independent updates. Correctness comes from a deterministic metric, from a
judge asked in the loop (`judge`), or from verdicts graded later on another machine (`deferred`: the evaluation is
recorded unscored and `rescore` fills the verdicts in).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seal.domain import Evaluation, Rejected, Worker
from seal.knowledge import scoring
from seal.knowledge.data import Passage
from seal.knowledge.prompts import qa_prompt, self_edit_prompt
from seal.knowledge.sequences import parse_completion

# Grading items (bundle dicts) → item id → verdict label, or None when the judge left it unscored.
JudgeFn = Callable[[list[dict[str, Any]]], Mapping[str, str | None]]


@dataclass(frozen=True)
class KnowledgeSettings:
    variant: str = "implications"  # the self-edit prompt (seal.knowledge.prompts.PROMPT_VARIANTS)
    style: str = "completion"  # resolved: completion (base models) or chat (instruct models)
    include_passage: bool = True
    split_newlines: bool = True
    rounds: int = 1
    correct: str = "contains"  # judge | contains | em
    reward: str = "accuracy"  # accuracy | gain | nll
    deferred: bool = False  # verdicts come from `seal grade import`, not from a judge in the loop

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.correct not in scoring.CORRECTNESS:
            raise ValueError(f"correct {self.correct!r}: expected one of {scoring.CORRECTNESS}")
        if self.reward not in scoring.REWARDS:
            raise ValueError(f"reward {self.reward!r}: expected one of {scoring.REWARDS}")
        if self.deferred and self.correct != "judge":
            raise ValueError("deferred grading needs correct = judge")


def round_seed(train_seed: int, round_index: int) -> int:
    digest = hashlib.sha256(f"passage-round:{train_seed}:{round_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class KnowledgeDomain:
    name = "knowledge"

    def __init__(
        self,
        passages: Sequence[Passage],
        settings: KnowledgeSettings,
        recipe: Any,
        judge: JudgeFn | None = None,
    ) -> None:
        """`recipe`: a `ttt.text_ttt.PassageRecipe` (the inner loop's training and answering settings).
        `judge`: asked in the loop when `settings.correct` is judge and grading is not deferred."""
        self.passages = {p.id: p for p in passages}
        if len(self.passages) != len(passages):
            raise ValueError("passage ids are not unique")
        self.settings = settings
        self.recipe = recipe
        self.judge = judge
        if settings.correct == "judge" and not settings.deferred and judge is None:
            raise ValueError("correct = judge needs a judge (or deferred grading)")

    # -- the self-edit ---------------------------------------------------------------------------------------
    def groups(self) -> list[str]:
        return list(self.passages)

    def prompt(self, group: str) -> str | list[dict[str, str]]:
        p = self.passages[group]
        return self_edit_prompt(p.title, p.context, self.settings.variant, self.settings.style)

    def template(self) -> tuple[Any, ...]:
        raise NotImplementedError("the knowledge domain has no reply template: use seal.decoding: free")

    def parse(self, text: str) -> Any:
        # The completion-style self-QA prompt ends inside the first pair ("Question 1: "): the model's text starts
        # after it, so the primer goes back in front before splitting, or the first pair would be lost.
        if self.settings.variant == "self-qa" and self.settings.style == "completion":
            text = "Question 1: " + text
        return parse_completion(text, split_newlines=self.settings.split_newlines)

    def edit_key(self, edit: Any) -> str:
        return edit.key()

    def edit_to_dict(self, edit: Any) -> dict[str, Any]:
        return edit.to_dict()

    def needs_verdicts(self) -> bool:
        return self.settings.deferred

    # -- applying it ------------------------------------------------------------------------------------------
    def questions(self, group: str) -> list[Any]:
        from ttt.text_ttt import QAItem

        p = self.passages[group]
        return [
            QAItem(prompt=_frozen(qa_prompt(p.title, q.question, self.settings.style)), gold=q.answers)
            for q in p.questions
        ]

    def sequences(self, group: str, edit: Any) -> list[str]:
        """The training sequences of a self-edit: each segment under the passage's title, then the passage."""
        p = self.passages[group]
        out = [f"{p.title}\n{segment}" for segment in edit.segments]
        if self.settings.include_passage:
            out.append(passage_sequence(p))
        return out

    def evaluate(
        self,
        worker: Worker,
        group: str,
        edit: Any | None,
        *,
        view_seed: int,
        train_seed: int,
        base: dict[str, Any] | None = None,
    ) -> Evaluation:
        """edit None: the unadapted model's answers and gold NLL (one round). Otherwise `rounds` TTT updates on the
        self-edit's sequences, each from a fresh adapter. `view_seed` is unused: greedy answers have no views."""
        if edit is None:
            return self.evaluate_baseline(worker, group)
        return self.evaluate_sequences(worker, group, self.sequences(group, edit), train_seed=train_seed, base=base)

    def evaluate_baseline(self, worker: Worker, group: str) -> Evaluation:
        from ttt.text_ttt import passage_baseline

        questions = self.questions(group)
        baseline = passage_baseline(worker.slot, worker.tokenizer, worker.generator, questions, self.recipe)
        record = self._round(group, baseline.answers, baseline.nll)
        record["timings"] = baseline.timings
        return self._finish({"rounds": [record], "baseline": True}, None)

    def evaluate_sequences(
        self,
        worker: Worker,
        group: str,
        sequences: Sequence[str],
        *,
        train_seed: int,
        base: dict[str, Any] | None,
        rounds: int | None = None,
    ) -> Evaluation:
        """`rounds` (default: the settings') TTT updates on `sequences`, answered and scored (the controls call
        this with their own sequences)."""
        from ttt.text_ttt import run_passage

        questions = self.questions(group)
        records = []
        for r in range(rounds or self.settings.rounds):
            outcome = run_passage(
                worker.slot,
                worker.tokenizer,
                worker.generator,
                sequences,
                questions,
                self.recipe,
                round_seed(train_seed, r),
            )
            record = self._round(group, outcome.answers, outcome.nll)
            record.update(train=outcome.train, data=outcome.data_stats, timings=outcome.timings)
            records.append(record)
        return self._finish({"rounds": records, "sequences": len(sequences)}, base)

    def _round(self, group: str, answers: Sequence[str], nll: Sequence[float]) -> dict[str, Any]:
        golds = [q.answers for q in self.passages[group].questions]
        judged = self.settings.correct == "judge"
        record = scoring.make_round(answers, golds, nll, judged=judged)
        if judged and not self.settings.deferred and self.judge is not None:
            items = self._items(group, [record], {"prefix": f"inloop/{group}"})
            verdicts = self.judge(items)
            record["verdicts"] = [verdicts.get(item["item_id"]) for item in items]
        return record

    def _finish(self, result: dict[str, Any], base: dict[str, Any] | None) -> Evaluation:
        result["scores"] = scoring.summarize(result["rounds"], self.settings.correct)
        base_scores = (base or {}).get("scores")
        reward = scoring.reward_of(result["scores"], base_scores, self.settings.reward)
        return Evaluation(result, reward)

    def rescore(
        self, evaluation: dict[str, Any], verdicts: Mapping[str, str | None], base: dict[str, Any] | None, prefix: str
    ) -> tuple[dict[str, Any], float | None]:
        """The evaluation with the imported verdicts (item ids under `prefix`) written in, and its reward."""
        filled = {**evaluation, "rounds": scoring.fill_verdicts(evaluation["rounds"], verdicts, prefix)}
        done = self._finish(filled, base)
        return done.result, done.reward

    # -- grading ----------------------------------------------------------------------------------------------
    def grading_items(self, group: str, evaluation: dict[str, Any], provenance: dict[str, Any]) -> list[dict[str, Any]]:
        """One QA item per (round, question), id `{prefix}/r{round}/q{question}`; the provenance names the
        iteration, passage, self-edit, round and question, so every verdict maps back to its answer."""
        return self._items(group, evaluation["rounds"], provenance)

    def _items(self, group: str, rounds: Sequence[Mapping[str, Any]], provenance: dict[str, Any]) -> list[dict]:
        passage = self.passages[group]
        prefix = provenance.get("prefix", group)
        items = []
        for r, record in enumerate(rounds):
            for q, (question, answer) in enumerate(zip(passage.questions, record["answers"])):
                items.append(
                    {
                        "item_id": scoring.item_id(prefix, r, q),
                        "kind": "qa",
                        "question": question.question,
                        "gold": list(question.answers),
                        "prediction": answer,
                        "group": str(provenance.get("stage", "default")),
                        "provenance": {**provenance, "passage": group, "round": r, "question": q},
                    }
                )
        return items


def passage_sequence(passage: Passage) -> str:
    """The raw passage as a training sequence (SEAL: always the last one)."""
    return f"{passage.title}\n{passage.context}"


def _frozen(prompt: str | Sequence[Mapping[str, str]]) -> Any:
    return prompt if isinstance(prompt, str) else tuple(dict(m) for m in prompt)


__all__ = ["JudgeFn", "KnowledgeDomain", "KnowledgeSettings", "Rejected", "passage_sequence", "round_seed"]
