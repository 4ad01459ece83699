"""Stages in one process: barriers, frozen dynamic units, single-unit stages, groups, work folders, closing the
processor, names, and what each journal line carries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runners.chunks import Chunk, SelectionError
from runners.stage import Outcome, Selection, StageSpec, run_pipeline, run_stage
from runners.store import RunStore


class Recorder:
    """A processor factory that notes which units it processed and whether it was closed."""

    def __init__(self, status: str = "ok") -> None:
        self.seen: list[str] = []
        self.closed = 0
        self.status = status

    def __call__(self):  # type: ignore[no-untyped-def]
        recorder = self

        class Processor:
            def __call__(self, unit: str) -> Outcome:
                recorder.seen.append(unit)
                return Outcome(recorder.status, {"unit": unit}, artifacts={"out": f"artifacts/x/{unit}"})  # type: ignore[arg-type]

            def close(self) -> None:
                recorder.closed += 1

        return Processor()


def _run(store: RunStore, stages: list[StageSpec], **selection: object):  # type: ignore[no-untyped-def]
    sel = Selection(**selection)  # type: ignore[arg-type]
    return run_pipeline(store, stages, sel, claim_timeout_s=30, progress=False, config_hash="cfg1")


def test_barrier_waits_for_every_chunk_then_the_dynamic_stage_runs_once_on_a_frozen_list(tmp_path: Path) -> None:
    inner, select = Recorder(), Recorder()
    calls: list[int] = []

    def pick() -> list[str]:
        calls.append(1)
        done = RunStore.open(tmp_path).records("inner")
        return [f"sum-{len(done)}"]

    def stages() -> list[StageSpec]:
        return [
            StageSpec("inner", [f"u{i}" for i in range(5)], inner),
            StageSpec("select", pick, select, needs=("inner",), single=True),
        ]

    first = _run(RunStore.open(tmp_path), stages(), chunk=Chunk(1, 2))
    assert [s.stage for s in first] == ["inner", "select"] and first[0].processed == 3
    waiting = first[1].waiting
    assert waiting is not None and (waiting.missing, waiting.total, waiting.chunks) == (2, 5, ["2/2"])
    assert waiting.message() == (
        "waiting: stage select needs inner: 2 of 5 units not recorded yet (chunk 2/2); run again when they are"
    )
    assert not calls and not select.seen  # nothing of the waiting stage ran, its units were not computed

    second = _run(RunStore.open(tmp_path), stages(), chunk=Chunk(2, 2))
    assert all(s.complete for s in second) and select.seen == ["sum-5"] and len(calls) == 1
    assert json.loads((tmp_path / "stages" / "select" / "units.json").read_text()) == ["sum-5"]
    again = _run(RunStore.open(tmp_path), stages(), chunk=Chunk(1, 2))  # a resume reads the frozen list
    assert len(calls) == 1 and again[1].already_done == 1
    line = json.loads((tmp_path / "stages" / "select" / "journal.jsonl").read_text())
    assert line["config_hash"] == "cfg1" and line["artifacts"] == {"out": "artifacts/x/sum-5"}


def test_a_barrier_that_limit_keeps_from_ever_filling_says_to_run_without_it(tmp_path: Path) -> None:
    """`--limit 1` selects the same first unit on every run: "run again" alone would wait forever."""

    def stages() -> list[StageSpec]:
        return [
            StageSpec("inner", ["u0", "u1", "u2"], Recorder()),
            StageSpec("select", ["all"], Recorder(), needs=("inner",), single=True),
        ]

    for _ in range(2):  # the same command again changes nothing
        waiting = _run(RunStore.open(tmp_path), stages(), limit=1)[1].waiting
        assert waiting is not None and (waiting.missing, waiting.left_out) == (2, 2)
    assert waiting.message() == (
        "waiting: stage select needs inner: 2 of 3 units not recorded yet, 2 of them outside this command's "
        "--limit 1: run again without it (or with a wider one) to record them"
    )
    waiting = _run(RunStore.open(tmp_path), stages(), only=("u1",), chunk=Chunk(1, 2))[1].waiting
    assert waiting is not None and waiting.left_out == 1 and "--only u1" in waiting.message()
    assert all(s.complete for s in _run(RunStore.open(tmp_path), stages()))


def test_a_stage_with_units_held_elsewhere_makes_the_next_stage_wait(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path)
    (tmp_path / "claims" / "a").mkdir(parents=True)
    (tmp_path / "claims" / "a" / "u1.lock").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    summaries = _run(store, [StageSpec("a", ["u0", "u1"], Recorder()), StageSpec("b", ["v"], Recorder(), ("a",))])
    assert summaries[0].held_elsewhere == ["u1"]
    assert summaries[1].waiting is not None and summaries[1].waiting.missing == 1


def test_single_stage_ignores_chunk_only_and_limit(tmp_path: Path) -> None:
    rec = Recorder()
    stages = [StageSpec("a", ["t1", "t2"], Recorder()), StageSpec("merge", ["merge"], rec, single=True)]
    summaries = _run(RunStore.open(tmp_path), stages, only=("t2",), limit=1, chunk=Chunk(2, 3))
    assert summaries[0].selected == 0 and summaries[1].selected == 1 and rec.seen == ["merge"]


def test_groups_are_dealt_whole_and_only_names_groups(tmp_path: Path) -> None:
    units = ["t1.k0", "t1.k1", "t2.k0", "t3.k0", "t3.k1"]
    rec = Recorder()
    stage = StageSpec("inner", units, rec, group=lambda u: u.split(".")[0])
    assert run_stage(RunStore.open(tmp_path), stage, Selection(chunk=Chunk(1, 2)), progress=False).selected == 4
    assert rec.seen == ["t1.k0", "t1.k1", "t3.k0", "t3.k1"]
    assert (
        run_stage(RunStore.open(tmp_path / "b"), stage, Selection(only=("t2",), limit=1), progress=False).selected == 1
    )


def test_only_selects_nothing_in_a_stage_without_the_group_but_a_name_no_stage_has_is_an_error(tmp_path: Path) -> None:
    a, b = Recorder(), Recorder()
    stages = [StageSpec("inner", ["t1.k0", "t2.k0"], a, group=lambda u: u.split(".")[0]), StageSpec("eval", ["x"], b)]
    summaries = _run(RunStore.open(tmp_path), stages, only=("t1",))
    assert a.seen == ["t1.k0"] and summaries[1].selected == 0 and not b.seen
    with pytest.raises(SelectionError, match="t9"):
        _run(RunStore.open(tmp_path), stages, only=("t9",))


def test_work_folder_is_removed_after_a_record_and_kept_after_an_error(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path)

    def make(status: str):  # type: ignore[no-untyped-def]
        def process(unit: str) -> Outcome:
            (store.work_dir("s", unit) / "ckpt").write_text("step 3")
            if status == "raise":
                raise RuntimeError("out of memory")
            return Outcome("ok")

        return lambda: process

    run_stage(store, StageSpec("s", ["a"], make("raise")), progress=False)
    assert (tmp_path / "work" / "s" / "a" / "ckpt").read_text() == "step 3"
    assert store.records("s")["a"].status == "error"
    run_stage(store, StageSpec("s", ["a"], make("ok")), progress=False)
    assert not (tmp_path / "work" / "s" / "a").exists() and store.records("s")["a"].status == "ok"


def test_processor_is_closed_when_the_stage_ends(tmp_path: Path) -> None:
    rec = Recorder()
    run_stage(RunStore.open(tmp_path), StageSpec("s", ["a", "b"], rec), progress=False)
    assert rec.seen == ["a", "b"] and rec.closed == 1


@pytest.mark.parametrize("bad", ["task/1", "..", ".hidden", "", "a b"])
def test_bad_unit_ids_and_stage_names_are_rejected_naming_the_stage(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match=r"stage s: unit id"):
        StageSpec("s", ["ok", bad], Recorder())
    with pytest.raises(ValueError, match="stage name"):
        StageSpec(bad or "/", ["ok"], Recorder())
    dynamic = StageSpec("d", lambda: [bad], Recorder())
    with pytest.raises(ValueError, match=r"stage d: unit id"):
        _run(RunStore.open(tmp_path), [dynamic])
    assert not (tmp_path / "stages" / "d" / "units.json").exists()


def test_a_need_that_is_not_an_earlier_stage_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an earlier stage"):
        _run(
            RunStore.open(tmp_path),
            [StageSpec("a", ["x"], Recorder(), needs=("b",)), StageSpec("b", ["y"], Recorder())],
        )
