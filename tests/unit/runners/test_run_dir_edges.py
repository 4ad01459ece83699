"""Run directories a user can get wrong (a path under a file, a folder of other files), export paths under a file,
`--iterations 0`, and Ctrl-C: each is one line that says what to do, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from runners.cli import main

SELFTEST = ["selftest", "--no-progress", "--set", "selftest.units=2", "--set", "selftest.iterations=10"]


def test_a_run_directory_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, [*SELFTEST, "--run-dir", str(tmp_path / "afile" / "sub")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{tmp_path / 'afile'} is a file, so no run directory can be made there" in result.output


def test_a_folder_of_other_files_is_not_made_a_run(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("x")
    result = CliRunner().invoke(main, [*SELFTEST, "--run-dir", str(folder)])
    assert result.exit_code == 1 and "holds other files (todo.txt) and no run" in result.output
    assert sorted(p.name for p in folder.iterdir()) == ["todo.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert CliRunner().invoke(main, [*SELFTEST, "--run-dir", str(empty)]).exit_code == 0
    assert CliRunner().invoke(main, [*SELFTEST, "--run-dir", str(empty)]).exit_code == 0  # a run: resumed


def test_export_under_a_file_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert CliRunner().invoke(main, [*SELFTEST, "--run-dir", str(run)]).exit_code == 0
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "afile" / "b.jsonl")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    # the selftest exports nothing, so either refusal is fine as long as it is a line, not a traceback
    assert "is a file, so the bundle cannot be written there" in result.output or "produces nothing" in result.output


@pytest.mark.parametrize("command", [["arc", "rl", "demo_arc"], ["knowledge", "rl", "demo"]])
def test_iterations_0_is_refused_by_the_option(command: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [*command, "--iterations", "0", "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "0 is not in the range x>=1" in result.output
    assert not (tmp_path / "r").exists()


def test_ctrl_c_says_how_to_continue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KeyboardInterrupt raised from inside the pipeline (where Ctrl-C lands), injected: a real SIGINT would stop
    the test process. The kill-and-resume e2e tests cover what a resume then does."""

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("runners.stage.run_pipeline", interrupted)
    result = CliRunner().invoke(main, [*SELFTEST, "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 130
    assert "interrupted: every recorded unit is kept in" in result.output
    assert "run the same command again to continue" in result.output
