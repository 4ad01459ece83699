"""An ARC self-edit → the `TaskRecipe` that `ttt.arc_ttt.run_task` trains and evaluates.

The self-edit chooses only what SEAL lets it choose: the four augmentation groups, the loss strategy, the learning
rate and the epochs. Everything else (leave-n, permutations, the 250-example cap, batch, schedule, step cap, dtype,
inference views, vote, token budgets) comes from `base`, so every self-edit of a task is trained the same way
apart from its own choices and scored on the same views: rewards differ because of the self-edits.

torch-free at import (`ttt.arc_ttt` and `ttt.train` pull in torch): `dataclasses.replace` needs only the instance.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from seal.arc.schema import ArcSelfEdit

if TYPE_CHECKING:
    from ttt.arc_ttt import TaskRecipe

# The self-edit's strategy names → the loss strategies of `ttt.examples.encode_messages`.
LOSS_FOR_STRATEGY = {"train_using_all_tokens": "all_tokens", "train_using_output_tokens": "output_tokens"}


def recipe_for(edit: ArcSelfEdit, base: TaskRecipe) -> TaskRecipe:
    """`base` with the self-edit's augmentation flags, loss, learning rate and epochs."""
    data = replace(base.data, basic=edit.basic, size=edit.size, chain=edit.chain, repeat=edit.repeat)
    train = replace(base.train, lr=edit.learning_rate, epochs=edit.epochs)
    return replace(base, data=data, train=train, loss=LOSS_FOR_STRATEGY[edit.strategy])


def base_recipe_zero_epochs(base: TaskRecipe) -> TaskRecipe:
    """`base` trained for 0 epochs: what SEAL's code ran for an unusable self-edit (the base model, scored on the
    same views). Whether a pipeline applies that policy or records the rejection instead is its choice."""
    return replace(base, train=replace(base.train, epochs=0))


def exceeds_step_cap(n_examples: int, recipe: TaskRecipe) -> bool:
    """True when SEAL's step cap would switch training off: epochs × |data| // batch > max_steps_cap.

    `n_examples` is the number of examples training will use (those within `train.max_len` that carry a loss);
    the arithmetic is `ttt.train.seal_epochs` itself, so this report and the trainer never disagree."""
    from ttt.train import seal_epochs

    _, capped = seal_epochs(recipe.train.epochs, n_examples, recipe.train.batch_size, recipe.train.max_steps_cap)
    return capped
