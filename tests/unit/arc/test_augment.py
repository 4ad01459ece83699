"""Augmentations: SEAL's groups, exact inverses, documented shapes, the 30×30 limit, key round trips."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.arc.conftest import grids, make_task
from ttt.arc import (
    AUGMENTATION_GROUPS,
    Augmentation,
    AugmentationError,
    Grid,
    GridTooLargeError,
    instantiate,
    random_color_permutation,
)

INVERTIBLE_FIXED = [
    "rot90",
    "rot180",
    "rot270",
    "flip0",
    "flip1",
    "transpose",
    "rot90+flip0",
    "transpose+rot180",
]
SEEDS = st.integers(0, 2**32 - 1)


def test_seal_groups_have_the_published_sizes():
    assert {k: len(v) for k, v in AUGMENTATION_GROUPS.items()} == {
        "basic": 11,
        "size": 3,
        "chain": 6,
        "repeat": 3,
    }


def test_d8_steps_match_numpy_conventions():
    g = Grid([[1, 2], [3, 4]])
    expect = {  # np.rot90(g, k), np.flipud, np.fliplr, g.T
        "rot90": [[2, 4], [1, 3]],
        "rot180": [[4, 3], [2, 1]],
        "rot270": [[3, 1], [4, 2]],
        "flip0": [[3, 4], [1, 2]],
        "flip1": [[2, 1], [4, 3]],
        "transpose": [[1, 3], [2, 4]],
        "refl0first": [[3, 4], [1, 2], [1, 2], [3, 4]],
        "refl1last": [[1, 2, 2, 1], [3, 4, 4, 3]],
        "roll1.0": [[3, 4], [1, 2]],
        "roll0.1": [[2, 1], [4, 3]],
        "perm:0234567891": [[2, 3], [4, 5]],
    }
    for key, rows in expect.items():
        assert Augmentation.parse(key).apply_grid(g) == Grid(rows), key


@settings(max_examples=80, deadline=None)
@given(grids(), st.sampled_from(INVERTIBLE_FIXED))
def test_d8_inverses_are_exact(grid, key):
    aug = Augmentation.parse(key)
    assert aug.invertible
    assert aug.inverse().apply_grid(aug.apply_grid(grid)) == grid


@settings(max_examples=80, deadline=None)
@given(grids(), SEEDS, st.booleans())
def test_random_colour_permutations_and_shifts_invert_exactly(grid, seed, keep_zero):
    task = make_task((grid.rows, grid.rows), (grid.rows, None))
    rng = random.Random(seed)
    for template in ("perm", "roll", "roll+perm+rot90"):
        aug = instantiate(template, task, rng, keep_zero=keep_zero)
        assert not aug.is_template and aug.invertible
        assert aug.inverse().apply_grid(aug.apply_grid(grid)) == grid
        assert Augmentation.parse(aug.key) == aug  # concrete keys round-trip


@settings(max_examples=60, deadline=None)
@given(grids(max_side=10), SEEDS)
def test_colour_permutation_keeps_zero_and_prefers_unused_colours(grid, seed):
    used = grid.colors()
    step = random_color_permutation(used, random.Random(seed))
    table = [int(c) for c in step[5:]]
    assert sorted(table) == list(range(10)) and table[0] == 0
    targets = {table[c] for c in used if c != 0}
    unused = set(range(1, 10)) - used
    # every used colour moves to an unused one while there are enough of them
    assert len(targets & unused) == min(len(used - {0}), len(unused))


@settings(max_examples=60, deadline=None)
@given(grids(max_side=15))
def test_size_repeat_and_reflect_transforms_have_the_documented_shapes(grid):
    h, w = grid.shape
    shapes = {
        "scale2x2": (2 * h, 2 * w), "scale2x1": (2 * h, w), "scale1x2": (h, 2 * w),
        "tile2x1": (2 * h, w), "tile1x2": (h, 2 * w), "tile2x2": (2 * h, 2 * w),
        "refl0first": (2 * h, w), "refl0last": (2 * h, w), "refl1first": (h, 2 * w), "refl1last": (h, 2 * w),
        "rot90+scale2x2": (2 * w, 2 * h), "rot270+scale2x2": (2 * w, 2 * h), "transpose+scale2x2": (2 * w, 2 * h),
        "rot180+scale2x2": (2 * h, 2 * w), "flip0+scale2x2": (2 * h, 2 * w), "flip1+scale2x2": (2 * h, 2 * w),
    }  # fmt: skip
    assert set(AUGMENTATION_GROUPS["chain"]) <= set(shapes)
    for key, shape in shapes.items():
        out = Augmentation.parse(key).apply_grid(grid)
        assert out.shape == shape, key
        assert out.colors() == grid.colors()
    assert (
        Augmentation.parse("tile2x2").apply_grid(grid).rows[h:] == Augmentation.parse("tile1x2").apply_grid(grid).rows
    )
    assert (
        Augmentation.parse("scale2x2").apply_grid(grid).rows[::2]
        == Augmentation.parse("scale1x2").apply_grid(grid).rows
    )


@settings(max_examples=60, deadline=None)
@given(grids(), st.sampled_from([k for ks in AUGMENTATION_GROUPS.values() for k in ks if k != "roll"]))
def test_nothing_over_30_survives(grid, key):
    aug = Augmentation.parse(key)
    try:
        out = aug.apply_grid(grid)
    except GridTooLargeError:
        task = make_task((grid.rows, grid.rows), (grid.rows, None))
        assert aug.try_apply_task(task) is None
    else:
        assert max(out.shape) <= 30


def test_every_group_key_round_trips_and_only_d8_colour_shift_order_invert():
    for key in [k for ks in AUGMENTATION_GROUPS.values() for k in ks]:
        aug = Augmentation.parse(key)
        assert aug.key == key
        if key.startswith(("refl", "scale", "tile")) or "+scale" in key:
            with pytest.raises(AugmentationError, match="has no inverse"):
                aug.inverse()
    assert Augmentation.parse("tr").key == "transpose"
    assert Augmentation.parse("id") == Augmentation.parse("") == Augmentation(())
    assert Augmentation.parse("order:2.0.1").inverse().key == "order:1.2.0"
    assert Augmentation.parse("roll1.-2+perm:0234567891").inverse().key == "perm:0912345678+roll-1.2"


@pytest.mark.parametrize(
    "key", ["rot45", "perm:012345678", "perm:0123456788", "order:0.0", "scale0x2", "rot90+", "flip2"]
)
def test_malformed_keys_are_rejected_with_the_valid_forms(key):
    with pytest.raises(AugmentationError):
        Augmentation.parse(key)


def test_templates_must_be_instantiated_and_draw_one_shift_per_task():
    task = make_task(([[1, 2, 3], [4, 5, 6]], [[1]]), ([[7, 8], [9, 0]], [[2, 3]]), ([[1, 1]], [[5, 5, 5]]))
    with pytest.raises(AugmentationError, match="instantiate"):
        Augmentation.parse("roll").apply_task(task)
    aug = instantiate("roll", task, random.Random(3))
    dy, dx = (int(v) for v in aug.key[4:].split("."))
    assert 0 <= dy <= 3 and 0 <= dx <= 3
    out = aug.apply_task(task)
    # the same shift (modulo each grid's size) on every grid: the demo input and the test output agree
    assert out.demos[0].input == Augmentation.parse(f"roll{dy}.{dx}").apply_grid(task.demos[0].input)
    assert out.test.output == Augmentation.parse(f"roll{dy}.{dx}").apply_grid(task.test.output)


def test_task_augmentation_touches_every_grid_and_order_reorders_demos():
    task = make_task(([[1, 2]], [[3, 4]]), ([[5, 6]], [[7, 8]]), ([[9, 1]], [[2, 3]]))
    out = Augmentation.parse("flip1+order:1.0").apply_task(task)
    assert [d.input.to_list() for d in out.demos] == [[[6, 5]], [[2, 1]]]
    assert out.test.input == Grid([[1, 9]]) and out.test.output == Grid([[3, 2]])
    back = Augmentation.parse("flip1+order:1.0").inverse().apply_task(out)
    assert back == task
    with pytest.raises(AugmentationError, match="reorders 3 demos but task t-0 has 2"):
        Augmentation.parse("order:0.1.2").apply_task(task)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7).flatmap(lambda n: st.permutations(list(range(n)))))
def test_demo_order_inverts_exactly_for_any_permutation(order):
    task = make_task(*[([[i]], [[(i + 1) % 10]]) for i in range(len(order))], ([[9]], [[8]]))
    key = "order:" + ".".join(map(str, order))
    moved = Augmentation.parse(key).apply_task(task)
    assert sorted(d.input.rows for d in moved.demos) == sorted(d.input.rows for d in task.demos)
    assert (moved == task) == (list(order) == sorted(order))
    assert Augmentation.parse(key).inverse().apply_task(moved) == task
