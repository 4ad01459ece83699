"""ARC as a SEAL domain: a group is one published task (all its test inputs); a self-edit is a JSON training
recipe (SEAL §A3) applied with `ttt.arc_ttt.run_task`; the reward is 1 when every test input is solved (pass@2).

Every self-edit of a task is evaluated on the same views (the caller passes one `view_seed` per task) and trains
from its own seed, so two rewards of one task differ because of the self-edits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from seal.arc.prompt import SELF_EDIT_TEMPLATE, self_edit_messages
from seal.arc.recipe import recipe_for
from seal.arc.schema import ArcSelfEdit, ParseLimits, parse_self_edit
from seal.domain import Evaluation, Rejected, Worker


class ArcDomain:
    name = "arc"

    def __init__(self, tasks: Mapping[str, Sequence[Any]], base_recipe: Any, limits: ParseLimits | None = None) -> None:
        """`tasks`: task id → its sub-tasks (one per test input, sharing the demos), as `ttt.arc` loads them.
        `base_recipe`: a `TaskRecipe` whose views, vote and training settings every self-edit keeps; a self-edit
        changes only what SEAL's schema lets it choose (augmentation groups, loss strategy, lr, epochs)."""
        self.tasks = dict(tasks)
        self.base_recipe = base_recipe
        self.limits = limits or ParseLimits()

    # -- the self-edit ---------------------------------------------------------------------------------------
    def groups(self) -> list[str]:
        return list(self.tasks)

    def prompt(self, group: str) -> list[dict[str, str]]:
        return self_edit_messages(self.tasks[group][0])

    def template(self) -> tuple[Any, ...]:
        """The reply skeleton for template decoding (seal.decoding: template)."""
        return SELF_EDIT_TEMPLATE

    def parse(self, text: str) -> ArcSelfEdit | Rejected:
        return parse_self_edit(text, self.limits)

    def edit_key(self, edit: ArcSelfEdit) -> str:
        return edit.key()

    def edit_to_dict(self, edit: ArcSelfEdit) -> dict[str, Any]:
        return edit.to_dict()

    # -- applying it ------------------------------------------------------------------------------------------
    def zero_epoch_recipe(self) -> Any:
        """The base recipe trained 0 epochs: the unadapted model through the same views and vote."""
        return replace(self.base_recipe, train=replace(self.base_recipe.train, epochs=0))

    def evaluate(
        self,
        worker: Worker,
        group: str,
        edit: ArcSelfEdit | None,
        *,
        view_seed: int,
        train_seed: int,
        base: dict[str, Any] | None = None,
    ) -> Evaluation:
        """A self-edit over SEAL's step cap is not answered: it trains 0 epochs, so it would answer exactly what
        the unadapted model answers (the loop's `base` stage has that); it comes back rejected, unscored."""
        recipe = self.zero_epoch_recipe() if edit is None else recipe_for(edit, self.base_recipe)
        evaluation = self.evaluate_recipe(
            worker, group, recipe, view_seed=view_seed, train_seed=train_seed, stop_if_capped=edit is not None
        )
        train = evaluation.result["train"]
        if edit is not None and train.get("capped"):
            steps = f"{edit.epochs} epochs x {train.get('examples')} examples / batch {recipe.train.batch_size}"
            reason = f"over SEAL's step cap ({steps} > {recipe.train.max_steps_cap} steps): trained 0 epochs"
            return Evaluation(evaluation.result, None, Rejected(reason, "over_step_cap"))
        return evaluation

    def evaluate_recipe(
        self,
        worker: Worker,
        group: str,
        recipe: Any,
        *,
        view_seed: int,
        train_seed: int,
        train_on: str | None = None,
        stop_if_capped: bool = False,
    ) -> Evaluation:
        """One TTT run of `group` under `recipe`; `train_on`: take the training data from that task instead
        (the wrong-task control)."""
        from ttt.arc_ttt import run_task

        source = self.tasks[train_on][0] if train_on is not None else None
        outcome = run_task(
            self.tasks[group],
            worker.slot,
            worker.tokenizer,
            worker.generator,
            recipe,
            train_seed,
            view_seed=view_seed,
            train_on=source,
            stop_if_capped=stop_if_capped,
        )
        result = outcome.to_dict()
        solved = result.get("solved")
        return Evaluation(result, None if solved is None else float(bool(solved)))

    # -- grading ----------------------------------------------------------------------------------------------
    def grading_items(self, group: str, evaluation: dict[str, Any], provenance: dict[str, Any]) -> list[dict[str, Any]]:
        """One item per test input with a known answer: the two voted attempts and the gold grid."""
        items = []
        for test, sub in zip(evaluation.get("tests", []), self.tasks[group]):
            if sub.test_output is None:
                continue
            item_id = "/".join(str(provenance[key]) for key in ("condition", "unit") if key in provenance)
            items.append(
                {
                    "item_id": f"{item_id}/{test['task_id']}" if item_id else test["task_id"],
                    "kind": "arc",
                    "question": test["task_id"],
                    "task_id": group,
                    "gold": [sub.test_output.to_list()],
                    "attempts": test["attempts"],
                    # outputs that never became an attempt (unparseable) still reach the grade report
                    "outputs": {"total": test["n_outputs"], "unparseable": test["n_unparseable"]},
                    "provenance": {**provenance, "test": test["task_id"]},
                }
            )
        return items
