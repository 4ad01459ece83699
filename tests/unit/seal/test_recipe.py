"""A self-edit changes only what it chooses in the task recipe; the step-cap report matches the trainer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from seal.arc.recipe import base_recipe_zero_epochs, exceeds_step_cap, recipe_for
from seal.arc.schema import ArcSelfEdit
from ttt.arc import TTTDataSettings, ViewSettings
from ttt.arc_ttt import TaskRecipe
from ttt.examples import encode_messages
from ttt.lora import AdapterSlot, LoraSettings
from ttt.train import TrainSettings, seal_epochs, train

BASE = TaskRecipe(
    data=TTTDataSettings(leave_n=(1,), nmax=40, grid_format="digits"),
    train=TrainSettings(batch_size=4, warmup_steps=3, max_steps_cap=20, dtype="bf16"),
    views=ViewSettings(grid_format="digits"),
    vote="majority",
    max_new_tokens=77,
)
EDIT = ArcSelfEdit(
    basic=False, size=True, chain=False, repeat=True, strategy="train_using_all_tokens", learning_rate=3e-4, epochs=5
)


def test_the_self_edit_sets_flags_loss_lr_and_epochs():
    recipe = recipe_for(EDIT, BASE)
    assert (recipe.data.basic, recipe.data.size, recipe.data.chain, recipe.data.repeat) == (False, True, False, True)
    assert recipe.data.augmentations == TTTDataSettings(basic=False, chain=False).augmentations
    assert recipe.loss == "all_tokens"
    assert (recipe.train.lr, recipe.train.epochs) == (3e-4, 5)
    output_tokens = recipe_for(replace(EDIT, strategy="train_using_output_tokens"), BASE)
    assert output_tokens.loss == "output_tokens"


def test_everything_else_stays_from_the_base_recipe():
    recipe = recipe_for(EDIT, BASE)
    assert recipe.views is BASE.views  # every self-edit of a task is scored on the same views
    assert (recipe.vote, recipe.max_new_tokens) == (BASE.vote, BASE.max_new_tokens)
    assert replace(recipe.data, basic=True, size=True, chain=True, repeat=True) == replace(
        BASE.data, basic=True, size=True, chain=True, repeat=True
    )
    assert replace(recipe.train, lr=BASE.train.lr, epochs=BASE.train.epochs) == BASE.train


def test_zero_epoch_recipe_keeps_the_rest():
    zero = base_recipe_zero_epochs(BASE)
    assert zero.train.epochs == 0 and replace(zero.train, epochs=BASE.train.epochs) == BASE.train
    assert (zero.data, zero.views, zero.loss) == (BASE.data, BASE.views, BASE.loss)


@pytest.mark.parametrize("n_examples", [0, 1, 15, 16, 17, 19, 20, 250])
@pytest.mark.parametrize("epochs", [1, 2, 5])
def test_step_cap_matches_the_trainer(n_examples: int, epochs: int):
    recipe = recipe_for(replace(EDIT, epochs=epochs), BASE)
    assert exceeds_step_cap(n_examples, recipe) == seal_epochs(epochs, n_examples, 4, 20)[1]


def test_step_cap_arithmetic_by_hand():
    # SEAL's rule with batch 4, cap 20: 5 epochs × 16 examples // 4 = 20 steps (allowed), × 17 → 21 (off).
    assert not exceeds_step_cap(16, recipe_for(EDIT, BASE))
    assert exceeds_step_cap(17, recipe_for(EDIT, BASE))
    assert not exceeds_step_cap(10**6, replace(BASE, train=replace(BASE.train, max_steps_cap=None)))


@pytest.mark.parametrize(("n_examples", "capped"), [(4, False), (5, True)])
def test_step_cap_report_agrees_with_a_real_training_run(tiny: tuple[Any, Any], n_examples: int, capped: bool):
    # batch 2, 2 epochs, cap 4: 2 × 4 // 2 = 4 steps are trained; 2 × 5 // 2 = 5 switch training off.
    model, tokenizer = tiny
    recipe = recipe_for(
        replace(EDIT, epochs=2), replace(BASE, train=TrainSettings(batch_size=2, warmup_steps=0, max_steps_cap=4))
    )
    examples = [
        encode_messages(
            tokenizer,
            [{"role": "user", "content": f"[[{i}]] -> "}, {"role": "assistant", "content": f"[[{i + 1}]]#"}],
            loss=recipe.loss,  # type: ignore[arg-type]
        )
        for i in range(n_examples)
    ]
    result = train(AdapterSlot(model, LoraSettings(rank=2, alpha=4)), examples, recipe.train)
    assert exceeds_step_cap(n_examples, recipe) == result.capped == capped
    assert result.steps == (0 if capped else 4)
