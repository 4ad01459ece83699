"""Selection rules and SFT rows: what ReST-EM clones, for any domain."""

from __future__ import annotations

import pytest

from seal.restem import Scored, select, sft_messages, sft_rows

PROMPT = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Configure training."})


def _s(group: str, k: int, reward: float | None) -> Scored:
    return Scored(group, k, reward, PROMPT, f"edit {group}{k}")


SCORED = [_s("b", 1, 1.0), _s("a", 0, 0.0), _s("a", 1, 1.0), _s("a", 2, 1.0), _s("b", 0, None), _s("c", 0, 0.5)]


def test_rewarded_keeps_every_rewarded_pair_in_group_and_k_order_with_no_cap_per_group() -> None:
    assert [(s.group, s.k) for s in select(SCORED, "rewarded")] == [("a", 1), ("a", 2), ("b", 1), ("c", 0)]


def test_top1_takes_the_best_per_group_lowest_k_on_ties_even_at_reward_zero() -> None:
    assert [(s.group, s.k) for s in select(SCORED, "top1")] == [("a", 1), ("b", 1), ("c", 0)]
    assert [(s.group, s.k) for s in select([_s("z", 3, 0.0), _s("z", 1, 0.0)], "top1")] == [("z", 1)]


def test_threshold_and_unscored_self_edits() -> None:
    assert [(s.group, s.k) for s in select(SCORED, "threshold", 0.75)] == [("a", 1), ("a", 2), ("b", 1)]
    assert all(s.reward is not None for rule in ("rewarded", "top1") for s in select(SCORED, rule))
    assert len(select(SCORED, "threshold", 0.0)) == 5  # None (unscored) is never selected, not even at 0
    with pytest.raises(ValueError, match="selection rule"):
        select(SCORED, "best")


def test_sft_rows_put_the_loss_on_the_self_edit_only(tiny_tokenizer) -> None:
    from ttt.examples import IGNORE_INDEX

    item = _s("a", 1, 1.0)
    assert sft_messages(item)[-1] == {"role": "assistant", "content": "edit a1"}
    (row,) = sft_rows([item], tiny_tokenizer)
    answer = [t for t, label in zip(row.input_ids, row.labels) if label != IGNORE_INDEX]
    assert tiny_tokenizer.decode(answer, skip_special_tokens=True).strip() == "edit a1"
    assert row.labels[0] == IGNORE_INDEX
